/* Following updates as gateways report them: what `ferry deploy` and
 * `ferry watch` show, and how deploy knows every target has ended.
 *
 * Rows are gateway x component x device (a component's own stages, about
 * its image, have no device).  On a terminal the rows are redrawn in place
 * with a progress bar, the rate and the time left; otherwise each report is
 * one plain line, or one JSON object with --json. */
#ifndef FERRY_CLI_FOLLOW_H
#define FERRY_CLI_FOLLOW_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* FOLLOW_QUIET: tracks, prints nothing (campaigns). */
typedef enum follow_mode { FOLLOW_TTY, FOLLOW_PLAIN, FOLLOW_JSON, FOLLOW_QUIET } follow_mode;

typedef struct follow follow;

/* trust: the org CA that gateways' certificates chain to; every reply and
 * report must be signed by the gateway of its topic (docs/protocol.md). */
typedef struct ferry_trust ferry_trust;
follow *follow_new(follow_mode mode, FILE *out, const ferry_trust *trust);
void follow_free(follow *f);
/* deploy: gateway gw was sent command jti for update uid, whose manifest
 * has these components; op_request: update.request (ends with admission). */
/* False when out of memory: the caller must not send to that gateway. */
bool follow_expect(follow *f, const char *gw, const char *uid, const char *jti, const char *const *components,
		   size_t n, bool op_request);
/* A message from the broker: topic ferry/v1/GW/KIND and its payload.
 * Filters (NULL: all) limit what is shown. */
void follow_message(follow *f, const char *topic, const char *payload, size_t len, const char *only_gw,
		    const char *only_update);
/* A message already opened by ferry_report_open (a campaign's stored
 * ones): kind is "reply" or "stage"; msg is cleaned in place, not taken. */
void follow_take(follow *f, const char *gw, const char *kind, json_t *msg);
/* The `status` of a reply to update.status (docs/protocol.md): every step
 * the update has and those that ended, for what reports were lost. */
void follow_status(follow *f, const char *gw, const char *uid, const json_t *status);
/* Where gateway gw stands with update uid, by the same rule as
 * follow_done; the later states are worse (a gateway's outcome is its worst
 * step's).  reason and detail: why, for a refusal or a failure. */
typedef enum follow_state {
	FS_WAITING,  /* no answer yet */
	FS_RUNNING,  /* accepted, steps still running */
	FS_ALREADY,  /* every step already_installed */
	FS_INSTALLED, /* every step installed or already installed */
	FS_CANCELLED,
	FS_ROLLED_BACK,
	FS_FAILED,
	FS_REFUSED
} follow_state;
follow_state follow_outcome(const follow *f, const char *gw, const char *uid, char reason[33], char detail[256]);
/* Copies src to dst (n bytes), with every control character (C0, DEL,
 * C1) made '?': what may reach a terminal from the network. */
void clean_text(char *dst, size_t n, const char *src);
/* Redraws the terminal rows (at most ten times a second). */
void follow_draw(follow *f, bool force);
/* Every expected gateway has answered and every target ended. */
bool follow_done(const follow *f);
/* 0 when every target ended installed or already_installed, else 1; prints
 * a summary of what failed (to stderr) when asked. */
int follow_result(const follow *f, bool print);
/* Every row as JSON: gateway, update_id, component, device (null for the
 * image), stage, done, total, rate (bytes/s), version, reason, detail. */
json_t *follow_rows_json(const follow *f);
/* How many messages were refused (malformed, unsigned, or not signed by
 * the gateway of their topic) so far; each is also named on stderr. */
unsigned follow_refused(const follow *f);

#endif
