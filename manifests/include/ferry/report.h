/* Signed reports: what a gateway publishes on its reply, stage and
 * inventory topics, as a compact JWS (typ "ferry-report") signed with the
 * key of its MQTT client certificate, which x5c carries (docs/protocol.md). */
#ifndef FERRY_REPORT_H
#define FERRY_REPORT_H

#include <jansson.h>
#include <stdint.h>
#include <time.h>

#include "ferry/err.h"
#include "ferry/trust.h"

/* The payload of a report that gateway `gateway_id` published: the JWS
 * verifies against `trust` at `now` and its certificate's CN is
 * gateway_id.  Refused: a plain JSON message or anything not a JWS
 * (malformed), a bad signature or chain (untrusted_signer, ...), another
 * gateway's certificate (wrong_gateway). */
ferry_err ferry_report_open(const char *buf, size_t len, const ferry_trust *trust, const char *gateway_id, time_t now,
			    json_t **payload, ferry_status *st) FERRY_WUR;
/* The same, and the end of its certificate's validity (seconds since the
 * epoch) in *not_after: how long what was checked stays true. */
ferry_err ferry_report_open_until(const char *buf, size_t len, const ferry_trust *trust, const char *gateway_id,
				  time_t now, json_t **payload, int64_t *not_after, ferry_status *st) FERRY_WUR;

#endif
