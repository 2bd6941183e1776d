/* Making ferry-delta-1 patches (the format: ferry/delta.h).  Only the
 * operator's tool makes them; the gateway only applies them. */
#ifndef FERRY_CLI_DELTA_H
#define FERRY_CLI_DELTA_H

#include <stddef.h>

#include "ferry/err.h"

/* The largest base or new image a patch is made for (the suffix array
 * indexes the base with 32-bit offsets). */
#define FERRY_DELTA_MAKE_MAX (1024u * 1024 * 1024)

/* A patch that turns old into new: *out is malloc'd, *outlen its size. */
ferry_err ferry_delta_make(const unsigned char *old, size_t old_len, const unsigned char *new_img, size_t new_len,
			   unsigned char **out, size_t *outlen, ferry_status *st) FERRY_WUR;

#endif
