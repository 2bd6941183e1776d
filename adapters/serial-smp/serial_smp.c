/* serial-smp: updates an MCU running MCUboot and an mcumgr (SMP) server on a
 * UART, the way Zephyr applications ship.
 *
 * How an update goes over the wire (the flow itself lives in
 * adapters/smp/smp_client.c, shared with ble-smp; this file is the UART
 * transport and the config):
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
 *      `os reset`; the device answers and reboots 250 ms later, so ask
 *      `image state` until the new image is no longer pending, and send the
 *      reset again if it got no answer and the old firmware still lists it.
 *   5. `image state` read: if the active image is the new one, write
 *      {confirm: true} to make it permanent and read the version back.  If
 *      the device came back on the old image, MCUboot reverted it: report it.
 *   If anything fails from step 4 on, abort reads image state and resets the
 *   device until nothing of the new image is pending or on trial: MCUboot
 *   reverts an unconfirmed test image on the next boot, so the MCU keeps
 *   running its old firmware.
 * Frames are the mcumgr serial transport (see adapters/smp/smp.h): each
 * packet becomes [len][packet][CRC16], cut into base64 lines of at most 127
 * bytes; answers are reassembled from lines, and console output between
 * them is skipped.  The tty stays open across the device's resets; a write
 * that fails (a USB-serial adapter unplugged) reopens it.
 *
 * A port in a session belongs to it: discovery (an inventory refresh on
 * ferryd's main thread) would reopen the tty, flush what the device sent and
 * take answers meant for the session.  While a session holds the port,
 * discovery reports the record it read last, and a second session is
 * refused with device_busy.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"
#include "smp.h"
#include "smp_client.h"

#define PORTS_MAX 64
#define FERRY_STR_(x) #x
#define FERRY_STR(x) FERRY_STR_(x)

typedef struct port {
	char path[256];
	char vendor_id[FERRY_ADAPTER_STR_MAX], class_id[FERRY_ADAPTER_STR_MAX];
	char component[FERRY_ADAPTER_STR_MAX];
	speed_t baud;
	bool rtscts;
	/* a session holds the port; what discovery read last, for meanwhile */
	bool busy, have_last;
	ferry_device_v1 last;
} port;

typedef struct state {
	const ferry_host_v1 *host;
	port ports[PORTS_MAX];
	size_t n;
	smp_client_cfg cfg;
	pthread_mutex_t lock; /* busy and last; held while discovery talks to a port */
} state;

/* The UART link: the tty and what has been read from it but not used yet. */
typedef struct serial_link {
	const port *p;
	int fd;
	smp_serial_rx rx;
	uint8_t in[512];
	size_t in_n, in_pos;
} serial_link;

typedef struct sess {
	state *s;
	serial_link link;
	smp_client c;
} sess;

static const char *cfg(const state *s, const char *key)
{
	return s->host->config(s->host->ctx, key);
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
	long baud = 0;
	int rc = ferry_adapter_config_long(s->host, k, 115200, 1, 4000000, &baud, detail);
	if (rc)
		return rc;
	if (path[0] != '/' || strlen(path) >= sizeof(p->path) || !v || !c || !comp || strlen(v) >= sizeof(p->vendor_id) ||
	    strlen(c) >= sizeof(p->class_id) || strlen(comp) >= sizeof(p->component))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
				"ports[%zu]: needs an absolute path, vendor_id, class_id and component", i);
	if (!(p->baud = baud_of(baud)))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "ports[%zu].baud: %ld is not a supported rate", i,
				baud);
	if (flow && strcmp(flow, "none") && strcmp(flow, "rtscts"))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "ports[%zu].flow: none or rtscts", i);
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
	if ((rc = ferry_adapter_config_long(host, "timeout_ms", 2000, 50, 60000, &s->cfg.timeout_ms, detail)) ||
	    (rc = ferry_adapter_config_long(host, "first_timeout_ms", 30000, 100, 600000, &s->cfg.first_timeout_ms,
					    detail)) ||
	    (rc = ferry_adapter_config_long(host, "reset_wait_ms", 15000, 100, 600000, &s->cfg.reset_wait_ms,
					    detail)) ||
	    (rc = ferry_adapter_config_int(host, "retries", 5, 0, 100, &s->cfg.retries, detail)) ||
	    (rc = ferry_adapter_config_long(host, "chunk", 0, 0, SMP_PACKET_MAX - SMP_UPLOAD_OVERHEAD, &s->cfg.chunk,
					    detail))) {
		free(s);
		return rc;
	}
	for (size_t i = 0; i < PORTS_MAX && !(rc = load_port(s, i, detail)); i++)
		s->n = i + 1;
	if (rc == 0 && s->n == PORTS_MAX && cfg(s, "ports[" FERRY_STR(PORTS_MAX) "].path"))
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "ports: at most %d", PORTS_MAX);
	if (rc < 0 || rc > 1) {
		free(s);
		return rc;
	}
	pthread_mutex_init(&s->lock, NULL);
	*st = s;
	return 0;
}

static void s_fini(void *st)
{
	state *s = st;
	pthread_mutex_destroy(&s->lock);
	free(s);
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

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int link_open(serial_link *l, const port *p)
{
	memset(l, 0, sizeof(*l));
	l->p = p;
	smp_serial_rx_init(&l->rx);
	return (l->fd = open_tty(p)) < 0 ? -1 : 0;
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

static int ser_send(void *t, const uint8_t *pkt, size_t len)
{
	serial_link *l = t;
	uint8_t enc[SMP_SERIAL_ENCODED_MAX(SMP_PACKET_MAX)];
	size_t e = smp_serial_encode(pkt, len, enc, sizeof(enc));

	return e && l->fd >= 0 && write_all(l->fd, enc, e) == 0 ? 0 : -1;
}

/* Bytes from the tty through the frame decoder until a whole packet comes
 * out or the deadline passes.  Bytes after a packet wait for the next call. */
static int ser_recv(void *t, uint8_t *buf, size_t *len, int64_t deadline_ms)
{
	serial_link *l = t;

	for (;;) {
		while (l->in_pos < l->in_n) {
			size_t plen;
			if (smp_serial_feed(&l->rx, l->in[l->in_pos++], &plen) == 1) {
				memcpy(buf, l->rx.pkt, plen);
				*len = plen;
				return 1;
			}
		}
		int64_t left = deadline_ms - smp_now_ms();
		if (left <= 0)
			return 0;
		struct pollfd pf = {.fd = l->fd, .events = POLLIN};
		if (poll(&pf, 1, (int)left) <= 0)
			continue;
		ssize_t r = read(l->fd, l->in, sizeof(l->in));
		if (r <= 0) {
			sleep_ms(20); /* the device end is gone for a moment (reset) */
			continue;
		}
		l->in_n = (size_t)r;
		l->in_pos = 0;
	}
}

/* A UART does not drop with a reset: the tty stays, and the client tells a
 * reboot from image state.  After a failed write the tty is opened again (a
 * USB-serial adapter that was unplugged). */
static int ser_reconnect(void *t, bool after_reset, int64_t deadline_ms, char *detail)
{
	serial_link *l = t;

	if (after_reset)
		return 0;
	for (;;) {
		if (l->fd >= 0)
			close(l->fd);
		if (link_open(l, l->p) == 0)
			return 0;
		if (smp_now_ms() >= deadline_ms)
			return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: %s", l->p->path, strerror(errno));
		sleep_ms(200);
	}
}

/* The serial frame takes 4 bytes of the device's buffer: length and CRC.
 * 0 only when the device did not say: a buffer too small for an upload
 * request is reported as it is, so that the upload fails with the reason
 * instead of sending chunks the device would drop. */
static size_t ser_max_packet(void *t, size_t dev_buf)
{
	if (!dev_buf)
		return 0;
	return dev_buf > 4 ? dev_buf - 4 : 1;
}

static const smp_transport_ops serial_ops = {
	.send = ser_send,
	.recv = ser_recv,
	.reconnect = ser_reconnect,
	.max_packet = ser_max_packet,
	/* a UART is full duplex and the frames carry sequence numbers */
	.max_in_flight = SMP_WINDOW_MAX,
};

static void device_id(const port *p, char id[FERRY_ADAPTER_STR_MAX])
{
	snprintf(id, FERRY_ADAPTER_STR_MAX, "serial-%.50s", strrchr(p->path, '/') + 1);
}

/* One port's record, read from the device; 0, or -1 when it does not
 * answer (not attached).  Called with s->lock held. */
static int probe(state *s, port *p, ferry_device_v1 *d)
{
	serial_link *l = malloc(sizeof(*l));
	smp_client c;
	smp_client_cfg quick = s->cfg;
	char version[FERRY_ADAPTER_STR_MAX], d2[FERRY_ADAPTER_DETAIL_MAX];
	uint8_t hash[32];

	if (!l || link_open(l, p)) {
		free(l);
		return -1; /* not attached now */
	}
	quick.retries = 1;
	smp_client_init(&c, &serial_ops, l, p->path, &quick, s->host, NULL);
	int rc = smp_client_read_state(&c, version, hash, d2);
	close(l->fd);
	free(l);
	if (rc) {
		smp_log(s->host, FERRY_LOG_WARNING, "%s: %s", p->path, d2);
		return -1;
	}
	const char *base = strrchr(p->path, '/') + 1;
	memset(d, 0, sizeof(*d));
	d->size = sizeof(*d);
	device_id(p, d->id);
	snprintf(d->vendor_id, sizeof(d->vendor_id), "%s", p->vendor_id);
	snprintf(d->class_id, sizeof(d->class_id), "%s", p->class_id);
	snprintf(d->match[0].key, sizeof(d->match[0].key), "port");
	snprintf(d->match[0].value, sizeof(d->match[0].value), "%.64s", base);
	snprintf(d->match[1].key, sizeof(d->match[1].key), "image");
	snprintf(d->match[1].value, sizeof(d->match[1].value), "0");
	d->n_match = 2;
	snprintf(d->components[0].key, sizeof(d->components[0].key), "%s", p->component);
	snprintf(d->components[0].value, sizeof(d->components[0].value), "%s", version);
	d->n_components = 1;
	/* the MCUboot hash of the running image, so a fleet view can tell
	 * two builds of the same version apart */
	snprintf(d->attributes[0].key, sizeof(d->attributes[0].key), "image0_hash");
	for (int k = 0; k < 32; k++)
		snprintf(d->attributes[0].value + 2 * k, 3, "%02x", hash[k]);
	snprintf(d->attributes[1].key, sizeof(d->attributes[1].key), FERRY_ADAPTER_ATTR_LINK);
	snprintf(d->attributes[1].value, sizeof(d->attributes[1].value), FERRY_LINK_PHYSICAL); /* a wire */
	d->n_attributes = 2;
	return 0;
}

static int s_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	state *s = st;

	*n = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n && *n < max; i++) {
		port *p = &s->ports[i];
		if (p->busy) {
			/* a session is talking to it: never touch the tty meanwhile */
			if (p->have_last)
				devs[(*n)++] = p->last;
			continue;
		}
		p->have_last = false;
		if (probe(s, p, &devs[*n]))
			continue;
		p->last = devs[(*n)++];
		p->have_last = true;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int s_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **out, char *detail)
{
	state *s = st;
	sess *x;

	for (size_t i = 0; i < s->n; i++) {
		char id[FERRY_ADAPTER_STR_MAX];
		port *p = &s->ports[i];
		bool busy;
		device_id(p, id);
		if (strcmp(id, dev->id))
			continue;
		if (!(x = calloc(1, sizeof(*x))))
			return FERRY_ADAPTER_E_ADAPTER_ERROR;
		x->s = s;
		/* waits for a discovery that is talking to the port */
		pthread_mutex_lock(&s->lock);
		busy = p->busy;
		p->busy = true;
		pthread_mutex_unlock(&s->lock);
		if (busy) {
			free(x);
			return smp_fail(detail, FERRY_ADAPTER_E_DEVICE_BUSY, "%s is in another session", p->path);
		}
		if (link_open(&x->link, p)) {
			int e = errno;
			pthread_mutex_lock(&s->lock);
			p->busy = false;
			pthread_mutex_unlock(&s->lock);
			free(x);
			return smp_fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "%s: %s", p->path, strerror(e));
		}
		smp_client_init(&x->c, &serial_ops, &x->link, p->path, &s->cfg, s->host, sh);
		*out = x;
		return 0;
	}
	return smp_fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "no configured port for device %s", dev->id);
}

static int s_check(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	const port *p = x->link.p;

	if (strcmp(img->format, "mcuboot"))
		return smp_fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "serial-smp takes mcuboot images, not %s",
				img->format);
	if (strcmp(img->component, p->component))
		return smp_fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "%s serves component %s, not %.64s", p->path,
				p->component, img->component);
	return smp_client_check(&x->c, img, detail);
}

static int s_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	return smp_client_upload(&((sess *)session)->c, img, resume_from, detail);
}

static int s_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	return smp_client_activate(&((sess *)session)->c, detail);
}

static int s_confirm(void *session, const ferry_image_v1 *img, char *version, char *detail)
{
	return smp_client_confirm(&((sess *)session)->c, img, version, detail);
}

static int s_commit(void *session, const ferry_image_v1 *img, char *detail)
{
	return smp_client_commit(&((sess *)session)->c, img, detail);
}

static int s_abort(void *session, const ferry_image_v1 *img, char *detail)
{
	return smp_client_abort(&((sess *)session)->c, img, detail);
}

static void s_close(void *session)
{
	sess *x = session;
	port *p = &x->s->ports[x->link.p - x->s->ports];

	if (x->link.fd >= 0)
		close(x->link.fd);
	pthread_mutex_lock(&x->s->lock);
	p->busy = false;
	p->have_last = false; /* the session may have changed the version */
	pthread_mutex_unlock(&x->s->lock);
	free(x);
}

static const char *const formats[] = {"mcuboot", NULL};

static const ferry_config_key keys[] = {
	{"timeout_ms", FERRY_CFG_INT, 50, 60000, false},
	{"first_timeout_ms", FERRY_CFG_INT, 100, 600000, false},
	{"reset_wait_ms", FERRY_CFG_INT, 100, 600000, false},
	{"retries", FERRY_CFG_INT, 0, 100, false},
	{"chunk", FERRY_CFG_INT, 0, SMP_PACKET_MAX - SMP_UPLOAD_OVERHEAD, false},
	{"ports[].path", FERRY_CFG_TEXT, 2, 255, true},
	{"ports[].vendor_id", FERRY_CFG_TEXT, 1, 64, true},
	{"ports[].class_id", FERRY_CFG_TEXT, 1, 64, true},
	{"ports[].component", FERRY_CFG_TEXT, 1, 64, true},
	{"ports[].baud", FERRY_CFG_INT, 1, 4000000, false},
	{"ports[].flow", FERRY_CFG_TEXT, 4, 6, false},
	{NULL, 0, 0, 0, false},
};

static const ferry_adapter_v2 table = {
	.abi = 2,
	.name = "serial-smp",
	.formats = formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK | FERRY_ADAPTER_CAP_NEEDS_RESET | FERRY_ADAPTER_CAP_RESUME,
	.max_sessions = PORTS_MAX, /* one per port: each session owns its tty */
	.config_keys = keys,
	.init = s_init,
	.fini = s_fini,
	.discover = s_discover,
	.open = s_open,
	.check = s_check,
	.write = s_write,
	.activate = s_activate,
	.confirm = s_confirm,
	.commit = s_commit,
	.abort = s_abort,
	.close = s_close,
};

FERRY_ADAPTER_EXPORT int ferry_adapter_abi(const int *offered, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (offered[i] == 2)
			return 2;
	return -1;
}

FERRY_ADAPTER_EXPORT const ferry_adapter_v2 *ferry_adapter_table_v2(void)
{
	return &table;
}
