/* The adapter host: loads adapter plugins through the versioned ABI in
 * plugins/include/ferry/adapter.h, registers the built-in `self` adapter, and
 * answers the engine's questions about subdevices. */
#ifndef FERRY_ADAPTER_HOST_H
#define FERRY_ADAPTER_HOST_H

#include <jansson.h>
#include <stdbool.h>

#include "config.h"
#include "ferry/adapter.h"
#include "ferry/err.h"
#include "ferry/manifest.h"

#define FERRY_DEVICES_MAX 64

typedef struct ferry_adapters ferry_adapters;

/* One loaded adapter. */
typedef struct ferry_adapter {
	const ferry_adapter_v1 *ops;
	void *state;
	ferry_host_v1 host;
	const json_t *section; /* its config section */
	void *dl;              /* dlopen handle, NULL for built-ins */
} ferry_adapter;

/* Load every *.so in cfg->plugin_dir plus the built-ins, and init those with
 * a config section or that need none.  A plugin that fails to load is
 * logged with the reason and skipped; ferryd goes on. */
ferry_err ferry_adapters_load(const ferry_config *cfg, ferry_adapters **out, ferry_status *st) FERRY_WUR;
void ferry_adapters_free(ferry_adapters *a);

ferry_adapter *ferry_adapters_find(ferry_adapters *a, const char *name);
size_t ferry_adapters_count(const ferry_adapters *a);
ferry_adapter *ferry_adapters_at(ferry_adapters *a, size_t i);
bool ferry_adapter_takes_format(const ferry_adapter *ad, const char *format);

/* Rediscover all subdevices; the result is kept for inventory and matching. */
void ferry_adapters_discover(ferry_adapters *a);
/* Rediscover only the devices of adapter ad; the others' stay as they were
 * last seen.  For polling one kind of device without touching the rest
 * (a BLE discovery connects to every configured node). */
void ferry_adapters_discover_one(ferry_adapters *a, const ferry_adapter *ad);
/* The device of adapter ad that matches the component's target: vendor and
 * class ids equal, and every `match` entry present with the same value.
 * NULL when none (no_matching_device). */
const ferry_device_v1 *ferry_adapters_match(ferry_adapters *a, const ferry_adapter *ad, const ferry_component *c);
/* The running version of a component on its device, or NULL. */
const char *ferry_adapters_version(ferry_adapters *a, const char *component);
/* Devices as inventory JSON: [{id, adapter, identity{}, components[], attributes{}}]. */
json_t *ferry_adapters_inventory(ferry_adapters *a);

#endif
