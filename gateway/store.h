/* The image store: content-addressed files under one directory.
 *
 *   DIR/<sha256 hex>          complete, verified images (read-only, 0444)
 *   DIR/partial/<sha256 hex>  downloads in progress, resumable
 *
 * An image enters DIR only by fsync of the partial file, rename, and fsync of
 * the directory, so after a power cut a name in DIR always means a whole file
 * with that digest.  Every name is reached through the two directories'
 * open fds, never by following a symlink: anything in the store that is not
 * a plain file of ours (a symlink, a hard link, a directory) is not an image
 * and is removed rather than written through.
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

#define FERRY_PATH_MAX 4096

typedef struct ferry_store ferry_store;

/* Create DIR and DIR/partial if needed (mode 0700).  cap_bytes bounds what
 * the store may hold (0: only the file system's free space bounds it).  In
 * a boot other than the one DIR/.boot names, partial files are set aside as
 * from an earlier boot (their tails may be garbage after a power cut). */
ferry_err ferry_store_open(const char *dir, int64_t cap_bytes, ferry_store **out, ferry_status *st) FERRY_WUR;
void ferry_store_close(ferry_store *s);

/* Path of the complete image with this digest, and whether it is there as
 * a plain file. */
bool ferry_store_has(ferry_store *s, const uint8_t sha256[32], char path[FERRY_PATH_MAX]);
/* Open the partial file for this digest read-write, creating it (0600) if
 * needed.  One written in this boot is kept whole; one from an earlier boot
 * (see ferry_store_open) is cut to `keep` bytes, what the journal knows to
 * be durable.  A
 * name there that is not a plain file with one link is removed and a fresh
 * file made in its place, with a log line.  Returns the fd, or -1 (st says
 * why). */
int ferry_store_partial_open(ferry_store *s, const uint8_t sha256[32], int64_t keep, ferry_status *st);
/* Bytes free for new images: the smaller of the file system's space
 * available to us and what the cap leaves. */
int64_t ferry_store_free(ferry_store *s);
/* Move a finished partial file into the store (fsync, rename, fsync dir).
 * The caller has checked its size and digest; streamed_ok: it hashed every
 * byte as it wrote it (the download did), so the check need not hash the
 * file again while it stays the file this committed. */
ferry_err ferry_store_commit(ferry_store *s, const uint8_t sha256[32], bool streamed_ok, ferry_status *st) FERRY_WUR;
/* Whether the image with this digest is still the file this process
 * committed with streamed_ok (same device, inode, size and mtime); *size
 * then holds its size.  After a restart nothing is: the check hashes. */
bool ferry_store_streamed(ferry_store *s, const uint8_t sha256[32], int64_t *size);
/* Delete the complete and the partial image with this digest. */
void ferry_store_remove(ferry_store *s, const uint8_t sha256[32]);
/* Only the partial file (and one set aside from an earlier boot). */
void ferry_store_remove_partial(ferry_store *s, const uint8_t sha256[32]);

#endif
