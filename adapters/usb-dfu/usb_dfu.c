/* usb-dfu: updates a USB device that speaks DFU 1.1 or ST's DfuSe dialect,
 * through libusb.
 *
 * How an update goes over the wire:
 *   1. check: the image is a DFU file (format "dfu") or a DfuSe container
 *      (format "dfuse").  Its suffix CRC must hold and its VID:PID must be
 *      the device's (run-time or DFU mode; 0xFFFF matches any), and a
 *      bcdDevice in the suffix must be the manifest's version.  Nothing is
 *      sent to the device before all of that holds.
 *   2. detach: a device running its firmware shows a run-time DFU interface
 *      (protocol 1).  It gets DFU_DETACH; one that does not detach by itself
 *      (no WillDetach bit) gets a USB reset.  It leaves the bus and comes
 *      back in DFU mode (protocol 2), often under another VID:PID and
 *      address, so it is found again by its serial number or, without one,
 *      by its port path -- waited for, within a bound.
 *   3. enter: claim the DFU interface, select the alternate setting (by
 *      name or number), and bring the device to dfuIDLE: CLRSTATUS out of
 *      dfuERROR, ABORT out of a half-done transfer.
 *   4. download, in wTransferSize blocks (capped), each DNLOAD followed by
 *      GETSTATUS polls that sleep the device's bwPollTimeout (bounded: a
 *      device that asks for hours gets the cap) until dfuDNLOAD-IDLE.
 *      DfuSe first erases every page the file touches (pages from the
 *      memory layout in the alternate setting's name; addresses outside
 *      writable memory are refused before anything is erased), sets the
 *      address pointer and writes from wValue 2.  A stall or a device that
 *      leaves the bus starts the download over, a bounded number of times;
 *      an error status (errWRITE, errVERIFY ...) ends it with the status's
 *      reason code.
 *   5. activate: plain DFU sends the zero-length DNLOAD and polls through
 *      manifestation; a tolerant device returns to dfuIDLE, an intolerant
 *      one waits for a reset -- either way it is reset to start the new
 *      firmware.  DfuSe sets the pointer to the start address and leaves.
 *      A device that resets before answering is not judged yet.
 *   6. confirm: wait for the device to come back in run-time mode (by serial
 *      or port path again: the new firmware may use a new PID) and read its
 *      version, from bcdDevice or a string descriptor.  Only the manifest's
 *      version counts as installed.
 *   abort: clear the device's status, abort the transfer and reset it, so
 *   it leaves DFU mode and starts the firmware it holds.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dfu_download.h"
#include "dfu_file.h"
#include "dfu_layout.h"
#include "dfu_proto.h"
#include "dfu_usb.h"
#include "ferry/adapter.h"

#define ENTRIES_MAX 64
#define TRANSFER_MAX 4096 /* what Linux usbfs takes in one control transfer */
#define S FERRY_ADAPTER_STR_MAX

enum version_source { VERSION_BCD, VERSION_STRING };
enum want { WANT_ANY, WANT_RUNTIME, WANT_DFU };

/* One configured device. */
typedef struct entry {
	char component[S], vendor_id[S], class_id[S];
	bool has_usb, has_dfu_usb;
	uint16_t vid, pid, dfu_vid, dfu_pid;
	char serial[DFU_SERIAL_MAX], port[DFU_PORT_MAX];
	char alt_name[S];
	int alt_num; /* -1: by name, or the first */
	enum version_source version;
	uint8_t version_index;
	/* the last discovery's record, reported while a session has the device */
	ferry_device_v1 last;
	bool has_last, busy;
	char busy_port[DFU_PORT_MAX]; /* where that device is */
} entry;

typedef struct state {
	const ferry_host_v1 *host;
	libusb_context *ctx;
	pthread_mutex_t lock;
	entry e[ENTRIES_MAX];
	size_t n;
	long timeout_ms, detach_wait_ms, return_wait_ms, poll_min_ms, poll_max_ms, block_budget_ms, erase_budget_ms;
	long retries, transfer_cap, max_image;
} state;

typedef struct sess {
	state *s;
	entry *e;
	const ferry_session_host_v1 *sh;
	/* who we talk to: the serial number, or the port path if it has none */
	char serial[DFU_SERIAL_MAX], port[DFU_PORT_MAX];
	uint16_t vid, pid; /* as found at open */
	/* the image, parsed by check */
	uint8_t *img;
	size_t img_len;
	dfu_file f;
	/* between write and activate: the open DFU-mode interface */
	libusb_device_handle *h;
	dfu_usb u;
	dfu_xfer x;
	uint32_t blocks; /* plain DFU blocks sent */
	bool detached;   /* we put the device in DFU mode */
	bool activated;  /* manifestation or leave was sent: the new firmware is in for good */
} sess;

/* the SDK's: a sentence into detail, and the code back */
#define fail ferry_adapter_fail

static void logf_(const state *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(const state *s, int level, const char *fmt, ...)
{
	char msg[400];
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

/* ---- config ---- */

static const char *cfg(const state *s, const char *key)
{
	return s->host->config(s->host->ctx, key);
}

static bool parse_ids(const char *v, uint16_t *vid, uint16_t *pid)
{
	unsigned a, b;
	char tail;
	if (!v || strlen(v) != 9 || sscanf(v, "%4x:%4x%c", &a, &b, &tail) != 2)
		return false;
	*vid = (uint16_t)a;
	*pid = (uint16_t)b;
	return true;
}

static const char *entry_key(char *k, size_t cap, size_t i, const char *name)
{
	snprintf(k, cap, "devices[%zu].%s", i, name);
	return k;
}

static int copy_key(const state *s, size_t i, const char *name, char *out, size_t cap, bool required, char *detail)
{
	char k[64];
	const char *v = cfg(s, entry_key(k, sizeof(k), i, name));
	if (!v) {
		out[0] = '\0';
		return required ? fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s is required", k) : 0;
	}
	if (!*v || strlen(v) >= cap)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: empty or longer than %zu characters", k,
		            cap - 1);
	memcpy(out, v, strlen(v) + 1);
	return 0;
}

static int load_entry(state *s, size_t i, char *detail)
{
	entry *e = &s->e[i];
	char k[64], ver[S] = "", alt[S] = "";
	const char *v;
	int rc;

	if (!cfg(s, entry_key(k, sizeof(k), i, "component")))
		return 1; /* no more devices */
	memset(e, 0, sizeof(*e));
	if ((rc = copy_key(s, i, "component", e->component, sizeof(e->component), true, detail)) ||
	    (rc = copy_key(s, i, "vendor_id", e->vendor_id, sizeof(e->vendor_id), true, detail)) ||
	    (rc = copy_key(s, i, "class_id", e->class_id, sizeof(e->class_id), true, detail)) ||
	    (rc = copy_key(s, i, "serial", e->serial, sizeof(e->serial), false, detail)) ||
	    (rc = copy_key(s, i, "port", e->port, sizeof(e->port), false, detail)) ||
	    (rc = copy_key(s, i, "alt", alt, sizeof(alt), false, detail)) ||
	    (rc = copy_key(s, i, "version", ver, sizeof(ver), false, detail)))
		return rc;
	if ((v = cfg(s, entry_key(k, sizeof(k), i, "usb"))) && !(e->has_usb = parse_ids(v, &e->vid, &e->pid)))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: \"%.20s\" is not VVVV:PPPP in hex", k, v);
	if ((v = cfg(s, entry_key(k, sizeof(k), i, "dfu_usb"))) &&
	    !(e->has_dfu_usb = parse_ids(v, &e->dfu_vid, &e->dfu_pid)))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: \"%.20s\" is not VVVV:PPPP in hex", k, v);
	if (!e->serial[0] && !e->port[0] && !e->has_usb)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
		            "devices[%zu]: needs serial, port or usb to tell which device it is", i);
	e->alt_num = -1;
	if (alt[0]) {
		char *end;
		long n = strtol(alt, &end, 10);
		if (!*end && n >= 0 && n <= 255)
			e->alt_num = (int)n;
		else
			memcpy(e->alt_name, alt, sizeof(alt));
	}
	if (!ver[0] || !strcmp(ver, "bcd")) {
		e->version = VERSION_BCD;
	} else {
		char *end;
		long n = strncmp(ver, "string:", 7) ? -1 : strtol(ver + 7, &end, 10);
		if (n < 1 || n > 255 || *end)
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			            "devices[%zu].version: \"bcd\" or \"string:N\" (a string descriptor index)", i);
		e->version = VERSION_STRING;
		e->version_index = (uint8_t)n;
	}
	return 0;
}

static void libusb_log(libusb_context *ctx, enum libusb_log_level level, const char *str)
{
	(void)ctx;
	(void)level;
	(void)str; /* libusb's own chatter stays out of ferryd's log */
}

static int s_init(const ferry_host_v1 *host, void **st, char *detail)
{
	state *s = calloc(1, sizeof(*s));
	int rc = 0;

	if (!s)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	s->host = host;
	if ((rc = ferry_adapter_config_long(host, "timeout_ms", 5000, 100, 60000, &s->timeout_ms, detail)) ||
	    (rc = ferry_adapter_config_long(host, "detach_wait_ms", 5000, 100, 600000, &s->detach_wait_ms, detail)) ||
	    (rc = ferry_adapter_config_long(host, "return_wait_ms", 15000, 100, 600000, &s->return_wait_ms, detail)) ||
	    (rc = ferry_adapter_config_long(host, "poll_min_ms", 1, 0, 1000, &s->poll_min_ms, detail)) ||
	    (rc = ferry_adapter_config_long(host, "poll_max_ms", 5000, 1, 600000, &s->poll_max_ms, detail)) ||
	    (rc = ferry_adapter_config_long(host, "block_budget_ms", 30000, 10, 3600000, &s->block_budget_ms,
					    detail)) ||
	    (rc = ferry_adapter_config_long(host, "erase_budget_ms", 60000, 10, 3600000, &s->erase_budget_ms,
					    detail)) ||
	    (rc = ferry_adapter_config_long(host, "retries", 2, 0, 20, &s->retries, detail)) ||
	    (rc = ferry_adapter_config_long(host, "transfer_size", TRANSFER_MAX, 1, TRANSFER_MAX, &s->transfer_cap,
					    detail)) ||
	    (rc = ferry_adapter_config_long(host, "max_image", 64L * 1024 * 1024, 1, 1024L * 1024 * 1024, &s->max_image,
					    detail))) {
		free(s);
		return rc;
	}
	for (size_t i = 0; i < ENTRIES_MAX && !(rc = load_entry(s, i, detail)); i++)
		s->n = i + 1;
	if (rc > 1 || rc < 0) {
		free(s);
		return rc;
	}
	if ((rc = libusb_init(&s->ctx)) < 0) {
		free(s);
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "libusb: %s", libusb_strerror(rc));
	}
	libusb_set_log_cb(s->ctx, libusb_log, LIBUSB_LOG_CB_CONTEXT);
	pthread_mutex_init(&s->lock, NULL);
	*st = s;
	return 0;
}

static void s_fini(void *st)
{
	state *s = st;
	libusb_exit(s->ctx);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ---- finding devices ---- */

static bool ids_match(const entry *e, const dfu_usb *u)
{
	if (u->dfu_mode)
		return e->has_dfu_usb && u->vid == e->dfu_vid && u->pid == e->dfu_pid;
	return e->has_usb && u->vid == e->vid && u->pid == e->pid;
}

/* Does u belong to entry e -- and, when the session knows them, to the
 * serial/port it found before?  A serial number or port path names a
 * device whatever VID:PID it shows now (DFU mode, or new firmware with a
 * new PID); without them only the configured VID:PIDs do.  In DFU mode
 * the alternate setting named in the config must be there too. */
static bool belongs(const entry *e, const dfu_usb *u, const char *serial, const char *port)
{
	if (e->serial[0] && strcmp(u->serial, e->serial))
		return false;
	/* in DFU mode, a configured alternate setting name must be there */
	if (u->dfu_mode && e->alt_name[0]) {
		size_t i = 0;
		while (i < u->n_alts && strncmp(u->alts[i].name, e->alt_name, strlen(e->alt_name)))
			i++;
		if (i == u->n_alts)
			return false;
	}
	if (e->port[0] && strcmp(u->port, e->port))
		return false;
	if (serial && serial[0])
		return !strcmp(u->serial, serial);
	if (port && port[0])
		return !strcmp(u->port, port);
	return e->serial[0] || e->port[0] || ids_match(e, u);
}

/* Worth opening to read its strings: the right mode, and nothing that can
 * be told without opening it rules it out. */
static bool candidate(const entry *e, const dfu_usb *u, const char *serial, const char *port, enum want want)
{
	bool by_serial = serial && serial[0], by_port = port && port[0];

	if ((want == WANT_RUNTIME && u->dfu_mode) || (want == WANT_DFU && !u->dfu_mode))
		return false;
	if (e->port[0] && strcmp(u->port, e->port))
		return false;
	if (!by_serial && by_port && strcmp(u->port, port))
		return false;
	if (!e->serial[0] && !e->port[0] && !by_serial && !by_port)
		return ids_match(e, u);
	return true;
}

/* A device that another session (not entry `mine`'s) is downloading to,
 * at this port: nobody else may send it requests (string descriptors) in
 * the middle of a download.  Called with s->lock held. */
static bool in_session(const state *s, const char *port, const entry *mine)
{
	for (size_t i = 0; i < s->n; i++)
		if (&s->e[i] != mine && s->e[i].busy && !strcmp(s->e[i].busy_port, port))
			return true;
	return false;
}

/* The first attached device of entry e in the wanted mode.  0 and *out
 * (referenced; release it), or 1 when there is none.  Devices in another
 * entry's session are left alone.  `locked`: the caller holds s->lock
 * (discovery, open); otherwise e is in a session of the caller's. */
static int find(state *s, const entry *e, const char *serial, const char *port, enum want want, bool locked,
		dfu_usb *out)
{
	libusb_device **list;
	ssize_t n = libusb_get_device_list(s->ctx, &list);
	int rc = 1;

	for (ssize_t i = 0; i < n && rc; i++) {
		dfu_usb u;
		libusb_device_handle *h;
		bool theirs;
		if (dfu_usb_describe(list[i], &u))
			continue;
		if (!locked)
			pthread_mutex_lock(&s->lock);
		theirs = in_session(s, u.port, locked ? NULL : e);
		if (!locked)
			pthread_mutex_unlock(&s->lock);
		if (!candidate(e, &u, serial, port, want) || theirs) {
			dfu_usb_release(&u);
			continue;
		}
		/* the serial number and the alternate settings' names need the
		 * device opened */
		if (libusb_open(list[i], &h) == 0) {
			dfu_usb_read_strings(h, &u);
			libusb_close(h);
		}
		if (belongs(e, &u, serial, port)) {
			*out = u;
			rc = 0;
		} else {
			dfu_usb_release(&u);
		}
	}
	if (n >= 0)
		libusb_free_device_list(list, 1);
	return rc;
}

enum { FOUND = 0, NOT_FOUND = 1, CANCELLED = 2 };

/* find, again and again, until `ms` have passed: FOUND, NOT_FOUND, or
 * CANCELLED when the session is cancelled and `cancellable`. */
static int wait_for(sess *x, enum want want, long ms, bool cancellable, dfu_usb *out)
{
	int64_t until = now_ms() + ms;

	for (;;) {
		if (find(x->s, x->e, x->serial, x->port, want, false, out) == 0)
			return FOUND;
		if (cancellable && x->sh && x->sh->cancelled(x->sh->ctx))
			return CANCELLED;
		if (now_ms() >= until)
			return NOT_FOUND;
		dfu_sleep_ms(100);
	}
}

/* ---- versions ---- */

/* bcdDevice 0xJJMN: major JJ (two BCD digits), minor M, patch N. */
static bool bcd_version(uint16_t bcd, char *out, size_t cap)
{
	unsigned d[4] = {bcd >> 12 & 0xF, bcd >> 8 & 0xF, bcd >> 4 & 0xF, bcd & 0xF};
	for (int i = 0; i < 4; i++)
		if (d[i] > 9)
			return false;
	snprintf(out, cap, "%u.%u.%u", d[0] * 10 + d[1], d[2], d[3]);
	return true;
}

/* The version a run-time device reports, as configured. */
static bool read_version(const entry *e, const dfu_usb *u, char *out)
{
	libusb_device_handle *h;
	unsigned char buf[S];
	int n;

	if (e->version == VERSION_BCD)
		return bcd_version(u->bcd_device, out, S);
	if (libusb_open(u->dev, &h))
		return false;
	n = libusb_get_string_descriptor_ascii(h, e->version_index, buf, sizeof(buf) - 1);
	libusb_close(h);
	if (n <= 0)
		return false;
	for (int i = 0; i < n; i++)
		if (buf[i] <= 0x20 || buf[i] >= 0x7f)
			return false; /* a version has no blanks or control characters */
	memcpy(out, buf, (size_t)n);
	out[n] = '\0';
	return true;
}

/* The manifest's semantic version against what the device says: equal, or
 * equal up to a pre-release/build part the device cannot show. */
static bool same_version(const char *manifest, const char *device)
{
	size_t n = strlen(device);
	return !strcmp(manifest, device) ||
	       (!strncmp(manifest, device, n) && (manifest[n] == '-' || manifest[n] == '+'));
}

/* ---- discovery ---- */

static void device_id(const dfu_usb *u, char *out)
{
	if (u->serial[0])
		snprintf(out, S, "dfu-%.59s", u->serial);
	else
		snprintf(out, S, "dfu-%.59s", u->port);
}

static void kv(ferry_kv_v1 *p, size_t *n, const char *k, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void kv(ferry_kv_v1 *p, size_t *n, const char *k, const char *fmt, ...)
{
	va_list ap;
	snprintf(p[*n].key, sizeof(p[*n].key), "%s", k);
	va_start(ap, fmt);
	vsnprintf(p[*n].value, sizeof(p[*n].value), fmt, ap);
	va_end(ap);
	(*n)++;
}

static void describe(const entry *e, const dfu_usb *u, ferry_device_v1 *d)
{
	char version[S];

	device_id(u, d->id);
	snprintf(d->vendor_id, sizeof(d->vendor_id), "%s", e->vendor_id);
	snprintf(d->class_id, sizeof(d->class_id), "%s", e->class_id);
	snprintf(d->serial, sizeof(d->serial), "%s", u->serial);
	d->n_match = d->n_components = d->n_attributes = 0;
	kv(d->match, &d->n_match, "usb", "%04x:%04x", u->vid, u->pid);
	kv(d->match, &d->n_match, "port", "%s", u->port);
	/* in DFU mode the device runs its bootloader: no firmware version, but
	 * it still serves its component */
	if (u->dfu_mode || !read_version(e, u, version))
		version[0] = '\0';
	kv(d->components, &d->n_components, e->component, "%s", version);
	kv(d->attributes, &d->n_attributes, "mode", "%s", u->dfu_mode ? "dfu" : "runtime");
	kv(d->attributes, &d->n_attributes, "dfu", "%s",
	   u->func.bcd_dfu == 0x011A   ? "DfuSe 1.1a"
	   : u->func.bcd_dfu == 0x0110 ? "1.1"
	                               : "1.0");
	kv(d->attributes, &d->n_attributes, "bcd_device", "0x%04x", u->bcd_device);
	kv(d->attributes, &d->n_attributes, FERRY_ADAPTER_ATTR_LINK, "%s", FERRY_LINK_PHYSICAL); /* a cable */
}

static int s_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	state *s = st;

	*n = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n && *n < max; i++) {
		entry *e = &s->e[i];
		dfu_usb u;
		if (e->busy) {
			/* a session is pushing to it: never disturb a download */
			if (e->has_last)
				devs[(*n)++] = e->last;
			continue;
		}
		e->has_last = false;
		if (find(s, e, NULL, NULL, WANT_ANY, true, &u))
			continue; /* not attached now */
		describe(e, &u, &devs[*n]);
		e->last = devs[(*n)++];
		e->has_last = true;
		dfu_usb_release(&u);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* ---- sessions ---- */

static int s_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **out, char *detail)
{
	state *s = st;
	int rc = fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "no configured USB DFU device is %s now", dev->id);

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n && rc; i++) {
		entry *e = &s->e[i];
		dfu_usb u;
		char id[S];
		sess *x;
		if (e->busy || find(s, e, NULL, NULL, WANT_ANY, true, &u))
			continue;
		device_id(&u, id);
		if (strcmp(id, dev->id) || !(x = calloc(1, sizeof(*x)))) {
			dfu_usb_release(&u);
			continue;
		}
		x->s = s;
		x->e = e;
		x->sh = sh;
		memcpy(x->serial, u.serial, sizeof(x->serial));
		memcpy(x->port, u.port, sizeof(x->port));
		memcpy(e->busy_port, u.port, sizeof(e->busy_port));
		x->vid = u.vid;
		x->pid = u.pid;
		dfu_usb_release(&u);
		e->busy = true;
		*out = x;
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static void drop_handle(sess *x)
{
	if (x->h) {
		libusb_release_interface(x->h, x->u.intf);
		libusb_close(x->h);
		x->h = NULL;
	}
	dfu_usb_release(&x->u);
}

static void s_close(void *session)
{
	sess *x = session;
	drop_handle(x);
	pthread_mutex_lock(&x->s->lock);
	x->e->busy = false;
	pthread_mutex_unlock(&x->s->lock);
	free(x->img);
	free(x);
}

/* ---- check ---- */

static int load_image(sess *x, const ferry_image_v1 *img, char *detail)
{
	FILE *f;
	char why[DFU_DETAIL_MAX];

	free(x->img);
	x->img = NULL;
	if (img->length == 0 || img->length > (uint64_t)x->s->max_image)
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "the image's %llu bytes are beyond max_image %ld",
		            (unsigned long long)img->length, x->s->max_image);
	if (!(f = fopen(img->path, "rb")) || !(x->img = malloc(img->length)) ||
	    fread(x->img, 1, img->length, f) != img->length) {
		if (f)
			fclose(f);
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot read the image %s", img->path);
	}
	fclose(f);
	x->img_len = img->length;
	if (dfu_file_parse(x->img, x->img_len, &x->f, why))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s", why);
	return 0;
}

/* The file's suffix must name this device: the VID:PID it has now, or the
 * one configured for its other mode. */
static int check_ids(const sess *x, char *detail)
{
	const entry *e = x->e;
	char why[DFU_DETAIL_MAX];

	if (!dfu_file_for_device(&x->f, x->vid, x->pid, why) ||
	    (e->has_usb && !dfu_file_for_device(&x->f, e->vid, e->pid, why)) ||
	    (e->has_dfu_usb && !dfu_file_for_device(&x->f, e->dfu_vid, e->dfu_pid, why)))
		return 0;
	dfu_file_for_device(&x->f, x->vid, x->pid, why);
	return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s", why);
}

/* Every target of a DfuSe file has an alternate setting on the DFU-mode
 * device, and every element lies in memory that can be written.  *layouts
 * gets each target's layout. */
static int check_targets(const sess *x, const dfu_usb *u, dfu_layout *layouts, uint8_t *alt_index, char *detail)
{
	char why[DFU_DETAIL_MAX];

	for (size_t t = 0; t < x->f.n_targets; t++) {
		const dfuse_target *tg = &x->f.targets[t];
		size_t a = 0;
		while (a < u->n_alts && u->alts[a].alt != tg->alt)
			a++;
		if (a == u->n_alts)
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
			            "the file has a target for alternate setting %u; the device has none", tg->alt);
		if (dfu_layout_parse(u->alts[a].name, &layouts[t], why))
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "alternate setting %u: %s", tg->alt, why);
		for (size_t i = 0; i < tg->n_elements; i++)
			if (dfu_layout_check(&layouts[t], tg->elements[i].address, tg->elements[i].size,
			                     DFU_MEM_WRITABLE, why))
				return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "target %u element %zu: %s",
				            tg->alt, i, why);
		alt_index[t] = (uint8_t)a;
	}
	return 0;
}

static int s_check(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	bool dfuse = !strcmp(img->format, "dfuse");
	char v[S];
	int rc;

	if (!dfuse && strcmp(img->format, "dfu"))
		return fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "usb-dfu takes dfu and dfuse files, not %s",
		            img->format);
	if (strcmp(img->component, x->e->component))
		return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "device %s serves component %s, not %.64s",
		            x->serial[0] ? x->serial : x->port, x->e->component, img->component);
	if ((rc = load_image(x, img, detail)))
		return rc;
	if (dfuse != x->f.dfuse)
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "the manifest says %s, the file is %s", img->format,
		            x->f.dfuse ? "a DfuSe container" : "a plain DFU file");
	if ((rc = check_ids(x, detail)))
		return rc;
	if (x->f.suffix.bcd_device != 0xFFFF && x->e->version == VERSION_BCD &&
	    (!bcd_version(x->f.suffix.bcd_device, v, sizeof(v)) || !same_version(img->version, v)))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
		            "the file's suffix is for firmware 0x%04x, the manifest says %.64s", x->f.suffix.bcd_device,
		            img->version);
	if (dfuse) {
		/* a device in DFU mode shows its memory now; a run-time one only
		 * after detach, where write checks the same before erasing */
		dfu_usb u;
		dfu_layout layouts[DFUSE_TARGETS_MAX];
		uint8_t idx[DFUSE_TARGETS_MAX];
		if (find(x->s, x->e, x->serial, x->port, WANT_DFU, false, &u) == 0) {
			rc = check_targets(x, &u, layouts, idx, detail);
			dfu_usb_release(&u);
		}
	}
	return rc;
}

/* ---- write ---- */

static bool sess_cancelled(void *ctx)
{
	const sess *x = ctx;
	return x->sh && x->sh->cancelled(x->sh->ctx);
}

/* Progress in bytes of the image file, as ferryd counts it: the suffix and
 * the DfuSe headers are not sent, so the last block completes the file. */
static void sess_progress(void *ctx, uint64_t done, uint64_t total)
{
	const sess *x = ctx;
	if (x->sh)
		x->sh->progress(x->sh->ctx, done >= total ? x->img_len : done, x->img_len);
}

/* Select the alternate setting to download to: by configured name prefix
 * or number, else the first. */
static int pick_alt(const sess *x, uint8_t *alt, char *detail)
{
	const dfu_usb *u = &x->u;
	for (size_t i = 0; i < u->n_alts; i++)
		if ((x->e->alt_num >= 0 && u->alts[i].alt == x->e->alt_num) ||
		    (x->e->alt_name[0] && !strncmp(u->alts[i].name, x->e->alt_name, strlen(x->e->alt_name))) ||
		    (x->e->alt_num < 0 && !x->e->alt_name[0])) {
			*alt = u->alts[i].alt;
			return 0;
		}
	return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE,
	            "the device in DFU mode has no alternate setting %s%.64s", x->e->alt_name[0] ? "named " : "",
	            x->e->alt_name[0] ? x->e->alt_name : "of that number");
}

static const char *who(const sess *x)
{
	return x->serial[0] ? x->serial : x->port;
}

/* Step 2: DETACH a run-time device (and reset it unless it leaves by
 * itself), then wait for it in DFU mode. */
static int detach(sess *x, dfu_usb *u, char *detail)
{
	state *s = x->s;
	libusb_device_handle *h;
	int r, w;

	if ((r = libusb_open(u->dev, &h)) < 0)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot open %04x:%04x at %s: %s", u->vid, u->pid,
		            u->port, libusb_strerror(r));
	libusb_set_auto_detach_kernel_driver(h, 1);
	if ((r = libusb_claim_interface(h, u->intf)) < 0) {
		libusb_close(h);
		return fail(detail, FERRY_ADAPTER_E_DEVICE_BUSY, "cannot claim the DFU run-time interface of %s: %s",
		            who(x), libusb_strerror(r));
	}
	dfu_link l = {.h = h, .intf = u->intf, .timeout_ms = (unsigned)s->timeout_ms};
	uint16_t t = u->func.detach_ms && u->func.detach_ms < 1000 ? u->func.detach_ms : 1000;
	if ((r = dfu_detach(&l, t)) < 0) /* some devices stall it and detach all the same */
		logf_(s, FERRY_LOG_WARNING, "%s: DETACH: %s; going on", who(x), dfu_usb_error_text(r));
	libusb_release_interface(h, u->intf);
	if (!(u->func.attrs & DFU_ATTR_WILL_DETACH)) {
		r = libusb_reset_device(h);
		if (r < 0 && r != LIBUSB_ERROR_NOT_FOUND && r != LIBUSB_ERROR_NO_DEVICE)
			logf_(s, FERRY_LOG_WARNING, "%s: reset after DETACH: %s", who(x), libusb_strerror(r));
	}
	libusb_close(h);
	logf_(s, FERRY_LOG_INFO, "%s: detached %04x:%04x; waiting for it in DFU mode", who(x), u->vid, u->pid);
	dfu_usb_release(u);
	x->detached = true;
	if ((w = wait_for(x, WANT_DFU, s->detach_wait_ms, true, u)) == CANCELLED)
		return fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled while waiting for the device in DFU mode");
	if (w == NOT_FOUND)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
		            "%s did not come back in DFU mode within %ld ms of DETACH; it keeps its firmware", who(x),
		            s->detach_wait_ms);
	return 0;
}

/* Reset the device on x->h and let go of it. */
static void reset_and_drop(sess *x)
{
	int r = libusb_reset_device(x->h);
	if (r < 0 && r != LIBUSB_ERROR_NOT_FOUND && r != LIBUSB_ERROR_NO_DEVICE)
		logf_(x->s, FERRY_LOG_WARNING, "%s: reset: %s", who(x), libusb_strerror(r));
	drop_handle(x);
}

/* Steps 2 and 3: the device in DFU mode, claimed, idle. */
static int enter_dfu(sess *x, char *detail)
{
	state *s = x->s;
	dfu_status st;
	int r;

	for (int pass = 0;; pass++) {
		drop_handle(x);
		if ((r = wait_for(x, WANT_ANY, s->detach_wait_ms, true, &x->u)) == CANCELLED)
			return fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled while waiting for the device");
		if (r == NOT_FOUND)
			return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "%s is not attached", who(x));
		if (!x->u.dfu_mode && (r = detach(x, &x->u, detail)))
			return r;
		dfu_usb *u = &x->u;
		if ((r = libusb_open(u->dev, &x->h)) < 0) {
			x->h = NULL;
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot open %04x:%04x in DFU mode: %s",
			            u->vid, u->pid, libusb_strerror(r));
		}
		libusb_set_auto_detach_kernel_driver(x->h, 1);
		if ((r = libusb_claim_interface(x->h, u->intf)) < 0) {
			libusb_close(x->h);
			x->h = NULL;
			return fail(detail, FERRY_ADAPTER_E_DEVICE_BUSY,
			            "cannot claim the DFU interface of %04x:%04x: %s", u->vid, u->pid,
			            libusb_strerror(r));
		}
		x->x = (dfu_xfer){
		    .link = {.h = x->h, .intf = u->intf, .timeout_ms = (unsigned)s->timeout_ms},
		    .poll = {.min_ms = (uint32_t)s->poll_min_ms,
		             .max_ms = (uint32_t)s->poll_max_ms,
		             .budget_ms = (uint32_t)s->block_budget_ms,
		             .stalls = 0,
		             .cancelled = sess_cancelled,
		             .ctx = x},
		    .erase_poll = {.min_ms = (uint32_t)s->poll_min_ms,
		                   .max_ms = (uint32_t)s->poll_max_ms,
		                   .budget_ms = (uint32_t)s->erase_budget_ms,
		                   .stalls = 5,
		                   .cancelled = sess_cancelled,
		                   .ctx = x},
		    .transfer_size =
		        u->func.transfer_size < s->transfer_cap ? u->func.transfer_size : (uint16_t)s->transfer_cap,
		    .progress = sess_progress,
		    .ctx = x,
		};
		if (!x->x.transfer_size)
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%04x:%04x reports a wTransferSize of 0",
			            u->vid, u->pid);
		r = dfu_to_idle(&x->x.link, &x->x.poll, &st);
		if (r == 0)
			return 0;
		if (r == 2 && pass == 0) {
			/* left mid-manifestation: a reset starts what it holds, and we begin again */
			logf_(s, FERRY_LOG_WARNING, "%s: found in %s; resetting it", who(x), dfu_state_name(st.state));
			reset_and_drop(x);
			continue;
		}
		return fail(detail, r > 0 ? FERRY_ADAPTER_E_DEVICE_BUSY : FERRY_ADAPTER_E_ADAPTER_ERROR,
		            "%04x:%04x in DFU mode does not return to dfuIDLE: %s", u->vid, u->pid,
		            r > 0 ? dfu_state_name(st.state) : dfu_usb_error_text(r));
	}
}

static int set_alt(sess *x, uint8_t alt, char *detail)
{
	int r = libusb_set_interface_alt_setting(x->h, x->u.intf, alt);
	if (r < 0)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "selecting alternate setting %u: %s", alt,
		            dfu_usb_error_text(r));
	return 0;
}

/* Step 4, once. */
static int download(sess *x, char *detail)
{
	int rc;

	x->x.done = 0;
	x->x.failure = DFU_FAIL_NONE;
	/* DfuSe commands sent to a plain DFU bootloader would be written as
	 * firmware, and plain blocks mean nothing to a DfuSe one */
	if (x->f.dfuse != (x->u.func.bcd_dfu == 0x011A))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "the file is %s, the device in DFU mode speaks %s",
		            x->f.dfuse ? "a DfuSe container" : "a plain DFU file",
		            x->u.func.bcd_dfu == 0x011A ? "DfuSe (bcdDFU 0x011A)" : "plain DFU");
	if (!x->f.dfuse) {
		uint8_t alt = 0;
		x->x.total = x->f.payload_len;
		if ((rc = pick_alt(x, &alt, detail)) || (rc = set_alt(x, alt, detail)))
			return rc;
		x->blocks = (uint32_t)((x->f.payload_len + x->x.transfer_size - 1) / x->x.transfer_size);
		rc = dfu_download_plain(&x->x, x->img, x->f.payload_len);
	} else {
		dfu_layout layouts[DFUSE_TARGETS_MAX];
		uint8_t idx[DFUSE_TARGETS_MAX];
		x->x.total = 0;
		for (size_t t = 0; t < x->f.n_targets; t++)
			for (size_t i = 0; i < x->f.targets[t].n_elements; i++)
				x->x.total += x->f.targets[t].elements[i].size;
		/* everything is checked before the first page is erased */
		if ((rc = check_targets(x, &x->u, layouts, idx, detail)))
			return rc;
		rc = 0;
		for (size_t t = 0; t < x->f.n_targets && !rc; t++)
			if (!(rc = set_alt(x, x->f.targets[t].alt, detail)))
				rc = dfuse_download_target(&x->x, &layouts[t], x->img, &x->f.targets[t]);
	}
	if (rc && x->x.detail[0])
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "%s", x->x.detail);
	return rc;
}

static int s_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	sess *x = session;
	int rc;

	if (!x->img && (rc = s_check(x, img, detail)))
		return rc;
	for (long attempt = 0;; attempt++) {
		x->x.failure = DFU_FAIL_NONE;
		rc = enter_dfu(x, detail);
		if (!rc)
			rc = download(x, detail);
		*resume_from = 0; /* DFU cannot continue a download: it always starts at block 0 */
		if (!rc)
			return 0;
		if ((x->x.failure != DFU_FAIL_STALL && x->x.failure != DFU_FAIL_GONE) || attempt >= x->s->retries)
			return rc;
		logf_(x->s, FERRY_LOG_WARNING, "%s: %s; starting the download again (%ld of %ld)",
		      x->serial[0] ? x->serial : x->port, detail, attempt + 1, x->s->retries);
		if (x->sh)
			x->sh->progress(x->sh->ctx, 0, x->img_len);
	}
}

/* ---- activate, confirm, abort ---- */

static int s_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	bool away = false;
	int rc;

	if (!x->h)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "no download to activate");
	x->activated = true;
	if (!x->f.dfuse) {
		rc = dfu_manifest_plain(&x->x, (uint16_t)x->blocks, &away);
	} else {
		/* the start address belongs to the first target's memory: select
		 * its alternate setting again after the others were written */
		const dfuse_target *t = &x->f.targets[0];
		if ((rc = set_alt(x, t->alt, detail)))
			return rc;
		rc = dfuse_leave(&x->x, t->n_elements ? t->elements[0].address : 0, &away);
	}
	if (rc) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "%s", x->x.detail);
		return rc;
	}
	if (away)
		logf_(x->s, FERRY_LOG_INFO, "%s: %s; judging by what comes back", who(x), x->x.detail);
	/* manifested (tolerant: dfuIDLE; intolerant: waiting for a reset, maybe
	 * silently) or told to leave: a bus reset starts the new firmware, and
	 * on a device that has gone already it fails harmlessly */
	reset_and_drop(x);
	return 0;
}

static int s_confirm(void *session, const ferry_image_v1 *img, char *version, char *detail)
{
	sess *x = session;
	dfu_usb u;
	bool ok;
	int w = wait_for(x, WANT_RUNTIME, x->s->return_wait_ms, true, &u);

	if (w == CANCELLED)
		return fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled while waiting for %s to come back", who(x));
	if (w == NOT_FOUND) {
		if (find(x->s, x->e, x->serial, x->port, WANT_DFU, false, &u) == 0) {
			dfu_usb_release(&u);
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
			            "%s stays in DFU mode: its bootloader did not start the new firmware", who(x));
		}
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s did not come back within %ld ms", who(x),
		            x->s->return_wait_ms);
	}
	ok = read_version(x->e, &u, version);
	if (u.vid != x->vid || u.pid != x->pid)
		logf_(x->s, FERRY_LOG_INFO, "%s: came back as %04x:%04x (was %04x:%04x)", u.port, u.vid, u.pid, x->vid,
		      x->pid);
	dfu_usb_release(&u);
	if (!ok)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s came back but reports no readable version",
		            who(x));
	if (!same_version(img->version, version))
		return fail(detail, FERRY_ADAPTER_E_VERSION_MISMATCH, "%s came back running %.64s, not %.64s", who(x),
		            version, img->version);
	/* bcdDevice has no room for a pre-release or build part: the rest
	 * agrees, so the device runs the manifest's version */
	snprintf(version, S, "%s", img->version);
	return 0;
}

/* Clear, abort and reset a device found in DFU mode, so that it starts the
 * firmware it holds.  Not cancellable: this is what a cancel asks for. */
static void leave_dfu(sess *x)
{
	dfu_status st;
	dfu_poll p = {.min_ms = (uint32_t)x->s->poll_min_ms,
	              .max_ms = (uint32_t)x->s->poll_max_ms,
	              .budget_ms = (uint32_t)x->s->block_budget_ms};

	if (!x->h) {
		if (libusb_open(x->u.dev, &x->h) < 0) {
			x->h = NULL;
			return;
		}
		libusb_claim_interface(x->h, x->u.intf);
	}
	x->x.link = (dfu_link){.h = x->h, .intf = x->u.intf, .timeout_ms = (unsigned)x->s->timeout_ms};
	dfu_to_idle(&x->x.link, &p, &st);
	reset_and_drop(x);
}

static int s_abort(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	char version[S];
	dfu_usb u = {.dev = NULL};

	if (!x->h && !x->detached)
		return 0; /* it never left its firmware: nothing to undo */
	/* DFU keeps no old image (no CAP_ROLLBACK, so ferryd never reports a
	 * rollback for it): what is left to do is to get the device out of
	 * DFU mode and see what it runs */
	logf_(x->s, FERRY_LOG_WARNING, "%s: aborting%s; resetting the device to leave DFU mode", who(x),
	      x->activated ? " after a failed manifestation" : "");
	if (x->h)
		leave_dfu(x); /* on a device that has left, this fails harmlessly */
	/* it may come back in DFU mode (a device that left mid-download, or one
	 * still re-enumerating after DETACH): reset that one too */
	if (wait_for(x, WANT_ANY, x->s->detach_wait_ms, false, &u) == FOUND && u.dfu_mode) {
		drop_handle(x);
		x->u = u;
		leave_dfu(x);
	} else if (u.dev) {
		dfu_usb_release(&u);
	}
	/* 0 only for a device seen back in run-time mode: one that stays in
	 * DFU mode may hold half a download */
	if (wait_for(x, WANT_RUNTIME, x->s->return_wait_ms, false, &u) != FOUND)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			    "%s did not come back in run-time mode within %ld ms", who(x), x->s->return_wait_ms);
	if (read_version(x->e, &u, version))
		logf_(x->s, FERRY_LOG_INFO, "%s: back in run-time mode with firmware %s", who(x), version);
	dfu_usb_release(&u);
	return 0;
}

/* DFU keeps no old image: what activate started stays. */
static int s_commit(void *session, const ferry_image_v1 *img, char *detail)
{
	return 0;
}

static const char *const formats[] = {"dfu", "dfuse", NULL};

static const ferry_config_key keys[] = {
	{"timeout_ms", FERRY_CFG_INT, 100, 60000, false},
	{"detach_wait_ms", FERRY_CFG_INT, 100, 600000, false},
	{"return_wait_ms", FERRY_CFG_INT, 100, 600000, false},
	{"poll_min_ms", FERRY_CFG_INT, 0, 1000, false},
	{"poll_max_ms", FERRY_CFG_INT, 1, 600000, false},
	{"block_budget_ms", FERRY_CFG_INT, 10, 3600000, false},
	{"erase_budget_ms", FERRY_CFG_INT, 10, 3600000, false},
	{"retries", FERRY_CFG_INT, 0, 20, false},
	{"transfer_size", FERRY_CFG_INT, 1, TRANSFER_MAX, false},
	{"max_image", FERRY_CFG_INT, 1, 1024L * 1024 * 1024, false},
	{"devices[].component", FERRY_CFG_TEXT, 1, 64, true},
	{"devices[].vendor_id", FERRY_CFG_TEXT, 1, 64, true},
	{"devices[].class_id", FERRY_CFG_TEXT, 1, 64, true},
	{"devices[].serial", FERRY_CFG_TEXT, 1, DFU_SERIAL_MAX - 1, false},
	{"devices[].port", FERRY_CFG_TEXT, 1, DFU_PORT_MAX - 1, false},
	{"devices[].usb", FERRY_CFG_TEXT, 9, 9, false},
	{"devices[].dfu_usb", FERRY_CFG_TEXT, 9, 9, false},
	{"devices[].alt", FERRY_CFG_TEXT, 1, 64, false},
	{"devices[].version", FERRY_CFG_TEXT, 3, 10, false},
	{NULL, 0, 0, 0, false},
};

static const ferry_adapter_v2 table = {
	.abi = 2,
	.name = "usb-dfu",
	.formats = formats,
	.caps = FERRY_ADAPTER_CAP_NEEDS_RESET, /* no rollback: the download replaces the firmware */
	.max_sessions = 8,                     /* each session keeps to its own device (find) */
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
