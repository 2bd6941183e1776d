/* serial-smp: updates an MCU running MCUboot and an mcumgr (SMP) server on a
 * UART, the way Zephyr applications ship.
 *
 * How an update goes over the wire:
 *   1. `image state` read: the device answers with its slots; the active
 *      slot's version is what the inventory shows.  Nothing is written to a
 *      device that does not answer this.
 *   2. `os params`: the device's buffer size bounds each upload chunk
 *      (buf_size - 4 for the serial frame, minus the request's own fields).
 *   3. `image upload`: the first request carries len, the SHA-256 of the
 *      whole file (`sha`) and off 0; each answer names the next offset the
 *      device wants.  A device that still holds part of the same file (same
 *      sha) answers the first request with where it stopped, so an upload cut
 *      by a crash, a reset or an unplug continues instead of starting over.
 *      A request without an answer is sent again, same offset, a bounded
 *      number of times; the first one waits long, because the device erases
 *      the slot before answering.  An answer of off 0 mid-way means the
 *      device lost the session: start again with the first-request fields.
 *   4. `image state` write {hash, confirm: false}: mark the new image (by its
 *      MCUboot SHA256 TLV, which differs from the upload sha) for a test boot;
 *      `os reset`; wait for the device to answer again.
 *   5. `image state` read: if the active image is the new one, write
 *      {confirm: true} to make it permanent and read the version back.  If
 *      the device came back on the old image, MCUboot reverted it: report it.
 *   If anything fails after step 4, abort resets the device once more: an
 *   unconfirmed test image is reverted by MCUboot on that boot, so the MCU
 *   keeps running its old firmware.
 * Frames are the mcumgr serial transport (see adapters/smp/smp.h); errors
 * come as v1 {rc} or v2 {err: {group, rc}} and both are read.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"
#include "smp.h"

int ferry_adapter_abi(const int *offered, size_t n);
const ferry_adapter_v1 *ferry_adapter_table_v1(void);

#define PORTS_MAX 8
#define IMAGE_MAGIC 0x96f3b83du
/* Room a first upload request needs besides the data: keys, len, off, sha,
 * image, CBOR headers. */
#define UPLOAD_OVERHEAD 96

typedef struct port {
	char path[256];
	char vendor_id[FERRY_ADAPTER_STR_MAX], class_id[FERRY_ADAPTER_STR_MAX];
	char component[FERRY_ADAPTER_STR_MAX];
	speed_t baud;
	bool rtscts;
} port;

typedef struct state {
	const ferry_host_v1 *host;
	port ports[PORTS_MAX];
	size_t n;
	long timeout_ms, first_timeout_ms, reset_wait_ms, chunk;
	int retries;
} state;

typedef struct sess {
	state *s;
	const port *p;
	const ferry_session_host_v1 *sh;
	int fd;
	uint8_t seq;
	smp_serial_rx rx;
	uint8_t new_hash[32]; /* MCUboot SHA256 TLV of the image being installed */
	bool tested;          /* marked for a test boot and reset: abort must revert */
} sess;

static int fail(char *detail, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *detail, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, FERRY_ADAPTER_DETAIL_MAX, fmt, ap);
	va_end(ap);
	return code;
}

static void logf_(const state *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(const state *s, int level, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->host->log(s->host->ctx, level, msg);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *cfg(const state *s, const char *key)
{
	return s->host->config(s->host->ctx, key);
}

static long cfg_long(const state *s, const char *key, long def, long min, long max)
{
	const char *v = cfg(s, key);
	char *end;
	long x = v ? strtol(v, &end, 10) : def;
	if (v && (*end || x < min || x > max))
		return -1;
	return x;
}

static speed_t baud_of(long b)
{
	switch (b) {
	case 9600: return B9600;
	case 19200: return B19200;
	case 38400: return B38400;
	case 57600: return B57600;
	case 115200: return B115200;
	case 230400: return B230400;
	case 460800: return B460800;
	case 921600: return B921600;
	case 1000000: return B1000000;
	default: return 0;
	}
}

static int load_port(state *s, size_t i, char *detail)
{
	char k[64];
	const char *path, *v, *c, *comp, *flow;
	port *p = &s->ports[i];

	snprintf(k, sizeof(k), "ports[%zu].path", i);
	if (!(path = cfg(s, k)))
		return 1; /* no more ports */
	snprintf(k, sizeof(k), "ports[%zu].vendor_id", i);
	v = cfg(s, k);
	snprintf(k, sizeof(k), "ports[%zu].class_id", i);
	c = cfg(s, k);
	snprintf(k, sizeof(k), "ports[%zu].component", i);
	comp = cfg(s, k);
	snprintf(k, sizeof(k), "ports[%zu].flow", i);
	flow = cfg(s, k);
	snprintf(k, sizeof(k), "ports[%zu].baud", i);
	long baud = cfg_long(s, k, 115200, 1, 4000000);
	if (path[0] != '/' || strlen(path) >= sizeof(p->path) || !v || !c || !comp || strlen(v) >= sizeof(p->vendor_id) ||
	    strlen(c) >= sizeof(p->class_id) || strlen(comp) >= sizeof(p->component))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			    "ports[%zu]: needs an absolute path, vendor_id, class_id and component", i);
	if (!(p->baud = baud_of(baud)))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "ports[%zu].baud: %ld is not a supported rate", i, baud);
	if (flow && strcmp(flow, "none") && strcmp(flow, "rtscts"))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "ports[%zu].flow: none or rtscts", i);
	snprintf(p->path, sizeof(p->path), "%s", path);
	snprintf(p->vendor_id, sizeof(p->vendor_id), "%s", v);
	snprintf(p->class_id, sizeof(p->class_id), "%s", c);
	snprintf(p->component, sizeof(p->component), "%s", comp);
	p->rtscts = flow && !strcmp(flow, "rtscts");
	return 0;
}

static int s_init(const ferry_host_v1 *host, void **st, char *detail)
{
	state *s = calloc(1, sizeof(*s));
	int rc = 0;

	if (!s)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	s->host = host;
	s->timeout_ms = cfg_long(s, "timeout_ms", 2000, 50, 60000);
	s->first_timeout_ms = cfg_long(s, "first_timeout_ms", 30000, 100, 600000);
	s->reset_wait_ms = cfg_long(s, "reset_wait_ms", 15000, 100, 600000);
	s->retries = (int)cfg_long(s, "retries", 5, 0, 100);
	s->chunk = cfg_long(s, "chunk", 0, 0, SMP_PACKET_MAX - UPLOAD_OVERHEAD);
	if (s->timeout_ms < 0 || s->first_timeout_ms < 0 || s->reset_wait_ms < 0 || s->retries < 0 || s->chunk < 0) {
		free(s);
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			    "timeout_ms, first_timeout_ms, reset_wait_ms, retries or chunk is out of range");
	}
	for (size_t i = 0; i < PORTS_MAX && !(rc = load_port(s, i, detail)); i++)
		s->n = i + 1;
	if (rc < 0 || rc > 1) {
		free(s);
		return rc;
	}
	*st = s;
	return 0;
}

static void s_fini(void *st)
{
	free(st);
}

static int open_tty(const port *p)
{
	struct termios t;
	int fd = open(p->path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		cfsetispeed(&t, p->baud);
		cfsetospeed(&t, p->baud);
		t.c_cflag |= CLOCAL | CREAD;
		if (p->rtscts)
			t.c_cflag |= CRTSCTS;
		else
			t.c_cflag &= ~(tcflag_t)CRTSCTS;
		tcsetattr(fd, TCSANOW, &t);
	}
	tcflush(fd, TCIOFLUSH);
	return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = {.fd = fd, .events = POLLOUT};
			poll(&pf, 1, 100);
			continue;
		}
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One request, one answer with the same sequence number, or a timeout (1).
 * Answers to earlier, abandoned requests are skipped. */
static int transact(sess *x, uint8_t op, uint16_t group, uint8_t id, const cbor_item_t *body, long timeout_ms,
		    cbor_item_t **resp)
{
	uint8_t pkt[SMP_PACKET_MAX], enc[SMP_SERIAL_ENCODED_MAX(SMP_PACKET_MAX)], buf[512];
	smp_hdr h = {.op = op, .group = group, .id = id, .seq = ++x->seq}, rh;
	size_t n = smp_packet(&h, body, pkt, sizeof(pkt)), e;
	int64_t deadline = now_ms() + timeout_ms;

	*resp = NULL;
	if (!n || !(e = smp_serial_encode(pkt, n, enc, sizeof(enc))) || write_all(x->fd, enc, e))
		return -1;
	while (now_ms() < deadline) {
		struct pollfd pf = {.fd = x->fd, .events = POLLIN};
		int left = (int)(deadline - now_ms());
		if (poll(&pf, 1, left > 0 ? left : 0) <= 0)
			continue;
		ssize_t r = read(x->fd, buf, sizeof(buf));
		if (r <= 0) {
			struct timespec ts = {0, 20 * 1000000L};
			nanosleep(&ts, NULL); /* the device end is gone for a moment (reset) */
			continue;
		}
		for (ssize_t i = 0; i < r; i++) {
			size_t len;
			struct cbor_load_result res;
			if (smp_serial_feed(&x->rx, buf[i], &len) != 1 || smp_hdr_unpack(x->rx.pkt, len, &rh) ||
			    rh.seq != h.seq || rh.group != group || rh.id != id || rh.op != op + 1)
				continue;
			*resp = cbor_load(x->rx.pkt + SMP_HDR_LEN, rh.len, &res);
			if (!*resp || !cbor_isa_map(*resp)) {
				if (*resp)
					cbor_decref(resp);
				*resp = NULL;
				continue; /* not a map: treat as lost */
			}
			return 0;
		}
	}
	return 1;
}

/* transact with bounded retries of the same request. */
static int request(sess *x, uint8_t op, uint16_t group, uint8_t id, const cbor_item_t *body, long first_ms,
		   cbor_item_t **resp, char *detail)
{
	for (int attempt = 0; attempt <= x->s->retries; attempt++) {
		int r = transact(x, op, group, id, body, attempt ? x->s->timeout_ms : first_ms, resp);
		if (r == 0)
			return 0;
		if (r < 0)
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: write failed: %s", x->p->path,
				    strerror(errno));
		if (x->sh && x->sh->cancelled(x->sh->ctx))
			return fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled");
		logf_(x->s, FERRY_LOG_WARNING, "%s: no answer to group %u command %u, retrying", x->p->path, group, id);
	}
	return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device does not answer (group %u command %u)",
		    x->p->path, group, id);
}

static int body_error(const cbor_item_t *b, const char *what, char *detail)
{
	int group, rc = smp_body_rc(b, &group);
	if (!rc)
		return 0;
	return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s refused by the device: rc %d%s", what, rc,
		    group >= 0 ? " (v2 error)" : "");
}

/* The active slot of image 0: version and hash. */
static int read_state(sess *x, char *version, uint8_t hash[32], char *detail)
{
	cbor_item_t *m = cbor_new_definite_map(0), *r = NULL, *imgs;
	int rc = request(x, SMP_OP_READ, SMP_GROUP_IMAGE, SMP_IMG_STATE, m, x->s->timeout_ms, &r, detail);

	cbor_decref(&m);
	if (rc)
		return rc;
	rc = fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: image state has no active image", x->p->path);
	imgs = smp_map_get(r, "images");
	for (size_t i = 0; imgs && cbor_isa_array(imgs) && i < cbor_array_size(imgs); i++) {
		cbor_item_t *e = cbor_array_get(imgs, i);
		const uint8_t *v, *h;
		size_t vn, hn;
		bool active = false;
		uint64_t img = 0;
		smp_map_bool(e, "active", &active);
		smp_map_uint(e, "image", &img);
		if (active && img == 0 && smp_map_bytes(e, "version", &v, &vn) && vn < FERRY_ADAPTER_STR_MAX &&
		    smp_map_bytes(e, "hash", &h, &hn) && hn == 32) {
			memcpy(version, v, vn);
			version[vn] = '\0';
			memcpy(hash, h, 32);
			rc = 0;
		}
		cbor_decref(&e);
	}
	cbor_decref(&r);
	return rc;
}

static int s_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	state *s = st;

	*n = 0;
	for (size_t i = 0; i < s->n && *n < max; i++) {
		sess x = {.s = s, .p = &s->ports[i]};
		char version[FERRY_ADAPTER_STR_MAX], d2[FERRY_ADAPTER_DETAIL_MAX];
		uint8_t hash[32];
		ferry_device_v1 *d = &devs[*n];
		if ((x.fd = open_tty(x.p)) < 0)
			continue; /* not attached now */
		smp_serial_rx_init(&x.rx);
		int saved = s->retries;
		s->retries = 1;
		int rc = read_state(&x, version, hash, d2);
		s->retries = saved;
		close(x.fd);
		if (rc) {
			logf_(s, FERRY_LOG_WARNING, "%s: %s", x.p->path, d2);
			continue;
		}
		const char *base = strrchr(x.p->path, '/') + 1;
		snprintf(d->id, sizeof(d->id), "serial-%.50s", base);
		snprintf(d->vendor_id, sizeof(d->vendor_id), "%s", x.p->vendor_id);
		snprintf(d->class_id, sizeof(d->class_id), "%s", x.p->class_id);
		snprintf(d->match[0].key, sizeof(d->match[0].key), "port");
		snprintf(d->match[0].value, sizeof(d->match[0].value), "%.64s", base);
		snprintf(d->match[1].key, sizeof(d->match[1].key), "image");
		snprintf(d->match[1].value, sizeof(d->match[1].value), "0");
		d->n_match = 2;
		snprintf(d->components[0].key, sizeof(d->components[0].key), "%s", x.p->component);
		snprintf(d->components[0].value, sizeof(d->components[0].value), "%s", version);
		d->n_components = 1;
		/* the MCUboot hash of the running image, so a fleet view can tell
		 * two builds of the same version apart */
		snprintf(d->attributes[0].key, sizeof(d->attributes[0].key), "image0_hash");
		for (int k = 0; k < 32; k++)
			snprintf(d->attributes[0].value + 2 * k, 3, "%02x", hash[k]);
		d->n_attributes = 1;
		(*n)++;
	}
	return 0;
}

static int s_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **out, char *detail)
{
	state *s = st;
	sess *x;

	for (size_t i = 0; i < s->n; i++) {
		const char *base = strrchr(s->ports[i].path, '/') + 1;
		char id[FERRY_ADAPTER_STR_MAX];
		snprintf(id, sizeof(id), "serial-%.50s", base);
		if (strcmp(id, dev->id))
			continue;
		if (!(x = calloc(1, sizeof(*x))))
			return FERRY_ADAPTER_E_ADAPTER_ERROR;
		x->s = s;
		x->p = &s->ports[i];
		x->sh = sh;
		smp_serial_rx_init(&x->rx);
		if ((x->fd = open_tty(x->p)) < 0) {
			free(x);
			return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "%s: %s", s->ports[i].path, strerror(errno));
		}
		*out = x;
		return 0;
	}
	return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "no configured port for device %s", dev->id);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The MCUboot header's version and the SHA256 TLV; the image must be the
 * one the manifest names (accident protection). */
static int parse_mcuboot(const ferry_image_v1 *img, uint8_t hash[32], char *detail)
{
	FILE *f = fopen(img->path, "rb");
	uint8_t *buf = f && img->length <= 64u * 1024 * 1024 ? malloc(img->length) : NULL;
	int rc = 0;

	if (!buf || fread(buf, 1, img->length, f) != img->length) {
		rc = fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read %s", img->component);
		goto out;
	}
	if (img->length < 32 || le32(buf) != IMAGE_MAGIC) {
		rc = fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s is not an MCUboot image (no magic)", img->component);
		goto out;
	}
	uint16_t hdr = (uint16_t)(buf[8] | buf[9] << 8);
	uint32_t size = le32(buf + 12);
	char v[40];
	snprintf(v, sizeof(v), "%u.%u.%u", buf[20], buf[21], (unsigned)(buf[22] | buf[23] << 8));
	size_t vl = strlen(v);
	/* the manifest's semver may add a pre-release or build part */
	if (strncmp(img->version, v, vl) || (img->version[vl] && img->version[vl] != '-' && img->version[vl] != '+')) {
		rc = fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: image header says %s, manifest says %.64s",
			  img->component, v, img->version);
		goto out;
	}
	if (hdr < 32 || (uint64_t)hdr + size + 4 > img->length) {
		rc = fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: MCUboot header sizes do not fit", img->component);
		goto out;
	}
	size_t t = hdr + size, end;
	rc = fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: no SHA256 TLV", img->component);
	/* skip a protected TLV block, then look in the unprotected one */
	if ((buf[t] | buf[t + 1] << 8) == 0x6908)
		t += (size_t)(buf[t + 2] | buf[t + 3] << 8);
	if (t + 4 <= img->length && (buf[t] | buf[t + 1] << 8) == 0x6907) {
		end = t + (size_t)(buf[t + 2] | buf[t + 3] << 8);
		for (size_t q = t + 4; q + 4 <= end && end <= img->length;) {
			uint16_t type = (uint16_t)(buf[q] | buf[q + 1] << 8), l = (uint16_t)(buf[q + 2] | buf[q + 3] << 8);
			if (type == 0x10 && l == 32 && q + 4 + 32 <= end) {
				memcpy(hash, buf + q + 4, 32);
				rc = 0;
			}
			q += 4 + (size_t)l;
		}
	}
out:
	free(buf);
	if (f)
		fclose(f);
	return rc;
}

static int s_check(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	char version[FERRY_ADAPTER_STR_MAX];
	uint8_t hash[32];
	int rc;

	if (strcmp(img->format, "mcuboot"))
		return fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "serial-smp takes mcuboot images, not %s", img->format);
	if (strcmp(img->component, x->p->component))
		return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "%s serves component %s, not %.64s", x->p->path,
			    x->p->component, img->component);
	if ((rc = parse_mcuboot(img, x->new_hash, detail)))
		return rc;
	/* the device must answer before anything is written to it */
	return read_state(x, version, hash, detail);
}

static long chunk_size(sess *x)
{
	cbor_item_t *m = cbor_new_definite_map(0), *r = NULL;
	char detail[FERRY_ADAPTER_DETAIL_MAX];
	uint64_t buf = 0;
	long chunk = 128; /* safe for any device when it will not say */

	if (request(x, SMP_OP_READ, SMP_GROUP_OS, SMP_OS_PARAMS, m, x->s->timeout_ms, &r, detail) == 0 &&
	    smp_map_uint(r, "buf_size", &buf) && buf > UPLOAD_OVERHEAD + 4 + 16 && buf <= SMP_PACKET_MAX)
		chunk = (long)buf - 4 - UPLOAD_OVERHEAD;
	cbor_decref(&m);
	if (r)
		cbor_decref(&r);
	if (x->s->chunk > 0 && x->s->chunk < chunk)
		chunk = x->s->chunk;
	return chunk;
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

static int s_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	sess *x = session;
	uint8_t sha[32], *data;
	FILE *f;
	uint64_t off = 0, len = img->length;
	long chunk = chunk_size(x);
	int rc = 0, restarts = 0;
	bool first = true;

	if (file_sha(img->path, sha) || !(f = fopen(img->path, "rb")))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read the image of %s", img->component);
	if (!(data = malloc((size_t)chunk))) {
		fclose(f);
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	logf_(x->s, FERRY_LOG_INFO, "%s: uploading %llu bytes in chunks of %ld", x->p->path, (unsigned long long)len,
	      chunk);
	while (off < len) {
		size_t n = (size_t)((uint64_t)chunk < len - off ? (uint64_t)chunk : len - off);
		cbor_item_t *req, *r = NULL;
		uint64_t next;
		if (x->sh->cancelled(x->sh->ctx)) {
			rc = fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled at offset %llu", (unsigned long long)off);
			break;
		}
		if (fseek(f, (long)off, SEEK_SET) || fread(data, 1, n, f) != n) {
			rc = fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read the image of %s", img->component);
			break;
		}
		req = upload_req(off, data, n, len, sha);
		rc = request(x, SMP_OP_WRITE, SMP_GROUP_IMAGE, SMP_IMG_UPLOAD, req,
			     first ? x->s->first_timeout_ms : x->s->timeout_ms, &r, detail);
		cbor_decref(&req);
		if (rc)
			break;
		if ((rc = body_error(r, "upload", detail)) || !smp_map_uint(r, "off", &next) || next > len) {
			if (!rc)
				rc = fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: upload answer without a sane off",
					  x->p->path);
			cbor_decref(&r);
			break;
		}
		bool match = true;
		if (next == len && smp_map_bool(r, "match", &match) && !match) {
			cbor_decref(&r);
			rc = fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: the device's SHA-256 of the upload differs",
				  x->p->path);
			break;
		}
		cbor_decref(&r);
		if (first && next > n)
			logf_(x->s, FERRY_LOG_INFO, "%s: the device holds %llu bytes already; resuming there", x->p->path,
			      (unsigned long long)next);
		else if (!first && next == 0) {
			logf_(x->s, FERRY_LOG_WARNING, "%s: the device lost the upload; starting over", x->p->path);
			/* a device that keeps losing it must not keep us forever */
			if (++restarts > x->s->retries) {
				rc = fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device lost the upload %d times",
					  x->p->path, restarts);
				break;
			}
		}
		first = next == 0;
		off = next;
		*resume_from = off;
		x->sh->progress(x->sh->ctx, off, len);
	}
	free(data);
	fclose(f);
	return rc;
}

/* After a reset: ask until the device answers again. */
static int wait_back(sess *x, char *detail)
{
	int64_t until = now_ms() + x->s->reset_wait_ms;
	int saved = x->s->retries;

	x->s->retries = 0;
	while (now_ms() < until) {
		cbor_item_t *m = cbor_new_definite_map(1), *r = NULL;
		smp_map_put(m, "d", cbor_build_string("ferry"));
		int rc = transact(x, SMP_OP_WRITE, SMP_GROUP_OS, SMP_OS_ECHO, m, 500, &r);
		cbor_decref(&m);
		if (rc == 0) {
			cbor_decref(&r);
			x->s->retries = saved;
			return 0;
		}
	}
	x->s->retries = saved;
	return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: the device did not come back after reset", x->p->path);
}

static int reset(sess *x, char *detail)
{
	cbor_item_t *m = cbor_new_definite_map(0), *r = NULL;
	/* the answer may be lost as the device goes down; that is fine */
	if (transact(x, SMP_OP_WRITE, SMP_GROUP_OS, SMP_OS_RESET, m, x->s->timeout_ms, &r) == 0)
		cbor_decref(&r);
	cbor_decref(&m);
	return wait_back(x, detail);
}

static int s_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	cbor_item_t *m = cbor_new_definite_map(2), *r = NULL;
	int rc;

	smp_map_put(m, "hash", cbor_build_bytestring(x->new_hash, 32));
	smp_map_put(m, "confirm", cbor_build_bool(false));
	rc = request(x, SMP_OP_WRITE, SMP_GROUP_IMAGE, SMP_IMG_STATE, m, x->s->timeout_ms, &r, detail);
	cbor_decref(&m);
	if (rc)
		return rc;
	rc = body_error(r, "test boot", detail);
	cbor_decref(&r);
	if (rc)
		return rc;
	x->tested = true;
	return reset(x, detail);
}

static int s_confirm(void *session, const ferry_image_v1 *img, char *version, char *detail)
{
	sess *x = session;
	uint8_t hash[32];
	cbor_item_t *m, *r = NULL;
	int rc;

	if (!x->tested && parse_mcuboot(img, x->new_hash, detail))
		return FERRY_ADAPTER_E_INSTALL_FAILED; /* after a restart: know which hash to expect */
	if ((rc = read_state(x, version, hash, detail)))
		return rc;
	if (memcmp(hash, x->new_hash, 32))
		return fail(detail, FERRY_ADAPTER_E_VERSION_MISMATCH,
			    "%s came back running %.64s: the new image did not boot or was reverted", x->p->path, version);
	m = cbor_new_definite_map(1);
	smp_map_put(m, "confirm", cbor_build_bool(true));
	rc = request(x, SMP_OP_WRITE, SMP_GROUP_IMAGE, SMP_IMG_STATE, m, x->s->timeout_ms, &r, detail);
	cbor_decref(&m);
	if (rc)
		return rc;
	rc = body_error(r, "confirm", detail);
	cbor_decref(&r);
	if (rc)
		return rc;
	x->tested = false;
	return read_state(x, version, hash, detail);
}

static int s_abort(void *session, char *detail)
{
	sess *x = session;
	if (!x->tested)
		return 0; /* a partial upload in the secondary slot harms nothing */
	logf_(x->s, FERRY_LOG_WARNING, "%s: resetting so that MCUboot reverts the unconfirmed image", x->p->path);
	x->tested = false;
	return reset(x, detail);
}

static void s_close(void *session)
{
	sess *x = session;
	close(x->fd);
	free(x);
}

static const char *const formats[] = {"mcuboot", NULL};

static const ferry_adapter_v1 table = {
	.abi = 1,
	.name = "serial-smp",
	.formats = formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK | FERRY_ADAPTER_CAP_NEEDS_RESET | FERRY_ADAPTER_CAP_RESUME,
	.init = s_init,
	.fini = s_fini,
	.discover = s_discover,
	.open = s_open,
	.check = s_check,
	.write = s_write,
	.activate = s_activate,
	.confirm = s_confirm,
	.abort = s_abort,
	.close = s_close,
};

int ferry_adapter_abi(const int *offered, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (offered[i] == 1)
			return 1;
	return -1;
}

const ferry_adapter_v1 *ferry_adapter_table_v1(void)
{
	return &table;
}
