/* ble-smp: updates an MCU running MCUboot and an mcumgr (SMP) server over
 * Bluetooth Low Energy, through BlueZ's D-Bus API, the way Zephyr
 * applications with CONFIG_MCUMGR_TRANSPORT_BT ship.  Only bonded devices,
 * only over links BlueZ encrypted with their stored keys.
 *
 * How an update goes over the air:
 *   1. Find the device among BlueZ's objects (ObjectManager.GetManagedObjects
 *      under /org/bluez/<adapter>/): by its address, by its name, or as the
 *      first device that lists the SMP service 8d53dc1d-1db7-4cd3-868b-
 *      8a527460aa84 -- by name or service, a paired and bonded device before
 *      any other.  A device that is not Paired and Bonded is shown in the
 *      inventory without a version, and refused before any connection:
 *      adapter_error, naming the device and what is missing.
 *   2. Device1.Connect, wait for ServicesResolved, find the SMP
 *      characteristic da2e7828-fbce-4e01-ae9e-261174997c48 in that service.
 *      With the bond, BlueZ encrypts the link with the stored keys; a device
 *      that wants more (Zephyr's default is an authenticated link) refuses the
 *      notification set-up, and BlueZ says NotPermitted or NotAuthorized:
 *      refused, adapter_error, with BlueZ's words.
 *   3. AcquireNotify (else StartNotify and PropertiesChanged on Value) for
 *      answers, AcquireWrite (else WriteValue type "command") for requests,
 *      with the connection's ATT MTU.  A request is cut into Writes Without
 *      Response of at most MTU - 3 bytes (the device puts them together by the
 *      SMP header's length); an answer is put together here the same way from
 *      notifications.
 *   4. Then the same flow as serial-smp, shared in adapters/smp/smp_client.c:
 *      image state, os params (packets up to the device's buffer), upload
 *      with off continuation and resume by sha, test mark, os reset, confirm.
 *   5. A reset drops the link.  So does a radio that fades mid-upload: the
 *      fds hang up and Device1 reports Connected false.  The link is brought
 *      back -- Connect, ServicesResolved, acquire again, with the MTU of the
 *      new connection, which may differ -- and the upload asks the device
 *      where it stands (a first request with the same sha), so it goes on
 *      from the device's offset instead of starting over.
 * Every value from D-Bus and from the device is bounded and type-checked,
 * every wait has a deadline and every retry a count.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bluez.h"
#include "ferry/adapter.h"
#include "gatt_link.h"
#include "smp.h"
#include "smp_client.h"

#define DEVICES_MAX 64
#define CALL_US (5 * 1000 * 1000ULL)

typedef struct ble_dev {
	char address[18];          /* "" when found by name or service */
	char name[BLUEZ_NAME_MAX]; /* "" when not given */
	char vendor_id[FERRY_ADAPTER_STR_MAX], class_id[FERRY_ADAPTER_STR_MAX];
	char component[FERRY_ADAPTER_STR_MAX];
	/* what discovery last read, for when a session holds the device */
	bool busy, have_version;
	/* discovery connected the device and left the connection to the
	 * session that opened meanwhile: the session disconnects it */
	bool disconnect_after;
	char version[FERRY_ADAPTER_STR_MAX];
	uint8_t hash[32];
} ble_dev;

typedef struct state {
	const ferry_host_v1 *host;
	char bus[256], adapter[17];
	ble_dev devs[DEVICES_MAX];
	size_t n;
	smp_client_cfg cfg;
	gatt_link_cfg link;
	pthread_mutex_t lock; /* busy and the cached versions */
} state;

typedef struct sess {
	state *s;
	size_t dev; /* index in s->devs */
	sd_bus *bus;
	gatt_link link;
	smp_client c;
} sess;

static const char *cfg(const state *s, const char *key)
{
	return s->host->config(s->host->ctx, key);
}

static int copy_key(const state *s, const char *key, char *out, size_t cap, bool required, char *detail)
{
	const char *v = cfg(s, key);
	out[0] = '\0';
	if (!v && !required)
		return 0;
	if (!v || !*v || strlen(v) >= cap)
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: %s", key,
				v ? "empty or too long" : "missing");
	memcpy(out, v, strlen(v) + 1);
	return 0;
}

static int load_device(state *s, size_t i, char *detail)
{
	ble_dev *d = &s->devs[i];
	char k[64], addr[32];
	int rc;

#define KEY(field) (snprintf(k, sizeof(k), "devices[%zu]." field, i), k)
	if (!cfg(s, KEY("vendor_id")) && !cfg(s, KEY("address")) && !cfg(s, KEY("name")) && !cfg(s, KEY("component")))
		return 1; /* no more devices */
	if ((rc = copy_key(s, KEY("vendor_id"), d->vendor_id, sizeof(d->vendor_id), true, detail)) ||
	    (rc = copy_key(s, KEY("class_id"), d->class_id, sizeof(d->class_id), true, detail)) ||
	    (rc = copy_key(s, KEY("component"), d->component, sizeof(d->component), true, detail)) ||
	    (rc = copy_key(s, KEY("name"), d->name, sizeof(d->name), false, detail)) ||
	    (rc = copy_key(s, KEY("address"), addr, sizeof(addr), false, detail)))
		return rc;
	if (addr[0] && !bluez_parse_address(addr, d->address))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
				"devices[%zu].address: \"%s\" is not a Bluetooth address (AA:BB:CC:DD:EE:FF)", i, addr);
#undef KEY
	return 0;
}

static int load_config(state *s, char *detail)
{
	const char *bus = cfg(s, "bus"), *adapter = cfg(s, "adapter"), *reasm = cfg(s, "reassembly");
	int rc = 0;

	snprintf(s->bus, sizeof(s->bus), "%s", bus ? bus : "system");
	if (bus && (strlen(bus) >= sizeof(s->bus) || (strcmp(bus, "system") && strncmp(bus, "unix:", 5))))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "bus: system or a unix: D-Bus address");
	snprintf(s->adapter, sizeof(s->adapter), "%s", adapter ? adapter : "hci0");
	if (adapter && (strlen(adapter) >= sizeof(s->adapter) ||
			strspn(adapter, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(adapter) || !*adapter))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "adapter: a name such as hci0");
	if (reasm && strcmp(reasm, "true") && strcmp(reasm, "false"))
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "reassembly: true or false");
	s->link.reassembly = !reasm || !strcmp(reasm, "true");
	if ((rc = ferry_adapter_config_long(s->host, "timeout_ms", 3000, 50, 60000, &s->cfg.timeout_ms, detail)) ||
	    (rc = ferry_adapter_config_long(s->host, "first_timeout_ms", 30000, 100, 600000, &s->cfg.first_timeout_ms,
					    detail)) ||
	    (rc = ferry_adapter_config_long(s->host, "reset_wait_ms", 30000, 100, 600000, &s->cfg.reset_wait_ms,
					    detail)) ||
	    (rc = ferry_adapter_config_int(s->host, "retries", 5, 0, 100, &s->cfg.retries, detail)) ||
	    (rc = ferry_adapter_config_long(s->host, "chunk", 0, 0, SMP_PACKET_MAX - SMP_UPLOAD_OVERHEAD, &s->cfg.chunk,
					    detail)) ||
	    (rc = ferry_adapter_config_long(s->host, "connect_timeout_ms", 15000, 100, 600000,
					    &s->link.connect_timeout_ms, detail)) ||
	    (rc = ferry_adapter_config_long(s->host, "reset_drop_ms", 6000, 0, 600000, &s->link.reset_drop_ms, detail)))
		return rc;
	for (size_t i = 0; i < DEVICES_MAX && !(rc = load_device(s, i, detail)); i++)
		s->n = i + 1;
	return rc == 1 ? 0 : rc;
}

static int b_init(const ferry_host_v1 *host, void **st, char *detail)
{
	state *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	s->host = host;
	if ((rc = load_config(s, detail))) {
		free(s);
		return rc;
	}
	pthread_mutex_init(&s->lock, NULL);
	*st = s;
	return 0;
}

static void b_fini(void *st)
{
	state *s = st;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Does BlueZ device d fit entry c, in the pass c belongs to: by address
 * (and name, if given too), by name (Name or Alias), or by the SMP service. */
static bool fits(const ble_dev *c, const bluez_device *d)
{
	bool name_ok = !c->name[0] || !strcmp(d->name, c->name) || !strcmp(d->alias, c->name);

	if (c->address[0])
		return !strcmp(d->address, c->address) && name_ok;
	if (c->name[0])
		return name_ok;
	return d->smp_uuid;
}

/* bluez_scan's filter: devices that fit some entry, so that the bound on
 * devices kept applies to those only. */
static bool wanted(const bluez_device *d, void *ud)
{
	const state *s = ud;
	for (size_t i = 0; i < s->n; i++)
		if (fits(&s->devs[i], d))
			return true;
	return false;
}

/* Which BlueZ device each configured entry is: by address first, then by
 * name, then the first one left that lists the SMP service.  A name or a
 * service UUID is anyone's to advertise: among the devices that fit, a
 * paired and bonded one is taken before any other, so a stranger nearby
 * with the same name cannot shadow the node the gateway is bonded with
 * (one that is not bonded is still taken when nothing else fits, to be
 * listed with the reason).  Each BlueZ device serves one entry at most.
 * -1: not found. */
static void resolve(const state *s, const bluez_objects *o, int which[DEVICES_MAX])
{
	bool taken[BLUEZ_DEVICES_MAX] = {false};

	for (size_t i = 0; i < s->n; i++)
		which[i] = -1;
	for (int pass = 0; pass < 3; pass++)
		for (size_t i = 0; i < s->n; i++) {
			const ble_dev *c = &s->devs[i];
			if ((c->address[0] ? 0 : c->name[0] ? 1 : 2) != pass)
				continue;
			for (int bonded_only = 1; bonded_only >= 0 && which[i] < 0; bonded_only--)
				for (size_t k = 0; k < o->n_dev && which[i] < 0; k++) {
					const bluez_device *d = &o->dev[k];
					if (!taken[k] && fits(c, d) && (!bonded_only || bluez_device_bonded(d))) {
						which[i] = (int)k;
						taken[k] = true;
					}
				}
		}
}

static void device_id(const char *address, char id[FERRY_ADAPTER_STR_MAX])
{
	char *o = id + snprintf(id, FERRY_ADAPTER_STR_MAX, "ble-");
	for (const char *p = address; *p; p++)
		if (*p != ':')
			*o++ = *p;
	*o = '\0';
}

static void kv(ferry_kv_v1 *e, const char *k, const char *v)
{
	snprintf(e->key, sizeof(e->key), "%s", k);
	snprintf(e->value, sizeof(e->value), "%s", v);
}

/* Connect, read image state, let go: the version discovery reports. */
static int read_version(state *s, sd_bus *bus, ble_dev *c, const bluez_device *bd, char *version, uint8_t hash[32],
			bool *refused, char *detail)
{
	gatt_link *l = malloc(sizeof(*l));
	smp_client client;
	smp_client_cfg quick = s->cfg;
	int rc;

	if (!l)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	rc = gatt_link_open(l, bus, s->host, &s->link, bd->path, bd->address, smp_now_ms() + s->link.connect_timeout_ms,
			    detail);
	if (!rc) {
		quick.retries = 1;
		smp_client_init(&client, &gatt_link_ops, l, bd->address, &quick, s->host, NULL);
		rc = smp_client_read_state(&client, version, hash, detail);
	}
	*refused = l->refused;
	/* a session that opened meanwhile uses the connection: leave it up,
	 * and leave disconnecting it to that session */
	pthread_mutex_lock(&s->lock);
	if (c->busy && l->we_connected) {
		l->we_connected = false;
		c->disconnect_after = true;
	}
	pthread_mutex_unlock(&s->lock);
	gatt_link_close(l);
	free(l);
	return rc;
}

static void describe(const state *s, const ble_dev *c, const bluez_device *bd, ferry_device_v1 *d, const char *version,
		     const uint8_t *hash, const char *bonded)
{
	device_id(bd->address, d->id);
	snprintf(d->vendor_id, sizeof(d->vendor_id), "%s", c->vendor_id);
	snprintf(d->class_id, sizeof(d->class_id), "%s", c->class_id);
	kv(&d->match[0], "address", bd->address);
	kv(&d->match[1], "image", "0");
	d->n_match = 2;
	kv(&d->attributes[0], "bonded", bonded);
	/* BlueZ encrypts a bonded device's link with the stored keys; it does
	 * not say whether the pairing was authenticated (the device does:
	 * see step 2 above) */
	kv(&d->attributes[1], FERRY_ADAPTER_ATTR_LINK,
	   strcmp(bonded, "false") ? FERRY_LINK_BONDED_ENCRYPTED : FERRY_LINK_UNAUTHENTICATED);
	d->n_attributes = 2;
	/* the component it serves; its version only when the device told it */
	kv(&d->components[0], c->component, version ? version : "");
	d->n_components = 1;
	if (version) {
		/* the running image's MCUboot hash tells two builds of one version apart */
		snprintf(d->attributes[2].key, sizeof(d->attributes[2].key), "image0_hash");
		for (int k = 0; k < 32; k++)
			snprintf(d->attributes[2].value + 2 * k, 3, "%02x", hash[k]);
		d->n_attributes = 3;
	}
}

static int b_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	state *s = st;
	bluez_objects *o = malloc(sizeof(*o));
	sd_bus *bus = NULL;
	char err[200], prefix[32];
	int which[DEVICES_MAX];

	*n = 0;
	if (!o)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	snprintf(prefix, sizeof(prefix), "/org/bluez/%s/", s->adapter);
	if (bluez_bus_open(s->bus, &bus, err, sizeof(err)) ||
	    bluez_scan(bus, prefix, CALL_US, wanted, s, o, err, sizeof(err))) {
		free(o);
		sd_bus_flush_close_unref(bus);
		return smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s", err);
	}
	resolve(s, o, which);
	for (size_t i = 0; i < s->n && *n < max; i++) {
		ble_dev *c = &s->devs[i];
		const bluez_device *bd = which[i] >= 0 ? &o->dev[which[i]] : NULL;
		char version[FERRY_ADAPTER_STR_MAX], d2[FERRY_ADAPTER_DETAIL_MAX];
		uint8_t hash[32];
		bool busy, refused = false;
		if (!bd)
			continue; /* BlueZ has not seen it */
		if (gatt_link_unpaired(bd)) {
			/* listed, so that an update for it is refused with the reason */
			describe(s, c, bd, &devs[(*n)++], NULL, NULL, "false");
			continue;
		}
		pthread_mutex_lock(&s->lock);
		busy = c->busy;
		if (busy && c->have_version) {
			memcpy(version, c->version, sizeof(version));
			memcpy(hash, c->hash, 32);
		}
		pthread_mutex_unlock(&s->lock);
		if (busy) {
			describe(s, c, bd, &devs[(*n)++], c->have_version ? version : NULL, hash, "true");
			continue;
		}
		if (read_version(s, bus, c, bd, version, hash, &refused, d2)) {
			smp_log(s->host, FERRY_LOG_WARNING, "%s", d2);
			if (refused)
				describe(s, c, bd, &devs[(*n)++], NULL, NULL, "true");
			continue; /* out of reach now */
		}
		pthread_mutex_lock(&s->lock);
		memcpy(c->version, version, sizeof(version));
		memcpy(c->hash, hash, 32);
		c->have_version = true;
		pthread_mutex_unlock(&s->lock);
		describe(s, c, bd, &devs[(*n)++], version, hash, "true");
	}
	free(o);
	sd_bus_flush_close_unref(bus);
	return 0;
}

static int b_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **out, char *detail)
{
	state *s = st;
	bluez_objects *o = malloc(sizeof(*o));
	sess *x = calloc(1, sizeof(*x));
	char err[200], prefix[32], id[FERRY_ADAPTER_STR_MAX];
	int which[DEVICES_MAX], rc;
	const bluez_device *bd = NULL;
	const char *why;

	if (!o || !x) {
		free(o);
		free(x);
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	x->s = s;
	snprintf(prefix, sizeof(prefix), "/org/bluez/%s/", s->adapter);
	if (bluez_bus_open(s->bus, &x->bus, err, sizeof(err)) ||
	    bluez_scan(x->bus, prefix, CALL_US, wanted, s, o, err, sizeof(err))) {
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s", err);
		goto fail;
	}
	resolve(s, o, which);
	for (size_t i = 0; i < s->n && !bd; i++) {
		if (which[i] < 0)
			continue;
		device_id(o->dev[which[i]].address, id);
		if (!strcmp(id, dev->id)) {
			bd = &o->dev[which[i]];
			x->dev = i;
		}
	}
	if (!bd) {
		rc =
		    smp_fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "no configured BLE device is %s now", dev->id);
		goto fail;
	}
	if ((why = gatt_link_unpaired(bd))) {
		rc = smp_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
			      "device %s %s: ble-smp only updates bonded devices over encrypted links; pair it with an "
			      "authenticated method (passkey or numeric comparison) and trust it",
			      bd->address, why);
		goto fail;
	}
	pthread_mutex_lock(&s->lock);
	bool busy = s->devs[x->dev].busy;
	s->devs[x->dev].busy = true;
	pthread_mutex_unlock(&s->lock);
	if (busy) {
		rc = smp_fail(detail, FERRY_ADAPTER_E_DEVICE_BUSY, "device %s is in another session", bd->address);
		goto fail;
	}
	rc = gatt_link_open(&x->link, x->bus, s->host, &s->link, bd->path, bd->address,
			    smp_now_ms() + s->link.connect_timeout_ms, detail);
	if (rc) {
		gatt_link_close(&x->link);
		pthread_mutex_lock(&s->lock);
		bool handed = s->devs[x->dev].disconnect_after;
		s->devs[x->dev].disconnect_after = false;
		s->devs[x->dev].busy = false;
		pthread_mutex_unlock(&s->lock);
		if (handed)
			bluez_call(x->bus, bd->path, "org.bluez.Device1", "Disconnect", CALL_US, NULL, NULL, NULL);
		goto fail;
	}
	smp_client_init(&x->c, &gatt_link_ops, &x->link, x->link.name, &s->cfg, s->host, sh);
	free(o);
	*out = x;
	return 0;
fail:
	free(o);
	sd_bus_flush_close_unref(x->bus);
	free(x);
	return rc;
}

static int b_check(void *session, const ferry_image_v1 *img, char *detail)
{
	sess *x = session;
	const ble_dev *c = &x->s->devs[x->dev];

	if (strcmp(img->format, "mcuboot"))
		return smp_fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "ble-smp takes mcuboot images, not %s",
				img->format);
	if (strcmp(img->component, c->component))
		return smp_fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "%s serves component %s, not %.64s",
				x->link.name, c->component, img->component);
	return smp_client_check(&x->c, img, detail);
}

static int b_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	sess *x = session;
	int rc = smp_client_upload(&x->c, img, resume_from, detail);
	smp_log(x->s->host, FERRY_LOG_INFO,
		"%s: %lu writes in this session; the current connection takes %u bytes a write", x->link.name,
		x->link.writes, x->link.mtu - 3);
	return rc;
}

static int b_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	return smp_client_activate(&((sess *)session)->c, detail);
}

static int b_confirm(void *session, const ferry_image_v1 *img, char *version, char *detail)
{
	return smp_client_confirm(&((sess *)session)->c, img, version, detail);
}

static int b_commit(void *session, const ferry_image_v1 *img, char *detail)
{
	return smp_client_commit(&((sess *)session)->c, img, detail);
}

static int b_abort(void *session, const ferry_image_v1 *img, char *detail)
{
	return smp_client_abort(&((sess *)session)->c, img, detail);
}

static void b_close(void *session)
{
	sess *x = session;
	state *s = x->s;
	ble_dev *d = &s->devs[x->dev];
	bool handed;

	pthread_mutex_lock(&s->lock);
	handed = d->disconnect_after;
	d->disconnect_after = false;
	pthread_mutex_unlock(&s->lock);
	if (handed)
		x->link.we_connected = true; /* a discovery's connection, left to us */
	gatt_link_close(&x->link);
	pthread_mutex_lock(&s->lock);
	/* a discovery that was still reading when we began to close */
	handed = d->disconnect_after && !x->link.we_connected;
	d->disconnect_after = false;
	d->busy = false;
	d->have_version = false; /* the session may have changed it */
	pthread_mutex_unlock(&s->lock);
	if (handed)
		bluez_call(x->bus, x->link.dev_path, "org.bluez.Device1", "Disconnect", CALL_US, NULL, NULL, NULL);
	sd_bus_flush_close_unref(x->bus);
	free(x);
}

static const char *const formats[] = {"mcuboot", NULL};

static const ferry_config_key keys[] = {
	{"bus", FERRY_CFG_TEXT, 1, 255, false},
	{"adapter", FERRY_CFG_TEXT, 1, 16, false},
	{"reassembly", FERRY_CFG_BOOL, 0, 0, false},
	{"timeout_ms", FERRY_CFG_INT, 50, 60000, false},
	{"first_timeout_ms", FERRY_CFG_INT, 100, 600000, false},
	{"reset_wait_ms", FERRY_CFG_INT, 100, 600000, false},
	{"retries", FERRY_CFG_INT, 0, 100, false},
	{"chunk", FERRY_CFG_INT, 0, SMP_PACKET_MAX - SMP_UPLOAD_OVERHEAD, false},
	{"connect_timeout_ms", FERRY_CFG_INT, 100, 600000, false},
	{"reset_drop_ms", FERRY_CFG_INT, 0, 600000, false},
	{"devices[].address", FERRY_CFG_TEXT, 17, 17, false},
	{"devices[].name", FERRY_CFG_TEXT, 1, 248, false},
	{"devices[].vendor_id", FERRY_CFG_TEXT, 1, 64, true},
	{"devices[].class_id", FERRY_CFG_TEXT, 1, 64, true},
	{"devices[].component", FERRY_CFG_TEXT, 1, 64, true},
	{NULL, 0, 0, 0, false},
};

static const ferry_adapter_v2 table = {
	.abi = 2,
	.name = "ble-smp",
	.formats = formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK | FERRY_ADAPTER_CAP_NEEDS_RESET | FERRY_ADAPTER_CAP_RESUME,
	/* each session has its own D-Bus connection and GATT link; a
	 * controller keeps only a few LE connections up at once */
	.max_sessions = 4,
	.config_keys = keys,
	.init = b_init,
	.fini = b_fini,
	.discover = b_discover,
	.open = b_open,
	.check = b_check,
	.write = b_write,
	.activate = b_activate,
	.confirm = b_confirm,
	.commit = b_commit,
	.abort = b_abort,
	.close = b_close,
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
