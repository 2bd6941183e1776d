/* The journal: ferryd's durable memory, in SQLite (WAL, synchronous=FULL).
 *
 * It holds updates, their components and stages, the per-update report
 * sequence, download and push offsets, the replay store of command ids, the
 * last accepted manifest sequence, installed versions, and an outbox of stage
 * reports.  A stage transition and its report are committed together, before
 * the report is published; a report leaves the outbox only once the broker
 * has it.  So after a crash nothing is lost and nothing is reported done twice.
 */
#ifndef FERRY_JOURNAL_H
#define FERRY_JOURNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

typedef struct ferry_journal ferry_journal;

/* Update states (the update as a whole). */
typedef enum ferry_ustate {
	FERRY_U_REQUESTED,   /* manifest stored, not yet allowed */
	FERRY_U_ALLOWED,     /* update.request accepted */
	FERRY_U_DOWNLOADING,
	FERRY_U_DOWNLOADED,
	FERRY_U_VERIFYING,
	FERRY_U_VERIFIED,
	FERRY_U_INSTALLING,
	FERRY_U_DONE,        /* every component installed or already installed */
	FERRY_U_FAILED,
	FERRY_U_CANCELLED,
	FERRY_U_REFUSED,
} ferry_ustate;
const char *ferry_ustate_name(ferry_ustate s);
bool ferry_ustate_final(ferry_ustate s);

typedef struct ferry_jupdate {
	char id[65];
	ferry_ustate state;
	char *manifest;   /* compact JWS as received (malloc'd) */
	int64_t sequence; /* manifest sequence */
	int64_t expires;  /* 0: none */
	bool deploy;      /* update.deploy: go on through install by itself */
	int64_t created;
} ferry_jupdate;

typedef struct ferry_jcomponent {
	char name[65];
	int idx;            /* install order, 0 first */
	char stage[24];     /* last reported stage, "" before any */
	char reason[32];    /* for failed / rolled_back */
	int64_t dl_offset;  /* bytes of the image durably in the store's partial file */
	int64_t push_offset;/* bytes the subdevice acknowledged */
	char *link;         /* download URL (malloc'd) until used, else NULL */
	char version[65];   /* read back after install */
} ferry_jcomponent;

ferry_err ferry_journal_open(const char *path, ferry_journal **out, ferry_status *st) FERRY_WUR;
void ferry_journal_close(ferry_journal *j);

/* Replay store: FERRY_E_REPLAYED if jti was seen and has not expired,
 * otherwise records it until exp.  Entries older than now are pruned. */
ferry_err ferry_journal_jti_use(ferry_journal *j, const char *jti, int64_t exp, int64_t now,
				ferry_status *st) FERRY_WUR;

/* Last accepted manifest sequence (0 when none). */
int64_t ferry_journal_last_sequence(ferry_journal *j);

/* A new update with its components in install order.  Also raises the
 * last accepted sequence when accept is true (update.request allowed).
 * FERRY_E_MALFORMED if the id exists. */
ferry_err ferry_journal_update_add(ferry_journal *j, const ferry_jupdate *u, const char *const *components,
				   size_t n, ferry_status *st) FERRY_WUR;
/* FERRY_E_UNKNOWN_UPDATE when absent.  Free with ferry_jupdate_free. */
ferry_err ferry_journal_update_get(ferry_journal *j, const char *id, ferry_jupdate *out, ferry_status *st) FERRY_WUR;
void ferry_jupdate_free(ferry_jupdate *u);
ferry_err ferry_journal_update_state(ferry_journal *j, const char *id, ferry_ustate s, ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_sequence(ferry_journal *j, int64_t sequence, ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_deploy(ferry_journal *j, const char *id, bool deploy, ferry_status *st) FERRY_WUR;
/* Ids of updates not in a final state, oldest first (json array of strings). */
ferry_err ferry_journal_unfinished(ferry_journal *j, json_t **ids, ferry_status *st) FERRY_WUR;

/* Components of an update in install order; free with ferry_jcomponents_free. */
ferry_err ferry_journal_components(ferry_journal *j, const char *update_id, ferry_jcomponent **out, size_t *n,
				   ferry_status *st) FERRY_WUR;
void ferry_jcomponents_free(ferry_jcomponent *c, size_t n);
ferry_err ferry_journal_set_link(ferry_journal *j, const char *update_id, const char *component, const char *url,
				 ferry_status *st) FERRY_WUR; /* url NULL forgets it */
ferry_err ferry_journal_set_dl_offset(ferry_journal *j, const char *update_id, const char *component, int64_t off,
				      ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_push_offset(ferry_journal *j, const char *update_id, const char *component,
					int64_t off, ferry_status *st) FERRY_WUR;

/* One stage transition of one component and its report, in one transaction:
 * the component's stage (and reason/version when given) is set, the
 * update's next seq is taken, and the report
 *   {"update_id","component","stage","seq","ts", [progress{done,total}],
 *    [reason, detail], [version]}
 * is stored in the outbox.  *report receives the JSON text to publish
 * (malloc'd) and *seq its sequence number.  progress_total < 0 means no
 * progress member. */
typedef struct ferry_transition {
	const char *update_id;
	const char *component;
	const char *stage;
	const char *reason;  /* NULL unless failed/refused/rolled_back */
	const char *detail;  /* likewise */
	const char *version; /* installed / already_installed */
	int64_t done, total; /* progress; total < 0: none */
	int64_t ts;
} ferry_transition;
ferry_err ferry_journal_transition(ferry_journal *j, const ferry_transition *t, char **report, int64_t *seq,
				   ferry_status *st) FERRY_WUR;

/* The outbox: reports committed but not yet acknowledged by the broker. */
ferry_err ferry_journal_outbox(ferry_journal *j, json_t **reports, ferry_status *st) FERRY_WUR; /* [{update_id, seq, body}] oldest first */
ferry_err ferry_journal_outbox_done(ferry_journal *j, const char *update_id, int64_t seq, ferry_status *st) FERRY_WUR;

/* Installed versions per component name (anti-rollback, inventory). */
ferry_err ferry_journal_installed(ferry_journal *j, const char *component, char version[65], bool *found,
				  ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_installed(ferry_journal *j, const char *component, const char *version,
				      const char *device_id, int64_t ts, ferry_status *st) FERRY_WUR;

#endif
