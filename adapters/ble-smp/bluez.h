/* BlueZ over D-Bus (sd-bus), as much of it as ble-smp needs: the bus, the
 * objects under one adapter (devices, GATT services and characteristics,
 * from ObjectManager.GetManagedObjects), method calls with timeouts, and
 * BlueZ's error names sorted into what they mean for us.
 *
 * Everything that comes from the bus is taken as hostile: types are checked
 * before values are read, strings are copied only when they fit, and the
 * number of objects kept is bounded -- after filtering, so that a crowd of
 * other devices (anything a scan saw nearby) cannot push out the one we
 * want. */
#ifndef FERRY_BLUEZ_H
#define FERRY_BLUEZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#define BLE_SMP_SERVICE_UUID "8d53dc1d-1db7-4cd3-868b-8a527460aa84"
#define BLE_SMP_CHAR_UUID "da2e7828-fbce-4e01-ae9e-261174997c48"
#define BLUEZ_PATH_MAX 160
#define BLUEZ_NAME_MAX 65
#define BLUEZ_DEVICES_MAX 128
#define BLUEZ_SERVICES_MAX 128
#define BLUEZ_CHARS_MAX 256

typedef struct bluez_device {
	char path[BLUEZ_PATH_MAX];
	char address[18]; /* AA:BB:CC:DD:EE:FF, upper case */
	char name[BLUEZ_NAME_MAX], alias[BLUEZ_NAME_MAX];
	bool paired, bonded, has_bonded, trusted, connected, resolved, smp_uuid;
} bluez_device;

typedef struct bluez_service {
	char path[BLUEZ_PATH_MAX], device[BLUEZ_PATH_MAX];
	bool smp; /* the SMP service UUID */
} bluez_service;

typedef struct bluez_char {
	char path[BLUEZ_PATH_MAX], service[BLUEZ_PATH_MAX];
	bool smp; /* the SMP characteristic UUID */
	bool write_without_response, notify;
	uint16_t mtu; /* 0 when BlueZ is too old to say */
} bluez_char;

typedef struct bluez_objects {
	bluez_device dev[BLUEZ_DEVICES_MAX];
	size_t n_dev;
	bluez_service svc[BLUEZ_SERVICES_MAX];
	size_t n_svc;
	bluez_char chr[BLUEZ_CHARS_MAX];
	size_t n_chr;
} bluez_objects;

/* "system", or a D-Bus address such as "unix:path=/run/x" (a private bus). */
int bluez_bus_open(const char *spec, sd_bus **out, char *err, size_t errlen);

/* Which devices a scan keeps (NULL: all). */
typedef bool (*bluez_device_filter)(const bluez_device *d, void *ud);

/* The devices, SMP services and SMP characteristics whose paths start with
 * prefix ("/org/bluez/hci0/", or a device's path and "/").  Devices are
 * kept when `want` takes them; when there are more than BLUEZ_DEVICES_MAX,
 * paired and bonded ones take the places of others.  Returns 0 or a
 * negative errno, with err saying what failed. */
int bluez_scan(sd_bus *bus, const char *prefix, uint64_t timeout_us, bluez_device_filter want, void *ud,
	       bluez_objects *out, char *err, size_t errlen);

/* Paired, and Bonded (or a BlueZ too old to say). */
bool bluez_device_bonded(const bluez_device *d);

/* One device's Device1 properties (Properties.GetAll). */
int bluez_device_get(sd_bus *bus, const char *path, uint64_t timeout_us, bluez_device *out, sd_bus_error *e);

/* A PropertiesChanged body after its interface name: the changed Device1
 * properties into d (those not in it keep their value). */
int bluez_device_changes(sd_bus_message *m, bluez_device *d);
/* A PropertiesChanged body after its interface name: a changed Value, copied
 * into buf.  1 when there was one that fits, 0 when none, -1 when it did not
 * fit (dropped) or the message is malformed. */
int bluez_value_change(sd_bus_message *m, uint8_t *buf, size_t cap, size_t *n);

/* The SMP characteristic of a device: under its path, in a service with the
 * SMP service UUID.  NULL when services are not resolved (yet). */
const bluez_char *bluez_find_smp(const bluez_objects *o, const char *device_path);

/* A method call on org.bluez with a timeout; `types` and the rest as
 * sd_bus_message_append.  Returns sd_bus_call's result. */
int bluez_call(sd_bus *bus, const char *path, const char *iface, const char *method, uint64_t timeout_us,
	       sd_bus_error *e, sd_bus_message **reply, const char *types, ...);

/* BlueZ's errors that mean the link's security does not satisfy the device:
 * NotPermitted (insufficient encryption or authentication: "Not paired")
 * and NotAuthorized -- but not NotPermitted for a lock another client holds
 * ("Write acquired", "Notify acquired"). */
bool bluez_error_is_security(const sd_bus_error *e);
/* The operation does not exist in this BlueZ (NotSupported, UnknownMethod). */
bool bluez_error_is_unsupported(const sd_bus_error *e);

/* "AA:BB:CC:DD:EE:FF", any case: 1 when well formed (and upper-cased into out). */
int bluez_parse_address(const char *in, char out[18]);

#endif
