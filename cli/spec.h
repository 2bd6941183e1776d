/* The operator's manifest spec (YAML) turned into a manifest payload. */
#ifndef FERRY_CLI_SPEC_H
#define FERRY_CLI_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <time.h>

#include "ferry/err.h"

/* Read spec_path, hash each component's `file` (relative to the spec's
 * folder) into `size` and `sha256`, set `created` to now, and return the
 * payload object.  The result has passed the same parser the gateway uses.
 * files, when not NULL, receives each component's image path by name (for
 * an encrypted one, its ciphertext's).  Components with `encrypt: true`,
 * or all when encrypt_all, are encrypted with a fresh content key each
 * into FILE.fenc; keys receives each such key (base64url) by name. */
ferry_err ferry_spec_load(const char *spec_path, time_t now, bool encrypt_all, json_t **payload, json_t *files,
			  json_t *keys, ferry_status *st) FERRY_WUR;

#endif
