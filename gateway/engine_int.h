/* Internals shared by the engine's files: engine.c (events, reports),
 * commands.c (what each operation checks and starts), jobs.c (the runner
 * that downloads, checks and installs), sched.c (the steps of one update,
 * run in parallel in their order), inventory.c. */
#ifndef FERRY_ENGINE_INT_H
#define FERRY_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "adapter_host.h"
#include "claims.h"
#include "engine.h"
#include "ferry/command.h"
#include "ferry/manifest.h"
#include "jobq.h"
#include "journal.h"
#include "store.h"

/* Steps one update may have: components times the devices each goes to. */
#define FERRY_STEPS_MAX 512
/* Updates that may run at once (updates.parallel). */
#define FERRY_RUNNERS_MAX 16

typedef enum event_kind { EV_COMMAND, EV_CONNECTED, EV_PUBLISHED } event_kind;

typedef struct event {
	event_kind kind;
	char *payload;
	size_t len;
	int mid;
	struct event *next;
} event;

#define MIDS_MAX 4096

struct ferry_engine {
	const ferry_config *cfg;
	ferry_journal *journal;
	ferry_store *store;
	ferry_trust *cmd_trust, *manifest_trust;
	ferry_adapters *adapters;
	ferry_cloud *cloud;
	/* decryption.key as a JWK and decryption.cert as PEM text; NULL
	 * when the config has none (encrypted components are refused) */
	json_t *kek;
	char *kek_cert;

	/* events from the cloud thread to the main loop */
	pthread_mutex_t ev_lock;
	pthread_cond_t ev_cond;
	event *ev_head, *ev_tail;

	/* updates for the runner threads (updates.parallel of them), and
	 * what updates that run at once share */
	ferry_jobq *jobs;
	pthread_t runners[FERRY_RUNNERS_MAX];
	size_t n_runners;
	eng_claims *claims;
	/* pruning and the handling of a command, one at a time: a command
	 * admitted while a prune runs could count on an image the prune is
	 * about to remove (an update that is running is never pruned: its
	 * images are kept as an unfinished update's) */
	pthread_mutex_t store_lock;

	/* publishing and the message ids of reports not yet acknowledged, under
	 * one lock: an acknowledgement can never overtake its bookkeeping */
	pthread_mutex_t pub_lock;
	/* a report's seq and its publish in one order: held from the journal
	 * transition to the publish, so the broker gets an update's reports in
	 * seq order however many threads report */
	pthread_mutex_t report_lock;
	struct {
		int mid;
		char update_id[FERRY_ID_MAX + 1];
		int64_t seq;
	} mids[MIDS_MAX];
	size_t n_mids;
};

/* Can component c be pushed to device d over its local link?  The weakest
 * link allowed is the stronger of the manifest's min_link and the config's
 * min_link for c; an image encrypted for the device goes over any.
 * link_insecure otherwise, naming both. */
ferry_err eng_link_check(ferry_engine *e, const ferry_component *c, const ferry_device_v1 *d,
			 ferry_status *st) FERRY_WUR;

int64_t eng_now(void);
/* The wall clock in ms since the epoch: report times (ts_ms). */
int64_t eng_now_ms(void);
int64_t eng_mono_ms(void);

/* Commit a transition, then publish its report (or leave it in the outbox
 * when offline).  Errors are logged; the journal entry is what counts. */
ferry_err eng_report(ferry_engine *e, const ferry_transition *t, ferry_status *st) FERRY_WUR;
void eng_publish_outbox(ferry_engine *e);
/* Discover every adapter's devices, remember them in the journal, and
 * publish the inventory. */
void eng_publish_inventory(ferry_engine *e);
/* Discover (every adapter, or only ad) and remember what was seen. */
void eng_discover(ferry_engine *e, const ferry_adapter *ad);
bool eng_enqueue(ferry_engine *e, ferry_job_kind kind, const char *update_id);

/* commands.c */
void eng_handle_command(ferry_engine *e, const char *payload, size_t len);
/* Load and verify an update's stored manifest (again: it lives in the
 * journal as the signed text, never as a parsed copy that could be
 * changed), at the time `at`. */
ferry_err eng_load_manifest(ferry_engine *e, const ferry_jupdate *u, int64_t at, ferry_manifest *m,
			    ferry_status *st) FERRY_WUR;

/* jobs.c */
void *eng_runner(void *arg);
void eng_resume(ferry_engine *e);
/* Remove from the store what no unfinished update needs. */
/* Let go of the images no unfinished update needs (store_lock held by it). */
void eng_prune_store(ferry_engine *e);
/* Bytes of images the store keeps only as bases for deltas (no unfinished
 * update and not the manifest m needs them); let go of when drop is set.
 * Called with store_lock held. */
int64_t eng_bases_spare(ferry_engine *e, const ferry_manifest *m, bool drop);

/* inventory.c */
char *eng_inventory_json(ferry_engine *e);

#endif
