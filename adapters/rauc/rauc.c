/* rauc: the gateway's own system, A/B, through RAUC's D-Bus API
 * (de.pengutronix.rauc.Installer on the system bus), with sd-bus.
 *
 * One device, the system.  Its component's version is the bundle version
 * RAUC recorded for the booted slot.
 *
 *   check     Info(bundle): RAUC verifies the bundle's signature and gives
 *             its compatible and version; both must be this system's and
 *             the manifest's.  (RAUC 1.8, Debian bookworm's, has Info;
 *             InspectBundle came later.)  A bundle Info cannot read goes on
 *             to write, where InstallBundle refuses it with the reason.
 *   write     InstallBundle(bundle) into the other slot; Progress becomes
 *             ferry's progress, Completed ends it, LastError is the detail.
 *             An install still running (ferryd was killed) is waited out
 *             first, and the bundle installed again.
 *   activate  the configured reboot command.  ferryd journalled
 *             `activating` before; confirm then waits for the restart.
 *   confirm   after the restart: the booted slot must hold the manifest's
 *             version, and the health command (if any) must pass.  Back on
 *             the old slot (the bootloader gave up on the new one), or an
 *             unhealthy new system: install_failed, and ferryd aborts.
 *   commit    Mark(good, booted).
 *   abort     on the new slot: Mark(bad, booted), Mark(active, other) and
 *             the reboot command, back to the old system; on the old slot:
 *             Mark(active, booted), so the new one is never tried again.
 *
 * So `installed` is never reported before the new system booted and passed
 * its health check.  The adapter declares FERRY_ADAPTER_CAP_RESTARTS_GATEWAY:
 * in an all-or-nothing update the system goes last, as the one device that
 * cannot be reverted.  Every value from D-Bus is bounded and type-checked;
 * every wait has a deadline. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "ferry/adapter.h"

extern char **environ;

#define RAUC_NAME "de.pengutronix.rauc"
#define RAUC_IFACE "de.pengutronix.rauc.Installer"
#define CMD_MAX 1024

static const char *const formats[] = {"rauc-bundle", NULL};

typedef struct state {
	const ferry_host_v1 *host;
	char bus[256];
	char vendor_id[FERRY_ADAPTER_STR_MAX], class_id[FERRY_ADAPTER_STR_MAX], component[FERRY_ADAPTER_STR_MAX];
	char reboot[CMD_MAX], health[CMD_MAX];
	int call_timeout_ms, install_timeout_s, reboot_wait_s, health_timeout_s;
	bool idle; /* no config section: no device */
} state;

typedef struct session {
	state *s;
	const ferry_session_host_v1 *sh;
	sd_bus *bus;
	bool rebooting; /* this session ran the reboot command */
	/* while an install runs */
	bool done;
	int result;
	uint64_t total;
} session;

/* The booted slot as RAUC tells it. */
typedef struct slots {
	char booted[FERRY_ADAPTER_STR_MAX];   /* slot name, "rootfs.1" */
	char bootname[FERRY_ADAPTER_STR_MAX]; /* "B" */
	char version[FERRY_ADAPTER_STR_MAX];  /* its bundle.version, "" none */
	char other[FERRY_ADAPTER_STR_MAX];    /* a slot of the same class that is not booted */
	char other_version[FERRY_ADAPTER_STR_MAX];
	char other_status[FERRY_ADAPTER_STR_MAX]; /* its boot-status, "" when RAUC has none */
} slots;

static void logf_(const state *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(const state *s, int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->host->log(s->host->ctx, level, msg);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Text fit for a detail: printable ASCII, bounded. */
static void clean(char *dst, size_t cap, const char *src)
{
	size_t n = 0;
	for (; src && *src && n + 1 < cap; src++)
		dst[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : ' ';
	dst[n] = '\0';
}

static int bus_open(const state *s, sd_bus **out, char *detail)
{
	sd_bus *bus = NULL;
	int r;

	*out = NULL;
	if (!strcmp(s->bus, "system")) {
		r = sd_bus_open_system(&bus);
	} else {
		if ((r = sd_bus_new(&bus)) >= 0 && (r = sd_bus_set_address(bus, s->bus)) >= 0 &&
		    (r = sd_bus_set_bus_client(bus, 1)) >= 0)
			r = sd_bus_start(bus);
	}
	if (r < 0) {
		sd_bus_unref(bus);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot reach the D-Bus at %.64s: %s",
					  s->bus, strerror(-r));
	}
	*out = bus;
	return 0;
}

static int call(const session *x, const char *method, sd_bus_message **reply, char *detail, const char *types, ...)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	va_list ap;
	int r;

	if ((r = sd_bus_message_new_method_call(x->bus, &m, RAUC_NAME, "/", RAUC_IFACE, method)) >= 0 && types) {
		va_start(ap, types);
		r = sd_bus_message_appendv(m, types, ap);
		va_end(ap);
	}
	if (r >= 0)
		r = sd_bus_call(x->bus, m, (uint64_t)x->s->call_timeout_ms * 1000, &e, reply);
	sd_bus_message_unref(m);
	if (r < 0) {
		char msg[FERRY_ADAPTER_DETAIL_MAX - 40];
		clean(msg, sizeof(msg), e.message ? e.message : strerror(-r));
		r = ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "RAUC %s: %s", method, msg);
	} else {
		r = 0;
	}
	sd_bus_error_free(&e);
	return r;
}

static int prop_s(const session *x, const char *name, char *out, size_t cap, char *detail)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char *v = NULL;
	int r = sd_bus_get_property_string(x->bus, RAUC_NAME, "/", RAUC_IFACE, name, &e, &v);

	if (r < 0) {
		char msg[160];
		clean(msg, sizeof(msg), e.message ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "RAUC property %s: %s", name, msg);
	}
	clean(out, cap, v);
	free(v);
	return 0;
}

/* One slot's dictionary: the string values we use. */
static int slot_dict(sd_bus_message *m, char *bootname, char *st, char *version, char *boot_status, char *class)
{
	int r;
	if ((r = sd_bus_message_enter_container(m, 'a', "{sv}")) < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *key, *val = NULL;
		char *dst = NULL;
		if ((r = sd_bus_message_read(m, "s", &key)) < 0)
			return r;
		if (!strcmp(key, "bootname"))
			dst = bootname;
		else if (!strcmp(key, "state"))
			dst = st;
		else if (!strcmp(key, "bundle.version"))
			dst = version;
		else if (!strcmp(key, "boot-status"))
			dst = boot_status;
		else if (!strcmp(key, "class"))
			dst = class;
		if (dst && sd_bus_message_enter_container(m, 'v', "s") > 0) {
			if ((r = sd_bus_message_read(m, "s", &val)) < 0)
				return r;
			clean(dst, FERRY_ADAPTER_STR_MAX, val);
			if ((r = sd_bus_message_exit_container(m)) < 0)
				return r;
		} else if ((r = sd_bus_message_skip(m, "v")) < 0) {
			return r;
		}
		if ((r = sd_bus_message_exit_container(m)) < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

/* GetSlotStatus: the booted slot, and one other of its class. */
static int slot_status(const session *x, slots *out, char *detail)
{
	sd_bus_message *reply = NULL;
	char booted_class[FERRY_ADAPTER_STR_MAX] = "";
	slots found[16];
	char classes[16][FERRY_ADAPTER_STR_MAX];
	size_t n = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = call(x, "GetSlotStatus", &reply, detail, NULL)))
		return r;
	if ((r = sd_bus_message_enter_container(reply, 'a', "(sa{sv})")) < 0)
		goto bad;
	while ((r = sd_bus_message_enter_container(reply, 'r', "sa{sv}")) > 0) {
		const char *name;
		char st[FERRY_ADAPTER_STR_MAX] = "";
		slots *f = &found[n < 16 ? n : 15];
		memset(f, 0, sizeof(*f));
		classes[n < 16 ? n : 15][0] = '\0';
		if ((r = sd_bus_message_read(reply, "s", &name)) < 0 ||
		    (r = slot_dict(reply, f->bootname, st, f->version, f->other_status, classes[n < 16 ? n : 15])) < 0 ||
		    (r = sd_bus_message_exit_container(reply)) < 0)
			goto bad;
		clean(f->booted, sizeof(f->booted), name);
		if (!strcmp(st, "booted") && !out->booted[0]) {
			*out = *f;
			out->other_status[0] = '\0';
			snprintf(booted_class, sizeof(booted_class), "%s", classes[n < 16 ? n : 15]);
		}
		if (n < 16)
			n++;
	}
	if (r < 0)
		goto bad;
	sd_bus_message_unref(reply);
	if (!out->booted[0])
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "RAUC knows no booted slot");
	for (size_t i = 0; i < n; i++)
		if (strcmp(found[i].booted, out->booted) && !strcmp(classes[i], booted_class) && !out->other[0]) {
			snprintf(out->other, sizeof(out->other), "%s", found[i].booted);
			snprintf(out->other_version, sizeof(out->other_version), "%s", found[i].version);
			snprintf(out->other_status, sizeof(out->other_status), "%s", found[i].other_status);
		}
	return 0;
bad:
	sd_bus_message_unref(reply);
	return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "RAUC GetSlotStatus: an answer of another "
				  "shape (%s)", strerror(-r));
}

static int mark(const session *x, const char *how, const char *slot, char *detail)
{
	sd_bus_message *reply = NULL;
	const char *name = NULL, *msg = NULL;
	char n[FERRY_ADAPTER_STR_MAX], m[160];
	int r = call(x, "Mark", &reply, detail, "ss", how, slot);

	if (!r && sd_bus_message_read(reply, "ss", &name, &msg) >= 0) {
		clean(n, sizeof(n), name);
		clean(m, sizeof(m), msg);
		logf_(x->s, FERRY_LOG_INFO, "rauc: Mark(%s, %s): %s: %s", how, slot, n, m);
	}
	sd_bus_message_unref(reply);
	return r;
}

/* Run a configured command through /bin/sh, at most timeout_s seconds: in
 * a process group of its own, with default signals (ferryd blocks some),
 * so that a timeout ends the whole command, not only its shell. */
static int run_cmd(const session *x, const char *what, const char *cmd, int timeout_s, char *detail)
{
	char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
	posix_spawnattr_t at;
	sigset_t none, dfl;
	pid_t pid;
	int status = 0, rc;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	if ((rc = posix_spawnattr_init(&at)))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "the %s command cannot start: %s", what,
					  strerror(rc));
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawnattr_setpgroup(&at, 0);
	rc = posix_spawn(&pid, "/bin/sh", NULL, &at, argv, environ);
	posix_spawnattr_destroy(&at);
	if (rc)
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "the %s command cannot start: %s", what,
					  strerror(rc));
	for (int64_t until = now_ms() + (int64_t)timeout_s * 1000;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR)
			return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "the %s command: %s", what,
						  strerror(errno));
		if (now_ms() > until) {
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
						  "the %s command did not end within %d s", what, timeout_s);
		}
		sleep_ms(50);
	}
	(void)x;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "the %s command failed (%s %d)", what,
				  WIFEXITED(status) ? "exit status" : "signal",
				  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* ---- the table ---- */

static int r_init(const ferry_host_v1 *host, void **st, char *detail)
{
	state *s = calloc(1, sizeof(*s));
	const char *v;
	int rc;

	if (!s)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	s->host = host;
	snprintf(s->bus, sizeof(s->bus), "%s", (v = host->config(host->ctx, "bus")) ? v : "system");
	if (strcmp(s->bus, "system") && strncmp(s->bus, "unix:", 5)) {
		free(s);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "config bus: use system or a unix: D-Bus "
					  "address");
	}
	/* no section at all: loaded, but the system is not offered; a section
	 * needs all three */
	const char *vid = host->config(host->ctx, "vendor_id"), *cid = host->config(host->ctx, "class_id"),
		   *reboot = host->config(host->ctx, "reboot");
	if ((vid || cid || reboot) && !(vid && cid && reboot)) {
		free(s);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "config %s: required key is missing",
					  !vid ? "vendor_id" : !cid ? "class_id" : "reboot");
	}
	s->idle = !vid;
	snprintf(s->vendor_id, sizeof(s->vendor_id), "%s", vid ? vid : "");
	snprintf(s->class_id, sizeof(s->class_id), "%s", cid ? cid : "");
	snprintf(s->component, sizeof(s->component), "%s", (v = host->config(host->ctx, "component")) ? v : "rootfs");
	snprintf(s->reboot, sizeof(s->reboot), "%s", reboot ? reboot : "");
	snprintf(s->health, sizeof(s->health), "%s", (v = host->config(host->ctx, "health")) ? v : "");
	if ((rc = ferry_adapter_config_int(host, "call_timeout_ms", 120000, 1000, 3600000, &s->call_timeout_ms, detail)) ||
	    (rc = ferry_adapter_config_int(host, "install_timeout_s", 3600, 10, 86400, &s->install_timeout_s, detail)) ||
	    (rc = ferry_adapter_config_int(host, "reboot_wait_s", 600, 1, 86400, &s->reboot_wait_s, detail)) ||
	    (rc = ferry_adapter_config_int(host, "health_timeout_s", 120, 1, 3600, &s->health_timeout_s, detail))) {
		free(s);
		return rc;
	}
	*st = s;
	return 0;
}

static void r_fini(void *st)
{
	free(st);
}

static int r_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	state *s = st;
	session x = {.s = s};
	slots sl;
	char compat[FERRY_ADAPTER_STR_MAX] = "", why[FERRY_ADAPTER_DETAIL_MAX];
	ferry_device_v1 *d = devs;

	*n = 0;
	(void)detail;
	if (max < 1 || s->idle)
		return 0;
	/* RAUC not there (yet): no device, as an unplugged board is none */
	if (bus_open(s, &x.bus, why) || prop_s(&x, "Compatible", compat, sizeof(compat), why) ||
	    slot_status(&x, &sl, why)) {
		logf_(s, FERRY_LOG_INFO, "rauc: %s", why);
		sd_bus_flush_close_unref(x.bus);
		return 0;
	}
	sd_bus_flush_close_unref(x.bus);
	snprintf(d->id, sizeof(d->id), "system");
	snprintf(d->vendor_id, sizeof(d->vendor_id), "%s", s->vendor_id);
	snprintf(d->class_id, sizeof(d->class_id), "%s", s->class_id);
	snprintf(d->components[0].key, sizeof(d->components[0].key), "%s", s->component);
	snprintf(d->components[0].value, sizeof(d->components[0].value), "%s", sl.version);
	d->n_components = 1;
	snprintf(d->attributes[0].key, FERRY_ADAPTER_STR_MAX, "compatible");
	snprintf(d->attributes[0].value, FERRY_ADAPTER_STR_MAX, "%s", compat);
	snprintf(d->attributes[1].key, FERRY_ADAPTER_STR_MAX, "booted");
	snprintf(d->attributes[1].value, FERRY_ADAPTER_STR_MAX, "%s", sl.booted);
	snprintf(d->attributes[2].key, FERRY_ADAPTER_STR_MAX, "bootname");
	snprintf(d->attributes[2].value, FERRY_ADAPTER_STR_MAX, "%s", sl.bootname);
	snprintf(d->attributes[3].key, FERRY_ADAPTER_STR_MAX, FERRY_ADAPTER_ATTR_LINK);
	snprintf(d->attributes[3].value, FERRY_ADAPTER_STR_MAX, FERRY_LINK_PHYSICAL); /* the gateway itself */
	d->n_attributes = 4;
	*n = 1;
	return 0;
}

static int r_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **out, char *detail)
{
	session *x = calloc(1, sizeof(*x));
	int rc;

	(void)dev;
	if (!x)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	x->s = st;
	x->sh = sh;
	if ((rc = bus_open(st, &x->bus, detail))) {
		free(x);
		return rc == FERRY_ADAPTER_E_ADAPTER_ERROR ? FERRY_ADAPTER_E_NO_MATCHING_DEVICE : rc;
	}
	*out = x;
	return 0;
}

static void r_close(void *sess)
{
	session *x = sess;
	sd_bus_flush_close_unref(x->bus);
	free(x);
}

static int r_check(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	sd_bus_message *reply = NULL;
	const char *compat = NULL, *version = NULL;
	char mine[FERRY_ADAPTER_STR_MAX], c[FERRY_ADAPTER_STR_MAX], v[FERRY_ADAPTER_STR_MAX];
	int rc;

	if (strcmp(img->format, "rauc-bundle"))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "format %.32s: rauc takes rauc-bundle",
					  img->format);
	if ((rc = prop_s(x, "Compatible", mine, sizeof(mine), detail)))
		return rc;
	/* RAUC checks the bundle's signature against its keyring here.  Its
	 * Info answers any failure with the same words ("rauc info error"),
	 * the reason only in its own log; InstallBundle refuses such a bundle
	 * too, before writing anything, with the reason in LastError: that is
	 * where the operator reads it. */
	if (call(x, "Info", &reply, detail, "s", img->path)) {
		logf_(x->s, FERRY_LOG_WARNING, "rauc: %s; the install will say why", detail);
		detail[0] = '\0';
		return 0;
	}
	if (sd_bus_message_read(reply, "ss", &compat, &version) < 0) {
		sd_bus_message_unref(reply);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "RAUC Info: an answer of another shape");
	}
	clean(c, sizeof(c), compat);
	clean(v, sizeof(v), version);
	sd_bus_message_unref(reply);
	if (strcmp(c, mine))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
					  "the bundle is for compatible \"%s\"; this system is \"%s\"", c, mine);
	if (strcmp(v, img->version))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_VERSION_MISMATCH,
					  "the bundle says version %s; the manifest says %s", v, img->version);
	return 0;
}

static int on_completed(sd_bus_message *m, void *ctx, sd_bus_error *e)
{
	session *x = ctx;
	int32_t result = -1;
	(void)e;
	if (sd_bus_message_read(m, "i", &result) >= 0) {
		x->result = result;
		x->done = true;
	}
	return 0;
}

static int on_props(sd_bus_message *m, void *ctx, sd_bus_error *e)
{
	session *x = ctx;
	const char *iface;
	(void)e;
	if (sd_bus_message_read(m, "s", &iface) < 0 || strcmp(iface, RAUC_IFACE) ||
	    sd_bus_message_enter_container(m, 'a', "{sv}") < 0)
		return 0;
	while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
		const char *key;
		if (sd_bus_message_read(m, "s", &key) < 0)
			return 0;
		if (!strcmp(key, "Progress") && sd_bus_message_enter_container(m, 'v', "(isi)") > 0) {
			int32_t pct = 0, depth = 0;
			const char *msg = NULL;
			if (sd_bus_message_read(m, "(isi)", &pct, &msg, &depth) >= 0 && pct >= 0 && pct <= 100 &&
			    x->sh && x->sh->progress)
				x->sh->progress(x->sh->ctx, x->total * (uint64_t)pct / 100, x->total);
			sd_bus_message_exit_container(m);
		} else if (sd_bus_message_skip(m, "v") < 0) {
			return 0;
		}
		sd_bus_message_exit_container(m);
	}
	return 0;
}

/* Until RAUC is idle (an install a killed ferryd left goes on in RAUC).
 * An abort waits even when cancelled: the install it follows must end
 * before the slot it wrote can be taken back. */
static int wait_idle(session *x, bool cancellable, char *detail)
{
	char op[FERRY_ADAPTER_STR_MAX];
	int rc;
	for (int64_t until = now_ms() + (int64_t)x->s->install_timeout_s * 1000;;) {
		if ((rc = prop_s(x, "Operation", op, sizeof(op), detail)))
			return rc;
		if (!strcmp(op, "idle"))
			return 0;
		if (cancellable && x->sh->cancelled(x->sh->ctx))
			return ferry_adapter_fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled while RAUC was %s", op);
		if (now_ms() > until)
			return ferry_adapter_fail(detail, FERRY_ADAPTER_E_DEVICE_BUSY, "RAUC stayed %s for %d s", op,
						  x->s->install_timeout_s);
		logf_(x->s, FERRY_LOG_INFO, "rauc: RAUC is %s; waiting for it to end", op);
		sleep_ms(500);
	}
}

static int r_write(void *sess, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	session *x = sess;
	sd_bus_slot *s1 = NULL, *s2 = NULL;
	sd_bus_message *reply = NULL;
	int rc, r;

	*resume_from = 0; /* RAUC installs a bundle whole */
	if ((rc = wait_idle(x, true, detail)))
		return rc;
	x->done = false;
	x->total = img->length;
	if ((r = sd_bus_match_signal(x->bus, &s1, RAUC_NAME, "/", RAUC_IFACE, "Completed", on_completed, x)) < 0 ||
	    (r = sd_bus_match_signal(x->bus, &s2, RAUC_NAME, "/", "org.freedesktop.DBus.Properties", "PropertiesChanged",
				     on_props, x)) < 0) {
		rc = ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "cannot watch RAUC's signals: %s",
					strerror(-r));
		goto out;
	}
	if ((rc = call(x, "InstallBundle", &reply, detail, "sa{sv}", img->path, 0)))
		goto out;
	logf_(x->s, FERRY_LOG_INFO, "rauc: installing %s %s", img->component, img->version);
	for (int64_t until = now_ms() + (int64_t)x->s->install_timeout_s * 1000; !x->done;) {
		if ((r = sd_bus_process(x->bus, NULL)) < 0) {
			rc = ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "the D-Bus went away during the "
						"install: %s", strerror(-r));
			goto out;
		}
		if (r > 0)
			continue;
		if (x->sh->cancelled(x->sh->ctx)) {
			/* RAUC cannot stop an install; the next write waits it out */
			rc = ferry_adapter_fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled; RAUC finishes the install");
			goto out;
		}
		if (now_ms() > until) {
			rc = ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "RAUC did not complete the install "
						"within %d s", x->s->install_timeout_s);
			goto out;
		}
		sd_bus_wait(x->bus, 200 * 1000);
	}
	if (x->result != 0) {
		char err[FERRY_ADAPTER_DETAIL_MAX - 40] = "";
		char tmp[8];
		if (prop_s(x, "LastError", err, sizeof(err), tmp))
			snprintf(err, sizeof(err), "no LastError");
		rc = ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "RAUC: %s", err);
		goto out;
	}
	if (x->sh->progress)
		x->sh->progress(x->sh->ctx, img->length, img->length);
	*resume_from = img->length;
	rc = 0;
out:
	sd_bus_message_unref(reply);
	sd_bus_slot_unref(s1);
	sd_bus_slot_unref(s2);
	return rc;
}

static int r_activate(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	int rc;

	logf_(x->s, FERRY_LOG_INFO, "rauc: %s %s installed; restarting the gateway (%s)", img->component, img->version,
	      x->s->reboot);
	if ((rc = run_cmd(x, "reboot", x->s->reboot, 60, detail)))
		return rc;
	x->rebooting = true;
	return 0;
}

static int r_confirm(void *sess, const ferry_image_v1 *img, char *version, char *detail)
{
	session *x = sess;
	slots sl;
	int rc;

	if (x->rebooting) {
		/* the system goes down, ferryd with it: the confirm that counts
		 * is asked after the restart */
		for (int64_t until = now_ms() + (int64_t)x->s->reboot_wait_s * 1000; now_ms() < until;) {
			if (x->sh->cancelled(x->sh->ctx))
				return ferry_adapter_fail(detail, FERRY_ADAPTER_E_CANCELLED, "the gateway restarts");
			sleep_ms(100);
		}
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "the system did not restart within %d s "
					  "of the reboot command", x->s->reboot_wait_s);
	}
	if ((rc = slot_status(x, &sl, detail)))
		return rc;
	if (strcmp(sl.version, img->version))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
					  "the new system did not come up: the gateway booted %s (%s, version %s) again; "
					  "%s holds %s, boot status %s", sl.booted, sl.bootname, sl.version[0] ? sl.version : "none",
					  sl.other[0] ? sl.other : "the other slot", sl.other_version[0] ? sl.other_version : "?",
					  sl.other_status[0] ? sl.other_status : "unknown");
	if (x->s->health[0] && (rc = run_cmd(x, "health", x->s->health, x->s->health_timeout_s, detail))) {
		char why[FERRY_ADAPTER_DETAIL_MAX];
		snprintf(why, sizeof(why), "%s", detail);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s booted %s, but %s", img->version,
					  sl.booted, why);
	}
	snprintf(version, FERRY_ADAPTER_STR_MAX, "%s", sl.version);
	return 0;
}

static int r_commit(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	slots sl;
	int rc;

	if ((rc = slot_status(x, &sl, detail)))
		return rc;
	if (strcmp(sl.version, img->version))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s is not the booted version (%s runs "
					  "%s)", img->version, sl.booted, sl.version);
	return mark(x, "good", "booted", detail);
}

static int r_abort(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	slots sl;
	int rc;

	if ((rc = wait_idle(x, false, detail)) || (rc = slot_status(x, &sl, detail)))
		return rc;
	if (img && !strcmp(sl.version, img->version) && sl.other[0]) {
		/* on the new system: back to the old one */
		if ((rc = mark(x, "bad", "booted", detail)) || (rc = mark(x, "active", "other", detail)))
			return rc;
		logf_(x->s, FERRY_LOG_INFO, "rauc: going back to %s (%s)", sl.other, x->s->reboot);
		return run_cmd(x, "reboot", x->s->reboot, 60, detail);
	}
	/* on the old system: it stays primary, and the slot written is not
	 * tried again */
	if ((rc = mark(x, "active", "booted", detail)))
		return rc;
	return 0;
}

static const ferry_config_key keys[] = {
	{"bus", FERRY_CFG_TEXT, 1, 255, false},
	/* vendor_id, class_id and reboot: all three, or no section */
	{"vendor_id", FERRY_CFG_TEXT, 1, 64, false},
	{"class_id", FERRY_CFG_TEXT, 1, 64, false},
	{"component", FERRY_CFG_TEXT, 1, 64, false},
	{"reboot", FERRY_CFG_TEXT, 1, CMD_MAX - 1, false},
	{"health", FERRY_CFG_TEXT, 1, CMD_MAX - 1, false},
	{"call_timeout_ms", FERRY_CFG_INT, 1000, 3600000, false},
	{"install_timeout_s", FERRY_CFG_INT, 10, 86400, false},
	{"reboot_wait_s", FERRY_CFG_INT, 1, 86400, false},
	{"health_timeout_s", FERRY_CFG_INT, 1, 3600, false},
	{NULL, 0, 0, 0, false},
};

static const ferry_adapter_v2 table = {
	.abi = 2,
	.name = "rauc",
	.formats = formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK | FERRY_ADAPTER_CAP_RESTARTS_GATEWAY,
	.max_sessions = 1,
	.config_keys = keys,
	.init = r_init,
	.fini = r_fini,
	.discover = r_discover,
	.open = r_open,
	.check = r_check,
	.write = r_write,
	.activate = r_activate,
	.confirm = r_confirm,
	.commit = r_commit,
	.abort = r_abort,
	.close = r_close,
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
