/* The journal: ferryd's durable memory, in SQLite (WAL, synchronous=FULL).
 *
 * It holds updates, their components (each component's image: download and
 * check) and their steps (each component on each device it goes to: push,
 * activation, outcome), the per-update report sequence, download and push
 * offsets, the replay store of command ids, the last accepted manifest
 * sequence, installed versions per component and device, the devices seen,
 * and an outbox of stage reports.  A stage transition and its report are
 * committed together, before the report is published; a report leaves the
 * outbox only once the broker has it.  So after a crash nothing is lost and
 * nothing is reported done twice.
 *
 * Every change of state is checked against the state it comes from: an
 * update moves only from the state the caller expects (compare and set),
 * and a component or step only along the moves in stage.h, never once its
 * update has ended.  Anything else is refused with wrong_stage and changes
 * nothing.
 */
#ifndef FERRY_JOURNAL_H
#define FERRY_JOURNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"
#include "stage.h"

typedef struct ferry_journal ferry_journal;

/* Update states (the update as a whole). */
typedef enum ferry_ustate {
	FERRY_U_REQUESTED, /* unused: kept so stored values keep their meaning */
	FERRY_U_ALLOWED,   /* update.request accepted */
	FERRY_U_DOWNLOADING,
	FERRY_U_DOWNLOADED,
	FERRY_U_VERIFYING,
	FERRY_U_VERIFIED,
	FERRY_U_INSTALLING,
	FERRY_U_DONE, /* every step installed or already installed */
	FERRY_U_FAILED,
	FERRY_U_CANCELLED,
	FERRY_U_REFUSED,
} ferry_ustate;
const char *ferry_ustate_name(ferry_ustate s);
bool ferry_ustate_final(ferry_ustate s);

/* Where an all-or-nothing update stands. */
typedef enum ferry_phase {
	FERRY_P_FORWARD,    /* pushing, activating on trial: all can still be reverted */
	FERRY_P_COMMITTING, /* every device came up: making them permanent (no way back) */
	FERRY_P_REVERTING,  /* something failed: every device goes back */
	FERRY_P_LAST,       /* every revertible device runs on trial; the one that cannot revert is
			     * being activated: no cancel is taken from here on */
} ferry_phase;

typedef struct ferry_jupdate {
	char id[65];
	ferry_ustate state;
	char *manifest;   /* compact JWS as received (malloc'd) */
	int64_t sequence; /* manifest sequence */
	int64_t expires;  /* 0: none */
	bool deploy;      /* update.deploy: go on through install by itself */
	bool atomic;      /* the manifest asks for all or nothing */
	ferry_phase phase;
	bool cancel_requested; /* update.cancel was accepted: the runner ends it */
	int64_t created;
} ferry_jupdate;

/* A component: its image. */
typedef struct ferry_jcomponent {
	char name[65];
	int idx;           /* install order, 0 first */
	ferry_stage stage; /* last reported stage of its image */
	char reason[32];   /* when failed */
	int64_t dl_offset; /* bytes of the image durably in the store's partial file */
	char *link;        /* download URL (malloc'd) until used, else NULL */
	char *key;         /* an encrypted image's wrapped content key (JWE), likewise */
} ferry_jcomponent;

/* A step: one component on one device. */
typedef struct ferry_jstep {
	char component[65];
	char device[65];
	char adapter[65];
	int idx;             /* its component's install order */
	ferry_stage stage;   /* last reported stage */
	char reason[32];     /* for failed, rolled_back, cancelled */
	int64_t push_offset; /* bytes the device acknowledged */
	char version[65];    /* read back after install */
} ferry_jstep;

/* A new step, for ferry_journal_update_add. */
typedef struct ferry_jstep_new {
	const char *component, *device, *adapter;
} ferry_jstep_new;

ferry_err ferry_journal_open(const char *path, ferry_journal **out, ferry_status *st) FERRY_WUR;
void ferry_journal_close(ferry_journal *j);
/* Free the cached pages no statement is using (ferryd at rest). */
void ferry_journal_release_memory(ferry_journal *j);

/* The journal's identity: a random id given once, kept beside it in the
 * state dir too, so that an emptied or replaced journal is never taken for
 * a new gateway.  "" when it has none yet. */
ferry_err ferry_journal_identity(ferry_journal *j, char id[65], ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_identity(ferry_journal *j, const char *id, ferry_status *st) FERRY_WUR;
/* What the journal holds, for a person deciding to reset it:
 * {last_sequence, unfinished_updates, installed_versions, command_ids, unsent_reports}. */
ferry_err ferry_journal_summary(ferry_journal *j, json_t **out, ferry_status *st) FERRY_WUR;

/* Replay store: FERRY_E_REPLAYED if jti was seen and has not expired,
 * otherwise records it until exp.  Entries older than now are pruned. */
ferry_err ferry_journal_jti_use(ferry_journal *j, const char *jti, int64_t exp, int64_t now,
				ferry_status *st) FERRY_WUR;

/* Last accepted manifest sequence (0 when none); an error when the journal
 * cannot tell, never 0 for it. */
ferry_err ferry_journal_last_sequence(ferry_journal *j, int64_t *out, ferry_status *st) FERRY_WUR;

/* A new update with its components in install order (names[0..n)) and its
 * steps; a component listed in `settled` (n of them, may be NULL) starts as
 * already_installed, without a report: every device has it.  `links` (n of
 * them, may be NULL, an entry may be NULL) and `keys` (wrapped content keys,
 * likewise) are kept with their components in
 * the same transaction, so a deploy stopped right after it was admitted has
 * its links and goes on after a restart.  Raises the last accepted sequence
 * to u->sequence in the same transaction.  wrong_stage if the id exists. */
/* A link to one delta of a component (docs/delta.md): its base image's
 * SHA-256 in hex.  Kept, like whole-image links, until used. */
typedef struct ferry_jdelta_link {
	const char *component, *base_hex, *url;
} ferry_jdelta_link;

ferry_err ferry_journal_update_add(ferry_journal *j, const ferry_jupdate *u, const char *const *names,
				   const bool *settled, const char *const *links, const char *const *keys, size_t n,
				   const ferry_jdelta_link *dlinks, size_t n_dlinks, const ferry_jstep_new *steps,
				   size_t n_steps, ferry_status *st) FERRY_WUR;
/* FERRY_E_UNKNOWN_UPDATE when absent.  Free with ferry_jupdate_free. */
ferry_err ferry_journal_update_get(ferry_journal *j, const char *id, ferry_jupdate *out, ferry_status *st) FERRY_WUR;
void ferry_jupdate_free(ferry_jupdate *u);
/* Compare and set: from `from` to `to`, else wrong_stage (naming the state
 * it is in), also for a move the update states do not allow. */
ferry_err ferry_journal_update_move(ferry_journal *j, const char *id, ferry_ustate from, ferry_ustate to,
				    ferry_status *st) FERRY_WUR;
/* The same for an all-or-nothing update's phase; the move to committing is
 * refused (cancelled) once a cancel was recorded, so that a cancel and the
 * commit decision can never both win. */
ferry_err ferry_journal_phase_move(ferry_journal *j, const char *id, ferry_phase from, ferry_phase to,
				   ferry_status *st) FERRY_WUR;
/* Record that update.cancel was accepted (it survives a restart): refused
 * with wrong_stage when the update has ended, or when an all-or-nothing
 * update has begun to commit. */
ferry_err ferry_journal_cancel_request(ferry_journal *j, const char *id, ferry_status *st) FERRY_WUR;
/* Ids of updates not in a final state, oldest first (json array of strings). */
ferry_err ferry_journal_unfinished(ferry_journal *j, json_t **ids, ferry_status *st) FERRY_WUR;

/* Updates that have ended and whose images the store still has to let go
 * of (json array of ids), and marking one done. */
ferry_err ferry_journal_ended_unpruned(ferry_journal *j, json_t **ids, ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_pruned(ferry_journal *j, const char *id, ferry_status *st) FERRY_WUR;

/* Components of an update in install order; free with ferry_jcomponents_free. */
ferry_err ferry_journal_components(ferry_journal *j, const char *update_id, ferry_jcomponent **out, size_t *n,
				   ferry_status *st) FERRY_WUR;
void ferry_jcomponents_free(ferry_jcomponent *c, size_t n);
/* Steps of an update, by install order then device (malloc'd array). */
ferry_err ferry_journal_steps(ferry_journal *j, const char *update_id, ferry_jstep **out, size_t *n,
			      ferry_status *st) FERRY_WUR;
/* An encrypted component's wrapped key (jwe NULL forgets it). */
ferry_err ferry_journal_set_key(ferry_journal *j, const char *update_id, const char *component, const char *jwe,
				ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_link(ferry_journal *j, const char *update_id, const char *component, const char *url,
				 ferry_status *st) FERRY_WUR; /* url NULL forgets it */
/* Delta links: set one (url NULL forgets it; base_hex NULL too: every one
 * of the component), and read a component's (bases[i] 65 bytes each,
 * urls[i] malloc'd; free with ferry_jdelta_urls_free). */
ferry_err ferry_journal_set_delta_link(ferry_journal *j, const char *update_id, const char *component,
				       const char *base_hex, const char *url, ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_delta_links(ferry_journal *j, const char *update_id, const char *component,
				    char (**bases)[65], char ***urls, size_t *n, ferry_status *st) FERRY_WUR;
void ferry_jdelta_urls_free(char (*bases)[65], char **urls, size_t n);
/* Devices on which ferryd installed the image image_hex of component, with
 * the version it was: [[device, version], ...].  What makes a kept image a
 * delta's base for a device that still runs it. */
ferry_err ferry_journal_image_devices(ferry_journal *j, const char *component, const char *image_hex, json_t **out,
				      ferry_status *st) FERRY_WUR;
/* Images that stopped being a device's base (another image was installed
 * on it), until the store has let go of them (hex SHA-256s). */
ferry_err ferry_journal_unpinned(ferry_journal *j, json_t **out, ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_unpinned_done(ferry_journal *j, const char *image_hex, ferry_status *st) FERRY_WUR;
/* Every image ferryd installed and a device may still run (hex SHA-256s):
 * the store keeps them as bases for deltas. */
ferry_err ferry_journal_installed_images(ferry_journal *j, json_t **out, ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_dl_offset(ferry_journal *j, const char *update_id, const char *component, int64_t off,
				      ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_set_push_offset(ferry_journal *j, const char *update_id, const char *component,
					const char *device, int64_t off, ferry_status *st) FERRY_WUR;

/* One stage transition and its report, in one transaction: the stage of
 * the component (device NULL) or of the step (device given) moves, along an
 * allowed move and only while the update has not ended, else wrong_stage;
 * reason and version are kept when given; the update's next seq is taken,
 * and the report
 *   {"update_id","component","stage",["device"],"seq","ts",
 *    [progress{done,total}], [reason, detail], [version], [devices]}
 * is stored in the outbox.  *report receives the JSON text to publish
 * (malloc'd) and *seq its sequence number.  progress_total < 0 means no
 * progress member.  When installed_device is set (an `installed` step),
 * the installed version of (component, device) is recorded in the same
 * transaction. */
typedef struct ferry_transition {
	const char *update_id;
	const char *component;
	const char *device; /* NULL: the component's image */
	ferry_stage stage;
	const char *reason;        /* NULL unless failed/rolled_back/cancelled */
	const char *detail;        /* likewise */
	const char *version;       /* installed / already_installed / trial */
	const char *image;         /* installed: the image's SHA-256 (hex), kept as the device's base */
	const json_t *devices;     /* on `allowed`: the device ids it goes to */
	int64_t done, total;       /* progress; total < 0: none */
	int64_t ts_ms; /* when it happened: ms since the epoch */
	/* when set, the update moves from `from` to `to` in the same
	 * transaction (compare and set): the report that ends a phase and the
	 * state the next command needs arrive together */
	bool moves;
	ferry_ustate from, to;
} ferry_transition;
ferry_err ferry_journal_transition(ferry_journal *j, const ferry_transition *t, char **report, int64_t *seq,
				   ferry_status *st) FERRY_WUR;

/* The outbox: reports committed but not yet acknowledged by the broker. */
ferry_err ferry_journal_outbox(ferry_journal *j, json_t **reports, ferry_status *st) FERRY_WUR; /* [{update_id, seq, body}] oldest first */
ferry_err ferry_journal_outbox_done(ferry_journal *j, const char *update_id, int64_t seq, ferry_status *st) FERRY_WUR;

/* Installed versions per component and device (anti-rollback for devices
 * that cannot tell their version).  A record from before devices were
 * named (device "") answers for any device. */
ferry_err ferry_journal_installed(ferry_journal *j, const char *component, const char *device, char version[65],
				  bool *found, ferry_status *st) FERRY_WUR;

/* Devices seen: each record is ferry_device_to_json's object; remembered
 * (or refreshed) with the time seen, and listed back. */
ferry_err ferry_journal_devices_seen(ferry_journal *j, const json_t *records, int64_t now,
				     ferry_status *st) FERRY_WUR;
ferry_err ferry_journal_devices(ferry_journal *j, json_t **records, ferry_status *st) FERRY_WUR;

#endif
