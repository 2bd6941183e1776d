/* BlueZ over D-Bus for ble-smp (see bluez.h). */
#include "bluez.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int bluez_bus_open(const char *spec, sd_bus **out, char *err, size_t errlen)
{
	sd_bus *bus = NULL;
	int r;

	*out = NULL;
	if (!strcmp(spec, "system")) {
		r = sd_bus_open_system(&bus);
	} else if (!strncmp(spec, "unix:", 5)) {
		if ((r = sd_bus_new(&bus)) >= 0 && (r = sd_bus_set_address(bus, spec)) >= 0 &&
		    (r = sd_bus_set_bus_client(bus, 1)) >= 0 && (r = sd_bus_negotiate_fds(bus, 1)) >= 0)
			r = sd_bus_start(bus);
	} else {
		snprintf(err, errlen, "bus \"%.64s\": use system or a unix: D-Bus address", spec);
		return -EINVAL;
	}
	if (r < 0) {
		snprintf(err, errlen, "cannot reach the D-Bus at %.64s: %s", spec, strerror(-r));
		sd_bus_unref(bus);
		return r;
	}
	*out = bus;
	return 0;
}

int bluez_call(sd_bus *bus, const char *path, const char *iface, const char *method, uint64_t timeout_us,
	       sd_bus_error *e, sd_bus_message **reply, const char *types, ...)
{
	sd_bus_message *m = NULL;
	va_list ap;
	int r;

	if ((r = sd_bus_message_new_method_call(bus, &m, "org.bluez", path, iface, method)) < 0)
		return r;
	if (types) {
		va_start(ap, types);
		r = sd_bus_message_appendv(m, types, ap);
		va_end(ap);
	}
	if (r >= 0)
		r = sd_bus_call(bus, m, timeout_us, e, reply);
	sd_bus_message_unref(m);
	return r;
}

bool bluez_error_is_security(const sd_bus_error *e)
{
	if (sd_bus_error_has_name(e, "org.bluez.Error.NotAuthorized"))
		return true;
	return sd_bus_error_has_name(e, "org.bluez.Error.NotPermitted") &&
	       !(e->message && strstr(e->message, "acquired"));
}

bool bluez_error_is_unsupported(const sd_bus_error *e)
{
	return sd_bus_error_has_name(e, "org.bluez.Error.NotSupported") ||
	       sd_bus_error_has_name(e, SD_BUS_ERROR_UNKNOWN_METHOD);
}

int bluez_parse_address(const char *in, char out[18])
{
	if (strlen(in) != 17)
		return 0;
	for (int i = 0; i < 17; i++) {
		if (i % 3 == 2 ? in[i] != ':' : !isxdigit((unsigned char)in[i]))
			return 0;
		out[i] = (char)toupper((unsigned char)in[i]);
	}
	out[17] = '\0';
	return 1;
}

/* Copy a string from the bus only when it fits; 0 when it did not. */
static int copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	if (n >= cap) {
		dst[0] = '\0';
		return 0;
	}
	memcpy(dst, src, n + 1);
	return 1;
}

/* Each entry of an a{sv}: take() consumes the variant when its name and type
 * are wanted (returns 1), or leaves it to be skipped (0). */
typedef int (*take_fn)(sd_bus_message *m, const char *name, const char *contents, void *ud);

static int each_prop(sd_bus_message *m, take_fn take, void *ud)
{
	int r;

	if ((r = sd_bus_message_enter_container(m, 'a', "{sv}")) <= 0)
		return r < 0 ? r : -EBADMSG;
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		const char *name, *contents = NULL;
		char type;
		if ((r = sd_bus_message_read(m, "s", &name)) < 0 ||
		    (r = sd_bus_message_peek_type(m, &type, &contents)) < 0)
			return r;
		if (type != 'v' || !contents)
			return -EBADMSG;
		if ((r = take(m, name, contents, ud)) < 0)
			return r;
		if (r == 0 && (r = sd_bus_message_skip(m, "v")) < 0)
			return r;
		if ((r = sd_bus_message_exit_container(m)) < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

static int read_bool(sd_bus_message *m, const char *contents, bool *out)
{
	int b = 0, r;
	if (strcmp(contents, "b"))
		return 0;
	if ((r = sd_bus_message_read(m, "v", "b", &b)) < 0)
		return r;
	*out = b != 0;
	return 1;
}

static int read_str(sd_bus_message *m, const char *contents, char sig, char *out, size_t cap)
{
	const char *s = NULL;
	char want[2] = {sig, '\0'};
	int r;
	if (strcmp(contents, want))
		return 0;
	if ((r = sd_bus_message_read(m, "v", want, &s)) < 0)
		return r;
	copy_str(out, cap, s);
	return 1;
}

/* An "as" in a variant: calls found(ud, string) for each. */
static int read_strv(sd_bus_message *m, const char *contents, void (*found)(void *ud, const char *s), void *ud)
{
	const char *s;
	int r;
	if (strcmp(contents, "as"))
		return 0;
	if ((r = sd_bus_message_enter_container(m, 'v', "as")) < 0 ||
	    (r = sd_bus_message_enter_container(m, 'a', "s")) < 0)
		return r;
	while ((r = sd_bus_message_read(m, "s", &s)) > 0)
		found(ud, s);
	if (r < 0 || (r = sd_bus_message_exit_container(m)) < 0 || (r = sd_bus_message_exit_container(m)) < 0)
		return r;
	return 1;
}

static void dev_uuid(void *ud, const char *s)
{
	if (!strcasecmp(s, BLE_SMP_SERVICE_UUID))
		((bluez_device *)ud)->smp_uuid = true;
}

static int take_device(sd_bus_message *m, const char *name, const char *contents, void *ud)
{
	bluez_device *d = ud;
	char addr[BLUEZ_NAME_MAX];
	int r;

	if (!strcmp(name, "Address")) {
		if ((r = read_str(m, contents, 's', addr, sizeof(addr))) > 0 && !bluez_parse_address(addr, d->address))
			d->address[0] = '\0';
		return r;
	}
	if (!strcmp(name, "Name"))
		return read_str(m, contents, 's', d->name, sizeof(d->name));
	if (!strcmp(name, "Alias"))
		return read_str(m, contents, 's', d->alias, sizeof(d->alias));
	if (!strcmp(name, "Paired"))
		return read_bool(m, contents, &d->paired);
	if (!strcmp(name, "Bonded")) {
		r = read_bool(m, contents, &d->bonded);
		d->has_bonded = r > 0;
		return r;
	}
	if (!strcmp(name, "Trusted"))
		return read_bool(m, contents, &d->trusted);
	if (!strcmp(name, "Connected"))
		return read_bool(m, contents, &d->connected);
	if (!strcmp(name, "ServicesResolved"))
		return read_bool(m, contents, &d->resolved);
	if (!strcmp(name, "UUIDs"))
		return read_strv(m, contents, dev_uuid, d);
	return 0;
}

static int take_service(sd_bus_message *m, const char *name, const char *contents, void *ud)
{
	bluez_service *s = ud;
	char uuid[40];
	int r;

	if (!strcmp(name, "UUID")) {
		if ((r = read_str(m, contents, 's', uuid, sizeof(uuid))) > 0)
			s->smp = !strcasecmp(uuid, BLE_SMP_SERVICE_UUID);
		return r;
	}
	if (!strcmp(name, "Device"))
		return read_str(m, contents, 'o', s->device, sizeof(s->device));
	return 0;
}

static void char_flag(void *ud, const char *f)
{
	bluez_char *c = ud;
	if (!strcmp(f, "write-without-response"))
		c->write_without_response = true;
	else if (!strcmp(f, "notify"))
		c->notify = true;
}

static int take_char(sd_bus_message *m, const char *name, const char *contents, void *ud)
{
	bluez_char *c = ud;
	char uuid[40];
	int r;

	if (!strcmp(name, "UUID")) {
		if ((r = read_str(m, contents, 's', uuid, sizeof(uuid))) > 0)
			c->smp = !strcasecmp(uuid, BLE_SMP_CHAR_UUID);
		return r;
	}
	if (!strcmp(name, "Service"))
		return read_str(m, contents, 'o', c->service, sizeof(c->service));
	if (!strcmp(name, "Flags"))
		return read_strv(m, contents, char_flag, c);
	if (!strcmp(name, "MTU")) {
		uint16_t q = 0;
		if (strcmp(contents, "q"))
			return 0;
		if ((r = sd_bus_message_read(m, "v", "q", &q)) < 0)
			return r;
		c->mtu = q;
		return 1;
	}
	return 0;
}

bool bluez_device_bonded(const bluez_device *d)
{
	return d->paired && (!d->has_bonded || d->bonded);
}

typedef struct scan_ctx {
	bluez_objects *o;
	bluez_device_filter want;
	void *ud;
} scan_ctx;

/* A device that passed the filter: appended while there is room; when
 * full, a bonded one takes the place of one that is not. */
static void keep_device(bluez_objects *o, const bluez_device *d)
{
	if (o->n_dev < BLUEZ_DEVICES_MAX) {
		o->dev[o->n_dev++] = *d;
		return;
	}
	if (!bluez_device_bonded(d))
		return;
	for (size_t i = o->n_dev; i-- > 0;)
		if (!bluez_device_bonded(&o->dev[i])) {
			o->dev[i] = *d;
			return;
		}
}

/* One object's interfaces: keep the three kinds we use -- the devices the
 * filter takes, the SMP services and characteristics -- while there is
 * room.  Each is read in full before it is judged. */
static int take_object(sd_bus_message *m, const char *path, const scan_ctx *x)
{
	bluez_objects *o = x->o;
	const char *iface;
	int r;

	if ((r = sd_bus_message_enter_container(m, 'a', "{sa{sv}}")) < 0)
		return r;
	while ((r = sd_bus_message_enter_container(m, 'e', "sa{sv}")) > 0) {
		if ((r = sd_bus_message_read(m, "s", &iface)) < 0)
			return r;
		if (!strcmp(iface, "org.bluez.Device1")) {
			bluez_device d;
			memset(&d, 0, sizeof(d));
			if ((r = each_prop(m, take_device, &d)) < 0)
				return r;
			if (copy_str(d.path, sizeof(d.path), path) && d.address[0] && (!x->want || x->want(&d, x->ud)))
				keep_device(o, &d);
		} else if (!strcmp(iface, "org.bluez.GattService1")) {
			bluez_service sv;
			memset(&sv, 0, sizeof(sv));
			if ((r = each_prop(m, take_service, &sv)) < 0)
				return r;
			if (sv.smp && o->n_svc < BLUEZ_SERVICES_MAX && copy_str(sv.path, sizeof(sv.path), path))
				o->svc[o->n_svc++] = sv;
		} else if (!strcmp(iface, "org.bluez.GattCharacteristic1")) {
			bluez_char c;
			memset(&c, 0, sizeof(c));
			if ((r = each_prop(m, take_char, &c)) < 0)
				return r;
			if (c.smp && o->n_chr < BLUEZ_CHARS_MAX && copy_str(c.path, sizeof(c.path), path))
				o->chr[o->n_chr++] = c;
		} else if ((r = sd_bus_message_skip(m, "a{sv}")) < 0) {
			return r;
		}
		if ((r = sd_bus_message_exit_container(m)) < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}

int bluez_scan(sd_bus *bus, const char *prefix, uint64_t timeout_us, bluez_device_filter want, void *ud,
	       bluez_objects *out, char *err, size_t errlen)
{
	sd_bus_error e = SD_BUS_ERROR_NULL;
	sd_bus_message *reply = NULL;
	size_t plen = strlen(prefix);
	scan_ctx x = {.o = out, .want = want, .ud = ud};
	int r;

	memset(out, 0, sizeof(*out));
	r = bluez_call(bus, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", timeout_us, &e, &reply,
		       NULL);
	if (r < 0) {
		snprintf(err, errlen, "BlueZ does not answer GetManagedObjects: %s",
			 e.message ? e.message : strerror(-r));
		sd_bus_error_free(&e);
		return r;
	}
	if ((r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}")) < 0)
		goto bad;
	while ((r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
		const char *path;
		if ((r = sd_bus_message_read(reply, "o", &path)) < 0)
			goto bad;
		if (strncmp(path, prefix, plen))
			r = sd_bus_message_skip(reply, "a{sa{sv}}");
		else
			r = take_object(reply, path, &x);
		if (r < 0 || (r = sd_bus_message_exit_container(reply)) < 0)
			goto bad;
	}
	if (r < 0 || (r = sd_bus_message_exit_container(reply)) < 0)
		goto bad;
	sd_bus_message_unref(reply);
	return 0;
bad:
	snprintf(err, errlen, "BlueZ's object list is malformed: %s", strerror(-r));
	sd_bus_message_unref(reply);
	return r;
}

int bluez_device_changes(sd_bus_message *m, bluez_device *d)
{
	return each_prop(m, take_device, d);
}

typedef struct value_ctx {
	uint8_t *buf;
	size_t cap, n;
	int found; /* 1 found, -1 too long */
} value_ctx;

static int take_value(sd_bus_message *m, const char *name, const char *contents, void *ud)
{
	value_ctx *v = ud;
	const void *p;
	size_t n;
	int r;

	if (strcmp(name, "Value") || strcmp(contents, "ay"))
		return 0;
	if ((r = sd_bus_message_enter_container(m, 'v', "ay")) < 0 ||
	    (r = sd_bus_message_read_array(m, 'y', &p, &n)) < 0 || (r = sd_bus_message_exit_container(m)) < 0)
		return r;
	if (n > v->cap) {
		v->found = -1;
	} else {
		memcpy(v->buf, p, n);
		v->n = n;
		v->found = 1;
	}
	return 1;
}

int bluez_value_change(sd_bus_message *m, uint8_t *buf, size_t cap, size_t *n)
{
	value_ctx v = {.buf = buf, .cap = cap};
	if (each_prop(m, take_value, &v) < 0)
		return -1;
	*n = v.n;
	return v.found;
}

int bluez_device_get(sd_bus *bus, const char *path, uint64_t timeout_us, bluez_device *out, sd_bus_error *e)
{
	sd_bus_message *reply = NULL;
	int r = bluez_call(bus, path, "org.freedesktop.DBus.Properties", "GetAll", timeout_us, e, &reply, "s",
			   "org.bluez.Device1");

	if (r < 0)
		return r;
	memset(out, 0, sizeof(*out));
	r = each_prop(reply, take_device, out);
	copy_str(out->path, sizeof(out->path), path);
	sd_bus_message_unref(reply);
	return r < 0 ? r : 0;
}

const bluez_char *bluez_find_smp(const bluez_objects *o, const char *device_path)
{
	size_t dl = strlen(device_path);

	for (size_t i = 0; i < o->n_chr; i++) {
		const bluez_char *c = &o->chr[i];
		if (!c->smp || strncmp(c->path, device_path, dl) || c->path[dl] != '/')
			continue;
		for (size_t k = 0; k < o->n_svc; k++)
			if (o->svc[k].smp && !strcmp(o->svc[k].path, c->service) &&
			    !strcmp(o->svc[k].device, device_path))
				return c;
	}
	return NULL;
}
