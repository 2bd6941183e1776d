/* Campaigns: one update rolled out to the gateways whose attributes match,
 * in batches, stopped when too many fail.  Their state is an SQLite file in
 * the operator's state directory (campaigns.db), shared by `ferry campaign
 * run`, which drives them, and the commands that create, show and steer
 * them.
 *
 * A target is one gateway of one campaign.  Its states:
 *   pending   not sent yet (waiting for its batch, the window, the start)
 *   sending   its command (jti and signed bytes) is recorded; it may or may
 *             not have reached the broker.  A runner that restarts finds it
 *             so and publishes the very same bytes again: the gateway acts
 *             on one jti once, so no gateway runs two commands for one step.
 *   sent      on the broker, no answer yet
 *   running   accepted, steps still running
 *   installed | already_installed | failed | rolled_back | refused | cancelled
 * `attempt` counts the times retry-failed has sent the campaign again. */
#ifndef FERRY_CLI_CAMPAIGN_H
#define FERRY_CLI_CAMPAIGN_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ferry/err.h"

#define CAMPAIGN_NAME_MAX 40

typedef struct campaign {
	char name[CAMPAIGN_NAME_MAX + 1];
	char tag[8];        /* random: keeps update ids apart from another campaign of the name */
	char *manifest;     /* the signed manifest of the current attempt */
	json_t *payload;    /* the spec's payload, to sign again for a retry (NULL: from a signed manifest) */
	json_t *components; /* names */
	json_t *images;     /* name -> sha256 */
	json_t *keys;       /* encrypted components: name -> content key (base64url); NULL: none */
	json_t *where;      /* the conditions, as given */
	int64_t sequence;
	bool continuous, atomic;
	int64_t batch;       /* gateways per batch, 0: one batch */
	int64_t advance_pct; /* share of successes in a batch that starts the next */
	int64_t stop_n, stop_pct; /* stop at this many failures, or this share of targets (0: never) */
	int64_t start_at;    /* no command before (0: now) */
	int64_t win_from, win_to; /* minutes of the local day; -1: any time */
	int64_t ttl;         /* the commands' lifetime */
	char state[12];      /* active paused stopped cancelled done */
	char why[256];       /* why it stopped */
	bool targeted;       /* a one-shot campaign's gateways are chosen */
	int64_t cur_batch, attempt, created;
} campaign;

typedef struct camp_db camp_db;

ferry_err camp_db_open(const char *state_dir, camp_db **out, ferry_status *st) FERRY_WUR;
void camp_db_close(camp_db *db);
sqlite3 *camp_db_handle(camp_db *db);
ferry_err camp_begin(camp_db *db, ferry_status *st) FERRY_WUR;
ferry_err camp_commit(camp_db *db, ferry_status *st) FERRY_WUR;
void camp_rollback(camp_db *db);

ferry_err camp_insert(camp_db *db, const campaign *c, ferry_status *st) FERRY_WUR;
/* FERRY_E_UNKNOWN_UPDATE when there is no campaign of that name. */
ferry_err camp_get(camp_db *db, const char *name, campaign *c, ferry_status *st) FERRY_WUR;
void camp_free(campaign *c);
/* Every campaign, oldest first (names into a malloc'd array). */
ferry_err camp_names(camp_db *db, char (**names)[CAMPAIGN_NAME_MAX + 1], size_t *n, ferry_status *st) FERRY_WUR;
/* Saves the fields that change: state, why, targeted, cur_batch, attempt,
 * manifest, sequence. */
ferry_err camp_save(camp_db *db, const campaign *c, ferry_status *st) FERRY_WUR;

/* A target's update id for an attempt: NAME.TAG.ATTEMPT */
void camp_update_id(const campaign *c, int64_t attempt, char out[65]);
/* True for the states a target ends in. */
bool camp_final(const char *state);
/* True for the end states that count as failures (failed, rolled_back,
 * refused). */
bool camp_failure(const char *state);

/* "HH:MM-HH:MM" into minutes of the day; from == to is refused. */
bool camp_parse_window(const char *s, int64_t *from, int64_t *to);
/* Whether minute-of-day m is inside [from, to) (which may wrap midnight). */
bool camp_in_window(int64_t from, int64_t to, int64_t m);
/* "YYYY-MM-DDTHH:MM[:SS]Z" or seconds since the epoch. */
bool camp_parse_time(const char *s, int64_t *out);
/* "N" or "P%" */
bool camp_parse_count(const char *s, int64_t *n, int64_t *pct);

/* Counts over a campaign's targets: targeted, pending (incl. sending), in
 * progress (sent, running), installed, already_installed, failed,
 * rolled_back, refused, cancelled, and failed by reason; per component the
 * same from its steps' last reports.  A JSON object (docs/cli.md). */
ferry_err camp_counts(camp_db *db, const campaign *c, json_t **out, ferry_status *st) FERRY_WUR;

#endif
