/* A simulated BlueZ with one BLE peripheral behind it: the SMP GATT service of
 * a Zephyr application under MCUboot (the device itself is mcu.c).  It owns
 * the name org.bluez on a private D-Bus and exports what bluetoothd exports
 * for a connected LE device, so the ble-smp adapter runs its real D-Bus code:
 *
 *   /                                  org.freedesktop.DBus.ObjectManager
 *   /org/bluez/hci0                    org.bluez.Adapter1
 *   /org/bluez/hci0/dev_XX_..          org.bluez.Device1 (Connect, Disconnect)
 *   .../service0010                    org.bluez.GattService1 (SMP service)
 *   .../service0010/char0011           org.bluez.GattCharacteristic1
 *
 * As in BlueZ: the GATT objects appear (InterfacesAdded) once the services
 * are resolved, a moment after Connect returns; for a bonded device they stay
 * (BlueZ keeps the bonded device's GATT cache) when the link drops, for
 * another they go (InterfacesRemoved) with the link.  AcquireWrite and
 * AcquireNotify hand out one end of a SOCK_SEQPACKET pair with the MTU, one
 * ATT PDU per message, and the fds hang up when the link drops; WriteValue is
 * refused with NotPermitted while the write is acquired, StartNotify while the
 * notify is.  StartNotify opens a notify session for the calling D-Bus
 * client (its unique name), which several clients may have at once; as in
 * bluetoothd (src/gatt-client.c), a client's second StartNotify answers
 * org.bluez.Error.Failed "Already notifying" (org.bluez.Error.InProgress
 * while the link is down), AcquireNotify answers InProgress while any client
 * has a session, and a bonded device's sessions outlive a drop -- kept, and
 * registered again on the next connection -- until StopNotify or until their
 * client leaves the bus.  Security failures are org.bluez.Error.NotPermitted
 * "Not paired".  Requests arrive in pieces
 * of at most MTU - 3 bytes and are put together by the SMP header length;
 * answers leave as notifications of at most MTU - 3 bytes.  A piece longer
 * than MTU - 3 vanishes, as it would over the air, and is counted.
 *
 *   bluez_sim --bus ADDRESS --address AA:BB:CC:DD:EE:FF --name NAME
 *             --version V [--stats FILE] [faults]
 * Faults:
 *   --unpaired          Paired and Bonded false: notify set-up and WriteValue
 *                       answer NotPermitted, acquired writes are ignored
 *   --just-works        Paired and Bonded, but by an unauthenticated method:
 *                       the device (authentication required, Zephyr's
 *                       default) refuses as with --unpaired
 *   --disconnect-at N   drop the link once when an upload passes offset N
 *                       (the answer is lost; the device keeps the upload)
 *   --mtu A,B,...       the ATT MTU of the 1st, 2nd, ... connection; the list
 *                       starts over after its end (default 247)
 *   --no-acquire        AcquireWrite/AcquireNotify answer NotSupported (an
 *                       older BlueZ): the client must use WriteValue and
 *                       StartNotify
 *   --reset-ms MS       how long a reset keeps the device away (300)
 *   --stop-notify-fails N  the first N StopNotify calls made while the link
 *                       is down fail (org.bluez.Error.Failed) and leave the
 *                       session as it was
 *   --decoys N          N other devices nearby (up to 64), not paired, that
 *                       advertise the same name and the SMP service, as
 *                       strangers may; they are added after the real one,
 *                       so they come first in GetManagedObjects
 *   --foreign-notify    another D-Bus client (a monitoring tool) has a
 *                       StartNotify session on the SMP characteristic, so
 *                       AcquireNotify answers InProgress
 *   and the MCU's own (mcu.h): --reset-at N, --drop-every K, --stall-ms MS,
 *   --refuse-confirm, --boot-fails, --reset-delay-ms MS, --lose-reset N,
 *   --buf-size N, --vanish-on-confirm.
 * The stats file (key=value lines, rewritten as they change) is what the
 * tests assert on: connections, the MTU of the last one, whether connected
 * now, writes, the largest write, violations (writes over MTU - 3), refused
 * writes, notifications, link drops, the running version, upload starts,
 * resumes and bytes, resets, StartNotify refusals; and what the host sent
 * as BlueZ saw it, before the device's security could refuse it: SMP
 * requests, upload requests, and the ATT MTU of each connection that
 * carried upload requests (upload_mtus, in order, one per connection).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "mcu.h"
#include "stats_ask.h"
#include "smp.h"

#define SMP_SERVICE_UUID "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
#define SMP_CHAR_UUID "da2e7828-fbce-4e01-ae9e-261174997c48"
#define MTUS_MAX 16
#define ATT_MTU_MAX 517
#define NOTIFY_CLIENTS_MAX 8
#define DECOYS_MAX 64

typedef struct sim sim;

/* A stranger nearby: a Device1 BlueZ saw advertising, never paired. */
typedef struct decoy {
	const sim *s;
	char address[18], path[64];
} decoy;

/* A StartNotify session: whose, and whether it is registered with the
 * device (not while the link is down). */
typedef struct notify_client {
	sim *s;
	char owner[64];
	bool used, registered;
	sd_bus_track *track; /* the client leaving the bus ends its session; NULL for --foreign-notify */
} notify_client;

struct sim {
	sd_bus *bus;
	sd_event *ev;
	mcu dev;
	char address[18], name[64];
	char dev_path[64], svc_path[96], chr_path[128];
	bool paired, just_works, connected, resolved, away, no_acquire;
	long stop_notify_fails;
	long disconnect_at;
	bool disconnect_done;
	unsigned mtus[MTUS_MAX], mtu;
	size_t n_mtus;
	unsigned reset_ms;
	sd_bus_slot *svc_slot, *chr_slot;
	sd_event_source *tick_src; /* the MCU's own timer: a reset it answered */
	/* the characteristic */
	int write_fd, notify_fd; /* our ends of the acquired pairs, -1 when none */
	sd_event_source *write_src, *notify_src;
	notify_client ncl[NOTIFY_CLIENTS_MAX]; /* StartNotify sessions */
	decoy decoys[DECOYS_MAX];
	size_t n_decoys;
	uint8_t value[ATT_MTU_MAX];
	size_t value_len;
	smp_reasm rx;
	/* stats */
	const char *stats_path;
	bool dirty;
	unsigned long connections, writes, max_write, violations, refused, notifications, drops;
	unsigned long notify_refusals; /* StartNotify answered InProgress or Already notifying */
	unsigned long requests_seen, upload_requests; /* put together from the host's writes */
	unsigned long upload_conn;                    /* the connection that last carried an upload request */
	char upload_mtus[128];                        /* "247,23": the MTU of each connection that did */
	char answered[64];                            /* the last token asked for (stats_ask.h) */
};

static void stats_write(sim *s)
{
	char tmp[4096], tok[64];
	FILE *f;

	if (!s->stats_path)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->stats_path);
	if (!(f = fopen(tmp, "w")))
		return;
	fprintf(f,
		"connections=%lu\nmtu_last=%u\nwrites=%lu\nmax_write=%lu\nviolations=%lu\nrefused=%lu\n"
		"notifications=%lu\nlink_drops=%lu\nrunning=%s\nup_starts=%lu\nup_resumes=%lu\nup_bytes=%lu\n"
		"resets=%lu\nnotify_refusals=%lu\nconnected=%d\nrequests_seen=%lu\nupload_requests=%lu\n"
		"upload_mtus=%s\n",
		s->connections, s->mtu, s->writes, s->max_write, s->violations, s->refused, s->notifications, s->drops,
		s->dev.s[0].version, s->dev.up_starts, s->dev.up_resumes, s->dev.up_bytes, s->dev.resets,
		s->notify_refusals, s->connected, s->requests_seen, s->upload_requests, s->upload_mtus);
	stats_asked(s->stats_path, tok, s->answered);
	fprintf(f, "answer=%s\n", s->answered);
	if (fclose(f) == 0)
		rename(tmp, s->stats_path);
	s->dirty = false;
}

static int on_stats_timer(sd_event_source *src, uint64_t usec, void *userdata)
{
	sim *s = userdata;
	char tok[64], last[64];
	snprintf(last, sizeof(last), "%s", s->answered);
	if (s->dirty || (s->stats_path && stats_asked(s->stats_path, tok, last)))
		stats_write(s);
	sd_event_source_set_time_relative(src, 100 * 1000);
	sd_event_source_set_enabled(src, SD_EVENT_ON);
	return 0;
}

/* ---- StartNotify sessions ---- */

static bool notifying(const sim *s)
{
	for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++)
		if (s->ncl[i].used && s->ncl[i].registered)
			return true;
	return false;
}

static bool any_session(const sim *s)
{
	for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++)
		if (s->ncl[i].used)
			return true;
	return false;
}

static notify_client *session_of(sim *s, const char *owner)
{
	for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++)
		if (s->ncl[i].used && !strcmp(s->ncl[i].owner, owner))
			return &s->ncl[i];
	return NULL;
}

static void emit_notifying(sim *s, bool before)
{
	if (s->chr_slot && before != (notifying(s) || s->notify_fd >= 0))
		sd_bus_emit_properties_changed(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", "Notifying", NULL);
}

static void end_session(notify_client *c)
{
	sim *s = c->s;
	bool before = notifying(s);
	c->track = sd_bus_track_unref(c->track);
	c->used = c->registered = false;
	emit_notifying(s, before);
}

/* The client left the bus: BlueZ's disconnect watch ends its session. */
static int on_client_gone(sd_bus_track *t, void *userdata)
{
	notify_client *c = userdata;
	fprintf(stderr, "bluez_sim: notify client %s left the bus\n", c->owner);
	end_session(c);
	return 1; /* done with this track: not to be dispatched again */
}

static notify_client *new_session(sim *s, const char *owner, bool track)
{
	for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++) {
		notify_client *c = &s->ncl[i];
		if (c->used)
			continue;
		memset(c, 0, sizeof(*c));
		c->s = s;
		snprintf(c->owner, sizeof(c->owner), "%s", owner);
		if (track && (sd_bus_track_new(s->bus, &c->track, on_client_gone, c) < 0 ||
			      sd_bus_track_add_name(c->track, owner) < 0)) {
			c->track = sd_bus_track_unref(c->track);
			return NULL;
		}
		c->used = true;
		return c;
	}
	return NULL;
}

/* ---- the characteristic's acquired fds ---- */

static void release_write(sim *s)
{
	if (s->write_fd < 0)
		return;
	s->write_src = sd_event_source_disable_unref(s->write_src);
	close(s->write_fd);
	s->write_fd = -1;
	smp_reasm_reset(&s->rx);
	if (s->chr_slot)
		sd_bus_emit_properties_changed(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", "WriteAcquired",
					       NULL);
}

static void release_notify(sim *s)
{
	if (s->notify_fd < 0)
		return;
	s->notify_src = sd_event_source_disable_unref(s->notify_src);
	close(s->notify_fd);
	s->notify_fd = -1;
	if (s->chr_slot)
		sd_bus_emit_properties_changed(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", "NotifyAcquired",
					       "Notifying", NULL);
}

/* Arm the MCU's timer when it has something due. */
static void arm_tick(sim *s)
{
	long due = mcu_due_ms(&s->dev);
	if (due < 0)
		return;
	sd_event_source_set_time_relative(s->tick_src, (uint64_t)due * 1000);
	sd_event_source_set_enabled(s->tick_src, SD_EVENT_ONESHOT);
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata)
{
	sim *s = userdata;
	mcu_tick(&s->dev);
	arm_tick(s);
	return 0;
}

/* A whole request from the host, as BlueZ carried it: counted, and the
 * MTU of a connection that carries upload requests noted. */
static void note_request(sim *s, const uint8_t *pkt, size_t len)
{
	smp_hdr h;
	size_t used = strlen(s->upload_mtus);

	if (smp_hdr_unpack(pkt, len, &h))
		return;
	s->requests_seen++;
	if (h.group != SMP_GROUP_IMAGE || h.id != SMP_IMG_UPLOAD || h.op != SMP_OP_WRITE)
		return;
	s->upload_requests++;
	if (s->upload_conn != s->connections && used + 8 < sizeof(s->upload_mtus)) {
		snprintf(s->upload_mtus + used, sizeof(s->upload_mtus) - used, "%s%u", used ? "," : "", s->mtu);
		s->upload_conn = s->connections;
	}
}

/* One write from the host: at most MTU - 3 bytes, or it vanishes. */
static void take_piece(sim *s, const uint8_t *p, size_t n)
{
	bool secure = s->paired && !s->just_works;
	size_t len;

	s->writes++;
	s->dirty = true;
	if (n > s->max_write)
		s->max_write = n;
	if (n > s->mtu - 3) {
		s->violations++;
		fprintf(stderr, "bluez_sim: a write of %zu bytes exceeds MTU %u - 3; dropped\n", n, s->mtu);
		return;
	}
	if (!secure)
		s->refused++; /* the device refuses writes on a link short of its security */
	if (smp_reasm_feed(&s->rx, p, n, &len) != 1)
		return;
	note_request(s, s->rx.buf, len);
	if (secure) {
		mcu_handle(&s->dev, s->rx.buf, len);
		arm_tick(s);
	}
}

static int on_write_fd(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	sim *s = userdata;
	uint8_t buf[4096];

	if (revents & EPOLLIN) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_TRUNC | MSG_DONTWAIT);
		if (n > 0) {
			take_piece(s, buf, (size_t)n > sizeof(buf) ? sizeof(buf) : (size_t)n);
			return 0;
		}
		if (n < 0 && errno == EAGAIN)
			return 0;
	}
	if (revents & (EPOLLHUP | EPOLLERR | EPOLLIN))
		release_write(s); /* the host closed its end: the lock is released */
	return 0;
}

static int on_notify_fd(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
	if (revents & (EPOLLHUP | EPOLLERR))
		release_notify(userdata);
	return 0;
}

/* ---- the link ---- */

static void remove_gatt(sim *s)
{
	if (!s->svc_slot)
		return;
	sd_bus_emit_interfaces_removed(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", NULL);
	sd_bus_emit_interfaces_removed(s->bus, s->svc_path, "org.bluez.GattService1", NULL);
	s->chr_slot = sd_bus_slot_unref(s->chr_slot);
	s->svc_slot = sd_bus_slot_unref(s->svc_slot);
}

static void drop_link(sim *s, const char *why)
{
	if (!s->connected)
		return;
	fprintf(stderr, "bluez_sim: link dropped (%s)\n", why);
	release_write(s);
	release_notify(s);
	if (s->paired) {
		/* bonded: the GATT cache stays, and so do the notify sessions, no
		 * longer registered with the device */
		bool before = notifying(s);
		for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++)
			s->ncl[i].registered = false;
		emit_notifying(s, before);
	} else {
		for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++)
			if (s->ncl[i].used)
				end_session(&s->ncl[i]);
		remove_gatt(s);
	}
	s->connected = s->resolved = false;
	s->drops++;
	s->dirty = true;
	smp_reasm_reset(&s->rx);
	sd_bus_emit_properties_changed(s->bus, s->dev_path, "org.bluez.Device1", "Connected", "ServicesResolved", NULL);
}

/* An answer from the device: dropped with the link (--disconnect-at), or
 * sent as notifications of at most MTU - 3 bytes. */
static bool upload_passes(const sim *s, const uint8_t *pkt, size_t n)
{
	smp_hdr h;
	struct cbor_load_result res;
	cbor_item_t *b;
	uint64_t off = 0;
	bool hit;

	if (s->disconnect_at < 0 || s->disconnect_done || smp_hdr_unpack(pkt, n, &h) || h.group != SMP_GROUP_IMAGE ||
	    h.id != SMP_IMG_UPLOAD)
		return false;
	b = cbor_load(pkt + SMP_HDR_LEN, h.len, &res);
	hit = b && smp_map_uint(b, "off", &off) && off >= (uint64_t)s->disconnect_at;
	if (b)
		cbor_decref(&b);
	return hit;
}

static void dev_send(void *ctx, const uint8_t *pkt, size_t n)
{
	sim *s = ctx;
	size_t piece = s->mtu - 3;

	if (!s->connected)
		return;
	if (upload_passes(s, pkt, n)) {
		s->disconnect_done = true;
		fprintf(stderr, "bluez_sim: fault: link lost during the upload\n");
		drop_link(s, "fault");
		return;
	}
	for (size_t off = 0; off < n; off += piece) {
		size_t k = n - off < piece ? n - off : piece;
		s->notifications++;
		if (s->notify_fd >= 0) {
			if (send(s->notify_fd, pkt + off, k, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
				fprintf(stderr, "bluez_sim: notify: %s\n", strerror(errno));
		} else if (notifying(s)) {
			memcpy(s->value, pkt + off, k);
			s->value_len = k;
			sd_bus_emit_properties_changed(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", "Value",
						       NULL);
		}
	}
	s->dirty = true;
}

static int on_back(sd_event_source *src, uint64_t usec, void *userdata)
{
	sim *s = userdata;
	s->away = false;
	mcu_boot(&s->dev);
	s->dirty = true;
	sd_event_source_unref(src);
	return 0;
}

/* A reset takes the radio down with the device: the link drops and nothing
 * connects until the device is back. */
static void dev_reset(void *ctx)
{
	sim *s = ctx;
	drop_link(s, "device reset");
	s->away = true;
	sd_event_source *src = NULL;
	sd_event_add_time_relative(s->ev, &src, CLOCK_MONOTONIC, (uint64_t)s->reset_ms * 1000, 0, on_back, s);
	/* on_back drops the source */
}

/* ---- D-Bus objects ---- */

static int err_not_paired(sd_bus_error *e)
{
	return sd_bus_error_set(e, "org.bluez.Error.NotPermitted", "Not paired");
}

static int get_adapter(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
		       void *userdata, sd_bus_error *e)
{
	if (!strcmp(prop, "Address"))
		return sd_bus_message_append(reply, "s", "00:1A:7D:DA:71:01");
	if (!strcmp(prop, "Name") || !strcmp(prop, "Alias"))
		return sd_bus_message_append(reply, "s", "ferry-gw");
	if (!strcmp(prop, "Powered"))
		return sd_bus_message_append(reply, "b", 1);
	return sd_bus_message_append(reply, "b", 0); /* Discovering */
}

static const sd_bus_vtable adapter_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("Address", "s", get_adapter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Name", "s", get_adapter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Alias", "s", get_adapter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Powered", "b", get_adapter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Discovering", "b", get_adapter, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_VTABLE_END,
};

static int get_service(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
		       void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	if (!strcmp(prop, "UUID"))
		return sd_bus_message_append(reply, "s", SMP_SERVICE_UUID);
	if (!strcmp(prop, "Primary"))
		return sd_bus_message_append(reply, "b", 1);
	if (!strcmp(prop, "Handle"))
		return sd_bus_message_append(reply, "q", 0x10);
	return sd_bus_message_append(reply, "o", s->dev_path); /* Device */
}

static const sd_bus_vtable service_vtable[] = {
    SD_BUS_VTABLE_START(0),
    SD_BUS_PROPERTY("UUID", "s", get_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Primary", "b", get_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Device", "o", get_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_PROPERTY("Handle", "q", get_service, 0, SD_BUS_VTABLE_PROPERTY_CONST),
    SD_BUS_VTABLE_END,
};

static int get_char(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
		    void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	if (!strcmp(prop, "UUID"))
		return sd_bus_message_append(reply, "s", SMP_CHAR_UUID);
	if (!strcmp(prop, "Service"))
		return sd_bus_message_append(reply, "o", s->svc_path);
	if (!strcmp(prop, "Value"))
		return sd_bus_message_append_array(reply, 'y', s->value, s->value_len);
	if (!strcmp(prop, "Notifying"))
		return sd_bus_message_append(reply, "b", notifying(s) || s->notify_fd >= 0);
	if (!strcmp(prop, "WriteAcquired"))
		return sd_bus_message_append(reply, "b", s->write_fd >= 0);
	if (!strcmp(prop, "NotifyAcquired"))
		return sd_bus_message_append(reply, "b", s->notify_fd >= 0);
	if (!strcmp(prop, "MTU"))
		return sd_bus_message_append(reply, "q", (uint16_t)s->mtu);
	if (!strcmp(prop, "Handle"))
		return sd_bus_message_append(reply, "q", 0x11);
	return sd_bus_message_append(reply, "as", 3, "write-without-response", "write", "notify"); /* Flags */
}

static int ch_read(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return sd_bus_error_set(e, "org.bluez.Error.NotPermitted", "Read not permitted");
}

static int ch_write(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	const void *p;
	size_t n;
	int r;

	if ((r = sd_bus_message_read_array(m, 'y', &p, &n)) < 0)
		return r;
	if (s->write_fd >= 0)
		return sd_bus_error_set(e, "org.bluez.Error.NotPermitted", "Write acquired");
	if (!s->connected)
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "Not connected");
	if (!s->paired || s->just_works) {
		s->refused++;
		s->dirty = true;
		return err_not_paired(e);
	}
	take_piece(s, p, n);
	return sd_bus_reply_method_return(m, "");
}

/* One end of a SOCK_SEQPACKET pair for the host, the other watched here. */
static int acquire(sd_bus_message *m, sim *s, int *ours, sd_event_source **src, sd_event_io_handler_t cb,
		   const char *prop)
{
	int sv[2], r;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv))
		return -errno;
	*ours = sv[0];
	sd_event_add_io(s->ev, src, sv[0], EPOLLIN | EPOLLHUP, cb, s);
	r = sd_bus_reply_method_return(m, "hq", sv[1], (uint16_t)s->mtu);
	close(sv[1]); /* the message holds its own copy */
	sd_bus_emit_properties_changed(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", prop, NULL);
	return r;
}

static int ch_acquire_write(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	if (s->no_acquire)
		return sd_bus_error_set(e, "org.bluez.Error.NotSupported", "Not supported");
	if (s->write_fd >= 0)
		return sd_bus_error_set(e, "org.bluez.Error.NotPermitted", "Write acquired");
	if (!s->connected)
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "Not connected");
	return acquire(m, s, &s->write_fd, &s->write_src, on_write_fd, "WriteAcquired");
}

static int ch_acquire_notify(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	if (s->no_acquire)
		return sd_bus_error_set(e, "org.bluez.Error.NotSupported", "Not supported");
	if (s->notify_fd >= 0)
		return sd_bus_error_set(e, "org.bluez.Error.NotPermitted", "Notify acquired");
	if (any_session(s)) /* bluetoothd: one kind of notify client at a time */
		return sd_bus_error_set(e, "org.bluez.Error.InProgress", "In Progress");
	if (!s->connected)
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "Not connected");
	if (!s->paired || s->just_works)
		return err_not_paired(e); /* the CCC write needs an encrypted, authenticated link */
	return acquire(m, s, &s->notify_fd, &s->notify_src, on_notify_fd, "NotifyAcquired");
}

static int ch_start_notify(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	const char *owner = sd_bus_message_get_sender(m);
	notify_client *c;
	bool before = notifying(s);

	if (s->notify_fd >= 0)
		return sd_bus_error_set(e, "org.bluez.Error.NotPermitted", "Notify acquired");
	if (!owner)
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "No sender");
	/* each client has one session: registered, or waiting for the link */
	if ((c = session_of(s, owner))) {
		s->notify_refusals++;
		s->dirty = true;
		return c->registered ? sd_bus_error_set(e, "org.bluez.Error.Failed", "Already notifying")
				     : sd_bus_error_set(e, "org.bluez.Error.InProgress", "In Progress");
	}
	if (s->connected && (!s->paired || s->just_works))
		return err_not_paired(e); /* the CCC write fails: no session */
	if (!(c = new_session(s, owner, true)))
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "Failed allocate notify session");
	c->registered = s->connected; /* otherwise at the next connection */
	emit_notifying(s, before);
	return sd_bus_reply_method_return(m, "");
}

static int ch_stop_notify(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	const char *owner = sd_bus_message_get_sender(m);
	notify_client *c = owner ? session_of(s, owner) : NULL;

	if (!any_session(s))
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "Not notifying");
	if (!c)
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "No notify session started");
	if (s->stop_notify_fails > 0 && !s->connected) {
		s->stop_notify_fails--;
		fprintf(stderr, "bluez_sim: fault: StopNotify fails; the session stays\n");
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "Operation failed");
	}
	end_session(c);
	return sd_bus_reply_method_return(m, "");
}

#define CHAR_PROP(name, sig, flags) SD_BUS_PROPERTY(name, sig, get_char, 0, flags)
static const sd_bus_vtable char_vtable[] = {
    SD_BUS_VTABLE_START(0),
    CHAR_PROP("UUID", "s", SD_BUS_VTABLE_PROPERTY_CONST),
    CHAR_PROP("Service", "o", SD_BUS_VTABLE_PROPERTY_CONST),
    CHAR_PROP("Flags", "as", SD_BUS_VTABLE_PROPERTY_CONST),
    CHAR_PROP("Handle", "q", SD_BUS_VTABLE_PROPERTY_CONST),
    CHAR_PROP("MTU", "q", SD_BUS_VTABLE_PROPERTY_CONST),
    CHAR_PROP("Value", "ay", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    CHAR_PROP("Notifying", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    CHAR_PROP("WriteAcquired", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    CHAR_PROP("NotifyAcquired", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD("ReadValue", "a{sv}", "ay", ch_read, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("WriteValue", "aya{sv}", "", ch_write, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("AcquireWrite", "a{sv}", "hq", ch_acquire_write, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("AcquireNotify", "a{sv}", "hq", ch_acquire_notify, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StartNotify", "", "", ch_start_notify, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("StopNotify", "", "", ch_stop_notify, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

/* Service discovery done: the GATT objects appear, then ServicesResolved. */
static int on_resolved(sd_event_source *src, uint64_t usec, void *userdata)
{
	sim *s = userdata;

	sd_event_source_unref(src);
	if (!s->connected || s->resolved)
		return 0;
	if (!s->svc_slot) { /* a bonded device's stay from the last connection */
		sd_bus_add_object_vtable(s->bus, &s->svc_slot, s->svc_path, "org.bluez.GattService1", service_vtable,
					 s);
		sd_bus_add_object_vtable(s->bus, &s->chr_slot, s->chr_path, "org.bluez.GattCharacteristic1",
					 char_vtable, s);
		sd_bus_emit_interfaces_added(s->bus, s->svc_path, "org.bluez.GattService1", NULL);
		sd_bus_emit_interfaces_added(s->bus, s->chr_path, "org.bluez.GattCharacteristic1", NULL);
	}
	s->resolved = true;
	sd_bus_emit_properties_changed(s->bus, s->dev_path, "org.bluez.Device1", "ServicesResolved", NULL);
	return 0;
}

static int dev_connect(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;

	if (s->connected)
		return sd_bus_error_set(e, "org.bluez.Error.AlreadyConnected", "Already Connected");
	if (s->away)
		return sd_bus_error_set(e, "org.bluez.Error.Failed", "le-connection-abort-by-local");
	s->mtu = s->mtus[s->connections % s->n_mtus];
	s->connections++;
	s->connected = true;
	s->dirty = true;
	/* bluetoothd registers the notify sessions it kept again as the link comes up */
	bool before = notifying(s);
	for (size_t i = 0; i < NOTIFY_CLIENTS_MAX; i++)
		if (s->ncl[i].used)
			s->ncl[i].registered = true;
	emit_notifying(s, before);
	fprintf(stderr, "bluez_sim: connection %lu, ATT MTU %u\n", s->connections, s->mtu);
	sd_bus_emit_properties_changed(s->bus, s->dev_path, "org.bluez.Device1", "Connected", NULL);
	sd_event_source *src = NULL;
	sd_event_add_time_relative(s->ev, &src, CLOCK_MONOTONIC, 50 * 1000, 0, on_resolved, s);
	/* on_resolved drops the source */
	return sd_bus_reply_method_return(m, "");
}

static int dev_disconnect(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	if (!s->connected)
		return sd_bus_error_set(e, "org.bluez.Error.NotConnected", "Not Connected");
	drop_link(s, "host disconnected");
	return sd_bus_reply_method_return(m, "");
}

static int dev_pair(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return sd_bus_error_set(e, "org.bluez.Error.AuthenticationRejected", "No agent in the simulator");
}

static int get_device(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
		      void *userdata, sd_bus_error *e)
{
	sim *s = userdata;
	if (!strcmp(prop, "Address"))
		return sd_bus_message_append(reply, "s", s->address);
	if (!strcmp(prop, "AddressType"))
		return sd_bus_message_append(reply, "s", "random");
	if (!strcmp(prop, "Name") || !strcmp(prop, "Alias"))
		return sd_bus_message_append(reply, "s", s->name);
	if (!strcmp(prop, "Paired") || !strcmp(prop, "Bonded"))
		return sd_bus_message_append(reply, "b", s->paired);
	if (!strcmp(prop, "Trusted"))
		return sd_bus_message_append(reply, "b", s->paired);
	if (!strcmp(prop, "Connected"))
		return sd_bus_message_append(reply, "b", s->connected);
	if (!strcmp(prop, "ServicesResolved"))
		return sd_bus_message_append(reply, "b", s->resolved);
	if (!strcmp(prop, "Adapter"))
		return sd_bus_message_append(reply, "o", "/org/bluez/hci0");
	return sd_bus_message_append(reply, "as", 1, SMP_SERVICE_UUID); /* UUIDs */
}

#define DEV_PROP(name, sig, flags) SD_BUS_PROPERTY(name, sig, get_device, 0, flags)
static const sd_bus_vtable device_vtable[] = {
    SD_BUS_VTABLE_START(0),
    DEV_PROP("Address", "s", SD_BUS_VTABLE_PROPERTY_CONST),
    DEV_PROP("AddressType", "s", SD_BUS_VTABLE_PROPERTY_CONST),
    DEV_PROP("Name", "s", SD_BUS_VTABLE_PROPERTY_CONST),
    DEV_PROP("Alias", "s", SD_BUS_VTABLE_PROPERTY_CONST),
    DEV_PROP("Adapter", "o", SD_BUS_VTABLE_PROPERTY_CONST),
    DEV_PROP("UUIDs", "as", SD_BUS_VTABLE_PROPERTY_CONST),
    DEV_PROP("Paired", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    DEV_PROP("Bonded", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    DEV_PROP("Trusted", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    DEV_PROP("Connected", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    DEV_PROP("ServicesResolved", "b", SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
    SD_BUS_METHOD("Connect", "", "", dev_connect, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("Disconnect", "", "", dev_disconnect, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("Pair", "", "", dev_pair, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

static int get_decoy(sd_bus *bus, const char *path, const char *iface, const char *prop, sd_bus_message *reply,
		     void *userdata, sd_bus_error *e)
{
	const decoy *d = userdata;
	if (!strcmp(prop, "Address"))
		return sd_bus_message_append(reply, "s", d->address);
	if (!strcmp(prop, "AddressType"))
		return sd_bus_message_append(reply, "s", "random");
	if (!strcmp(prop, "Name") || !strcmp(prop, "Alias"))
		return sd_bus_message_append(reply, "s", d->s->name);
	if (!strcmp(prop, "Adapter"))
		return sd_bus_message_append(reply, "o", "/org/bluez/hci0");
	if (!strcmp(prop, "UUIDs"))
		return sd_bus_message_append(reply, "as", 1, SMP_SERVICE_UUID);
	return sd_bus_message_append(reply, "b", 0); /* Paired, Bonded, Trusted, Connected, ServicesResolved */
}

static int decoy_connect(sd_bus_message *m, void *userdata, sd_bus_error *e)
{
	return sd_bus_error_set(e, "org.bluez.Error.Failed", "le-connection-abort-by-local");
}

#define DECOY_PROP(name, sig) SD_BUS_PROPERTY(name, sig, get_decoy, 0, SD_BUS_VTABLE_PROPERTY_CONST)
static const sd_bus_vtable decoy_vtable[] = {
    SD_BUS_VTABLE_START(0),
    DECOY_PROP("Address", "s"),
    DECOY_PROP("AddressType", "s"),
    DECOY_PROP("Name", "s"),
    DECOY_PROP("Alias", "s"),
    DECOY_PROP("Adapter", "o"),
    DECOY_PROP("UUIDs", "as"),
    DECOY_PROP("Paired", "b"),
    DECOY_PROP("Bonded", "b"),
    DECOY_PROP("Trusted", "b"),
    DECOY_PROP("Connected", "b"),
    DECOY_PROP("ServicesResolved", "b"),
    SD_BUS_METHOD("Connect", "", "", decoy_connect, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("Disconnect", "", "", decoy_connect, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_METHOD("Pair", "", "", dev_pair, SD_BUS_VTABLE_UNPRIVILEGED),
    SD_BUS_VTABLE_END,
};

/* ---- setup ---- */

static int parse_mtus(sim *s, const char *list)
{
	char *copy = strdup(list), *save = NULL;
	s->n_mtus = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		long v = strtol(t, NULL, 10);
		if (v < 23 || v > ATT_MTU_MAX || s->n_mtus == MTUS_MAX) {
			free(copy);
			return -1;
		}
		s->mtus[s->n_mtus++] = (unsigned)v;
	}
	free(copy);
	return s->n_mtus ? 0 : -1;
}

static int on_term(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata)
{
	sim *s = userdata;
	stats_write(s);
	return sd_event_exit(s->ev, 0);
}

static int usage(void)
{
	fprintf(stderr, "usage: bluez_sim --bus ADDRESS --address AA:BB:CC:DD:EE:FF --name NAME --version V "
			"[--stats FILE] [--unpaired] [--just-works] [--disconnect-at N] [--mtu A,B,...] [--no-acquire] "
			"[--reset-ms MS] [--stop-notify-fails N] [--decoys N] [--foreign-notify] [MCU faults]\n");
	return 2;
}

static int setup(sim *s, const char *bus_address)
{
	sigset_t ss;
	int r;

	snprintf(s->dev_path, sizeof(s->dev_path), "/org/bluez/hci0/dev_%s", s->address);
	for (char *p = s->dev_path; *p; p++)
		if (*p == ':')
			*p = '_';
	snprintf(s->svc_path, sizeof(s->svc_path), "%s/service0010", s->dev_path);
	snprintf(s->chr_path, sizeof(s->chr_path), "%s/char0011", s->svc_path);
	if ((r = sd_event_default(&s->ev)) < 0 || (r = sd_bus_new(&s->bus)) < 0 ||
	    (r = sd_bus_set_address(s->bus, bus_address)) < 0 || (r = sd_bus_set_bus_client(s->bus, 1)) < 0 ||
	    (r = sd_bus_negotiate_fds(s->bus, 1)) < 0 || (r = sd_bus_start(s->bus)) < 0)
		return r;
	if ((r = sd_bus_add_object_manager(s->bus, NULL, "/")) < 0 ||
	    (r = sd_bus_add_object_vtable(s->bus, NULL, "/org/bluez/hci0", "org.bluez.Adapter1", adapter_vtable, s)) <
		0 ||
	    (r = sd_bus_add_object_vtable(s->bus, NULL, s->dev_path, "org.bluez.Device1", device_vtable, s)) < 0)
		return r;
	for (size_t i = 0; i < s->n_decoys; i++) {
		decoy *d = &s->decoys[i];
		d->s = s;
		snprintf(d->address, sizeof(d->address), "D0:0D:00:00:%02X:%02X", (unsigned)(i >> 8) & 0xff,
			 (unsigned)i & 0xff);
		snprintf(d->path, sizeof(d->path), "/org/bluez/hci0/dev_D0_0D_00_00_%02X_%02X",
			 (unsigned)(i >> 8) & 0xff, (unsigned)i & 0xff);
		if ((r = sd_bus_add_object_vtable(s->bus, NULL, d->path, "org.bluez.Device1", decoy_vtable, d)) < 0)
			return r;
	}
	if ((r = sd_bus_request_name(s->bus, "org.bluez", 0)) < 0 || (r = sd_bus_attach_event(s->bus, s->ev, 0)) < 0)
		return r;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sd_event_add_signal(s->ev, NULL, SIGTERM, on_term, s);
	sd_event_add_signal(s->ev, NULL, SIGINT, on_term, s);
	sd_event_add_time_relative(s->ev, NULL, CLOCK_MONOTONIC, 100 * 1000, 0, on_stats_timer, s);
	if ((r = sd_event_add_time_relative(s->ev, &s->tick_src, CLOCK_MONOTONIC, 0, 0, on_tick, s)) < 0)
		return r;
	sd_event_source_set_enabled(s->tick_src, SD_EVENT_OFF);
	return 0;
}

int main(int argc, char **argv)
{
	static sim s = {.paired = true,
			.disconnect_at = -1,
			.reset_ms = 300,
			.write_fd = -1,
			.notify_fd = -1,
			.mtus = {247},
			.n_mtus = 1,
			.mtu = 23};
	const char *bus = NULL, *version = "1.0.0";
	const mcu_io io = {.ctx = &s, .send = dev_send, .reset = dev_reset};
	bool foreign = false;
	int r;

	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--version") && i + 1 < argc)
			version = argv[i + 1];
	mcu_init(&s.dev, version, &io);
	snprintf(s.name, sizeof(s.name), "ferry-ble");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (mcu_option(&s.dev, argc, argv, &i))
			continue;
		if (!strcmp(a, "--bus") && v)
			bus = argv[++i];
		else if (!strcmp(a, "--version") && v)
			i++;
		else if (!strcmp(a, "--address") && v && strlen(v) == 17)
			snprintf(s.address, sizeof(s.address), "%s", argv[++i]);
		else if (!strcmp(a, "--name") && v)
			snprintf(s.name, sizeof(s.name), "%s", argv[++i]);
		else if (!strcmp(a, "--stats") && v)
			s.stats_path = argv[++i];
		else if (!strcmp(a, "--disconnect-at") && v)
			s.disconnect_at = atol(argv[++i]);
		else if (!strcmp(a, "--reset-ms") && v)
			s.reset_ms = (unsigned)atol(argv[++i]);
		else if (!strcmp(a, "--mtu") && v) {
			if (parse_mtus(&s, argv[++i])) {
				fprintf(stderr, "bluez_sim: --mtu wants values from 23 to %d, comma separated\n",
					ATT_MTU_MAX);
				return 2;
			}
		} else if (!strcmp(a, "--unpaired"))
			s.paired = false;
		else if (!strcmp(a, "--just-works"))
			s.just_works = true;
		else if (!strcmp(a, "--no-acquire"))
			s.no_acquire = true;
		else if (!strcmp(a, "--foreign-notify"))
			foreign = true;
		else if (!strcmp(a, "--stop-notify-fails") && v)
			s.stop_notify_fails = atol(argv[++i]);
		else if (!strcmp(a, "--decoys") && v && atol(v) >= 0 && atol(v) <= DECOYS_MAX)
			s.n_decoys = (size_t)atol(argv[++i]);
		else {
			fprintf(stderr, "bluez_sim: unknown argument %s\n", a);
			return usage();
		}
	}
	if (!bus || !s.address[0])
		return usage();
	smp_reasm_reset(&s.rx);
	if ((r = setup(&s, bus)) < 0) {
		fprintf(stderr, "bluez_sim: cannot serve org.bluez on %s: %s\n", bus, strerror(-r));
		return 1;
	}
	if (foreign && !new_session(&s, ":foreign.monitor", false))
		return 1;
	stats_write(&s);
	fprintf(stderr, "bluez_sim: %s (%s) on %s, running %s%s\n", s.address, s.name, bus, s.dev.s[0].version,
		s.paired ? "" : ", not paired");
	r = sd_event_loop(s.ev);
	stats_write(&s);
	return r < 0 ? 1 : 0;
}
