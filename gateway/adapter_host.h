/* The adapter host: loads adapter plugins through the versioned ABI in
 * plugins/include/ferry/adapter.h (versions 1 and 2), registers the built-in
 * `self` adapter, keeps what discovery found, and owns every call into a
 * plugin.  The engine never calls a plugin's table itself: it opens a
 * session here, and each call checks what the plugin hands back -- return
 * codes outside the documented set, unterminated strings, counts out of
 * range, a version read back that is not the manifest's. */
#ifndef FERRY_ADAPTER_HOST_H
#define FERRY_ADAPTER_HOST_H

#include <jansson.h>
#include <stdbool.h>

#include "config.h"
#include "ferry/adapter.h"
#include "ferry/err.h"
#include "ferry/manifest.h"

/* Devices the host keeps from discovery, all adapters together. */
#define FERRY_DEVICES_MAX 256

typedef struct ferry_adapters ferry_adapters;
typedef struct ferry_adapter ferry_adapter;

/* Load every *.so in cfg->plugin_dir plus the built-ins, and init them.  A
 * plugin that fails to load is logged with the reason and skipped; ferryd
 * goes on. */
ferry_err ferry_adapters_load(const ferry_config *cfg, ferry_adapters **out, ferry_status *st) FERRY_WUR;
/* Register an ABI 2 table that is linked in rather than loaded (the engine's
 * tests use it for a scripted adapter).  0, or -1 when refused (logged). */
int ferry_adapters_add_builtin(ferry_adapters *a, const ferry_config *cfg, const ferry_adapter_v2 *t);
void ferry_adapters_free(ferry_adapters *a);

ferry_adapter *ferry_adapters_find(ferry_adapters *a, const char *name);
const char *ferry_adapter_name(const ferry_adapter *ad);
int ferry_adapter_abi_version(const ferry_adapter *ad);
bool ferry_adapter_takes_format(const ferry_adapter *ad, const char *format);
/* Runs a new image on trial and can revert it or make it permanent: ABI 2
 * with FERRY_ADAPTER_CAP_ROLLBACK. */
/* Does its activate restart the gateway (FERRY_ADAPTER_CAP_RESTARTS_GATEWAY)? */
bool ferry_adapter_restarts_gateway(const ferry_adapter *ad);
bool ferry_adapter_revertible(const ferry_adapter *ad);
/* The device goes back to its old image by itself after a failed
 * activation (CAP_ROLLBACK, either ABI). */
bool ferry_adapter_rolls_back(const ferry_adapter *ad);
bool ferry_adapter_resumes(const ferry_adapter *ad);
/* Sessions it can run at once: its table's max_sessions (1 for ABI 1). */
unsigned ferry_adapter_max_sessions(const ferry_adapter *ad);

/* Rediscover every adapter's subdevices; the result is kept for inventory
 * and matching.  Discoveries are serialized; sessions may run meanwhile. */
void ferry_adapters_discover(ferry_adapters *a);
/* Rediscover only adapter ad's devices; the others' stay as last seen (a
 * BLE discovery connects to every configured node, so polling one kind of
 * device must not touch the rest). */
void ferry_adapters_discover_one(ferry_adapters *a, const ferry_adapter *ad);

/* One device as last discovered: a copy, safe to keep. */
typedef struct ferry_devinfo {
	ferry_adapter *ad;
	ferry_device_v1 dev;
} ferry_devinfo;
/* Copy of every device last discovered (malloc'd; *n of them). */
ferry_devinfo *ferry_adapters_devices(ferry_adapters *a, size_t *n);
/* The device of adapter ad with this id, if discovery saw it last time. */
bool ferry_adapters_present(ferry_adapters *a, const ferry_adapter *ad, const char *device_id, ferry_device_v1 *copy);

/* Does the device take this manifest component: vendor and class ids equal,
 * every `match` entry present with the same value, and the component's
 * name among those it serves.  A device of an ABI 1 adapter that lists no
 * component at all is taken to serve any (ABI 1 plugins listed a component
 * only once it had a version). */
bool ferry_device_matches(const ferry_adapter *ad, const ferry_device_v1 *d, const ferry_component *c);
/* The link security the device's adapter declares (FERRY_LINK_*), or NULL
 * when it declares none (which counts as unauthenticated). */
const char *ferry_device_link(const ferry_device_v1 *d);
/* The version the device reports for a component: NULL when it does not
 * serve it, "" when it serves it but cannot tell. */
const char *ferry_device_version(const ferry_device_v1 *d, const char *component);
/* A device as JSON: {id, adapter, identity{}, match{}, components[], attributes{}}
 * and back (for the journal's memory of devices).  from_json checks every
 * member like plugin output; false when it is not a device record. */
json_t *ferry_device_to_json(const ferry_device_v1 *d, const char *adapter);
bool ferry_device_from_json(const json_t *j, ferry_device_v1 *d, const char **adapter);
/* Every device last discovered, as inventory JSON. */
json_t *ferry_adapters_inventory(ferry_adapters *a);

/* Sessions: one device, one thread, open to close. */
typedef struct ferry_session ferry_session;
typedef struct ferry_session_cb {
	void *ctx;
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	bool (*cancelled)(void *ctx);
} ferry_session_cb;

/* Errors come back as the plugin's reason code (any other number it
 * returns becomes adapter_error, naming the number) with the plugin's
 * sentence as the detail, prefixed by the device id. */
ferry_err ferry_session_open(ferry_adapter *ad, const ferry_device_v1 *dev, const ferry_session_cb *cb,
			     ferry_session **out, ferry_status *st) FERRY_WUR;
ferry_err ferry_session_check(ferry_session *s, const ferry_image_v1 *img, ferry_status *st) FERRY_WUR;
ferry_err ferry_session_write(ferry_session *s, const ferry_image_v1 *img, uint64_t *offset,
			      ferry_status *st) FERRY_WUR;
ferry_err ferry_session_activate(ferry_session *s, const ferry_image_v1 *img, ferry_status *st) FERRY_WUR;
/* Reads the running version back into version (FERRY_ADAPTER_STR_MAX) and
 * compares it with img->version: version_mismatch when they differ. */
ferry_err ferry_session_confirm(ferry_session *s, const ferry_image_v1 *img, char *version,
				ferry_status *st) FERRY_WUR;
ferry_err ferry_session_commit(ferry_session *s, const ferry_image_v1 *img, ferry_status *st) FERRY_WUR;
ferry_err ferry_session_abort(ferry_session *s, const ferry_image_v1 *img, ferry_status *st) FERRY_WUR;
void ferry_session_close(ferry_session *s);

#endif
