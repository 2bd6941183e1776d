/* HTTPS downloads with libcurl, the one file that talks to it.
 *
 * The manifest's size is a hard cap checked as bytes arrive, not at the end
 * (an endless stream is cut off at size + 1); the digest is computed while
 * streaming, starting with the bytes a previous attempt left in the partial
 * file; a floor on speed stops slow-retrieval attacks; each retry resumes
 * from what is on disk with an HTTP Range request.  URLs are secrets: no
 * error text here ever contains one.
 *
 * Two threads share the work: libcurl's (receive, decrypt) copies what
 * arrives into a small ring of buffers, and a writer thread takes them in
 * order to the file and the digest, so the hash and the page cache's copy
 * run beside the transfer instead of after each piece of it.  A buffer
 * goes over when it is full, or when its first byte has waited
 * HANDOFF_MS: a fast link wakes the writer once per 512 KiB, not once per
 * TLS record (each wake-up is a futex call and, on a busy gateway, a
 * context switch), and a slow one still sees its bytes reach the file
 * (and progress) within a fraction of a second.
 *
 * libcurl, and the twenty-odd libraries Debian's build of it brings (HTTP/2,
 * IDN, SSH, LDAP, Kerberos, a second TLS stack), are loaded when the first
 * download starts, not with ferryd: a gateway at rest maps none of them
 * (bench/idle.sh).  Once loaded it stays.
 */
#define _GNU_SOURCE /* sync_file_range */
#include "download.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ferry/lazylib.h"
#include "log.h"

/* Make arrived bytes durable (fsync, then tell the journal) once both this
 * many bytes and this much time have passed since the last time: a fast
 * link pays for a few fsyncs, not one per MiB.  What this bounds is a power
 * cut; a killed ferryd loses nothing, since the bytes it wrote are in the
 * page cache and the next start of the same boot keeps them (engine.c). */
#define DURABLE_EVERY (8 * 1024 * 1024)
#define DURABLE_MS 1000
/* writeback is started on every this many bytes as they arrive */
#define WRITEBACK_EVERY (8 * 1024 * 1024)
/* libcurl hands over up to this much at a time (its default is 16 KiB) */
#define CURL_BUFFER (512 * 1024)
/* a buffer that is not full goes to the writer once its first byte is
 * this old (checked as bytes arrive, and by libcurl's progress callback
 * while none do) */
#define HANDOFF_MS 100
#define RETRY_DELAY_MAX_MS 30000
/* the ring between libcurl's thread and the writer: RING buffers of
 * CURL_BUFFER bytes (2 MiB while a download runs) */
#define RING 4

typedef struct dl {
	const ferry_dl_req *req;
	int fd;
	EVP_MD_CTX *md;
	/* the writer's (read by the other thread under lock once it drained) */
	int64_t have;      /* bytes in the file and in the digest */
	int64_t synced;    /* bytes fsync'd */
	int64_t synced_ms; /* when */
	int64_t started;   /* bytes handed to the disk's writeback */
	bool io_error, no_space;
	/* libcurl's thread's */
	int64_t queued;    /* bytes handed to the writer, from have on */
	int64_t skip;      /* bytes to drop: the server ignored our Range */
	bool too_big, cancelled;
	long status;
	/* the ring */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t writer;
	unsigned char *buf[RING];
	size_t len[RING];
	unsigned head, count; /* the writer's next, and how many are its */
	unsigned slot;        /* the buffer being filled: (head + count) % RING */
	size_t fill;          /* bytes in it */
	int64_t fill_ms;      /* when its first byte came */
	bool quit, failed;    /* failed: the writer hit an error and drops the rest */
	int64_t written;      /* `have` as the writer last told it, for progress */
} dl;

#define LIBCURL_SONAME "libcurl.so.4"

static struct {
	__typeof__(curl_global_init) *global_init;
	__typeof__(curl_easy_init) *easy_init;
	__typeof__(curl_easy_setopt) *easy_setopt;
	__typeof__(curl_easy_perform) *easy_perform;
	__typeof__(curl_easy_cleanup) *easy_cleanup;
	__typeof__(curl_easy_strerror) *easy_strerror;
	bool ok;
	char why[200];
} cu;
static pthread_once_t cu_once = PTHREAD_ONCE_INIT;

static void cu_load(void)
{
	const ferry_lazy_sym syms[] = {
		{"curl_global_init", (void **)&cu.global_init},   {"curl_easy_init", (void **)&cu.easy_init},
		{"curl_easy_setopt", (void **)&cu.easy_setopt},   {"curl_easy_perform", (void **)&cu.easy_perform},
		{"curl_easy_cleanup", (void **)&cu.easy_cleanup}, {"curl_easy_strerror", (void **)&cu.easy_strerror},
	};
	if (!ferry_lazy_open(LIBCURL_SONAME, syms, sizeof(syms) / sizeof(syms[0]), cu.why, sizeof(cu.why)))
		return;
	/* thread-safe in the libcurl of bookworm (7.88, built with atomics) */
	if (cu.global_init(CURL_GLOBAL_DEFAULT)) {
		snprintf(cu.why, sizeof(cu.why), "libcurl failed to initialise");
		return;
	}
	cu.ok = true;
}

static bool curl_ready(ferry_status *st)
{
	pthread_once(&cu_once, cu_load);
	if (!cu.ok)
		ferry_fail(st, FERRY_E_INTERNAL, "%s", cu.why);
	return cu.ok;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sync_now(dl *d)
{
	if (fsync(d->fd)) {
		if (d->req->unsure)
			*d->req->unsure = true;
		return -1;
	}
	d->synced = d->have;
	d->synced_ms = mono_ms();
	if (d->req->durable)
		d->req->durable(d->req->ctx, d->have);
	return 0;
}

static size_t on_header(char *buf, size_t size, size_t n, void *ctx)
{
	dl *d = ctx;
	/* A new status line starts each response (redirects, 100-continue). */
	if (n * size > 5 && !strncmp(buf, "HTTP/", 5)) {
		const char *sp = memchr(buf, ' ', n * size);
		d->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		/* Asked for a range but got the whole file: drop what we have. */
		d->skip = d->status == 200 ? d->queued : 0;
	}
	return size * n;
}

/* The writer thread: each buffer to the file, then to the digest.  A
 * write that fails stops it taking more bytes (what is queued is dropped:
 * the next attempt asks for it again from `have`). */
static void write_piece(dl *d, const unsigned char *p, size_t len)
{
	size_t w = 0;
	ssize_t k = 0;

	/* a short write says nothing; the next one says why (ENOSPC) */
	while (w < len && ((k = write(d->fd, p + w, len - w)) > 0 || (k < 0 && errno == EINTR)))
		w += k > 0 ? (size_t)k : 0;
	if (w < len) {
		/* a short write leaves bytes past `have`: cut them, so the next
		 * attempt goes on at `have` */
		d->no_space = errno == ENOSPC || errno == EDQUOT;
		d->io_error = true;
		if (ftruncate(d->fd, d->have) || lseek(d->fd, d->have, SEEK_SET) < 0)
			d->no_space = false;
		return;
	}
	EVP_DigestUpdate(d->md, p, len);
	d->have += (int64_t)len;
	/* start the disk on what has arrived, without waiting for it: the
	 * fsyncs that make it durable then find little left to do */
	if (d->have - d->started >= WRITEBACK_EVERY) {
		sync_file_range(d->fd, d->started, d->have - d->started, SYNC_FILE_RANGE_WRITE);
		d->started = d->have;
	}
	if (d->have - d->synced >= DURABLE_EVERY && mono_ms() - d->synced_ms >= DURABLE_MS && sync_now(d)) {
		d->no_space = errno == ENOSPC || errno == EDQUOT; /* some file systems say so only here */
		d->io_error = true;
	}
}

static void *writer_main(void *arg)
{
	dl *d = arg;

	pthread_mutex_lock(&d->lock);
	for (;;) {
		while (!d->count && !d->quit)
			pthread_cond_wait(&d->cond, &d->lock);
		if (!d->count)
			break;
		unsigned i = d->head;
		bool drop = d->failed;
		pthread_mutex_unlock(&d->lock);
		if (!drop)
			write_piece(d, d->buf[i], d->len[i]);
		pthread_mutex_lock(&d->lock);
		d->written = d->have;
		d->failed |= d->io_error;
		d->head = (d->head + 1) % RING;
		d->count--;
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* Hand the buffer being filled to the writer (libcurl's thread).  False
 * when the writer has failed. */
static bool hand_over(dl *d)
{
	pthread_mutex_lock(&d->lock);
	if (d->fill && !d->failed) {
		d->len[d->slot] = d->fill;
		d->count++;
		pthread_cond_broadcast(&d->cond);
	}
	d->fill = 0;
	bool ok = !d->failed;
	pthread_mutex_unlock(&d->lock);
	return ok;
}

/* Until the writer has taken everything queued; then `have` and the
 * writer's flags may be read. */
static void drain(dl *d)
{
	hand_over(d);
	pthread_mutex_lock(&d->lock);
	while (d->count)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

/* libcurl's thread, between pieces: a partly filled buffer whose first
 * byte waited HANDOFF_MS goes to the writer; then the progress (of bytes
 * in the file) and whether to go on.  True to stop the transfer. */
static bool stale_or_cancelled(dl *d)
{
	int64_t written;

	if (d->fill && mono_ms() - d->fill_ms >= HANDOFF_MS && !hand_over(d))
		return true;
	pthread_mutex_lock(&d->lock);
	written = d->written;
	pthread_mutex_unlock(&d->lock);
	if (d->req->progress && !d->req->progress(d->req->ctx, written, d->req->size)) {
		d->cancelled = true;
		return true;
	}
	return false;
}

static size_t on_data(char *buf, size_t size, size_t n, void *ctx)
{
	dl *d = ctx;
	size_t len = size * n, off = 0;

	if (d->status != 200 && d->status != 206)
		return len; /* an error body: not image bytes, and curl reports the status */
	if (d->skip > 0) {
		off = (size_t)d->skip < len ? (size_t)d->skip : len;
		d->skip -= (int64_t)off;
	}
	if (d->queued + (int64_t)(len - off) > d->req->size) {
		d->too_big = true;
		return 0;
	}
	while (off < len) {
		if (!d->fill) { /* a buffer to fill: wait for the writer to free one */
			pthread_mutex_lock(&d->lock);
			while (d->count == RING && !d->failed)
				pthread_cond_wait(&d->cond, &d->lock);
			bool failed = d->failed;
			d->slot = (d->head + d->count) % RING;
			pthread_mutex_unlock(&d->lock);
			if (failed)
				return 0; /* the writer says why once drained */
			d->fill_ms = mono_ms();
		}
		/* the buffer being filled is this thread's until handed over */
		size_t piece = len - off < CURL_BUFFER - d->fill ? len - off : CURL_BUFFER - d->fill;
		memcpy(d->buf[d->slot] + d->fill, buf + off, piece);
		d->fill += piece;
		d->queued += (int64_t)piece;
		off += piece;
		if (d->fill == CURL_BUFFER && !hand_over(d))
			return 0;
	}
	return stale_or_cancelled(d) ? 0 : len;
}

/* libcurl calls this about once a second while no bytes come, and around
 * each piece that does: a stalled link still hands over what waits and
 * notices a cancel */
static int on_xfer(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	return stale_or_cancelled(ctx);
}

/* Hash what the partial file already holds. */
static ferry_err open_partial(dl *d, ferry_status *st)
{
	unsigned char buf[65536];
	ssize_t r;

	d->fd = d->req->part_fd;
	if (d->fd < 0 || lseek(d->fd, 0, SEEK_SET) < 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "partial file: %s", strerror(d->fd < 0 ? EBADF : errno));
	while ((r = read(d->fd, buf, sizeof(buf))) > 0) {
		if (d->have + r > d->req->size) { /* longer than allowed: keep what fits */
			r = (ssize_t)(d->req->size - d->have);
			EVP_DigestUpdate(d->md, buf, (size_t)r);
			d->have += r;
			break;
		}
		EVP_DigestUpdate(d->md, buf, (size_t)r);
		d->have += r;
	}
	if (r < 0 || ftruncate(d->fd, d->have) || lseek(d->fd, d->have, SEEK_SET) < 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "partial file: %s", strerror(errno));
	d->synced = d->started = d->have;
	d->synced_ms = mono_ms();
	return FERRY_OK;
}

static CURL *make_handle(dl *d, char *errbuf)
{
	const ferry_dl_req *r = d->req;
	CURL *c = cu.easy_init();
	char range[64];

	if (!c)
		return NULL;
	cu.easy_setopt(c, CURLOPT_URL, r->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	cu.easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	cu.easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
	cu.easy_setopt(c, CURLOPT_PROTOCOLS, CURLPROTO_HTTPS);
	cu.easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, CURLPROTO_HTTPS);
#endif
	cu.easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	cu.easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
	cu.easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	cu.easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	cu.easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
	if (r->cert_file && r->key_file) {
		/* a file host that binds links to gateways asks who fetches */
		cu.easy_setopt(c, CURLOPT_SSLCERT, r->cert_file);
		cu.easy_setopt(c, CURLOPT_SSLKEY, r->key_file);
	}
	cu.easy_setopt(c, CURLOPT_CAPATH, NULL);
	cu.easy_setopt(c, CURLOPT_PROXY, "");
	cu.easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	cu.easy_setopt(c, CURLOPT_CONNECTTIMEOUT, r->limits.connect_timeout_s);
	cu.easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, r->limits.low_speed_bytes);
	cu.easy_setopt(c, CURLOPT_LOW_SPEED_TIME, r->limits.low_speed_time_s);
	cu.easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	cu.easy_setopt(c, CURLOPT_HEADERDATA, d);
	cu.easy_setopt(c, CURLOPT_BUFFERSIZE, (long)CURL_BUFFER);
	cu.easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	cu.easy_setopt(c, CURLOPT_WRITEDATA, d);
	cu.easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
	cu.easy_setopt(c, CURLOPT_XFERINFODATA, d);
	cu.easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	cu.easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	if (d->have > 0) {
		snprintf(range, sizeof(range), "%lld-", (long long)d->have);
		cu.easy_setopt(c, CURLOPT_RANGE, range);
	}
	if (r->deadline) /* the attempt ends at the deadline, even on a trickle */
		cu.easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)((r->deadline - (int64_t)time(NULL)) * 1000));
	return c;
}

static bool past_deadline(const ferry_dl_req *r)
{
	return r->deadline && (int64_t)time(NULL) >= r->deadline;
}

static ferry_err deadline_passed(const dl *d, ferry_status *st)
{
	return ferry_fail(st, d->req->deadline_code ? d->req->deadline_code : FERRY_E_DOWNLOAD_FAILED,
			  "stopped at %lld of %lld bytes: %s", (long long)d->have, (long long)d->req->size,
			  d->req->deadline_what ? d->req->deadline_what : "the download's deadline passed");
}

/* One attempt.  CURLcode and HTTP status become ferry codes here. */
static ferry_err attempt(dl *d, bool *retry, ferry_status *st)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = make_handle(d, errbuf);
	CURLcode rc;

	*retry = false;
	if (!c)
		return ferry_fail(st, FERRY_E_INTERNAL, "libcurl: no handle");
	d->status = 0;
	d->skip = 0;
	d->queued = d->written = d->have; /* the writer is idle between attempts */
	d->fill = 0;
	d->io_error = d->no_space = d->failed = false;
	rc = cu.easy_perform(c);
	cu.easy_cleanup(c);
	drain(d); /* what arrived is in the file (or dropped after an error) */
	if (rc == CURLE_OPERATION_TIMEDOUT && past_deadline(d->req))
		return deadline_passed(d, st);
	if (d->too_big)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the server sent more than the manifest's %lld bytes",
				  (long long)d->req->size);
	if (d->cancelled)
		return ferry_fail(st, FERRY_E_CANCELLED, "download cancelled");
	if (d->io_error && d->no_space)
		return ferry_fail(st, FERRY_E_INSUFFICIENT_SPACE, "no room left for the partial file at %lld bytes",
				  (long long)d->have);
	if (d->io_error)
		return ferry_fail(st, FERRY_E_INTERNAL, "writing the partial file failed");
	if (rc == CURLE_UNSUPPORTED_PROTOCOL)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "only https:// links are allowed");
	if (rc == CURLE_OK && d->status == 416 && d->have == d->req->size)
		return FERRY_OK; /* we had it all already */
	if (rc == CURLE_OK && d->status == 416)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "HTTP 416: the file host has no bytes after %lld; the "
				  "manifest says %lld", (long long)d->have, (long long)d->req->size);
	if (rc == CURLE_OK && d->status != 200 && d->status != 206) {
		*retry = d->status >= 500 || d->status == 408 || d->status == 429;
		if (d->status == 410)
			return ferry_fail(st, FERRY_E_DOWNLOAD_FAILED, "HTTP 410: the link has expired");
		if (d->status == 403)
			return ferry_fail(st, FERRY_E_DOWNLOAD_FAILED, "HTTP 403: the file host refused the link "
					  "(made for another gateway, or changed)");
		return ferry_fail(st, FERRY_E_DOWNLOAD_FAILED, "HTTP %ld", d->status);
	}
	if (rc != CURLE_OK) {
		/* TLS trust problems do not heal by themselves; network ones may. */
		*retry = rc != CURLE_PEER_FAILED_VERIFICATION && rc != CURLE_SSL_CACERT_BADFILE &&
			 rc != CURLE_URL_MALFORMAT;
		return ferry_fail(st, FERRY_E_DOWNLOAD_FAILED, "%s", cu.easy_strerror(rc));
	}
	if (d->have < d->req->size) {
		*retry = true;
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the server sent %lld of %lld bytes", (long long)d->have,
				  (long long)d->req->size);
	}
	return FERRY_OK;
}

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static ferry_err finish(dl *d, ferry_status *st)
{
	unsigned char dig[32];

	EVP_DigestFinal_ex(d->md, dig, NULL);
	if (memcmp(dig, d->req->sha256, 32)) {
		if (ftruncate(d->fd, 0)) /* start clean next time */
			ferry_log(LOG_WARNING, "partial file: %s", strerror(errno));
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "SHA-256 of the download differs from the manifest");
	}
	if (sync_now(d))
		return ferry_fail(st, FERRY_E_INTERNAL, "fsync of the download: %s", strerror(errno));
	return FERRY_OK;
}

ferry_err ferry_download(const ferry_dl_req *req, ferry_status *st)
{
	dl d = {.req = req, .fd = -1};
	long delay = req->limits.retry_delay_ms > 0 ? req->limits.retry_delay_ms : 1000;
	ferry_err e;
	long space_delay = 250;
	bool retry, told_space = false, writer_on = false;

	if (strncmp(req->url, "https://", 8))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "only https:// links are allowed");
	if (!curl_ready(st))
		return st->code;
	if (!(d.md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(d.md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(d.md);
		return ferry_fail(st, FERRY_E_INTERNAL, "SHA-256 unavailable");
	}
	if ((e = open_partial(&d, st)))
		goto out;
	pthread_mutex_init(&d.lock, NULL);
	pthread_cond_init(&d.cond, NULL);
	for (int i = 0; i < RING; i++)
		if (!(d.buf[i] = malloc(CURL_BUFFER))) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
			goto stop;
		}
	if (pthread_create(&d.writer, NULL, writer_main, &d)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot start the download's writer thread");
		goto stop;
	}
	writer_on = true;
	for (int i = 0;; i++) {
		if (d.have == req->size) {
			e = FERRY_OK;
			break;
		}
		if (past_deadline(req)) {
			e = deadline_passed(&d, st);
			break;
		}
		e = attempt(&d, &retry, st);
		if (e == FERRY_E_INSUFFICIENT_SPACE) {
			/* the disk is full: keep what arrived and wait for room,
			 * however long (the deadline bounds it), without using up
			 * a retry; pauses from 0.25 s, doubling, at most 5 s */
			if (!told_space)
				ferry_log(LOG_WARNING, "download: %s; waiting for room", st->detail);
			told_space = true;
			if (d.have > d.synced)
				sync_now(&d); /* may fail too while the disk is full */
			nap_ms(space_delay);
			space_delay = space_delay * 2 > 5000 ? 5000 : space_delay * 2;
			if (req->progress && !req->progress(req->ctx, d.have, req->size)) {
				e = ferry_fail(st, FERRY_E_CANCELLED, "download cancelled");
				break;
			}
			i--;
			continue;
		}
		if (!e || !retry || i >= req->limits.retries)
			break;
		if (d.have > d.synced && sync_now(&d)) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "fsync: %s", strerror(errno));
			break;
		}
		nap_ms(delay);
		delay = delay * 2 > RETRY_DELAY_MAX_MS ? RETRY_DELAY_MAX_MS : delay * 2;
		if (req->progress && !req->progress(req->ctx, d.have, req->size)) {
			e = ferry_fail(st, FERRY_E_CANCELLED, "download cancelled");
			break;
		}
	}
	if (!e)
		e = finish(&d, st);
	else if (d.have > d.synced)
		sync_now(&d); /* keep what arrived for the next attempt */
stop:
	if (writer_on) {
		pthread_mutex_lock(&d.lock);
		d.quit = true;
		pthread_cond_broadcast(&d.cond);
		pthread_mutex_unlock(&d.lock);
		pthread_join(d.writer, NULL);
	}
	for (int i = 0; i < RING; i++)
		free(d.buf[i]);
	pthread_cond_destroy(&d.cond);
	pthread_mutex_destroy(&d.lock);
out:
	EVP_MD_CTX_free(d.md); /* the partial file's fd is the caller's */
	return e;
}
