/* A simulated USB DFU device behind the real libusb.
 *
 * umockdev gives a process a private sysfs and /dev; this program builds
 * one holding a single USB device (descriptors in sysfs, a node under
 * /dev/bus/usb) and answers the usbdevfs ioctls a program makes on that node
 * -- claim, set interface, reset, and control URBs submitted and reaped --
 * from the device model in dfu_sim_model.c.  When the model leaves the bus
 * (detach, reset, manifestation, an unplug fault) the device is removed and
 * added again with its new descriptors and a new address, and udev events
 * tell libusb's hotplug monitor, as the kernel would.
 *
 * A program under test runs with LD_PRELOAD=libumockdev-preload.so.0 and
 * UMOCKDEV_DIR set to the directory written to --root-file; its libusb then
 * sees this device and nothing else.  This program needs the preload too
 * (it re-executes itself with it).
 *
 *   dfu_device --root-file PATH --version X.Y.Z [options] [faults]
 *     --dfuse                 ST DfuSe dialect (default: plain DFU 1.1)
 *     --vid HEX --pid HEX     run-time VID:PID (default 1209:0001)
 *     --dfu-pid HEX           PID in DFU mode (default 0002)
 *     --serial TEXT           iSerialNumber ("" for none; default FERRY-SIM-1)
 *     --port N                hub port, the device is 1-N (default 2)
 *     --transfer-size N       wTransferSize (default 1024)
 *     --poll-ms N             busy time after each block (default 5)
 *     --erase-ms N            busy time of a DfuSe page erase (default 20)
 *     --manifest-ms N         manifestation time (default 50)
 *     --intolerant            not manifestation tolerant
 *     --will-detach           leaves the bus by itself after DETACH
 *     --stats PATH            counters, rewritten every 100 ms and at exit
 *     --replug-ms N           how long an unplugged device stays away (1000)
 *   faults:
 *     --error-at-block N:CODE GETSTATUS after block N reports bStatus CODE
 *     --stall-at-block N      the DNLOAD of block N stalls, once
 *     --unplug-at-block N     the device leaves the bus at block N, once
 *     --verify-fails          manifestation finds the image bad (errVERIFY)
 *     --detach-never          DETACH is taken, but the device never re-enumerates
 *     --manifest-reset        the device resets during manifestation without answering
 *     --silent-manifest       an intolerant device stops answering once it manifests
 *     --bogus-poll MS         report MS as bwPollTimeout (real busy time stays)
 *     --erase-stalls N        GETSTATUS stalls N times after each erase
 *
 *   dfu_device --make-image VERSION SIZE OUT [--pid HEX]
 *     writes a firmware image this device accepts (header, payload, CRC).
 *
 * DFU_SIM_DEBUG=1 in the environment logs every ioctl it answers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <glib-unix.h>
#include <linux/usbdevice_fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <umockdev.h>
#include <unistd.h>

#include "dfu_sim.h"
#include "stats_ask.h"

#define USB_DT_DEVICE 1
#define USB_DT_CONFIG 2
#define USB_DT_STRING 3

static struct plumbing {
	pthread_mutex_t lock;
	dfu_sim d;
	UMockdevTestbed *tb;
	UMockdevIoctlBase *handler;
	GQueue done; /* completed URBs (struct reapable), waiting to be reaped */
	char node[64], syspath[64];
	bool present;
	unsigned devnum;
	unsigned generation; /* of enumerations, so a late timer knows it is late */
	int port;
	long replug_ms;
	const char *stats;
	GMainLoop *loop;
} P = {.lock = PTHREAD_MUTEX_INITIALIZER, .port = 2, .replug_ms = 1000};

/* A URB completed by the device, and the open file (client) it was
 * submitted on: as in usbfs, URBs belong to the file.  As with the kernel's
 * REAP_AFTER_DISCONNECT, a URB can be reaped after its device left the bus:
 * libusb waits for every URB it submitted. */
struct reapable {
	UMockdevIoctlClient *client; /* referenced */
	UMockdevIoctlData *urb;
};

/* ---- descriptors ---- */

static size_t put_interface(uint8_t *p, uint8_t num, uint8_t alt, uint8_t cls, uint8_t sub, uint8_t proto, uint8_t istr)
{
	uint8_t d[9] = {9, 4, num, alt, 0, cls, sub, proto, istr};
	memcpy(p, d, 9);
	return 9;
}

static size_t put_functional(uint8_t *p, const dfu_sim *d)
{
	uint8_t attrs = 0x01 | (d->tolerant ? 0x04 : 0) | (d->will_detach ? 0x08 : 0);
	uint16_t bcd = d->dfuse ? 0x011A : 0x0110;
	uint8_t f[9] = {9,
	                0x21,
	                attrs,
	                (uint8_t)d->detach_timeout_ms,
	                (uint8_t)(d->detach_timeout_ms >> 8),
	                (uint8_t)d->transfer_size,
	                (uint8_t)(d->transfer_size >> 8),
	                (uint8_t)bcd,
	                (uint8_t)(bcd >> 8)};
	memcpy(p, f, 9);
	return 9;
}

/* Device descriptor and the one configuration, as sysfs "descriptors" holds them. */
static size_t descriptors(const dfu_sim *d, uint8_t *out)
{
	uint16_t pid = sim_current_pid(d), bcd = sim_bcd_device(d);
	uint8_t dev[18] = {18,
	                   USB_DT_DEVICE,
	                   0x00,
	                   0x02,
	                   0,
	                   0,
	                   0,
	                   64,
	                   (uint8_t)d->vid,
	                   (uint8_t)(d->vid >> 8),
	                   (uint8_t)pid,
	                   (uint8_t)(pid >> 8),
	                   (uint8_t)bcd,
	                   (uint8_t)(bcd >> 8),
	                   1,
	                   2,
	                   (uint8_t)(d->serial[0] ? 3 : 0),
	                   1};
	uint8_t *c = out + 18;
	size_t n = 9;

	memcpy(out, dev, 18);
	if (!d->dfu_mode) {
		n += put_interface(c + n, 0, 0, 0xFF, 0, 0, 0); /* the firmware's own interface */
		n += put_interface(c + n, 1, 0, 0xFE, 1, 1, 0); /* DFU run-time */
	} else {
		n += put_interface(c + n, 0, 0, 0xFE, 1, 2, 5);
		if (d->dfuse)
			n += put_interface(c + n, 0, 1, 0xFE, 1, 2, 6);
	}
	n += put_functional(c + n, d);
	uint8_t cfg[9] = {9, USB_DT_CONFIG, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(d->dfu_mode ? 1 : 2), 1,
	                  0, 0x80,          50};
	memcpy(c, cfg, 9);
	return 18 + n;
}

/* GET_DESCRIPTOR on EP0: strings (libusb reads device and configuration
 * descriptors from sysfs). */
static int standard_request(const uint8_t setup[8], uint8_t *data)
{
	uint16_t value = (uint16_t)(setup[2] | setup[3] << 8), len = (uint16_t)(setup[6] | setup[7] << 8);
	uint8_t buf[512];
	size_t n = 0;

	if (setup[0] != 0x80 || setup[1] != 6 || value >> 8 != USB_DT_STRING)
		return -1;
	if ((value & 0xFF) == 0) {
		uint8_t langs[4] = {4, USB_DT_STRING, 0x09, 0x04};
		memcpy(buf, langs, 4);
		n = 4;
	} else {
		const char *s = sim_string(&P.d, (uint8_t)value);
		if (!s)
			return -1;
		buf[1] = USB_DT_STRING;
		for (n = 2; *s && n + 2 <= 254; s++, n += 2)
			buf[n] = (uint8_t)*s, buf[n + 1] = 0;
		buf[0] = (uint8_t)n;
	}
	if (n > len)
		n = len;
	memcpy(data, buf, n);
	return (int)n;
}

/* ---- the device on the bus ---- */

static void plug(void)
{
	uint8_t desc[256];
	size_t n = descriptors(&P.d, desc);
	char hex[2 * sizeof(desc) + 1], *text;
	GError *err = NULL;

	P.devnum++;
	snprintf(P.node, sizeof(P.node), "/dev/bus/usb/001/%03u", P.devnum);
	snprintf(P.syspath, sizeof(P.syspath), "/sys/devices/usb1/1-%d", P.port);
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", desc[i]);
	if (!umockdev_testbed_attach_ioctl(P.tb, P.node, P.handler, &err)) {
		fprintf(stderr, "dfu-sim: attach %s: %s\n", P.node, err ? err->message : "?");
		exit(1);
	}
	text = g_strdup_printf("P: /devices/usb1/1-%d\n"
	                       "N: bus/usb/001/%03u\n"
	                       "E: SUBSYSTEM=usb\n"
	                       "E: DEVTYPE=usb_device\n"
	                       "E: DEVNAME=/dev/bus/usb/001/%03u\n"
	                       "E: BUSNUM=001\n"
	                       "E: DEVNUM=%03u\n"
	                       "E: PRODUCT=%x/%x/%x\n"
	                       "A: busnum=1\\n\n"
	                       "A: devnum=%u\\n\n"
	                       "A: speed=12\\n\n"
	                       "A: bConfigurationValue=1\\n\n"
	                       "A: idVendor=%04x\\n\n"
	                       "A: idProduct=%04x\\n\n"
	                       "H: descriptors=%s\n",
	                       P.port, P.devnum, P.devnum, P.devnum, P.d.vid, sim_current_pid(&P.d),
	                       sim_bcd_device(&P.d), P.devnum, P.d.vid, sim_current_pid(&P.d), hex);
	if (!umockdev_testbed_add_from_string(P.tb, text, &err)) {
		fprintf(stderr, "dfu-sim: add device: %s\n", err ? err->message : "?");
		exit(1);
	}
	g_free(text); /* adding it sent the "add" uevent */
	P.present = true;
	fprintf(stderr, "dfu-sim: on the bus as %04x:%04x at %s, %s mode, firmware \"%s\"\n", P.d.vid,
	        sim_current_pid(&P.d), P.node, P.d.dfu_mode ? "DFU" : "run-time", sim_running(&P.d));
}

static void unplug(void)
{
	if (!P.present)
		return;
	umockdev_testbed_uevent(P.tb, P.syspath, "remove");
	umockdev_testbed_remove_device(P.tb, P.syspath);
	umockdev_testbed_detach_ioctl(P.tb, P.node, NULL);
	P.present = false;
	fprintf(stderr, "dfu-sim: off the bus\n");
}

/* Each re-enumeration makes a later one that was scheduled before it moot
 * (a leave answered, then a reset by the host before the timer fires). */
static void reenumerate(bool to_dfu)
{
	P.generation++;
	unplug();
	sim_enumerated(&P.d, to_dfu);
	plug();
}

static gboolean later_cb(gpointer data)
{
	unsigned v = (unsigned)GPOINTER_TO_UINT(data);
	sim_action act = (sim_action)(v & 0xF);

	pthread_mutex_lock(&P.lock);
	/* a timer overtaken by a re-enumeration since it was set does nothing;
	 * an unplugged device plugged back in boots what it holds */
	if (v >> 4 == (P.generation & 0xFFFFFFF))
		reenumerate(act == SIM_TO_DFU);
	pthread_mutex_unlock(&P.lock);
	return G_SOURCE_REMOVE;
}

static void later(guint ms, sim_action act)
{
	g_timeout_add(ms, later_cb, GUINT_TO_POINTER((P.generation & 0xFFFFFFF) << 4 | (unsigned)act));
}

/* What the model asked for, after the request that caused it completed. */
static void carry_out(sim_action act, bool now)
{
	switch (act) {
	case SIM_STAY: break;
	case SIM_UNPLUG:
		unplug();
		P.generation++;
		later((guint)P.replug_ms, SIM_UNPLUG);
		break;
	case SIM_TO_DFU:
	case SIM_TO_RUNTIME:
		if (now)
			reenumerate(act == SIM_TO_DFU);
		else
			later(50, act);
		break;
	}
}

/* ---- usbdevfs ---- */

static void complete(UMockdevIoctlClient *c, long res, int err)
{
	umockdev_ioctl_client_complete(c, res, err);
}

static gint same_client(gconstpointer r, gconstpointer c)
{
	return ((const struct reapable *)r)->client != c;
}

static void drop(struct reapable *r)
{
	g_object_unref(r->urb);
	g_object_unref(r->client);
	g_free(r);
}

/* URBs of files that were closed without reaping them (a killed process). */
static void forget_closed(void)
{
	for (GList *l = P.done.head, *next; l; l = next) {
		next = l->next;
		if (!umockdev_ioctl_client_get_connected(((struct reapable *)l->data)->client)) {
			drop(l->data);
			g_queue_delete_link(&P.done, l);
		}
	}
}

static void submit(UMockdevIoctlClient *c, UMockdevIoctlData *arg)
{
	UMockdevIoctlData *ud = umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_urb), NULL);
	struct usbdevfs_urb *urb = ud ? (struct usbdevfs_urb *)ud->data : NULL;
	UMockdevIoctlData *bd;
	sim_action act = SIM_STAY;
	int r;

	if (!urb || urb->type != USBDEVFS_URB_TYPE_CONTROL || urb->buffer_length < 8 ||
	    !(bd = umockdev_ioctl_data_resolve(ud, G_STRUCT_OFFSET(struct usbdevfs_urb, buffer),
	                                       (gsize)urb->buffer_length, NULL))) {
		complete(c, -1, EINVAL); /* only control transfers on EP0 exist here */
		return;
	}
	uint8_t *b = bd->data;
	uint16_t wlen = (uint16_t)(b[6] | b[7] << 8);
	if (urb->buffer_length < 8 + wlen) {
		complete(c, -1, EINVAL);
		return;
	}
	if ((b[0] & 0x60) == 0)
		r = standard_request(b, b + 8);
	else
		r = sim_control(&P.d, b, b + 8, &act);
	urb->status = r == -1 ? -EPIPE : r == -2 ? -EPROTO : 0;
	urb->actual_length = r < 0 ? 0 : (b[0] & 0x80) ? r : wlen;
	struct reapable *r2 = g_new0(struct reapable, 1);
	r2->client = g_object_ref(c);
	r2->urb = g_object_ref(ud);
	forget_closed();
	g_queue_push_tail(&P.done, r2);
	complete(c, 0, 0);
	if (act == SIM_TO_RUNTIME && r == -2)
		P.generation++, unplug(), later(200, SIM_TO_RUNTIME);
	else
		carry_out(act, false);
}

/* The oldest URB completed on this node; EAGAIN while there is none, and
 * ENODEV once the device has left and every URB is reaped. */
static void reap(UMockdevIoctlClient *c, UMockdevIoctlData *arg, bool stale)
{
	GList *l = g_queue_find_custom(&P.done, c, same_client);
	struct reapable *r;
	UMockdevIoctlData *p;

	if (!l) {
		complete(c, -1, stale ? ENODEV : EAGAIN);
		return;
	}
	r = l->data;
	g_queue_delete_link(&P.done, l);
	/* a client killed mid-call has no memory left to write to */
	if (!(p = umockdev_ioctl_data_resolve(arg, 0, sizeof(gpointer), NULL))) {
		complete(c, -1, EFAULT);
		drop(r);
		return;
	}
	umockdev_ioctl_data_set_ptr(p, 0, r->urb);
	complete(c, 0, 0);
	drop(r);
}

static unsigned arg_uint(UMockdevIoctlData *arg)
{
	UMockdevIoctlData *p = umockdev_ioctl_data_resolve(arg, 0, sizeof(unsigned), NULL);
	return p ? *(unsigned *)p->data : ~0u;
}

static gboolean on_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *c, gpointer unused)
{
	unsigned long req = umockdev_ioctl_client_get_request(c);
	UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(c);
	unsigned intfs;
	sim_action act;

	pthread_mutex_lock(&P.lock);
	if (getenv("DFU_SIM_DEBUG"))
		fprintf(stderr, "dfu-sim: ioctl %lx on %s\n", req, umockdev_ioctl_client_get_devnode(c));
	intfs = P.d.dfu_mode ? 1 : 2;
	bool stale = !P.present || strcmp(umockdev_ioctl_client_get_devnode(c), P.node);
	if (stale && (req == USBDEVFS_REAPURB || req == USBDEVFS_REAPURBNDELAY)) {
		reap(c, arg, true);
	} else if (stale) {
		complete(c, -1, ENODEV); /* a node of a device that has left */
	}
	if (stale) {
		pthread_mutex_unlock(&P.lock);
		return TRUE;
	}
	switch (req) {
	case USBDEVFS_GET_CAPABILITIES: {
		UMockdevIoctlData *d = umockdev_ioctl_data_resolve(arg, 0, sizeof(guint32), NULL);
		if (!d) { /* the client went away mid-call (killed) */
			complete(c, -1, EFAULT);
			break;
		}
		*(guint32 *)d->data = USBDEVFS_CAP_NO_PACKET_SIZE_LIM | USBDEVFS_CAP_REAP_AFTER_DISCONNECT;
		complete(c, 0, 0);
		break;
	}
	case USBDEVFS_CLAIMINTERFACE:
	case USBDEVFS_RELEASEINTERFACE:
		complete(c, arg_uint(arg) < intfs ? 0 : -1, arg_uint(arg) < intfs ? 0 : EINVAL);
		break;
	case USBDEVFS_DISCONNECT_CLAIM: {
		UMockdevIoctlData *d =
		    umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_disconnect_claim), NULL);
		unsigned i = d ? ((struct usbdevfs_disconnect_claim *)d->data)->interface : ~0u;
		complete(c, i < intfs ? 0 : -1, i < intfs ? 0 : EINVAL);
		break;
	}
	case USBDEVFS_SETINTERFACE: {
		UMockdevIoctlData *d = umockdev_ioctl_data_resolve(arg, 0, sizeof(struct usbdevfs_setinterface), NULL);
		struct usbdevfs_setinterface *si = d ? (struct usbdevfs_setinterface *)d->data : NULL;
		unsigned alts = P.d.dfu_mode && P.d.dfuse ? 2 : 1;
		if (si && si->interface < intfs && si->altsetting < alts) {
			P.d.alt = (uint8_t)si->altsetting;
			complete(c, 0, 0);
		} else {
			complete(c, -1, EINVAL);
		}
		break;
	}
	case USBDEVFS_GETDRIVER:
	case USBDEVFS_IOCTL: complete(c, -1, ENODATA); break; /* no kernel driver is bound */
	case USBDEVFS_CLEAR_HALT:
	case USBDEVFS_RESETEP: complete(c, 0, 0); break;
	case USBDEVFS_RESET:
		sim_reset(&P.d, &act);
		fprintf(stderr, "dfu-sim: USB reset\n");
		if (act == SIM_STAY) {
			complete(c, 0, 0);
		} else {
			/* the device comes back as another one: the old node is gone */
			complete(c, -1, ENODEV);
			carry_out(act, true);
		}
		break;
	case USBDEVFS_SUBMITURB: submit(c, arg); break;
	case USBDEVFS_REAPURB:
	case USBDEVFS_REAPURBNDELAY: reap(c, arg, false); break;
	case USBDEVFS_DISCARDURB: complete(c, -1, EINVAL); break; /* every URB completes at once */
	default: complete(c, -1, ENOTTY); break;
	}
	pthread_mutex_unlock(&P.lock);
	return TRUE;
}

/* ---- stats, options, main ---- */

static void write_stats(void)
{
	static char answered[64];
	char tmp[4096], tok[64];
	FILE *f;

	if (!P.stats)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", P.stats);
	if (!(f = fopen(tmp, "w")))
		return;
	fprintf(f,
	        "mode=%s\nrunning=%s\npid=%04x\ndnloads=%lu\ndata_bytes=%lu\nearly_polls=%lu\nviolations=%lu\n"
	        "detaches=%lu\nresets=%lu\nenumerations=%lu\nerases=%lu\nerrors=%lu\noption_bytes=%lu\n",
	        P.present ? (P.d.dfu_mode ? "dfu" : "runtime") : "off", sim_running(&P.d), sim_current_pid(&P.d),
	        P.d.dnloads, P.d.data_bytes, P.d.early_polls, P.d.violations, P.d.detaches, P.d.resets,
	        P.d.enumerations, P.d.erases, P.d.errors, P.d.option_bytes);
	stats_asked(P.stats, tok, answered);
	fprintf(f, "answer=%s\n", answered);
	fclose(f);
	rename(tmp, P.stats);
}

static gboolean stats_cb(gpointer unused)
{
	pthread_mutex_lock(&P.lock);
	write_stats();
	pthread_mutex_unlock(&P.lock);
	return G_SOURCE_CONTINUE;
}

static gboolean quit_cb(gpointer unused)
{
	g_main_loop_quit(P.loop);
	return G_SOURCE_REMOVE;
}

static void usage(void)
{
	fprintf(stderr, "usage: dfu_device --root-file PATH --version X.Y.Z [options] [faults]\n"
	                "       dfu_device --make-image VERSION SIZE OUT [--pid HEX]\n");
	exit(2);
}

static int make_image(int argc, char **argv)
{
	static uint8_t buf[SIM_STAGING_MAX];
	unsigned long size;
	unsigned pid = 0;
	size_t n;
	FILE *f;

	if (argc != 5 && !(argc == 7 && !strcmp(argv[5], "--pid") && sscanf(argv[6], "%x", &pid) == 1))
		usage();
	size = strtoul(argv[3], NULL, 10);
	if (!(n = sim_make_image(argv[2], (uint16_t)pid, size, buf, sizeof(buf))) || !(f = fopen(argv[4], "wb")) ||
	    fwrite(buf, 1, n, f) != n || fclose(f))
		return fprintf(stderr, "dfu_device: cannot make %s\n", argv[4]), 1;
	return 0;
}

static unsigned long num(const char *s, int base)
{
	char *end;
	unsigned long v = strtoul(s, &end, base);
	if (*end || !*s)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	const char *root_file = NULL, *version = NULL;
	dfu_sim *d = &P.d;
	GError *err = NULL;

	if (argc >= 2 && !strcmp(argv[1], "--make-image"))
		return make_image(argc, argv);
	const char *pre = getenv("LD_PRELOAD");
	if (!pre || !strstr(pre, "libumockdev-preload")) {
		/* the testbed's uevents need the preload in this process too */
		setenv("LD_PRELOAD", "libumockdev-preload.so.0", 1);
		execv("/proc/self/exe", argv);
		perror("dfu_device: re-executing under umockdev");
		return 1;
	}
	*d = (dfu_sim){.vid = 0x1209,
	               .pid = 0x0001,
	               .dfu_pid = 0x0002,
	               .serial = "FERRY-SIM-1",
	               .transfer_size = 1024,
	               .poll_ms = 5,
	               .manifest_ms = 50,
	               .erase_ms = 20,
	               .detach_timeout_ms = 1000,
	               .tolerant = true,
	               .error_block = -1,
	               .stall_block = -1,
	               .unplug_block = -1};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = true;
		if (!strcmp(a, "--root-file") && v)
			root_file = v;
		else if (!strcmp(a, "--version") && v)
			version = v;
		else if (!strcmp(a, "--stats") && v)
			P.stats = v;
		else if (!strcmp(a, "--vid") && v)
			d->vid = (uint16_t)num(v, 16);
		else if (!strcmp(a, "--pid") && v)
			d->pid = (uint16_t)num(v, 16);
		else if (!strcmp(a, "--dfu-pid") && v)
			d->dfu_pid = (uint16_t)num(v, 16);
		else if (!strcmp(a, "--serial") && v && strlen(v) < sizeof(d->serial))
			snprintf(d->serial, sizeof(d->serial), "%s", v);
		else if (!strcmp(a, "--port") && v)
			P.port = (int)num(v, 10);
		else if (!strcmp(a, "--transfer-size") && v && num(v, 10) >= 1 && num(v, 10) <= 4096)
			d->transfer_size = (uint16_t)num(v, 10);
		else if (!strcmp(a, "--poll-ms") && v)
			d->poll_ms = (uint32_t)num(v, 10);
		else if (!strcmp(a, "--erase-ms") && v)
			d->erase_ms = (uint32_t)num(v, 10);
		else if (!strcmp(a, "--manifest-ms") && v)
			d->manifest_ms = (uint32_t)num(v, 10);
		else if (!strcmp(a, "--replug-ms") && v)
			P.replug_ms = (long)num(v, 10);
		else if (!strcmp(a, "--error-at-block") && v && strchr(v, ':')) {
			d->error_block = (long)strtoul(v, NULL, 10);
			d->error_status = (uint8_t)num(strchr(v, ':') + 1, 10);
		} else if (!strcmp(a, "--stall-at-block") && v)
			d->stall_block = (long)num(v, 10);
		else if (!strcmp(a, "--unplug-at-block") && v)
			d->unplug_block = (long)num(v, 10);
		else if (!strcmp(a, "--bogus-poll") && v)
			d->bogus_poll = (uint32_t)num(v, 10);
		else if (!strcmp(a, "--erase-stalls") && v)
			d->erase_stalls = (int)num(v, 10);
		else {
			takes = false;
			if (!strcmp(a, "--dfuse"))
				d->dfuse = true;
			else if (!strcmp(a, "--intolerant"))
				d->tolerant = false;
			else if (!strcmp(a, "--will-detach"))
				d->will_detach = true;
			else if (!strcmp(a, "--verify-fails"))
				d->verify_fails = true;
			else if (!strcmp(a, "--detach-never"))
				d->detach_never = true;
			else if (!strcmp(a, "--silent-manifest"))
				d->silent_manifest = true;
			else if (!strcmp(a, "--manifest-reset"))
				d->manifest_reset = true;
			else
				usage();
		}
		if (takes)
			i++;
	}
	if (!root_file || !version || sim_init(d, version))
		usage();
	sim_enumerated(d, false);

	P.tb = umockdev_testbed_new();
	P.handler = umockdev_ioctl_base_new();
	g_signal_connect(P.handler, "handle-ioctl", G_CALLBACK(on_ioctl), NULL);
	pthread_mutex_lock(&P.lock);
	plug();
	write_stats();
	pthread_mutex_unlock(&P.lock);

	char *root = umockdev_testbed_get_root_dir(P.tb), tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", root_file);
	if (!g_file_set_contents(tmp, root, -1, &err) || rename(tmp, root_file)) {
		fprintf(stderr, "dfu_device: cannot write %s\n", root_file);
		return 1;
	}
	g_free(root);

	P.loop = g_main_loop_new(NULL, FALSE);
	g_timeout_add(100, stats_cb, NULL);
	g_unix_signal_add(SIGTERM, quit_cb, NULL);
	g_unix_signal_add(SIGINT, quit_cb, NULL);
	g_main_loop_run(P.loop);
	pthread_mutex_lock(&P.lock);
	write_stats();
	pthread_mutex_unlock(&P.lock);
	g_object_unref(P.tb);
	return 0;
}
