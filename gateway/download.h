/* Image downloads over HTTPS with libcurl: resumable, bounded, verified while
 * streaming.  This is the one file that talks to libcurl; its codes become
 * ferry reason codes here. */
#ifndef FERRY_DOWNLOAD_H
#define FERRY_DOWNLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

typedef struct ferry_dl_limits {
	long connect_timeout_s; /* TCP + TLS handshake */
	long low_speed_bytes;   /* abort when slower than this many bytes/s ... */
	long low_speed_time_s;  /* ... for this many seconds (slow retrieval) */
	int retries;            /* further attempts after a transfer error, each resuming */
	long retry_delay_ms;    /* first delay; doubles per attempt, capped at 30 s */
} ferry_dl_limits;

typedef struct ferry_dl_req {
	const char *url;       /* https:// only; a secret: never logged */
	const char *ca_file;   /* the file host's CA; peer and host name verified */
	const char *cert_file, *key_file; /* the gateway's client certificate, shown when the host asks */
	int part_fd;           /* the partial file, read-write: continued (ferry_store_partial_open) */
	int64_t size;          /* the manifest's size: a hard cap while bytes arrive */
	uint8_t sha256[32];    /* the manifest's digest of the whole image */
	ferry_dl_limits limits;
	/* Called with bytes durably on disk (after fsync); the caller journals
	 * it so a restart resumes there.  Called at most every few MiB. */
	void (*durable)(void *ctx, int64_t offset);
	/* Called as bytes arrive; return false to cancel (FERRY_E_CANCELLED). */
	bool (*progress)(void *ctx, int64_t done, int64_t total);
	void *ctx;
	/* Wall-clock second (0: none) by which the download ends, done or not:
	 * then it fails with deadline_code and a detail naming deadline_what
	 * ("the update expires", say). */
	int64_t deadline;
	ferry_err deadline_code;
	const char *deadline_what;
	/* Set (may be NULL) when an fsync of the partial file failed on the
	 * way: what the digest saw may not be what the disk holds, so the
	 * check must read the file again. */
	bool *unsure;
} ferry_dl_req;

/* Download (or finish downloading) req->url into req->part_fd.  Bytes
 * already in the partial file are hashed first and the rest is asked for
 * with an HTTP Range request; a server that ignores Range is handled by
 * skipping what we have.  Succeeds only when the file holds exactly `size`
 * bytes with digest `sha256`, fsync'd.  Errors: size_mismatch (more bytes
 * than size, or fewer at the end), digest_mismatch (the partial file is
 * removed so the next attempt starts clean), download_failed (network, TLS,
 * HTTP status, too slow; the detail names the cause but never the URL),
 * cancelled, unsupported (not https). */
ferry_err ferry_download(const ferry_dl_req *req, ferry_status *st) FERRY_WUR;

#endif
