/* Internals shared by the engine's files: engine.c (events, reports),
 * commands.c (what each operation checks and starts), jobs.c (the worker
 * that downloads, checks and installs), inventory.c. */
#ifndef FERRY_ENGINE_INT_H
#define FERRY_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "adapter_host.h"
#include "engine.h"
#include "ferry/command.h"
#include "ferry/manifest.h"
#include "journal.h"
#include "store.h"

typedef enum job_kind { JOB_DOWNLOAD, JOB_CHECK, JOB_INSTALL } job_kind;

typedef struct job {
	job_kind kind;
	char update_id[FERRY_ID_MAX + 1];
	struct job *next;
} job;

typedef enum event_kind { EV_COMMAND, EV_CONNECTED, EV_PUBLISHED, EV_INVENTORY } event_kind;

typedef struct event {
	event_kind kind;
	char *payload;
	size_t len;
	int mid;
	struct event *next;
} event;

#define MIDS_MAX 1024

struct ferry_engine {
	const ferry_config *cfg;
	ferry_journal *journal;
	ferry_store *store;
	ferry_trust *cmd_trust, *manifest_trust;
	ferry_adapters *adapters;
	ferry_cloud *cloud;
	pthread_mutex_t adapters_lock; /* discovery vs. install on the worker */

	/* events from the cloud thread to the main loop */
	pthread_mutex_t ev_lock;
	pthread_cond_t ev_cond;
	event *ev_head, *ev_tail;

	/* jobs for the worker */
	pthread_mutex_t job_lock;
	pthread_cond_t job_cond;
	job *job_head, *job_tail;
	pthread_t worker;
	atomic_bool stopping;
	char running[FERRY_ID_MAX + 1]; /* update the worker is on, under job_lock */
	atomic_bool cancel;             /* cancel what the worker is on */

	/* published message ids -> outbox entries, under mid_lock */
	pthread_mutex_t mid_lock;
	struct {
		int mid;
		char update_id[FERRY_ID_MAX + 1];
		int64_t seq;
	} mids[MIDS_MAX];
	size_t n_mids;
};

int64_t eng_now(void);

/* Commit a transition, then publish its report (or leave it in the outbox
 * when offline).  Errors are logged; the journal entry is what counts. */
ferry_err eng_report(ferry_engine *e, const ferry_transition *t, ferry_status *st) FERRY_WUR;
void eng_publish_outbox(ferry_engine *e);
void eng_publish_inventory(ferry_engine *e);
void eng_enqueue(ferry_engine *e, job_kind kind, const char *update_id);

/* commands.c */
void eng_handle_command(ferry_engine *e, const char *payload, size_t len);
/* Load and verify an update's stored manifest (again: it lives in the
 * journal as the signed text, never as a parsed copy that could be changed). */
ferry_err eng_load_manifest(ferry_engine *e, const ferry_jupdate *u, ferry_manifest *m, ferry_status *st) FERRY_WUR;

/* jobs.c */
void *eng_worker(void *arg);
void eng_resume(ferry_engine *e);

/* inventory.c */
char *eng_inventory_json(ferry_engine *e);

#endif
