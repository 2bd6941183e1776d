/* The adapter host.
 *
 * Plugins are shared objects in the configured directory.  Loading one is a
 * handshake (see plugins/include/ferry/adapter.h): ferryd offers the ABI
 * versions it speaks, the plugin names the one it implements, and only then
 * is that version's table fetched and checked.  Anything off -- a missing
 * symbol, a version not offered, a table that disagrees with its own
 * answer, a missing operation -- is logged with the file name and the
 * plugin is skipped; the daemon never stops for a bad plugin.
 *
 * Both ABI versions end up behind one set of calls here: an ABI 1 table has
 * no commit (its confirm made the image permanent), takes no image in
 * abort, and runs one session at a time.
 *
 * Whatever a plugin hands back is checked where it crosses into ferryd:
 * return codes must be reason codes an adapter may give, strings are cut at
 * their buffer and cleaned of control and non-ASCII bytes, counts are
 * clamped, a device whose id is empty, badly formed or taken is dropped
 * with a log line, and the version confirm reads back must be the
 * manifest's.
 *
 * Adapters read their config as flat text keys: nested mappings become
 * dotted names and list items get [i], so `files: [{name: a}]` is
 * "files[0].name" = "a".
 */
#include "adapter_host.h"

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/jsonfield.h"
#include "ferry/semver.h"
#include "log.h"
#include "self.h"

#define ADAPTERS_MAX 16

static const int offered_abis[] = {1, 2};

struct ferry_adapter {
	int abi;
	const ferry_adapter_v1 *v1; /* exactly one of v1, v2 */
	const ferry_adapter_v2 *v2;
	const char *name;
	const char *const *formats;
	uint32_t caps;
	unsigned max_sessions;
	void *state;
	ferry_host_v1 host;
	json_t *flat; /* its config section, flattened */
	void *dl;     /* dlopen handle, NULL for built-ins */
};

struct ferry_adapters {
	ferry_adapter ad[ADAPTERS_MAX];
	size_t n;
	pthread_mutex_t discover_lock; /* one discovery at a time, plugins' rule */
	pthread_mutex_t lock;          /* devs, dev_adapter, n_devs */
	ferry_device_v1 devs[FERRY_DEVICES_MAX];
	size_t dev_adapter[FERRY_DEVICES_MAX];
	size_t n_devs;
};

struct ferry_session {
	ferry_adapter *ad;
	void *sess;
	ferry_session_host_v1 sh;
	ferry_session_cb cb;
	char dev_id[FERRY_ADAPTER_STR_MAX];
};

static void host_log(void *ctx, int level, const char *msg)
{
	const ferry_adapter *ad = ctx;
	if (level < FERRY_LOG_ERROR || level > FERRY_LOG_DEBUG)
		level = FERRY_LOG_INFO;
	ferry_log(level, "%s: %.1000s", ad->name, msg ? msg : "");
}

static const char *host_config(void *ctx, const char *key)
{
	const ferry_adapter *ad = ctx;
	return key ? json_string_value(json_object_get(ad->flat, key)) : NULL;
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

	if (!v)
		return; /* an adapter without a section of its own */
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

static bool name_ok(const char *name)
{
	return name && *name && strlen(name) <= FERRY_ID_MAX && ferry_charset_ok(name, strlen(name), FERRY_CS_ID);
}

/* The table must be whole before anything in it is called. */
static const char *v1_problem(const ferry_adapter_v1 *t)
{
	if (!t)
		return "ferry_adapter_table_v1() returned NULL";
	if (t->abi != 1)
		return "its table's abi field is not 1";
	if (!name_ok(t->name) || !t->formats)
		return "its table has no name, a name that is not 1-64 of [A-Za-z0-9._-], or no formats";
	if (!t->init || !t->fini || !t->discover || !t->open || !t->check || !t->write || !t->activate ||
	    !t->confirm || !t->abort || !t->close)
		return "its table lacks an operation";
	return NULL;
}

static const char *v2_problem(const ferry_adapter_v2 *t)
{
	if (!t)
		return "ferry_adapter_table_v2() returned NULL";
	if (t->abi != 2)
		return "its table's abi field is not 2";
	if (!name_ok(t->name) || !t->formats)
		return "its table has no name, a name that is not 1-64 of [A-Za-z0-9._-], or no formats";
	if (!t->init || !t->fini || !t->discover || !t->open || !t->check || !t->write || !t->activate ||
	    !t->confirm || !t->commit || !t->abort || !t->close)
		return "its table lacks an operation";
	if (t->max_sessions > FERRY_ADAPTER_SESSIONS_MAX)
		return "its table's max_sessions is above FERRY_ADAPTER_SESSIONS_MAX";
	return NULL;
}

static void clean(char *s, size_t cap)
{
	s[cap - 1] = '\0';
	for (unsigned char *p = (unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			*p = '?';
}

/* ---- adapter config sections ---- */

static unsigned long line_of(const ferry_config *cfg, const char *key)
{
	const json_t *l = json_object_get(cfg->lines, key);
	return l ? (unsigned long)json_integer_value(l) : 0;
}

static ferry_err bad_key(const ferry_config *cfg, const char *adapter, const char *path, const char *what,
			 ferry_status *st)
{
	char full[512];
	snprintf(full, sizeof(full), "adapters.%s%s%s", adapter, *path ? "." : "", path);
	return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: %s: %s", cfg->file, line_of(cfg, full), full, what);
}

/* "ports[3].path" -> "ports[].path" */
static void pattern_of(const char *path, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = path; *p && o + 1 < cap; p++) {
		out[o++] = *p;
		if (*p == '[') {
			while (p[1] >= '0' && p[1] <= '9')
				p++;
		}
	}
	out[o] = '\0';
}

static const ferry_config_key *key_for(const ferry_config_key *keys, const char *pattern)
{
	for (; keys && keys->key; keys++)
		if (!strcmp(keys->key, pattern))
			return keys;
	return NULL;
}

static ferry_err check_value(const ferry_config *cfg, const char *adapter, const char *path,
			     const ferry_config_key *k, const json_t *v, ferry_status *st)
{
	char what[128];

	switch (k->type) {
	case FERRY_CFG_INT:
		if (!json_is_integer(v))
			return bad_key(cfg, adapter, path, "must be an integer", st);
		if (json_integer_value(v) < k->min || json_integer_value(v) > k->max) {
			snprintf(what, sizeof(what), "must be in %ld..%ld", k->min, k->max);
			return bad_key(cfg, adapter, path, what, st);
		}
		return FERRY_OK;
	case FERRY_CFG_BOOL:
		return json_is_boolean(v) ? FERRY_OK : bad_key(cfg, adapter, path, "must be true or false", st);
	default: {
		size_t len;
		char num[32];
		if (json_is_integer(v)) /* `image: 0` is the text "0" to whoever wrote it */
			len = (size_t)snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
		else if (json_is_string(v))
			len = json_string_length(v);
		else
			return bad_key(cfg, adapter, path, "must be text", st);
		if ((long)len < k->min || (long)len > k->max) {
			snprintf(what, sizeof(what), "must be %ld to %ld characters", k->min, k->max);
			return bad_key(cfg, adapter, path, what, st);
		}
		return FERRY_OK;
	}
	}
}

static ferry_err walk_section(const ferry_config *cfg, const char *adapter, const ferry_config_key *keys,
			      const json_t *v, const char *path, ferry_status *st)
{
	char sub[256], pat[256];
	const char *k;
	json_t *child;
	size_t i;
	ferry_err e;

	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, child) {
			snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", k);
			if ((e = walk_section(cfg, adapter, keys, child, sub, st)))
				return e;
		}
		return FERRY_OK;
	}
	if (json_is_array(v)) {
		json_array_foreach(v, i, child) {
			snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
			if ((e = walk_section(cfg, adapter, keys, child, sub, st)))
				return e;
		}
		return FERRY_OK;
	}
	pattern_of(path, pat, sizeof(pat));
	const ferry_config_key *ck = key_for(keys, pat);
	if (!ck) {
		char what[96];
		snprintf(what, sizeof(what), "unknown key (not one adapter %s takes)", adapter);
		return bad_key(cfg, adapter, path, what, st);
	}
	return json_is_null(v) ? FERRY_OK : check_value(cfg, adapter, path, ck, v, st);
}

/* Required keys: at the top, and under "[]" in every item of the list. */
static ferry_err check_required(const ferry_config *cfg, const char *adapter, const ferry_config_key *keys,
				const json_t *flat, ferry_status *st)
{
	for (; keys && keys->key; keys++) {
		const char *br = strstr(keys->key, "[]");
		char list[128], key[256];
		if (!keys->required)
			continue;
		if (!br) {
			if (!json_object_get(flat, keys->key))
				return bad_key(cfg, adapter, keys->key, "required key is missing", st);
			continue;
		}
		snprintf(list, sizeof(list), "%.*s", (int)(br - keys->key), keys->key);
		for (size_t i = 0;; i++) {
			char item[160];
			bool any = false;
			const char *fk;
			json_t *fv;
			snprintf(item, sizeof(item), "%s[%zu]", list, i);
			json_object_foreach((json_t *)flat, fk, fv)
				any |= !strncmp(fk, item, strlen(item)) && (fk[strlen(item)] == '.' || !fk[strlen(item)]);
			if (!any)
				break;
			snprintf(key, sizeof(key), "%s%s", item, br + 2);
			if (!json_object_get(flat, key))
				return bad_key(cfg, adapter, key, "required key is missing", st);
		}
	}
	return FERRY_OK;
}

/* An ABI 2 adapter's section against the keys it declares. */
static ferry_err check_section(const ferry_config *cfg, const ferry_adapter_v2 *t, const json_t *flat,
			       ferry_status *st)
{
	const json_t *sec = json_object_get(cfg->adapters, t->name);
	ferry_err e;

	if (sec && !t->config_keys && json_object_size(sec))
		return bad_key(cfg, t->name, "", "this adapter takes no config", st);
	if (sec && (e = walk_section(cfg, t->name, t->config_keys, sec, "", st)))
		return e;
	return check_required(cfg, t->name, t->config_keys, flat, st);
}

/* Register a table whose shape is checked; v1 or v2 set.  0; -1 when it is
 * refused (logged, ferryd goes on); -2 when its config section is wrong
 * (in st: ferryd must not start). */
static int add_adapter(ferry_adapters *a, const ferry_config *cfg, int abi, const ferry_adapter_v1 *v1,
		       const ferry_adapter_v2 *v2, void *dl, const char *origin, ferry_status *st)
{
	const char *problem = abi == 2 ? v2_problem(v2) : v1_problem(v1);
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	ferry_adapter *ad;
	int rc;

	if (problem) {
		ferry_log(LOG_ERR, "adapter %s refused: %s", origin, problem);
		return -1;
	}
	const char *name = v2 ? v2->name : v1->name;
	if (a->n == ADAPTERS_MAX || ferry_adapters_find(a, name)) {
		ferry_log(LOG_ERR, "adapter %s refused: %s", origin,
			  a->n == ADAPTERS_MAX ? "too many adapters" : "an adapter of that name is loaded already");
		return -1;
	}
	ad = &a->ad[a->n];
	*ad = (ferry_adapter){.abi = v2 ? 2 : 1, .v1 = v2 ? NULL : v1, .v2 = v2, .name = name,
			      .formats = v2 ? v2->formats : v1->formats, .caps = v2 ? v2->caps : v1->caps,
			      .max_sessions = v2 ? (v2->max_sessions ? v2->max_sessions : 1) : 1, .dl = dl};
	ad->flat = json_object();
	flatten(json_object_get(cfg->adapters, name), "", ad->flat);
	if (v2 && check_section(cfg, v2, ad->flat, st)) {
		json_decref(ad->flat);
		return -2;
	}
	ad->host = (ferry_host_v1){.size = sizeof(ferry_host_v1), .ctx = ad, .log = host_log, .config = host_config,
				   .now_ms = host_now_ms};
	rc = v2 ? v2->init(&ad->host, &ad->state, detail) : v1->init(&ad->host, &ad->state, detail);
	if (rc) {
		clean(detail, sizeof(detail));
		ferry_log(LOG_ERR, "adapter %s (%s) failed to start: %s", name, origin, detail);
		json_decref(ad->flat);
		return -1;
	}
	ferry_log(LOG_INFO, "adapter %s loaded (%s, ABI %d)", name, origin, ad->abi);
	a->n++;
	return 0;
}

int ferry_adapters_add_builtin(ferry_adapters *a, const ferry_config *cfg, const ferry_adapter_v2 *t)
{
	ferry_status st = {0};
	int rc = add_adapter(a, cfg, 2, NULL, t, NULL, "built-in", &st);
	if (rc == -2)
		ferry_log(LOG_ERR, "%s", st.detail);
	return rc ? -1 : 0;
}

/* 0, or -2 with st when the plugin's config section is wrong. */
static int load_plugin(ferry_adapters *a, const ferry_config *cfg, const char *path, ferry_status *st)
{
	void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	int (*abi)(const int *, size_t);
	void *table;
	const char *sym;
	int v;

	if (!dl) {
		ferry_log(LOG_ERR, "adapter %s refused: %s", path, dlerror());
		return 0;
	}
	*(void **)&abi = dlsym(dl, "ferry_adapter_abi");
	if (!abi) {
		ferry_log(LOG_ERR, "adapter %s refused: missing symbol ferry_adapter_abi", path);
		dlclose(dl);
		return 0;
	}
	v = abi(offered_abis, sizeof(offered_abis) / sizeof(offered_abis[0]));
	if (v != 1 && v != 2) {
		ferry_log(LOG_ERR, "adapter %s refused: it implements ABI %d, this ferryd offers 1 and 2", path, v);
		dlclose(dl);
		return 0;
	}
	sym = v == 2 ? "ferry_adapter_table_v2" : "ferry_adapter_table_v1";
	if (!(table = dlsym(dl, sym))) {
		ferry_log(LOG_ERR, "adapter %s refused: missing symbol %s", path, sym);
		dlclose(dl);
		return 0;
	}
	int rc;
	if (v == 2) {
		const ferry_adapter_v2 *(*get2)(void);
		*(void **)&get2 = table;
		rc = add_adapter(a, cfg, 2, NULL, get2(), dl, path, st);
	} else {
		const ferry_adapter_v1 *(*get1)(void);
		*(void **)&get1 = table;
		rc = add_adapter(a, cfg, 1, get1(), NULL, dl, path, st);
	}
	if (rc)
		dlclose(dl);
	return rc == -2 ? -2 : 0;
}

static ferry_err load_dir(ferry_adapters *a, const ferry_config *cfg, ferry_status *st)
{
	DIR *d = opendir(cfg->plugin_dir);
	struct dirent *e;
	ferry_err err = FERRY_OK;

	if (!d) {
		ferry_log(LOG_INFO, "no plugin directory %s; built-in adapters only", cfg->plugin_dir);
		return FERRY_OK;
	}
	while (!err && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		char path[FERRY_CFG_PATH_MAX + 256];
		if (n < 4 || strcmp(e->d_name + n - 3, ".so"))
			continue;
		snprintf(path, sizeof(path), "%s/%s", cfg->plugin_dir, e->d_name);
		if (load_plugin(a, cfg, path, st) == -2)
			err = st->code;
	}
	closedir(d);
	return err;
}

ferry_err ferry_adapters_load(const ferry_config *cfg, ferry_adapters **out, ferry_status *st)
{
	ferry_adapters *a = calloc(1, sizeof(*a));

	if (!a)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	pthread_mutex_init(&a->discover_lock, NULL);
	pthread_mutex_init(&a->lock, NULL);
	ferry_err err = FERRY_OK;
	if (json_object_get(cfg->adapters, "self") &&
	    add_adapter(a, cfg, 2, NULL, ferry_self_adapter(), NULL, "built-in", st) == -2)
		err = st->code;
	if (!err)
		err = load_dir(a, cfg, st);
	/* a section no adapter answers to is a misspelt name, or a plugin that
	 * is missing or was refused (its log line says why) */
	const char *name;
	json_t *sec;
	json_object_foreach(cfg->adapters, name, sec) {
		if (err || ferry_adapters_find(a, name))
			continue;
		char key[128];
		snprintf(key, sizeof(key), "adapters.%s", name);
		const json_t *l = json_object_get(cfg->lines, key);
		err = ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: %s: no adapter of that name is loaded (plugin_dir %s)",
				 cfg->file, l ? (unsigned long)json_integer_value(l) : 0UL, key, cfg->plugin_dir);
	}
	if (err) {
		ferry_adapters_free(a);
		return err;
	}
	*out = a;
	return FERRY_OK;
}

void ferry_adapters_free(ferry_adapters *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n; i++) {
		if (a->ad[i].v2)
			a->ad[i].v2->fini(a->ad[i].state);
		else
			a->ad[i].v1->fini(a->ad[i].state);
		json_decref(a->ad[i].flat);
		if (a->ad[i].dl)
			dlclose(a->ad[i].dl);
	}
	pthread_mutex_destroy(&a->discover_lock);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

ferry_adapter *ferry_adapters_find(ferry_adapters *a, const char *name)
{
	for (size_t i = 0; i < a->n; i++)
		if (!strcmp(a->ad[i].name, name))
			return &a->ad[i];
	return NULL;
}

const char *ferry_adapter_name(const ferry_adapter *ad)
{
	return ad->name;
}

int ferry_adapter_abi_version(const ferry_adapter *ad)
{
	return ad->abi;
}

bool ferry_adapter_takes_format(const ferry_adapter *ad, const char *format)
{
	for (const char *const *f = ad->formats; *f; f++)
		if (!strcmp(*f, format))
			return true;
	return false;
}

bool ferry_adapter_revertible(const ferry_adapter *ad)
{
	/* a revert would restart the gateway in the middle of the update */
	return ad->abi == 2 && (ad->caps & FERRY_ADAPTER_CAP_ROLLBACK) && !(ad->caps & FERRY_ADAPTER_CAP_RESTARTS_GATEWAY);
}

bool ferry_adapter_restarts_gateway(const ferry_adapter *ad)
{
	return ad->abi == 2 && (ad->caps & FERRY_ADAPTER_CAP_RESTARTS_GATEWAY);
}

bool ferry_adapter_rolls_back(const ferry_adapter *ad)
{
	return ad->caps & FERRY_ADAPTER_CAP_ROLLBACK;
}

bool ferry_adapter_resumes(const ferry_adapter *ad)
{
	return ad->caps & FERRY_ADAPTER_CAP_RESUME;
}

unsigned ferry_adapter_max_sessions(const ferry_adapter *ad)
{
	return ad->max_sessions;
}

/* ---- discovery ---- */

static bool dev_id_ok(const char *id)
{
	if (!*id)
		return false;
	for (const char *p = id; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '_' || *p == '-' || *p == ':'))
			return false;
	return true;
}

/* A plugin's strings are not trusted to be terminated or printable, nor its
 * counts to be in range. */
static void sanitize(ferry_device_v1 *d)
{
	d->size = sizeof(*d);
	clean(d->id, sizeof(d->id));
	clean(d->vendor_id, sizeof(d->vendor_id));
	clean(d->class_id, sizeof(d->class_id));
	clean(d->serial, sizeof(d->serial));
	if (d->n_match > FERRY_ADAPTER_ATTRS_MAX)
		d->n_match = FERRY_ADAPTER_ATTRS_MAX;
	if (d->n_components > FERRY_ADAPTER_COMPONENTS_MAX)
		d->n_components = FERRY_ADAPTER_COMPONENTS_MAX;
	if (d->n_attributes > FERRY_ADAPTER_ATTRS_MAX)
		d->n_attributes = FERRY_ADAPTER_ATTRS_MAX;
	for (size_t i = 0; i < FERRY_ADAPTER_ATTRS_MAX; i++) {
		clean(d->match[i].key, FERRY_ADAPTER_STR_MAX);
		clean(d->match[i].value, FERRY_ADAPTER_STR_MAX);
		clean(d->attributes[i].key, FERRY_ADAPTER_STR_MAX);
		clean(d->attributes[i].value, FERRY_ADAPTER_STR_MAX);
	}
	for (size_t i = 0; i < FERRY_ADAPTER_COMPONENTS_MAX; i++) {
		clean(d->components[i].key, FERRY_ADAPTER_STR_MAX);
		clean(d->components[i].value, FERRY_ADAPTER_STR_MAX);
	}
}

/* Adapter i's devices into buf (room of them), checked; how many. */
static size_t discover_into(ferry_adapters *a, size_t i, ferry_device_v1 *buf, size_t room)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	ferry_adapter *ad = &a->ad[i];
	size_t n = 0, kept = 0;
	int rc;

	memset(buf, 0, room * sizeof(*buf));
	for (size_t k = 0; k < room; k++)
		buf[k].size = sizeof(*buf);
	rc = ad->v2 ? ad->v2->discover(ad->state, buf, room, &n, detail)
		    : ad->v1->discover(ad->state, buf, room, &n, detail);
	if (rc) {
		clean(detail, sizeof(detail));
		ferry_log(LOG_WARNING, "adapter %s: discovery failed: %s", ad->name, detail);
		return 0;
	}
	if (n > room) {
		ferry_log(LOG_WARNING, "adapter %s: discovery claims %zu devices in room for %zu", ad->name, n, room);
		n = room;
	}
	for (size_t k = 0; k < n; k++) {
		bool dup = false;
		sanitize(&buf[k]);
		/* the one attribute that is ferry's: a word it knows, or the
		 * weakest one */
		for (size_t m = 0; m < buf[k].n_attributes; m++) {
			ferry_kv_v1 *kv = &buf[k].attributes[m];
			if (strcmp(kv->key, FERRY_ADAPTER_ATTR_LINK) || ferry_link_rank(kv->value) >= 0)
				continue;
			ferry_log(LOG_WARNING, "adapter %s: device \"%s\" declares link \"%s\", which is not physical, "
				  "bonded-encrypted or unauthenticated: taken as unauthenticated", ad->name, buf[k].id,
				  kv->value);
			snprintf(kv->value, sizeof(kv->value), "%s", FERRY_LINK_UNAUTHENTICATED);
		}
		for (size_t m = 0; m < kept && !dup; m++)
			dup = !strcmp(buf[m].id, buf[k].id);
		if (!dev_id_ok(buf[k].id) || dup) {
			ferry_log(LOG_WARNING, "adapter %s: device \"%s\" dropped: its id is %s", ad->name, buf[k].id,
				  dup ? "taken by another of its devices" : "empty or not of [A-Za-z0-9._:-]");
			continue;
		}
		if (kept != k)
			buf[kept] = buf[k];
		kept++;
	}
	return kept;
}

/* Replace the devices of adapter `only` (every adapter when only == n) by
 * a fresh discovery. */
static void rediscover(ferry_adapters *a, size_t only)
{
	ferry_device_v1 *fresh = malloc(FERRY_DEVICES_MAX * sizeof(*fresh));
	size_t *fresh_ad = malloc(FERRY_DEVICES_MAX * sizeof(*fresh_ad));
	size_t n = 0;

	if (!fresh || !fresh_ad) {
		ferry_log(LOG_ERR, "out of memory: discovery skipped");
		free(fresh);
		free(fresh_ad);
		return;
	}
	pthread_mutex_lock(&a->discover_lock);
	for (size_t i = 0; i < a->n; i++) {
		if (only != a->n && i != only) {
			/* keep what was seen last of the others */
			pthread_mutex_lock(&a->lock);
			for (size_t k = 0; k < a->n_devs && n < FERRY_DEVICES_MAX; k++)
				if (a->dev_adapter[k] == i) {
					fresh[n] = a->devs[k];
					fresh_ad[n++] = i;
				}
			pthread_mutex_unlock(&a->lock);
			continue;
		}
		size_t got = discover_into(a, i, fresh + n, FERRY_DEVICES_MAX - n);
		for (size_t k = 0; k < got; k++)
			fresh_ad[n + k] = i;
		n += got;
	}
	pthread_mutex_lock(&a->lock);
	memcpy(a->devs, fresh, n * sizeof(*fresh));
	memcpy(a->dev_adapter, fresh_ad, n * sizeof(*fresh_ad));
	a->n_devs = n;
	pthread_mutex_unlock(&a->lock);
	pthread_mutex_unlock(&a->discover_lock);
	free(fresh);
	free(fresh_ad);
}

void ferry_adapters_discover(ferry_adapters *a)
{
	rediscover(a, a->n);
}

void ferry_adapters_discover_one(ferry_adapters *a, const ferry_adapter *ad)
{
	size_t i = (size_t)(ad - a->ad);
	if (ad >= a->ad && i < a->n)
		rediscover(a, i);
}

ferry_devinfo *ferry_adapters_devices(ferry_adapters *a, size_t *n)
{
	ferry_devinfo *out;

	pthread_mutex_lock(&a->lock);
	out = malloc((a->n_devs ? a->n_devs : 1) * sizeof(*out));
	*n = 0;
	if (out)
		for (size_t i = 0; i < a->n_devs; i++)
			out[(*n)++] = (ferry_devinfo){.ad = &a->ad[a->dev_adapter[i]], .dev = a->devs[i]};
	pthread_mutex_unlock(&a->lock);
	return out;
}

bool ferry_adapters_present(ferry_adapters *a, const ferry_adapter *ad, const char *device_id, ferry_device_v1 *copy)
{
	bool found = false;

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_devs && !found; i++)
		if (&a->ad[a->dev_adapter[i]] == ad && !strcmp(a->devs[i].id, device_id)) {
			found = true;
			if (copy)
				*copy = a->devs[i];
		}
	pthread_mutex_unlock(&a->lock);
	return found;
}

const char *ferry_device_link(const ferry_device_v1 *d)
{
	for (size_t i = 0; i < d->n_attributes && i < FERRY_ADAPTER_ATTRS_MAX; i++)
		if (!strcmp(d->attributes[i].key, FERRY_ADAPTER_ATTR_LINK) && ferry_link_rank(d->attributes[i].value) >= 0)
			return d->attributes[i].value;
	return NULL;
}

const char *ferry_device_version(const ferry_device_v1 *d, const char *component)
{
	for (size_t k = 0; k < d->n_components; k++)
		if (!strcmp(d->components[k].key, component))
			return d->components[k].value;
	return NULL;
}

bool ferry_device_matches(const ferry_adapter *ad, const ferry_device_v1 *d, const ferry_component *c)
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
	return ferry_device_version(d, c->name) != NULL || (ad->abi == 1 && d->n_components == 0);
}

static json_t *kv_object(const ferry_kv_v1 *kv, size_t n)
{
	json_t *o = json_object();
	for (size_t i = 0; i < n; i++)
		json_object_set_new(o, kv[i].key, json_string(kv[i].value));
	return o;
}

json_t *ferry_device_to_json(const ferry_device_v1 *d, const char *adapter)
{
	json_t *comps = json_array(), *ident = kv_object(d->match, d->n_match);

	for (size_t k = 0; k < d->n_components; k++)
		json_array_append_new(comps, json_pack("{s:s,s:o}", "name", d->components[k].key, "version",
						       d->components[k].value[0] ? json_string(d->components[k].value)
										  : json_null()));
	json_object_set_new(ident, "vendor_id", json_string(d->vendor_id));
	json_object_set_new(ident, "class_id", json_string(d->class_id));
	if (d->serial[0])
		json_object_set_new(ident, "serial", json_string(d->serial));
	return json_pack("{s:s,s:s,s:o,s:o,s:o,s:o}", "id", d->id, "adapter", adapter, "identity", ident, "match",
			 kv_object(d->match, d->n_match), "components", comps, "attributes",
			 kv_object(d->attributes, d->n_attributes));
}

static bool copy_str(const json_t *v, char *out)
{
	const char *s = json_string_value(v);
	if (!s || strlen(s) >= FERRY_ADAPTER_STR_MAX)
		return false;
	snprintf(out, FERRY_ADAPTER_STR_MAX, "%s", s);
	return true;
}

static bool kv_from(const json_t *o, ferry_kv_v1 *kv, size_t *n)
{
	const char *k;
	json_t *v;

	*n = 0;
	if (!json_is_object(o) || json_object_size(o) > FERRY_ADAPTER_ATTRS_MAX)
		return false;
	json_object_foreach((json_t *)o, k, v) {
		if (strlen(k) >= FERRY_ADAPTER_STR_MAX || !copy_str(v, kv[*n].value))
			return false;
		snprintf(kv[*n].key, FERRY_ADAPTER_STR_MAX, "%s", k);
		(*n)++;
	}
	return true;
}

bool ferry_device_from_json(const json_t *j, ferry_device_v1 *d, const char **adapter)
{
	const json_t *ident = json_object_get(j, "identity"), *comps = json_object_get(j, "components"), *c;
	size_t i;

	memset(d, 0, sizeof(*d));
	d->size = sizeof(*d);
	*adapter = json_string_value(json_object_get(j, "adapter"));
	if (!*adapter || !copy_str(json_object_get(j, "id"), d->id) || !dev_id_ok(d->id) ||
	    !copy_str(json_object_get(ident, "vendor_id"), d->vendor_id) ||
	    !copy_str(json_object_get(ident, "class_id"), d->class_id) ||
	    !kv_from(json_object_get(j, "match"), d->match, &d->n_match) ||
	    !kv_from(json_object_get(j, "attributes"), d->attributes, &d->n_attributes) || !json_is_array(comps) ||
	    json_array_size(comps) > FERRY_ADAPTER_COMPONENTS_MAX)
		return false;
	if (json_object_get(ident, "serial") && !copy_str(json_object_get(ident, "serial"), d->serial))
		return false;
	json_array_foreach(comps, i, c) {
		const json_t *v = json_object_get(c, "version");
		if (!copy_str(json_object_get(c, "name"), d->components[i].key) ||
		    !(json_is_null(v) || copy_str(v, d->components[i].value)))
			return false;
		d->n_components++;
	}
	return true;
}

json_t *ferry_adapters_inventory(ferry_adapters *a)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&a->lock);
	for (size_t i = 0; i < a->n_devs; i++)
		json_array_append_new(arr, ferry_device_to_json(&a->devs[i], a->ad[a->dev_adapter[i]].name));
	pthread_mutex_unlock(&a->lock);
	return arr;
}

/* ---- sessions ---- */

static void sh_progress(void *ctx, uint64_t done, uint64_t total)
{
	ferry_session *s = ctx;
	if (s->cb.progress)
		s->cb.progress(s->cb.ctx, done, total);
}

static bool sh_cancelled(void *ctx)
{
	ferry_session *s = ctx;
	return s->cb.cancelled && s->cb.cancelled(s->cb.ctx);
}

static bool adapter_code(int rc)
{
	switch (rc) {
	case FERRY_ADAPTER_E_UNSUPPORTED:
	case FERRY_ADAPTER_E_NO_MATCHING_DEVICE:
	case FERRY_ADAPTER_E_DEVICE_BUSY:
	case FERRY_ADAPTER_E_ADAPTER_ERROR:
	case FERRY_ADAPTER_E_INSTALL_FAILED:
	case FERRY_ADAPTER_E_VERSION_MISMATCH:
	case FERRY_ADAPTER_E_CANCELLED:
		return true;
	default:
		return false;
	}
}

/* What an operation returned, as a ferry status. */
static ferry_err result(const ferry_adapter *ad, const char *op, int rc, char *detail, ferry_status *st)
{
	if (rc == 0)
		return FERRY_OK;
	clean(detail, FERRY_ADAPTER_DETAIL_MAX);
	if (!adapter_code(rc))
		return ferry_fail(st, FERRY_E_ADAPTER_ERROR, "adapter %s: %s returned %d, which is not a reason code%s%s",
				  ad->name, op, rc, detail[0] ? ": " : "", detail);
	return ferry_fail(st, (ferry_err)rc, "%s", detail[0] ? detail : "the adapter gave no detail");
}

ferry_err ferry_session_open(ferry_adapter *ad, const ferry_device_v1 *dev, const ferry_session_cb *cb,
			     ferry_session **out, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	ferry_session *s = calloc(1, sizeof(*s));
	ferry_device_v1 copy = *dev; /* the plugin may keep nothing of ours */
	int rc;

	*out = NULL;
	if (!s)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	s->ad = ad;
	s->cb = *cb;
	snprintf(s->dev_id, sizeof(s->dev_id), "%s", dev->id);
	s->sh = (ferry_session_host_v1){.size = sizeof(s->sh), .ctx = s, .progress = sh_progress,
					.cancelled = sh_cancelled};
	rc = ad->v2 ? ad->v2->open(ad->state, &copy, &s->sh, &s->sess, detail)
		    : ad->v1->open(ad->state, &copy, &s->sh, &s->sess, detail);
	if (rc == 0) {
		*out = s;
		return FERRY_OK;
	}
	free(s);
	return result(ad, "open", rc, detail, st);
}

ferry_err ferry_session_check(ferry_session *s, const ferry_image_v1 *img, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	int rc = s->ad->v2 ? s->ad->v2->check(s->sess, img, detail) : s->ad->v1->check(s->sess, img, detail);
	return result(s->ad, "check", rc, detail, st);
}

ferry_err ferry_session_write(ferry_session *s, const ferry_image_v1 *img, uint64_t *offset, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	int rc = s->ad->v2 ? s->ad->v2->write(s->sess, img, offset, detail)
			   : s->ad->v1->write(s->sess, img, offset, detail);
	if (*offset > img->length)
		*offset = img->length;
	return result(s->ad, "write", rc, detail, st);
}

ferry_err ferry_session_activate(ferry_session *s, const ferry_image_v1 *img, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	int rc = s->ad->v2 ? s->ad->v2->activate(s->sess, img, detail) : s->ad->v1->activate(s->sess, img, detail);
	return result(s->ad, "activate", rc, detail, st);
}

/* Versions are equal when their semver precedence is (build metadata
 * aside); text that is no version must match exactly. */
static bool same_version(const char *got, const char *want)
{
	ferry_semver a, b;
	if (ferry_semver_parse(got, &a, NULL) == FERRY_OK && ferry_semver_parse(want, &b, NULL) == FERRY_OK)
		return ferry_semver_cmp(&a, &b) == 0;
	return !strcmp(got, want);
}

ferry_err ferry_session_confirm(ferry_session *s, const ferry_image_v1 *img, char *version, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	int rc;

	memset(version, 0, FERRY_ADAPTER_STR_MAX);
	rc = s->ad->v2 ? s->ad->v2->confirm(s->sess, img, version, detail)
		       : s->ad->v1->confirm(s->sess, img, version, detail);
	clean(version, FERRY_ADAPTER_STR_MAX);
	if (rc)
		return result(s->ad, "confirm", rc, detail, st);
	if (!same_version(version, img->version))
		return ferry_fail(st, FERRY_E_VERSION_MISMATCH, "%s runs version \"%s\" after activation, not %s",
				  s->dev_id, version, img->version);
	return FERRY_OK;
}

ferry_err ferry_session_commit(ferry_session *s, const ferry_image_v1 *img, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	if (!s->ad->v2)
		return FERRY_OK; /* ABI 1: confirm made it permanent */
	return result(s->ad, "commit", s->ad->v2->commit(s->sess, img, detail), detail, st);
}

ferry_err ferry_session_abort(ferry_session *s, const ferry_image_v1 *img, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	int rc = s->ad->v2 ? s->ad->v2->abort(s->sess, img, detail) : s->ad->v1->abort(s->sess, detail);
	return result(s->ad, "abort", rc, detail, st);
}

void ferry_session_close(ferry_session *s)
{
	if (!s)
		return;
	if (s->ad->v2)
		s->ad->v2->close(s->sess);
	else
		s->ad->v1->close(s->sess);
	free(s);
}
