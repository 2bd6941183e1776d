/* The image store: content-addressed files under one directory.
 *
 *   DIR/<sha256 hex>          complete, verified images (read-only, 0444)
 *   DIR/partial/<sha256 hex>  downloads in progress, resumable
 *
 * An image enters DIR only by fsync of the partial file, rename, and fsync of
 * the directory, so after a power cut a name in DIR always means a whole file
 * with that digest.
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

#define FERRY_PATH_MAX 4096

typedef struct ferry_store ferry_store;

/* Create DIR and DIR/partial if needed (mode 0700).  cap_bytes bounds what
 * the store may hold (0: only the file system's free space bounds it). */
ferry_err ferry_store_open(const char *dir, int64_t cap_bytes, ferry_store **out, ferry_status *st) FERRY_WUR;
void ferry_store_close(ferry_store *s);

/* Path of the complete image with this digest, and whether it exists. */
bool ferry_store_has(ferry_store *s, const uint8_t sha256[32], char path[FERRY_PATH_MAX]);
/* Path of the partial file for this digest (it may not exist yet). */
void ferry_store_partial(ferry_store *s, const uint8_t sha256[32], char path[FERRY_PATH_MAX]);
/* Bytes free for new images: the smaller of the file system's space
 * available to us and what the cap leaves. */
int64_t ferry_store_free(ferry_store *s);
/* Move a finished partial file into the store (fsync, rename, fsync dir).
 * The caller has checked its size and digest. */
ferry_err ferry_store_commit(ferry_store *s, const uint8_t sha256[32], ferry_status *st) FERRY_WUR;
/* Delete the complete and the partial image with this digest. */
void ferry_store_remove(ferry_store *s, const uint8_t sha256[32]);

#endif
