/* The adapter host.
 *
 * Plugins are shared objects in the configured directory.  Loading one is a
 * handshake (see plugins/include/ferry/adapter.h): ferryd offers the ABI
 * versions it speaks, the plugin names the one it implements, and only then
 * is its table fetched and checked.  Anything off -- a missing symbol, a
 * version not offered, a table that disagrees with its own answer, a
 * missing operation -- is logged with the file name and the plugin is
 * skipped; the daemon never stops for a bad plugin.
 *
 * Adapters read their config as flat text keys: nested mappings become
 * dotted names and list items get [i], so `files: [{name: a}]` is
 * "files[0].name" = "a".
 */
#include "adapter_host.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "self.h"

#define ADAPTERS_MAX 16

static const int offered_abis[] = {1};

struct ferry_adapters {
	ferry_adapter ad[ADAPTERS_MAX];
	json_t *flat[ADAPTERS_MAX];
	size_t n;
	ferry_device_v1 devs[FERRY_DEVICES_MAX];
	size_t dev_adapter[FERRY_DEVICES_MAX];
	size_t n_devs;
};

typedef struct host_ctx {
	const char *name;
	json_t *flat;
} host_ctx;

static void host_log(void *ctx, int level, const char *msg)
{
	ferry_log(level, "%s: %s", ((host_ctx *)ctx)->name, msg);
}

static const char *host_config(void *ctx, const char *key)
{
	return json_string_value(json_object_get(((host_ctx *)ctx)->flat, key));
}

static int64_t host_now_ms(void *ctx)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void flatten(const json_t *v, const char *prefix, json_t *out)
{
	char key[256], txt[64];
	const char *k;
	json_t *child;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, k, child) {
			snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", k);
			flatten(child, key, out);
		}
		break;
	case JSON_ARRAY:
		json_array_foreach(v, i, child) {
			snprintf(key, sizeof(key), "%s[%zu]", prefix, i);
			flatten(child, key, out);
		}
		break;
	case JSON_STRING:
		json_object_set_new(out, prefix, json_string(json_string_value(v)));
		break;
	case JSON_INTEGER:
		snprintf(txt, sizeof(txt), "%lld", (long long)json_integer_value(v));
		json_object_set_new(out, prefix, json_string(txt));
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		json_object_set_new(out, prefix, json_string(json_is_true(v) ? "true" : "false"));
		break;
	default:
		break;
	}
}

/* The table must be whole before anything in it is called. */
static const char *table_problem(const ferry_adapter_v1 *t)
{
	if (!t)
		return "ferry_adapter_table_v1() returned NULL";
	if (t->abi != 1)
		return "its table's abi field is not 1";
	if (!t->name || !*t->name || !t->formats)
		return "its table has no name or no formats";
	if (!t->init || !t->fini || !t->discover || !t->open || !t->check || !t->write || !t->activate ||
	    !t->confirm || !t->abort || !t->close)
		return "its table lacks an operation";
	return NULL;
}

static int add_adapter(ferry_adapters *a, const ferry_config *cfg, const ferry_adapter_v1 *t, void *dl,
		       const char *origin)
{
	const char *problem = table_problem(t);
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	ferry_adapter *ad;
	host_ctx *hc;

	if (problem) {
		ferry_log(LOG_ERR, "adapter %s refused: %s", origin, problem);
		return -1;
	}
	if (a->n == ADAPTERS_MAX || ferry_adapters_find(a, t->name)) {
		ferry_log(LOG_ERR, "adapter %s refused: %s", origin,
			  a->n == ADAPTERS_MAX ? "too many adapters" : "an adapter of that name is loaded already");
		return -1;
	}
	ad = &a->ad[a->n];
	a->flat[a->n] = json_object();
	flatten(json_object_get(cfg->adapters, t->name), "", a->flat[a->n]);
	hc = calloc(1, sizeof(*hc));
	if (!hc)
		return -1;
	hc->name = t->name;
	hc->flat = a->flat[a->n];
	*ad = (ferry_adapter){.ops = t, .dl = dl, .section = json_object_get(cfg->adapters, t->name)};
	ad->host = (ferry_host_v1){.size = sizeof(ferry_host_v1), .ctx = hc, .log = host_log,
				   .config = host_config, .now_ms = host_now_ms};
	if (t->init(&ad->host, &ad->state, detail)) {
		ferry_log(LOG_ERR, "adapter %s (%s) failed to start: %s", t->name, origin, detail);
		json_decref(a->flat[a->n]);
		free(hc);
		return -1;
	}
	ferry_log(LOG_INFO, "adapter %s loaded (%s)", t->name, origin);
	a->n++;
	return 0;
}

static void load_plugin(ferry_adapters *a, const ferry_config *cfg, const char *path)
{
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	int (*abi)(const int *, size_t);
	const ferry_adapter_v1 *(*table)(void);
	int v;

	if (!dl) {
		ferry_log(LOG_ERR, "adapter %s refused: %s", path, dlerror());
		return;
	}
	*(void **)&abi = dlsym(dl, "ferry_adapter_abi");
	*(void **)&table = dlsym(dl, "ferry_adapter_table_v1");
	if (!abi || !table) {
		ferry_log(LOG_ERR, "adapter %s refused: missing symbol %s", path,
			  !abi ? "ferry_adapter_abi" : "ferry_adapter_table_v1");
		dlclose(dl);
		return;
	}
	v = abi(offered_abis, sizeof(offered_abis) / sizeof(offered_abis[0]));
	if (v != 1) {
		ferry_log(LOG_ERR, "adapter %s refused: it implements ABI %d, this ferryd offers 1", path, v);
		dlclose(dl);
		return;
	}
	if (add_adapter(a, cfg, table(), dl, path))
		dlclose(dl);
}

static void load_dir(ferry_adapters *a, const ferry_config *cfg)
{
	DIR *d = opendir(cfg->plugin_dir);
	struct dirent *e;

	if (!d) {
		ferry_log(LOG_INFO, "no plugin directory %s; built-in adapters only", cfg->plugin_dir);
		return;
	}
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		char path[FERRY_CFG_PATH_MAX + 256];
		if (n < 4 || strcmp(e->d_name + n - 3, ".so"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", cfg->plugin_dir, e->d_name);
		load_plugin(a, cfg, path);
	}
	closedir(d);
}

ferry_err ferry_adapters_load(const ferry_config *cfg, ferry_adapters **out, ferry_status *st)
{
	ferry_adapters *a = calloc(1, sizeof(*a));

	if (!a)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	if (json_object_get(cfg->adapters, "self"))
		add_adapter(a, cfg, ferry_self_adapter(), NULL, "built-in");
	load_dir(a, cfg);
	*out = a;
	return FERRY_OK;
}

void ferry_adapters_free(ferry_adapters *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n; i++) {
		a->ad[i].ops->fini(a->ad[i].state);
		free(a->ad[i].host.ctx);
		json_decref(a->flat[i]);
		if (a->ad[i].dl)
			dlclose(a->ad[i].dl);
	}
	free(a);
}

ferry_adapter *ferry_adapters_find(ferry_adapters *a, const char *name)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->ad[i].ops->name, name))
			return &a->ad[i];
	return NULL;
}

size_t ferry_adapters_count(const ferry_adapters *a)
{
	return a->n;
}

ferry_adapter *ferry_adapters_at(ferry_adapters *a, size_t i)
{
	return i < a->n ? &a->ad[i] : NULL;
}

bool ferry_adapter_takes_format(const ferry_adapter *ad, const char *format)
{
	for (const char *const *f = ad->ops->formats; *f; f++)
		if (!strcmp(*f, format))
			return true;
	return false;
}

/* A plugin's strings are not trusted to be terminated, nor its counts to be
 * in range. */
static void sanitize(ferry_device_v1 *d)
{
	d->id[sizeof(d->id) - 1] = d->vendor_id[sizeof(d->vendor_id) - 1] = '\0';
	d->class_id[sizeof(d->class_id) - 1] = d->serial[sizeof(d->serial) - 1] = '\0';
	if (d->n_match > FERRY_ADAPTER_ATTRS_MAX)
		d->n_match = FERRY_ADAPTER_ATTRS_MAX;
	if (d->n_components > FERRY_ADAPTER_COMPONENTS_MAX)
		d->n_components = FERRY_ADAPTER_COMPONENTS_MAX;
	if (d->n_attributes > FERRY_ADAPTER_ATTRS_MAX)
		d->n_attributes = FERRY_ADAPTER_ATTRS_MAX;
	for (size_t i = 0; i < FERRY_ADAPTER_ATTRS_MAX; i++) {
		d->match[i].key[FERRY_ADAPTER_STR_MAX - 1] = d->match[i].value[FERRY_ADAPTER_STR_MAX - 1] = '\0';
		d->attributes[i].key[FERRY_ADAPTER_STR_MAX - 1] = '\0';
		d->attributes[i].value[FERRY_ADAPTER_STR_MAX - 1] = '\0';
	}
	for (size_t i = 0; i < FERRY_ADAPTER_COMPONENTS_MAX; i++) {
		d->components[i].key[FERRY_ADAPTER_STR_MAX - 1] = '\0';
		d->components[i].value[FERRY_ADAPTER_STR_MAX - 1] = '\0';
	}
}

/* Adapter i's devices into a->devs from index `at`, at most `room`; how
 * many it gave (none when its discovery failed). */
static size_t discover_into(ferry_adapters *a, size_t i, size_t at, size_t room)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	size_t n = 0;
	ferry_device_v1 *d = &a->devs[at];

	memset(d, 0, room * sizeof(*d));
	for (size_t k = 0; k < room; k++)
		d[k].size = sizeof(*d);
	if (a->ad[i].ops->discover(a->ad[i].state, d, room, &n, detail)) {
		ferry_log(LOG_WARNING, "adapter %s: discovery failed: %s", a->ad[i].ops->name, detail);
		return 0;
	}
	if (n > room)
		n = room;
	for (size_t k = 0; k < n; k++) {
		sanitize(&d[k]);
		a->dev_adapter[at + k] = i;
	}
	return n;
}

/* The list holds each adapter's devices together, in adapter order. */
void ferry_adapters_discover(ferry_adapters *a)
{
	a->n_devs = 0;
	for (size_t i = 0; i < a->n && a->n_devs < FERRY_DEVICES_MAX; i++)
		a->n_devs += discover_into(a, i, a->n_devs, FERRY_DEVICES_MAX - a->n_devs);
}

void ferry_adapters_discover_one(ferry_adapters *a, const ferry_adapter *ad)
{
	size_t i = (size_t)(ad - a->ad), lo = 0, hi, tail;
	ferry_device_v1 *keep = NULL;
	size_t *keep_ad = NULL;

	if (ad < a->ad || i >= a->n)
		return;
	while (lo < a->n_devs && a->dev_adapter[lo] < i)
		lo++;
	for (hi = lo; hi < a->n_devs && a->dev_adapter[hi] == i; hi++)
		;
	tail = a->n_devs - hi;
	if (tail) {
		/* the devices of the adapters after this one wait aside */
		keep = malloc(tail * sizeof(*keep));
		keep_ad = malloc(tail * sizeof(*keep_ad));
		if (!keep || !keep_ad) {
			free(keep);
			free(keep_ad);
			ferry_adapters_discover(a);
			return;
		}
		memcpy(keep, &a->devs[hi], tail * sizeof(*keep));
		memcpy(keep_ad, &a->dev_adapter[hi], tail * sizeof(*keep_ad));
	}
	a->n_devs = lo + discover_into(a, i, lo, FERRY_DEVICES_MAX - lo - tail);
	if (tail) {
		memcpy(&a->devs[a->n_devs], keep, tail * sizeof(*keep));
		memcpy(&a->dev_adapter[a->n_devs], keep_ad, tail * sizeof(*keep_ad));
		a->n_devs += tail;
	}
	free(keep);
	free(keep_ad);
}

static bool device_matches(const ferry_device_v1 *d, const ferry_component *c)
{
	if (strcmp(d->vendor_id, c->vendor_id) || strcmp(d->class_id, c->class_id))
		return false;
	for (size_t m = 0; m < c->n_match; m++) {
		bool found = false;
		for (size_t k = 0; k < d->n_match && !found; k++)
			found = !strcmp(d->match[k].key, c->match[m].key) && !strcmp(d->match[k].value, c->match[m].value);
		if (!found)
			return false;
	}
	return true;
}

const ferry_device_v1 *ferry_adapters_match(ferry_adapters *a, const ferry_adapter *ad, const ferry_component *c)
{
	for (size_t i = 0; i < a->n_devs; i++)
		if (&a->ad[a->dev_adapter[i]] == ad && device_matches(&a->devs[i], c))
			return &a->devs[i];
	return NULL;
}

const char *ferry_adapters_version(ferry_adapters *a, const char *component)
{
	for (size_t i = 0; i < a->n_devs; i++)
		for (size_t k = 0; k < a->devs[i].n_components; k++)
			if (!strcmp(a->devs[i].components[k].key, component))
				return a->devs[i].components[k].value;
	return NULL;
}

static json_t *kv_object(const ferry_kv_v1 *kv, size_t n)
{
	json_t *o = json_object();
	for (size_t i = 0; i < n; i++)
		json_object_set_new(o, kv[i].key, json_string(kv[i].value));
	return o;
}

json_t *ferry_adapters_inventory(ferry_adapters *a)
{
	json_t *arr = json_array();

	for (size_t i = 0; i < a->n_devs; i++) {
		const ferry_device_v1 *d = &a->devs[i];
		json_t *comps = json_array(), *ident = kv_object(d->match, d->n_match);
		for (size_t k = 0; k < d->n_components; k++)
			json_array_append_new(comps, json_pack("{s:s,s:s}", "name", d->components[k].key, "version",
							       d->components[k].value));
		json_object_set_new(ident, "vendor_id", json_string(d->vendor_id));
		json_object_set_new(ident, "class_id", json_string(d->class_id));
		if (d->serial[0])
			json_object_set_new(ident, "serial", json_string(d->serial));
		json_array_append_new(arr, json_pack("{s:s,s:s,s:o,s:o,s:o}", "id", d->id, "adapter",
						     a->ad[a->dev_adapter[i]].ops->name, "identity", ident,
						     "components", comps, "attributes",
						     kv_object(d->attributes, d->n_attributes)));
	}
	return arr;
}
