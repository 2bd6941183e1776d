/* The SMP client flow shared by the serial and BLE adapters (smp_client.h).
 *
 * How an update goes, whatever the link:
 *   1. `image state` read: the device answers with its slots; the active
 *      slot's version is what the inventory shows.  Nothing is written to a
 *      device that does not answer this.
 *   2. `os params`: the device's buffer size and the transport's own limit
 *      bound each upload chunk.
 *   3. `image upload`: the first request carries len, the SHA-256 of the
 *      whole file (`sha`) and off 0; each answer names the next offset the
 *      device wants.  A device that still holds part of the same file (same
 *      sha) answers the first request with where it stopped, so an upload cut
 *      by a crash, a reset, an unplug or a lost radio link continues instead
 *      of starting over.  A request without an answer is sent again, same
 *      offset, a bounded number of times; the first one waits long, because
 *      the device erases the slot before answering.  An answer of off 0
 *      mid-way means the device lost the session: start again with the
 *      first-request fields.  A link that drops is brought back and the
 *      upload asks again with the first-request fields, so the device says
 *      where it stands.
 *   4. `image state` write {hash, confirm: false}: mark the new image (by its
 *      MCUboot SHA256 TLV, which differs from the upload sha) for a test boot;
 *      `os reset`.  Zephyr answers the reset and reboots only
 *      CONFIG_MCUMGR_GRP_OS_RESET_MS (250 ms) later, so an answer, or an
 *      echo, proves nothing: the device counts as rebooted when `image
 *      state` no longer lists the new image as pending in the secondary
 *      slot.  A reset the device answered is never sent again; one without
 *      an answer is sent again when the old firmware answers with the image
 *      still pending (see reboot()).
 *   5. `image state` read: if the active image is the new one, write
 *      {confirm: true} to make it permanent.  If the device came back on the
 *      old image, MCUboot reverted it: report it.  What counts is what the
 *      device lists: a confirm whose answer was lost succeeded if the new
 *      image shows as active and confirmed.
 *   If anything fails from step 4 on -- even when no answer to the test mark
 *   arrived, since the mark may have been written -- abort asks the device
 *   and resets it as often as its state asks for: an unconfirmed test image
 *   is reverted by MCUboot on the next boot, and a pending one first boots
 *   on trial, then reverts, so the MCU keeps running its old firmware.
 * Errors come as v1 {rc} or v2 {err: {group, rc}} and both are read.  Every
 * count is bounded by cfg.retries and every wait by a deadline, so a device
 * that misbehaves cannot hold the adapter forever.
 */
#include "smp_client.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcuboot.h"

/* Largest image the client reads into memory to parse its header and TLVs. */
#define IMAGE_PARSE_MAX (64u * 1024 * 1024)

/* TX_UNSENT: the request did not leave (the link was down); TX_DOWN: the
 * link went down while waiting for the answer. */
enum { TX_OK, TX_TIMEOUT, TX_DOWN, TX_UNSENT, TX_TOO_BIG };
/* request_ex: the link was lost and is back; the caller decides what to resend. */
#define REQ_RELINKED (-1)

void smp_log(const ferry_host_v1 *host, int level, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	host->log(host->ctx, level, msg);
}

int64_t smp_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep ms, but not past until_ms. */
static void nap(long ms, int64_t until_ms)
{
	int64_t left = until_ms - smp_now_ms();
	if (left < ms)
		ms = left > 0 ? (long)left : 0;
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

void smp_client_init(smp_client *c, const smp_transport_ops *ops, void *t, const char *name, const smp_client_cfg *cfg,
		     const ferry_host_v1 *host, const ferry_session_host_v1 *sh)
{
	memset(c, 0, sizeof(*c));
	c->ops = ops;
	c->t = t;
	c->name = name;
	c->cfg = *cfg;
	c->host = host;
	c->sh = sh;
}

static bool cancelled(const smp_client *c)
{
	return c->sh && c->sh->cancelled(c->sh->ctx);
}

/* An answer to one of the requests whose sequence numbers are in seqs (the
 * same group and command, op + 1): *which says which one.  Packets that
 * answer none of them -- late answers to abandoned requests, bodies that
 * are not maps -- are skipped as if lost, but only until the deadline: a
 * device that keeps sending something else cannot hold the wait. */
static int await_answer(smp_client *c, const uint8_t *seqs, unsigned n_seqs, uint8_t op, uint16_t group, uint8_t id,
			int64_t deadline, cbor_item_t **resp, unsigned *which)
{
	uint8_t in[SMP_PACKET_MAX];
	size_t len = 0;
	smp_hdr rh;

	*resp = NULL;
	for (;;) {
		int r = c->ops->recv(c->t, in, &len, deadline);
		struct cbor_load_result res;
		if (r == 0)
			return TX_TIMEOUT;
		if (r < 0)
			return TX_DOWN;
		if (len <= sizeof(in) && !smp_hdr_unpack(in, len, &rh) && rh.group == group && rh.id == id &&
		    rh.op == op + 1 && smp_body_sane(in + SMP_HDR_LEN, rh.len)) {
			for (unsigned i = 0; i < n_seqs; i++) {
				if (rh.seq != seqs[i])
					continue;
				*resp = cbor_load(in + SMP_HDR_LEN, rh.len, &res);
				if (*resp && cbor_isa_map(*resp)) {
					*which = i;
					return TX_OK;
				}
				if (*resp)
					cbor_decref(resp);
				*resp = NULL;
			}
		}
		if (smp_now_ms() >= deadline)
			return TX_TIMEOUT;
	}
}

/* One request, one answer with the same sequence number, group and command. */
static int transact(smp_client *c, uint8_t op, uint16_t group, uint8_t id, const cbor_item_t *body, long timeout_ms,
		    cbor_item_t **resp)
{
	uint8_t pkt[SMP_PACKET_MAX];
	smp_hdr h = {.op = op, .group = group, .id = id, .seq = ++c->seq};
	size_t n = smp_packet(&h, body, pkt, sizeof(pkt));
	unsigned which;

	*resp = NULL;
	if (!n)
		return TX_TOO_BIG;
	if (c->ops->send(c->t, pkt, n))
		return TX_UNSENT;
	return await_answer(c, &h.seq, 1, op, group, id, smp_now_ms() + timeout_ms, resp, &which);
}

/* The link went down: bring it back within reset_wait_ms. */
static int relink(smp_client *c, char *detail)
{
	char why[FERRY_ADAPTER_DETAIL_MAX] = "";
	int rc;

	smp_log(c->host, FERRY_LOG_WARNING, "%s: the link is down; reconnecting", c->name);
	rc = c->ops->reconnect(c->t, false, smp_now_ms() + c->cfg.reset_wait_ms, why);
	if (rc)
		return smp_fail(detail, rc, "%s: the link was lost and did not come back: %s", c->name, why);
	c->relinks++;
	smp_log(c->host, FERRY_LOG_INFO, "%s: link back (%u time%s this session)", c->name, c->relinks,
		c->relinks == 1 ? "" : "s");
	return 0;
}

static int request_ex(smp_client *c, uint8_t op, uint16_t group, uint8_t id, const cbor_item_t *body, long first_ms,
		      cbor_item_t **resp, char *detail, bool return_on_relink)
{
	for (int attempt = 0; attempt <= c->cfg.retries; attempt++) {
		int r = transact(c, op, group, id, body, attempt ? c->cfg.timeout_ms : first_ms, resp);
		if (r == TX_OK)
			return 0;
		if (r == TX_TOO_BIG)
			return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
					"%s: request for group %u command %u does not fit in a packet", c->name, group,
					id);
		if (cancelled(c))
			return smp_fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled");
		if (r == TX_DOWN || r == TX_UNSENT) {
			int rc = relink(c, detail);
			if (rc)
				return rc;
			if (return_on_relink)
				return REQ_RELINKED;
			continue;
		}
		smp_log(c->host, FERRY_LOG_WARNING, "%s: no answer to group %u command %u, retrying", c->name, group,
			id);
	}
	return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device does not answer (group %u command %u)",
			c->name, group, id);
}

int smp_client_request(smp_client *c, uint8_t op, uint16_t group, uint8_t id, const cbor_item_t *body, long first_ms,
		       cbor_item_t **resp, char *detail)
{
	return request_ex(c, op, group, id, body, first_ms, resp, detail, false);
}

static int body_error(const cbor_item_t *b, const char *what, char *detail)
{
	int group, rc = smp_body_rc(b, &group);
	if (!rc)
		return 0;
	return smp_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s refused by the device: rc %d%s", what, rc,
			group >= 0 ? " (v2 error)" : "");
}

/* What `image state` says about image 0: the active slot, and the slot
 * holding the image being installed (by its MCUboot hash), if any. */
typedef struct dev_state {
	bool have_active, active_confirmed;
	char version[FERRY_ADAPTER_STR_MAX];
	uint8_t hash[32];
	bool new_found, new_active, new_pending, new_confirmed;
} dev_state;

static void parse_state(const smp_client *c, const cbor_item_t *r, dev_state *st)
{
	cbor_item_t *imgs = smp_map_get(r, "images");

	memset(st, 0, sizeof(*st));
	for (size_t i = 0; imgs && cbor_isa_array(imgs) && i < cbor_array_size(imgs); i++) {
		cbor_item_t *e = cbor_array_get(imgs, i);
		const uint8_t *v, *h;
		size_t vn, hn;
		bool active = false, pending = false, confirmed = false;
		uint64_t img = 0;
		smp_map_bool(e, "active", &active);
		smp_map_bool(e, "pending", &pending);
		smp_map_bool(e, "confirmed", &confirmed);
		smp_map_uint(e, "image", &img);
		if (img == 0 && smp_map_bytes(e, "hash", &h, &hn) && hn == 32) {
			if (active && !st->have_active && smp_map_bytes(e, "version", &v, &vn) &&
			    vn < FERRY_ADAPTER_STR_MAX) {
				memcpy(st->version, v, vn);
				st->version[vn] = '\0';
				memcpy(st->hash, h, 32);
				st->active_confirmed = confirmed;
				st->have_active = true;
			}
			if (c->have_hash && !memcmp(h, c->new_hash, 32)) {
				st->new_found = true;
				st->new_active |= active;
				st->new_pending |= pending;
				st->new_confirmed |= active && confirmed;
			}
		}
		cbor_decref(&e);
	}
}

/* `image state` read, with retries and relinks; an answer without an
 * active image 0 is an error. */
static int read_dev_state(smp_client *c, dev_state *st, char *detail)
{
	cbor_item_t *m = cbor_new_definite_map(0), *r = NULL;
	int rc = smp_client_request(c, SMP_OP_READ, SMP_GROUP_IMAGE, SMP_IMG_STATE, m, c->cfg.timeout_ms, &r, detail);

	cbor_decref(&m);
	if (rc)
		return rc;
	parse_state(c, r, st);
	if (!st->have_active)
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: image state has no active image", c->name);
	cbor_decref(&r);
	return rc;
}

int smp_client_read_state(smp_client *c, char version[FERRY_ADAPTER_STR_MAX], uint8_t hash[32], char *detail)
{
	dev_state st;
	int rc = read_dev_state(c, &st, detail);

	if (rc)
		return rc;
	memcpy(version, st.version, sizeof(st.version));
	memcpy(hash, st.hash, 32);
	return 0;
}

/* The MCUboot header's version and the SHA256 TLV; the image must be the
 * one the manifest names (accident protection). */
static int image_identity(const ferry_image_v1 *img, uint8_t hash[32], char *detail)
{
	FILE *f = fopen(img->path, "rb");
	uint8_t *buf = f && img->length <= IMAGE_PARSE_MAX ? malloc(img->length ? img->length : 1) : NULL;
	mcuboot_info info;
	const char *why = "";
	int rc = 0;

	if (!buf || fread(buf, 1, img->length, f) != img->length)
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read %s", img->component);
	else if (mcuboot_parse(buf, img->length, &info, &why))
		rc = smp_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: %s", img->component, why);
	else if (!mcuboot_version_matches(info.version, img->version))
		rc = smp_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: image header says %s, manifest says %.64s",
			      img->component, info.version, img->version);
	else
		memcpy(hash, info.hash, 32);
	free(buf);
	if (f)
		fclose(f);
	return rc;
}

int smp_client_check(smp_client *c, const ferry_image_v1 *img, char *detail)
{
	char version[FERRY_ADAPTER_STR_MAX];
	uint8_t hash[32];
	int rc;

	if ((rc = image_identity(img, c->new_hash, detail)))
		return rc;
	c->have_hash = true;
	/* the device must answer before anything is written to it */
	return smp_client_read_state(c, version, hash, detail);
}

/* `os params`: the device's buffer size and count, for the upload's
 * packet size and window. */
static void read_params(smp_client *c)
{
	cbor_item_t *m = cbor_new_definite_map(0), *r = NULL;
	char detail[FERRY_ADAPTER_DETAIL_MAX];
	uint64_t buf = 0, count = 0;

	c->dev_buf = 0;
	c->dev_bufs = 0;
	/* a larger buffer than ours takes whatever we send */
	if (smp_client_request(c, SMP_OP_READ, SMP_GROUP_OS, SMP_OS_PARAMS, m, c->cfg.timeout_ms, &r, detail) == 0 &&
	    smp_map_uint(r, "buf_size", &buf) && buf > 0) {
		c->dev_buf = buf < SMP_PACKET_MAX ? (size_t)buf : SMP_PACKET_MAX;
		if (smp_map_uint(r, "buf_count", &count))
			c->dev_bufs = count < SMP_WINDOW_MAX + 1 ? (unsigned)count : SMP_WINDOW_MAX + 1;
	}
	cbor_decref(&m);
	if (r)
		cbor_decref(&r);
}

/* Upload requests in flight at once: one fewer than the device's buffers
 * (one stays free for the request being received while the others wait),
 * never more than the transport carries; one when the device did not say. */
static unsigned window_for(const smp_client *c)
{
	unsigned w = c->dev_bufs > 1 ? c->dev_bufs - 1 : 1;
	unsigned t = c->ops->max_in_flight ? c->ops->max_in_flight : 1;
	return w < t ? w : t;
}

static int file_sha(const char *path, uint8_t out[32])
{
	FILE *f = fopen(path, "rb");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t buf[65536];
	size_t n;

	if (!f || !md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		if (f)
			fclose(f);
		EVP_MD_CTX_free(md);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		EVP_DigestUpdate(md, buf, n);
	fclose(f);
	EVP_DigestFinal_ex(md, out, NULL);
	EVP_MD_CTX_free(md);
	return 0;
}

static cbor_item_t *upload_req(uint64_t off, const uint8_t *data, size_t n, uint64_t len, const uint8_t sha[32])
{
	cbor_item_t *m = cbor_new_definite_map(off ? 2 : 5);
	if (!off) {
		smp_map_put(m, "image", smp_uint(0));
		smp_map_put(m, "len", smp_uint(len));
		smp_map_put(m, "sha", cbor_build_bytestring(sha, 32));
	}
	smp_map_put(m, "off", smp_uint(off));
	smp_map_put(m, "data", cbor_build_bytestring(data, n));
	return m;
}

/* One answer to an upload request: the next offset the device wants. */
static int upload_answer(smp_client *c, cbor_item_t *r, uint64_t len, uint64_t *next, char *detail)
{
	bool match = true;
	int rc = body_error(r, "upload", detail);

	if (rc)
		return rc;
	if (!smp_map_uint(r, "off", next) || *next > len)
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: upload answer without a sane off", c->name);
	if (*next == len && smp_map_bool(r, "match", &match) && !match)
		return smp_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
				"%s: the device's SHA-256 of the upload differs", c->name);
	return 0;
}

/* An upload request in flight.  A stale one was sent before the device
 * turned out to be elsewhere: its answer only says it left the device's
 * buffers. */
typedef struct inflight {
	uint8_t seq;
	uint64_t off;
	size_t n;
	bool first, stale;
} inflight;

/* The requests up to q[upto] have their answers (or never will); those
 * after it are marked stale when `stale`. */
static void settle_window(inflight *q, unsigned *nq, unsigned upto, bool stale)
{
	memmove(q, q + upto + 1, sizeof(q[0]) * (*nq - upto - 1));
	*nq -= upto + 1;
	for (unsigned i = 0; stale && i < *nq; i++)
		q[i].stale = true;
}

/* Build and send the upload request at off with as many bytes of the image
 * as the largest packet takes (and cfg.chunk allows).  Its size is measured,
 * not guessed: the CBOR heads grow with off, len and the data's length, and
 * a first request carries len, sha and image.  0 sent (q filled in); 1 not
 * even SMP_UPLOAD_MIN_CHUNK bytes fit; -1 the image could not be read;
 * TX_UNSENT the link is down. */
static int send_chunk(smp_client *c, FILE *f, const uint8_t sha[32], uint64_t len, uint64_t off, bool first,
		      uint8_t *data, inflight *q)
{
	uint8_t pkt[SMP_PACKET_MAX];
	size_t mp = c->ops->max_packet(c->t, c->dev_buf), limit = mp ? SMP_PACKET_MAX : 128, k = 0;
	smp_hdr h = {.op = SMP_OP_WRITE, .group = SMP_GROUP_IMAGE, .id = SMP_IMG_UPLOAD, .seq = (uint8_t)(c->seq + 1)};

	if (!mp || mp > SMP_PACKET_MAX)
		mp = SMP_PACKET_MAX;
	if (c->cfg.chunk > 0 && (size_t)c->cfg.chunk < limit)
		limit = (size_t)c->cfg.chunk;
	size_t n = len - off < limit ? (size_t)(len - off) : limit;
	if (n > mp)
		n = mp;
	if (fseek(f, (long)off, SEEK_SET) || fread(data, 1, n, f) != n)
		return -1;
	for (;;) {
		cbor_item_t *req = upload_req(first ? 0 : off, data, n, len, sha);
		k = smp_packet(&h, req, pkt, sizeof(pkt));
		cbor_decref(&req);
		if (k && k <= mp)
			break;
		/* too big by what it is over (or, over our own buffer, by a
		 * request's worth): the heads shrink with n, never grow */
		size_t over = k ? k - mp : SMP_UPLOAD_OVERHEAD;
		if (n < SMP_UPLOAD_MIN_CHUNK + over || (off + n < len && n - over < SMP_UPLOAD_MIN_CHUNK))
			return 1;
		n -= over;
	}
	if (n < SMP_UPLOAD_MIN_CHUNK && off + n < len)
		return 1;
	c->seq = h.seq;
	if (c->ops->send(c->t, pkt, k))
		return TX_UNSENT;
	*q = (inflight){.seq = h.seq, .off = off, .n = n, .first = first, .stale = false};
	return 0;
}

int smp_client_upload(smp_client *c, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	uint8_t sha[32], *data;
	FILE *f;
	uint64_t off = 0, sent = 0, len = img->length;
	inflight q[SMP_WINDOW_MAX];
	unsigned nq = 0, window;
	int rc = 0, setbacks = 0, relinks = 0, misses = 0;
	bool first = true;

	if (file_sha(img->path, sha) || !(f = fopen(img->path, "rb")))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read the image of %s", img->component);
	if (!(data = malloc(SMP_PACKET_MAX))) {
		fclose(f);
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	read_params(c);
	window = window_for(c);
	smp_log(c->host, FERRY_LOG_INFO, "%s: uploading %llu bytes in packets of up to %zu bytes, %u in flight",
		c->name, (unsigned long long)len, c->ops->max_packet(c->t, c->dev_buf), window);
	while (off < len) {
		bool down = false;
		if (cancelled(c)) {
			rc = smp_fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled at offset %llu",
				      (unsigned long long)off);
			break;
		}
		/* Fill the window.  A first request goes alone: its answer says
		 * where the device stands (and it may erase first). */
		while (!rc && !down && nq < (first ? 1 : window) && (first ? nq == 0 : sent < len)) {
			int s = send_chunk(c, f, sha, len, first ? 0 : sent, first, data, &q[nq]);
			if (s == 1)
				rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
					      "%s: the link's packets are too small to carry an upload: at most %zu "
					      "bytes (the device's buf_size %zu), an upload request needs up to %d and "
					      "some data",
					      c->name, c->ops->max_packet(c->t, c->dev_buf), c->dev_buf,
					      SMP_UPLOAD_OVERHEAD);
			else if (s < 0)
				rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read the image of %s",
					      img->component);
			else if (s == TX_UNSENT)
				down = true;
			else {
				sent = q[nq].off + q[nq].n;
				nq++;
			}
		}
		if (rc)
			break;
		if (!nq && !down) {
			sent = off; /* nothing in flight, nothing sent: never wait for nothing */
			continue;
		}
		/* the answers come in order; each names the next offset the
		 * device wants */
		cbor_item_t *r = NULL;
		unsigned which = 0;
		uint8_t seqs[SMP_WINDOW_MAX];
		for (unsigned i = 0; i < nq; i++)
			seqs[i] = q[i].seq;
		int a = down ? TX_DOWN
			     : await_answer(c, seqs, nq, SMP_OP_WRITE, SMP_GROUP_IMAGE, SMP_IMG_UPLOAD,
					    smp_now_ms() + (nq && q[0].first && !misses ? c->cfg.first_timeout_ms
										  : c->cfg.timeout_ms),
					    &r, &which);
		if (cancelled(c)) {
			if (r)
				cbor_decref(&r);
			continue; /* said at the top */
		}
		if (a == TX_DOWN) {
			/* The device may have kept the upload (same sha) or lost it:
			 * a first request makes it say which. */
			if ((rc = relink(c, detail)))
				break;
			if (++relinks > c->cfg.retries) {
				rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
					      "%s: the link dropped %d times during the upload", c->name, relinks);
				break;
			}
			smp_log(c->host, FERRY_LOG_INFO,
				"%s: link lost at offset %llu; asking the device where the upload stands", c->name,
				(unsigned long long)off);
			first = true;
			off = sent = 0;
			nq = 0;
			misses = 0; /* a new first request: it may wait for an erase */
			continue;
		}
		if (a == TX_TIMEOUT) {
			/* no answer: the same request again (the device may have it:
			 * then it says where it is) */
			if (++misses > c->cfg.retries) {
				rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
					      "%s: the device does not answer (group %u command %u)", c->name,
					      SMP_GROUP_IMAGE, SMP_IMG_UPLOAD);
				break;
			}
			smp_log(c->host, FERRY_LOG_WARNING, "%s: no answer to group %u command %u, retrying", c->name,
				SMP_GROUP_IMAGE, SMP_IMG_UPLOAD);
			sent = off;
			nq = 0;
			continue;
		}
		if (q[which].stale) {
			/* it left the device's buffers: room for another */
			cbor_decref(&r);
			settle_window(q, &nq, which, false);
			continue;
		}
		uint64_t next;
		rc = upload_answer(c, r, len, &next, detail);
		cbor_decref(&r);
		if (rc)
			break;
		const inflight got = q[which];
		unsigned live = 0; /* the oldest request still meant */
		while (q[live].stale)
			live++;
		if (got.first && next > got.n)
			smp_log(c->host, FERRY_LOG_INFO, "%s: the device holds %llu bytes already; resuming there",
				c->name, (unsigned long long)next);
		if (next == got.off + got.n && next > off) {
			/* this one, and any before it whose answers were lost */
			settle_window(q, &nq, which, false);
			misses = 0;
		} else if (which > live && next == q[live].off) {
			/* the device is where the oldest one meant was: that
			 * request was lost, and those after it were out of step */
			if (++misses > c->cfg.retries) {
				rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
					      "%s: the device does not answer (group %u command %u)", c->name,
					      SMP_GROUP_IMAGE, SMP_IMG_UPLOAD);
				break;
			}
			settle_window(q, &nq, which, true);
			sent = next;
			continue;
		} else {
			if (next <= off) {
				/* Not a step forward: the device lost the session (0),
				 * took nothing, or wants an earlier offset.  Each can
				 * happen once in a while; a device that keeps doing it
				 * must not keep us forever, whether it repeats, goes
				 * back or swings to and fro. */
				if (++setbacks > c->cfg.retries) {
					rc = next == 0 && off > 0
						 ? smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
							    "%s: the device lost the upload %d times", c->name, setbacks)
						 : smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
							    "%s: the device does not advance the upload: %d answers at "
							    "or before the offset sent, the last off %llu for a request "
							    "at %llu",
							    c->name, setbacks, (unsigned long long)next,
							    (unsigned long long)got.off);
					break;
				}
				if (next == 0 && off > 0)
					smp_log(c->host, FERRY_LOG_WARNING,
						"%s: the device lost the upload; starting over", c->name);
				else
					smp_log(c->host, FERRY_LOG_WARNING,
						"%s: the device answered off %llu to a request at %llu; going on from "
						"there",
						c->name, (unsigned long long)next, (unsigned long long)got.off);
			}
			/* the device is elsewhere: what is in flight is stale (it
			 * still takes the device's buffers until answered) and
			 * the upload goes on from where the device is */
			settle_window(q, &nq, which, true);
			sent = next;
		}
		first = next == 0;
		if (first)
			misses = 0; /* a new first request: it may wait for an erase */
		off = next;
		if (sent < off)
			sent = off;
		*resume_from = off;
		if (c->sh)
			c->sh->progress(c->sh->ctx, off, len);
	}
	free(data);
	fclose(f);
	return rc;
}

/* What a reset is for, and so how to tell from `image state` that the
 * device has booted since: an answer to `os reset`, or to anything else,
 * only says the old firmware still runs -- Zephyr answers and reboots
 * CONFIG_MCUMGR_GRP_OS_RESET_MS later. */
enum reboot_goal {
	/* the new image is marked for a test boot: booted once it runs, or
	 * once MCUboot dropped the mark (it would not boot) */
	LEAVE_PENDING,
	/* the new image runs on trial: booted once it no longer runs (MCUboot
	 * reverted it), or once it is confirmed (no reset can undo that) */
	LEAVE_TRIAL,
};

static bool rebooted(const dev_state *st, enum reboot_goal goal)
{
	if (!st->new_found)
		return true; /* nothing of the new image left to wait for */
	if (goal == LEAVE_PENDING)
		return st->new_active || !st->new_pending;
	return !st->new_active || st->new_confirmed;
}

/* Mark the new image for a test boot again: a reset of ours reached the
 * new image on trial and MCUboot reverted it (see reboot). */
static int mark_test(smp_client *c, char *detail)
{
	cbor_item_t *m = cbor_new_definite_map(2), *r = NULL;
	int rc;

	smp_map_put(m, "hash", cbor_build_bytestring(c->new_hash, 32));
	smp_map_put(m, "confirm", cbor_build_bool(false));
	rc = smp_client_request(c, SMP_OP_WRITE, SMP_GROUP_IMAGE, SMP_IMG_STATE, m, c->cfg.timeout_ms, &r, detail);
	cbor_decref(&m);
	if (rc)
		return rc;
	rc = body_error(r, "test boot", detail);
	cbor_decref(&r);
	return rc;
}

/* `os reset` (when send_first), then ask `image state` until the device has
 * booted for `goal`, within reset_wait_ms.  Whether to send the reset again
 * is decided by what the device says, never by how long it took:
 *   - a reset the device answered was accepted: Zephyr reboots
 *     CONFIG_MCUMGR_GRP_OS_RESET_MS later, however long that is on our
 *     clock, so it is never sent again; the old firmware may answer `image
 *     state` meanwhile, and is asked again until the reboot shows;
 *   - a reset without an answer (lost on the way, or its answer lost, or
 *     refused) is sent again as soon as the old firmware answers `image
 *     state` with the new image still pending: a second reset that reaches
 *     the old firmware changes nothing (Zephyr keeps the one scheduled);
 *   - the one case a second reset can do harm is when the device rebooted
 *     between that answer and the resend, so that it reaches the new image
 *     on trial and MCUboot reverts it.  The device then lists the new image
 *     as neither active nor pending after a resend of ours: when the reboot
 *     is meant to start the image (may_remark: activate, confirm; never an
 *     abort, which wants it gone), it is marked for a test boot again and
 *     reset, once -- an image that MCUboot reverts by itself is not
 *     retried beyond that.
 * Links that drop with a reset (BLE) are given the chance to drop first,
 * then brought back. */
static int reboot(smp_client *c, enum reboot_goal goal, bool send_first, bool may_remark, char *detail)
{
	int64_t until = smp_now_ms() + c->cfg.reset_wait_ms;
	char why[FERRY_ADAPTER_DETAIL_MAX] = "";
	/* without send_first, a reset of ours may be on its way from before a
	 * restart, or may never have been sent */
	bool linked = true, send = send_first, accepted = false, resent = !send_first;
	int sent = 0, remarks = 0, g;

	for (;;) {
		cbor_item_t *m, *r = NULL;
		dev_state st;
		int tx;
		if (!linked && !(linked = c->ops->reconnect(c->t, false, until, why) == 0))
			break;
		if (send) {
			if (sent++ > c->cfg.retries)
				return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
						"%s: the device did not reset: it still runs its old firmware after %d "
						"os reset requests",
						c->name, sent - 1);
			resent |= sent > 1;
			m = cbor_new_definite_map(0);
			tx = transact(c, SMP_OP_WRITE, SMP_GROUP_OS, SMP_OS_RESET, m, c->cfg.timeout_ms, &r);
			cbor_decref(&m);
			accepted = tx == TX_OK && !smp_body_rc(r, &g);
			if (tx == TX_OK && !accepted)
				smp_log(c->host, FERRY_LOG_WARNING, "%s: os reset refused: rc %d", c->name,
					smp_body_rc(r, &g));
			if (r)
				cbor_decref(&r);
			if (tx == TX_UNSENT) { /* it never left: bring the link back and send it again */
				linked = false;
				sent--;
				if (smp_now_ms() >= until)
					break;
				continue;
			}
			send = false;
			/* a link that goes down with the device: let it drop, bring it back */
			linked = tx != TX_DOWN && c->ops->reconnect(c->t, true, until, why) == 0;
			continue;
		}
		if (smp_now_ms() >= until)
			break;
		m = cbor_new_definite_map(0);
		int64_t left = until - smp_now_ms();
		tx = transact(c, SMP_OP_READ, SMP_GROUP_IMAGE, SMP_IMG_STATE, m,
			      left < c->cfg.timeout_ms ? (long)left : c->cfg.timeout_ms, &r);
		cbor_decref(&m);
		if (tx == TX_DOWN || tx == TX_UNSENT) {
			linked = false;
			continue;
		}
		if (tx != TX_OK)
			continue; /* the device is resetting: nothing answers for a moment */
		parse_state(c, r, &st);
		cbor_decref(&r);
		if (may_remark && goal == LEAVE_PENDING && resent && st.have_active && st.new_found &&
		    !st.new_active && !st.new_pending && remarks < 1) {
			int rc;
			remarks++;
			smp_log(c->host, FERRY_LOG_WARNING,
				"%s: the new image was reverted after a second os reset: marking it for a test boot "
				"again",
				c->name);
			if ((rc = mark_test(c, detail)))
				return rc;
			resent = false;
			sent = 0;
			send = true;
			continue;
		}
		if (st.have_active && rebooted(&st, goal))
			return 0;
		if (!accepted && st.have_active && st.new_found && st.new_pending && !st.new_active) {
			smp_log(c->host, FERRY_LOG_WARNING,
				"%s: os reset got no answer and the old firmware still runs: sending the reset again",
				c->name);
			send = true;
			continue;
		}
		nap(50, until);
	}
	return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device did not come back after reset%s%s",
			c->name, why[0] ? ": " : "", why);
}

int smp_client_activate(smp_client *c, char *detail)
{
	int rc;

	if (!c->have_hash)
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: no checked image to activate", c->name);
	/* from here the image may be pending even if no answer says so */
	c->tested = true;
	if ((rc = mark_test(c, detail)))
		return rc;
	return reboot(c, LEAVE_PENDING, true, true, detail);
}

/* The new image is running and confirmed: the install succeeded. */
static bool permanent(const smp_client *c, const dev_state *st)
{
	return st->have_active && !memcmp(st->hash, c->new_hash, 32) && st->active_confirmed;
}

/* Know which MCUboot hash to look for: from the checked image, or (in a
 * fresh session, after a restart) from the image file. */
static int know_hash(smp_client *c, const ferry_image_v1 *img, char *detail)
{
	if (c->have_hash)
		return 0;
	if (!img || image_identity(img, c->new_hash, detail))
		return FERRY_ADAPTER_E_INSTALL_FAILED;
	c->have_hash = true;
	return 0;
}

int smp_client_confirm(smp_client *c, const ferry_image_v1 *img, char version[FERRY_ADAPTER_STR_MAX], char *detail)
{
	dev_state st;
	int rc;

	if ((rc = know_hash(c, img, detail)) || (rc = read_dev_state(c, &st, detail)))
		return rc;
	if (st.new_found && st.new_pending && !st.new_active) {
		/* marked for the test boot but not booted yet: a reset still on
		 * its way, or ferryd stopped before it sent one */
		smp_log(c->host, FERRY_LOG_INFO,
			"%s: the new image is still pending: waiting for the device to boot it", c->name);
		c->tested = true;
		if ((rc = reboot(c, LEAVE_PENDING, false, true, detail)) || (rc = read_dev_state(c, &st, detail)))
			return rc;
	}
	memcpy(version, st.version, sizeof(st.version));
	if (memcmp(st.hash, c->new_hash, 32))
		return smp_fail(detail, FERRY_ADAPTER_E_VERSION_MISMATCH,
				"%s came back running %.64s: the new image did not boot or was reverted", c->name,
				version);
	/* runs on trial (or was confirmed already, by the application itself
	 * or by a commit whose answer was lost before a restart) */
	c->tested = !permanent(c, &st);
	return 0;
}

int smp_client_commit(smp_client *c, const ferry_image_v1 *img, char *detail)
{
	char d2[FERRY_ADAPTER_DETAIL_MAX];
	dev_state st, after;
	cbor_item_t *m, *r = NULL;
	int rc;

	if ((rc = know_hash(c, img, detail)) || (rc = read_dev_state(c, &st, detail)))
		return rc;
	if (permanent(c, &st)) {
		c->tested = false;
		return 0;
	}
	if (!st.have_active || memcmp(st.hash, c->new_hash, 32))
		return smp_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
				"%s does not run the new image (it runs %.64s): nothing to commit", c->name,
				st.version);
	c->tested = true;
	m = cbor_new_definite_map(1);
	smp_map_put(m, "confirm", cbor_build_bool(true));
	rc = smp_client_request(c, SMP_OP_WRITE, SMP_GROUP_IMAGE, SMP_IMG_STATE, m, c->cfg.timeout_ms, &r, detail);
	cbor_decref(&m);
	if (rc == 0) {
		/* answered: accepted or refused */
		if (!(rc = body_error(r, "confirm", detail)))
			c->tested = false;
		cbor_decref(&r);
		return rc;
	}
	if (rc == FERRY_ADAPTER_E_CANCELLED)
		return rc;
	/* No answer: the confirm may have been written and only its answers
	 * lost.  What the device lists decides. */
	if (read_dev_state(c, &after, d2) == 0 && permanent(c, &after)) {
		smp_log(c->host, FERRY_LOG_WARNING,
			"%s: no answer to confirm, but the device lists the new image as confirmed", c->name);
		c->tested = false;
		return 0;
	}
	return rc;
}

int smp_client_abort(smp_client *c, const ferry_image_v1 *img, char *detail)
{
	char d2[FERRY_ADAPTER_DETAIL_MAX];

	if (know_hash(c, img, d2))
		return 0; /* not an image we could have marked: the device was not touched by it */
	/* At most two resets: a pending image boots on trial, then reverts. */
	for (int round = 0;; round++) {
		dev_state st;
		enum reboot_goal goal;
		int rc = read_dev_state(c, &st, detail);
		if (rc)
			return rc; /* a later abort may still reach it */
		if (st.new_found && st.new_active && !st.new_confirmed)
			goal = LEAVE_TRIAL;
		else if (st.new_found && st.new_pending && !st.new_active)
			goal = LEAVE_PENDING;
		else if (st.new_found && st.new_active && st.new_confirmed)
			return smp_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
					"%s runs the new image for good (it was confirmed): it cannot be reverted",
					c->name);
		else {
			c->tested = false; /* reverted, or never marked */
			return 0;
		}
		if (round == 2)
			return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
					"%s: the new image is still %s after two resets", c->name,
					goal == LEAVE_TRIAL ? "running on trial" : "pending");
		smp_log(c->host, FERRY_LOG_WARNING, "%s: resetting so that MCUboot %s", c->name,
			goal == LEAVE_TRIAL ? "reverts the unconfirmed image"
					    : "drops the pending image (it boots on trial first, then reverts)");
		if ((rc = reboot(c, goal, true, false, detail)))
			return rc;
	}
}
