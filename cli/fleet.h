/* The fleet as the broker's retained messages describe it: each gateway's
 * inventory and state, filtered by --where conditions, printed as one
 * table.  A library of its own so tests can feed it messages directly. */
#ifndef FERRY_CLI_FLEET_H
#define FERRY_CLI_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "ferry/err.h"

typedef struct fleet fleet;

fleet *fleet_new(void);
/* trust: the org CA; an inventory counts only when signed by the gateway
 * of its topic. */
typedef struct ferry_trust ferry_trust;
void fleet_set_trust(fleet *fl, const ferry_trust *trust);
void fleet_free(fleet *fl);
/* Keeps what was opened in an SQLite file (`ferry fleet` uses
 * STATE_DIR/opened.db): a message with the same bytes, under the same
 * trust anchor (ca_path), whose certificate has not expired, is not
 * opened again.  The file holds what the last run saw, nothing older.  For
 * a tool that reads every retained message at once. */
ferry_err fleet_set_cache(fleet *fl, const char *path, const char *ca_path, ferry_status *st) FERRY_WUR;
/* A condition (docs/cli.md, ferry fleet): KEY=VALUE, KEY!=VALUE, or
 * component.NAME OP VERSION with OP one of < <= > >= = !=. */
ferry_err fleet_where(fleet *fl, const char *cond, ferry_status *st) FERRY_WUR;
/* A retained message: ferry/v1/GW/inventory or ferry/v1/GW/state.
 * Inventories are opened (signature, chain, CN) by worker threads, one per
 * core but the caller's, as they come; the first call below waits for the
 * rest and takes them in the order they came. */
void fleet_add(fleet *fl, const char *topic, const char *payload, size_t len);
/* A set of conditions of its own (a campaign's --where), in the syntax of
 * fleet_where. */
typedef struct fleet_filter fleet_filter;
fleet_filter *fleet_filter_new(void);
void fleet_filter_free(fleet_filter *f);
ferry_err fleet_filter_add(fleet_filter *f, const char *cond, ferry_status *st) FERRY_WUR;
/* The gateways with a checked inventory that match f, sorted by id, in a
 * malloc'd array (NULL when out of memory); returns how many. */
typedef char fleet_id[65];
size_t fleet_select(fleet *fl, const fleet_filter *f, fleet_id **ids);
/* Gateways that match the conditions. */
size_t fleet_matching(fleet *fl);
void fleet_print(fleet *fl, FILE *out);
void fleet_print_json(fleet *fl, FILE *out);
/* What fleet_print_json prints: {"rows": [...], "counts": {...}, "newest": {...}} */
typedef struct json_t json_t;
json_t *fleet_json(fleet *fl);
/* Gateway id's checked inventory (the fleet's), or NULL. */
const json_t *fleet_inventory(fleet *fl, const char *id);
unsigned fleet_refused(fleet *fl);

#endif
