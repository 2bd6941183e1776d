/* Whole-file reading with a size cap, and atomic writes, for the CLI. */
#ifndef FERRY_CLI_FILES_H
#define FERRY_CLI_FILES_H

#include <stddef.h>

#include "ferry/err.h"

/* Read all of path (at most max bytes) into a NUL-terminated malloc'd buffer. */
ferry_err ferry_read_file(const char *path, size_t max, char **out, size_t *len, ferry_status *st) FERRY_WUR;
/* Write len bytes to path through a temporary file, fsync and rename. */
ferry_err ferry_write_file(const char *path, const void *buf, size_t len, ferry_status *st) FERRY_WUR;
/* The same, readable by its owner only (mkstemp makes it 0600 from the start). */
ferry_err ferry_write_secret(const char *path, const void *buf, size_t len, ferry_status *st) FERRY_WUR;
/* Trailing whitespace (a newline after a JWS in a file) is not part of it. */
size_t ferry_trim_len(const char *s, size_t len);

#endif
