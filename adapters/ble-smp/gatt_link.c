/* SMP over BLE GATT through BlueZ (see gatt_link.h).
 *
 * Bringing the link up:
 *   1. Device1 properties: Paired and Bonded, or nothing happens (a bond can
 *      be removed between two sessions, so this is asked every time).
 *   2. Device1.Connect unless Connected; AlreadyConnected counts as done,
 *      InProgress and Failed are tried again until the deadline.
 *   3. Wait for ServicesResolved, then find the SMP characteristic in
 *      GetManagedObjects (its object path may change between connections).
 *   4. AcquireNotify: a SOCK_SEQPACKET fd, one notification per message; or
 *      StartNotify and PropertiesChanged on Value, where BlueZ lacks
 *      AcquireNotify or answers it InProgress (it does while any client has
 *      a StartNotify session: StartNotify shares the notifications).
 *      BlueZ keys StartNotify sessions by D-Bus client and keeps a bonded
 *      device's across a drop, so the link ends its own with StopNotify
 *      when it lets go, dropped or not; and a session of this client that
 *      BlueZ still holds ("In Progress", "Already notifying") is ended and
 *      started afresh, not mistaken for someone else's.
 *   5. AcquireWrite: an fd and the ATT MTU; each message is one Write Without
 *      Response of at most MTU - 3 bytes; or WriteValue with type "command".
 *   NotPermitted or NotAuthorized in 4 or 5 means the link's security is
 *   short of what the device demands: refused, and never retried.
 * While up: the fds hang up and Device1 says Connected false when the link
 * drops; either marks it down, and the SMP client brings it back.  Signals
 * count only from org.bluez's own unique name.
 */
#include "gatt_link.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CALL_US (5 * 1000 * 1000ULL)

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

const char *gatt_link_unpaired(const bluez_device *d)
{
	if (!d->paired)
		return "is not paired with this gateway";
	if (d->has_bonded && !d->bonded)
		return "is paired but not bonded (no keys stored)";
	return NULL;
}

/* A signal counts when org.bluez sent it after this link came up: one
 * queued from the previous connection (Connected false) must not take the
 * new one down. */
static bool from_bluez(const gatt_link *l, sd_bus_message *m)
{
	const char *sender = sd_bus_message_get_sender(m);
	uint64_t serial = 0;

	if (l->bluez_owner[0] && (!sender || strcmp(sender, l->bluez_owner)))
		return false;
	return sd_bus_message_get_cookie(m, &serial) < 0 || serial > l->up_serial;
}

static void note_serial(gatt_link *l, sd_bus_message *reply)
{
	uint64_t serial;
	if (reply && sd_bus_message_get_cookie(reply, &serial) >= 0 && serial > l->up_serial)
		l->up_serial = serial;
}

static int on_device_changed(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	gatt_link *l = userdata;
	const char *iface;
	bluez_device d = {.connected = true, .resolved = true};

	if (!from_bluez(l, m) || sd_bus_message_read(m, "s", &iface) < 0 || strcmp(iface, "org.bluez.Device1"))
		return 0;
	if (bluez_device_changes(m, &d) >= 0 && (!d.connected || !d.resolved) && l->up && !l->down) {
		smp_log(l->host, FERRY_LOG_WARNING, "%s: BlueZ reports the link %s", l->name,
			d.connected ? "lost its services" : "disconnected");
		l->down = true;
	}
	return 0;
}

/* A notification piece, from the fd or from a Value signal. */
static void take_piece(gatt_link *l, const uint8_t *p, size_t n)
{
	size_t len;
	if (smp_reasm_feed(&l->rx, p, n, &len) == 1 && !l->have_ready) {
		memcpy(l->ready, l->rx.buf, len);
		l->ready_len = len;
		l->have_ready = true;
	}
}

static int on_value_changed(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	gatt_link *l = userdata;
	const char *iface;
	uint8_t piece[ATT_MTU_MAX];
	size_t n = 0;

	if (!from_bluez(l, m) || sd_bus_message_read(m, "s", &iface) < 0 ||
	    strcmp(iface, "org.bluez.GattCharacteristic1"))
		return 0;
	int r = bluez_value_change(m, piece, sizeof(piece), &n);
	if (r > 0)
		take_piece(l, piece, n);
	else if (r < 0)
		smp_reasm_reset(&l->rx); /* a piece longer than any ATT PDU: not ours */
	return 0;
}

static int refuse(gatt_link *l, const char *what, const sd_bus_error *e, char *detail)
{
	l->refused = true;
	snprintf(l->refusal, sizeof(l->refusal),
		 "%s: BlueZ refused %s (%s: %s): the link is not encrypted and authenticated as the device requires; "
		 "pair and bond it with an authenticated method",
		 l->name, what, e->name ? e->name : "?", e->message ? e->message : "?");
	snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "%s", l->refusal);
	return FERRY_ADAPTER_E_ADAPTER_ERROR;
}

/* An fd from a reply, made ours: only a socket, as BlueZ hands out. */
static int take_fd(sd_bus_message *reply, int *fd, uint16_t *mtu)
{
	struct stat st;
	int f = -1;
	if (sd_bus_message_read(reply, "hq", &f, mtu) < 0 || f < 0 || fstat(f, &st) || !S_ISSOCK(st.st_mode))
		return -1;
	*fd = fcntl(f, F_DUPFD_CLOEXEC, 3);
	if (*fd >= 0)
		fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
	return *fd >= 0 ? 0 : -1;
}

static unsigned clamp_mtu(unsigned mtu)
{
	return mtu < ATT_MTU_MIN ? ATT_MTU_MIN : mtu > ATT_MTU_MAX ? ATT_MTU_MAX : mtu;
}

static void release(gatt_link *l)
{
	if (l->wfd >= 0)
		close(l->wfd);
	if (l->nfd >= 0)
		close(l->nfd);
	l->wfd = l->nfd = -1;
	/* also after a drop: BlueZ keeps a bonded device's notify session for
	 * the next connection, and would refuse our next StartNotify */
	if (l->started)
		bluez_call(l->bus, l->chr_path, "org.bluez.GattCharacteristic1", "StopNotify", CALL_US, NULL, NULL,
			   NULL);
	l->started = false;
	l->value_watch = sd_bus_slot_unref(l->value_watch);
	l->up = false;
	l->have_ready = false;
	smp_reasm_reset(&l->rx);
}

/* Steps 1-3: connected, services resolved, the characteristic found. */
static int connect_and_resolve(gatt_link *l, int64_t deadline_ms, bluez_char *chr, char *detail)
{
	bluez_objects *o = malloc(sizeof(*o));
	char err[200] = "", prefix[BLUEZ_PATH_MAX + 1];
	const char *why;
	int rc = -1;

	if (!o)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	snprintf(prefix, sizeof(prefix), "%s/", l->dev_path);
	while (rc < 0) {
		sd_bus_error e = SD_BUS_ERROR_NULL;
		bluez_device d;
		int64_t left = deadline_ms - smp_now_ms();
		bool connected = false;
		if (bluez_device_get(l->bus, l->dev_path, CALL_US, &d, &e) < 0) {
			snprintf(err, sizeof(err), "BlueZ does not know the device any more (%s)",
				 e.message ? e.message : "no answer");
		} else if ((why = gatt_link_unpaired(&d))) {
			rc = smp_fail(
			    detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			    "%s %s: ble-smp only talks to bonded devices over encrypted links; pair it with an "
			    "authenticated method and trust it",
			    l->name, why);
		} else if (!d.connected) {
			long t = left < l->cfg.connect_timeout_ms ? (long)left : l->cfg.connect_timeout_ms;
			int r = bluez_call(l->bus, l->dev_path, "org.bluez.Device1", "Connect",
					   (uint64_t)(t > 100 ? t : 100) * 1000, &e, NULL, NULL);
			if (r >= 0)
				l->we_connected = true;
			connected = r >= 0 || sd_bus_error_has_name(&e, "org.bluez.Error.AlreadyConnected");
			if (!connected)
				snprintf(err, sizeof(err), "Connect: %s", e.message ? e.message : strerror(-r));
		} else if (d.resolved) {
			const bluez_char *c = NULL;
			connected = true;
			if (bluez_scan(l->bus, prefix, CALL_US, NULL, NULL, o, err, sizeof(err)) == 0 &&
			    !(c = bluez_find_smp(o, l->dev_path)))
				snprintf(err, sizeof(err),
					 "no SMP characteristic (is mcumgr's Bluetooth transport enabled?)");
			if (c) {
				*chr = *c;
				rc = 0;
			}
		} else {
			connected = true;
			snprintf(err, sizeof(err), "services not resolved");
		}
		sd_bus_error_free(&e);
		if (rc >= 0)
			break;
		if (smp_now_ms() >= deadline_ms) {
			rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: cannot bring the link up: %s",
				      l->name, err);
			break;
		}
		sleep_ms(connected ? 100 : 500);
	}
	free(o);
	return rc;
}

/* Another client holds the characteristic's notify or write fd (BlueZ says
 * NotPermitted "Notify acquired" / "Write acquired"): it lets go soon -- a
 * discovery in another thread, say. */
#define ACQUIRE_HELD (-2)

static bool acquired_by_other(const sd_bus_error *e)
{
	return sd_bus_error_has_name(e, "org.bluez.Error.NotPermitted") && e->message && strstr(e->message, "acquired");
}

/* StartNotify's refusals when this D-Bus client has a session already: one
 * BlueZ kept across a drop (InProgress while the link is down, "Already
 * notifying" once it registered it again).  Sessions are per client, so
 * these are never someone else's. */
static bool own_session(const sd_bus_error *e)
{
	return sd_bus_error_has_name(e, "org.bluez.Error.InProgress") ||
	       (sd_bus_error_has_name(e, "org.bluez.Error.Failed") && e->message &&
		strstr(e->message, "Already notifying"));
}

/* Notifications as PropertiesChanged on Value. */
static int start_notify(gatt_link *l, char *detail)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	int r = 0, rc = 0;

	if (!l->value_watch &&
	    (r = sd_bus_match_signal(l->bus, &l->value_watch, NULL, l->chr_path, "org.freedesktop.DBus.Properties",
				     "PropertiesChanged", on_value_changed, l)) < 0)
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: cannot watch the characteristic: %s",
				l->name, strerror(-r));
	for (int attempt = 0;; attempt++) {
		r = bluez_call(l->bus, l->chr_path, "org.bluez.GattCharacteristic1", "StartNotify", CALL_US, &e, &reply,
			       NULL);
		note_serial(l, reply);
		reply = sd_bus_message_unref(reply);
		if (r >= 0 || !own_session(&e))
			break;
		if (attempt == 1) {
			/* it stays: it is ours, and it delivers to us */
			smp_log(l->host, FERRY_LOG_INFO, "%s: BlueZ keeps this client's notify session (%s); using it",
				l->name, e.message ? e.message : e.name);
			r = 0;
			break;
		}
		/* a session of ours from before a drop: end it, start afresh */
		smp_log(l->host, FERRY_LOG_INFO, "%s: StartNotify: %s: ending this client's earlier session", l->name,
			e.message ? e.message : e.name);
		sd_bus_error_free(&e);
		bluez_call(l->bus, l->chr_path, "org.bluez.GattCharacteristic1", "StopNotify", CALL_US, NULL, NULL,
			   NULL);
	}
	if (r >= 0)
		l->started = true;
	else if (acquired_by_other(&e))
		rc = ACQUIRE_HELD;
	else if (bluez_error_is_security(&e))
		rc = refuse(l, "notifications", &e, detail);
	else
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: StartNotify: %s", l->name,
			      e.message ? e.message : strerror(-r));
	sd_bus_error_free(&e);
	return rc;
}

/* Steps 4 and 5. */
static int acquire(gatt_link *l, const bluez_char *chr, char *detail)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	uint16_t mtu_n = 0, mtu_w = 0;
	int r, rc = 0;

	snprintf(l->chr_path, sizeof(l->chr_path), "%s", chr->path);
	r = bluez_call(l->bus, l->chr_path, "org.bluez.GattCharacteristic1", "AcquireNotify", CALL_US, &e, &reply,
		       "a{sv}", 0);
	note_serial(l, reply);
	if (r >= 0) {
		if (take_fd(reply, &l->nfd, &mtu_n))
			rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: AcquireNotify gave no usable fd",
				      l->name);
	} else if (acquired_by_other(&e)) {
		rc = ACQUIRE_HELD;
	} else if (bluez_error_is_security(&e)) {
		rc = refuse(l, "notifications", &e, detail);
	} else if (bluez_error_is_unsupported(&e) || sd_bus_error_has_name(&e, "org.bluez.Error.InProgress")) {
		/* An older BlueZ; or InProgress: a client has a StartNotify
		 * session (another program, or ours from before a drop), and
		 * BlueZ hands out no fd for as long as it lasts.  StartNotify
		 * shares the notifications. */
		if (!bluez_error_is_unsupported(&e))
			smp_log(l->host, FERRY_LOG_INFO,
				"%s: AcquireNotify: a StartNotify session is open; sharing notifications through "
				"StartNotify",
				l->name);
		rc = start_notify(l, detail);
	} else {
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: AcquireNotify: %s", l->name,
			      e.message ? e.message : strerror(-r));
	}
	sd_bus_error_free(&e);
	reply = sd_bus_message_unref(reply);
	if (rc)
		return rc;
	r = bluez_call(l->bus, l->chr_path, "org.bluez.GattCharacteristic1", "AcquireWrite", CALL_US, &e, &reply,
		       "a{sv}", 0);
	note_serial(l, reply);
	if (r >= 0) {
		if (take_fd(reply, &l->wfd, &mtu_w))
			rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: AcquireWrite gave no usable fd",
				      l->name);
	} else if (acquired_by_other(&e) || sd_bus_error_has_name(&e, "org.bluez.Error.InProgress")) {
		rc = ACQUIRE_HELD; /* another client's fd, or its write in flight */
	} else if (bluez_error_is_security(&e)) {
		rc = refuse(l, "writes", &e, detail);
	} else if (!bluez_error_is_unsupported(&e)) {
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: AcquireWrite: %s", l->name,
			      e.message ? e.message : strerror(-r));
	} else if (!chr->write_without_response) {
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			      "%s: the SMP characteristic does not take writes without response", l->name);
	}
	sd_bus_error_free(&e);
	sd_bus_message_unref(reply);
	/* the MTU of this connection: AcquireWrite's, else AcquireNotify's, else
	 * the characteristic's, else the least ATT allows */
	l->mtu = clamp_mtu(mtu_w ? mtu_w : mtu_n ? mtu_n : chr->mtu);
	return rc;
}

static int link_up(gatt_link *l, int64_t deadline_ms, char *detail)
{
	bluez_char chr;
	int rc;

	if ((rc = connect_and_resolve(l, deadline_ms, &chr, detail)))
		return rc;
	l->down = false;
	smp_reasm_reset(&l->rx);
	/* a discovery in another thread may hold the characteristic a moment */
	while ((rc = acquire(l, &chr, detail)) == ACQUIRE_HELD && smp_now_ms() < deadline_ms) {
		release(l);
		sleep_ms(200);
	}
	if (rc == ACQUIRE_HELD)
		rc = smp_fail(detail, FERRY_ADAPTER_E_DEVICE_BUSY, "%s: another client holds the SMP characteristic",
			      l->name);
	if (rc) {
		release(l);
		return rc;
	}
	l->up = true;
	smp_log(l->host, FERRY_LOG_INFO, "%s: link up, ATT MTU %u, writes by %s, notifications by %s", l->name, l->mtu,
		l->wfd >= 0 ? "AcquireWrite" : "WriteValue", l->nfd >= 0 ? "AcquireNotify" : "StartNotify");
	return 0;
}

int gatt_link_open(gatt_link *l, sd_bus *bus, const ferry_host_v1 *host, const gatt_link_cfg *cfg,
		   const char *device_path, const char *name, int64_t deadline_ms, char *detail)
{
	sd_bus_creds *creds = NULL;
	const char *owner = NULL;

	memset(l, 0, sizeof(*l));
	l->bus = bus;
	l->host = host;
	l->cfg = *cfg;
	l->wfd = l->nfd = -1;
	snprintf(l->dev_path, sizeof(l->dev_path), "%s", device_path);
	snprintf(l->name, sizeof(l->name), "%s", name);
	if (sd_bus_get_name_creds(bus, "org.bluez", SD_BUS_CREDS_UNIQUE_NAME, &creds) >= 0 &&
	    sd_bus_creds_get_unique_name(creds, &owner) >= 0)
		snprintf(l->bluez_owner, sizeof(l->bluez_owner), "%s", owner);
	sd_bus_creds_unref(creds);
	if (sd_bus_match_signal(bus, &l->dev_watch, NULL, l->dev_path, "org.freedesktop.DBus.Properties",
				"PropertiesChanged", on_device_changed, l) < 0)
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: cannot watch the device on D-Bus", name);
	return link_up(l, deadline_ms, detail);
}

void gatt_link_close(gatt_link *l)
{
	release(l);
	/* leave the device as it was found: a connection held open keeps a
	 * peripheral from advertising and costs it power */
	if (l->we_connected)
		bluez_call(l->bus, l->dev_path, "org.bluez.Device1", "Disconnect", CALL_US, NULL, NULL, NULL);
	l->dev_watch = sd_bus_slot_unref(l->dev_watch);
}

/* ---- the transport ---- */

static int write_piece(gatt_link *l, const uint8_t *p, size_t n)
{
	if (l->wfd >= 0) {
		for (int waits = 0;; waits++) {
			ssize_t w = send(l->wfd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w == (ssize_t)n)
				return 0;
			if (w >= 0 || errno != EAGAIN || waits == 20)
				return -1;
			struct pollfd pf = {.fd = l->wfd, .events = POLLOUT};
			poll(&pf, 1, 100);
		}
	}
	sd_bus_message *m = NULL;
	sd_bus_error e = SD_BUS_ERROR_NULL;
	char detail[FERRY_ADAPTER_DETAIL_MAX];
	int r = sd_bus_message_new_method_call(l->bus, &m, "org.bluez", l->chr_path, "org.bluez.GattCharacteristic1",
					       "WriteValue");
	if (r >= 0 && (r = sd_bus_message_append_array(m, 'y', p, n)) >= 0 &&
	    (r = sd_bus_message_append(m, "a{sv}", 1, "type", "s", "command")) >= 0)
		r = sd_bus_call(l->bus, m, CALL_US, &e, NULL);
	sd_bus_message_unref(m);
	if (r < 0 && bluez_error_is_security(&e))
		refuse(l, "a write", &e, detail);
	sd_bus_error_free(&e);
	return r < 0 ? -1 : 0;
}

/* One SMP packet as Writes Without Response of at most MTU - 3 bytes. */
static int g_send(void *t, const uint8_t *pkt, size_t len)
{
	gatt_link *l = t;
	size_t piece = l->mtu - 3;

	if (!l->up || l->down)
		return -1;
	l->have_ready = false; /* whatever was left over belongs to an abandoned request */
	smp_reasm_reset(&l->rx);
	for (size_t off = 0; off < len; off += piece) {
		size_t k = len - off < piece ? len - off : piece;
		if (write_piece(l, pkt + off, k)) {
			l->down = true;
			return -1;
		}
		l->writes++;
	}
	return 0;
}

/* Notification pieces until a whole packet, the deadline, or the link's end. */
static int g_recv(void *t, uint8_t *buf, size_t *len, int64_t deadline_ms)
{
	gatt_link *l = t;
	uint8_t piece[ATT_MTU_MAX + 1];

	for (;;) {
		if (l->have_ready) {
			memcpy(buf, l->ready, l->ready_len);
			*len = l->ready_len;
			l->have_ready = false;
			return 1;
		}
		if (!l->up || l->down)
			return -1;
		if (l->nfd >= 0) {
			ssize_t n = recv(l->nfd, piece, sizeof(piece), MSG_DONTWAIT | MSG_TRUNC);
			if (n > (ssize_t)ATT_MTU_MAX) {
				smp_reasm_reset(&l->rx); /* longer than any ATT PDU: not a notification */
				continue;
			}
			if (n > 0) {
				take_piece(l, piece, (size_t)n);
				continue;
			}
			if (n == 0 || errno != EAGAIN) {
				smp_log(l->host, FERRY_LOG_WARNING, "%s: the notification fd hung up: the link dropped",
					l->name);
				l->down = true;
				continue;
			}
		}
		int r = sd_bus_process(l->bus, NULL);
		if (r < 0) {
			l->down = true;
			continue;
		}
		if (r > 0)
			continue;
		int64_t left = deadline_ms - smp_now_ms();
		if (left <= 0)
			return 0;
		uint64_t until = 0;
		struct pollfd pf[2] = {{.fd = sd_bus_get_fd(l->bus), .events = (short)sd_bus_get_events(l->bus)},
				       {.fd = l->nfd, .events = POLLIN}};
		if (sd_bus_get_timeout(l->bus, &until) >= 0 && until != UINT64_MAX) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			uint64_t now_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
			int64_t bus_ms = until > now_us ? (int64_t)((until - now_us + 999) / 1000) : 0;
			if (bus_ms < left)
				left = bus_ms;
		}
		poll(pf, l->nfd >= 0 ? 2 : 1, (int)left);
	}
}

/* After `os reset` the link is expected to drop: wait for that, up to
 * reset_drop_ms, discarding what arrives meanwhile. */
static void wait_drop(gatt_link *l, int64_t until_ms)
{
	uint8_t buf[SMP_PACKET_MAX];
	size_t len;
	while (l->up && !l->down && smp_now_ms() < until_ms)
		if (g_recv(l, buf, &len, until_ms) == 0)
			break;
}

static int g_reconnect(void *t, bool after_reset, int64_t deadline_ms, char *detail)
{
	gatt_link *l = t;
	int64_t drop_until = smp_now_ms() + l->cfg.reset_drop_ms;

	if (l->refused) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "%s", l->refusal);
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	if (after_reset)
		wait_drop(l, drop_until < deadline_ms ? drop_until : deadline_ms);
	release(l);
	return link_up(l, deadline_ms, detail);
}

/* With reassembly on the device, a packet may span many writes and is
 * bounded by the device's buffer; without it, by one write. */
static size_t g_max_packet(void *t, size_t dev_buf)
{
	gatt_link *l = t;
	size_t one = l->mtu - 3;

	if (l->cfg.reassembly)
		return dev_buf;
	return dev_buf && dev_buf < one ? dev_buf : one;
}

const smp_transport_ops gatt_link_ops = {
    .send = g_send,
    .recv = g_recv,
    .reconnect = g_reconnect,
    .max_packet = g_max_packet,
};
