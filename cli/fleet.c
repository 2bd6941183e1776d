/* The fleet table.  Inventories are hostile input like every message: one
 * that does not parse, or that names another gateway than its topic, is
 * counted and left out; strings are cleaned of control bytes before they
 * reach a terminal. */
#define _GNU_SOURCE
#include "fleet.h"

#include <jansson.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "follow.h"
#include "ferry/jsonfield.h"
#include "ferry/jws.h"
#include "ferry/report.h"
#include "ferry/semver.h"

#define CONDS_MAX 32

typedef enum cond_kind { C_ATTR, C_COMP } cond_kind;
typedef enum cond_op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } cond_op;

typedef struct cond {
	cond_kind kind;
	cond_op op;
	char key[65];
	char value[256];
	ferry_semver ver;
} cond;

struct fleet_filter {
	cond conds[CONDS_MAX];
	size_t n_conds;
};

typedef struct gw {
	char id[65];
	int state; /* 0 unknown, 1 online, 2 offline */
	json_t *inv; /* checked */
} gw;

/* an inventory as it came, opened on a worker thread */
typedef struct pending {
	char id[65], topic[96];
	char *payload;
	size_t len;
	json_t *inv;     /* opened and checked, or NULL */
	ferry_status st; /* why not */
	char hash[65];   /* SHA-256 of the trust anchor and the message */
	bool cached;     /* opened before: taken from the cache */
	int64_t not_after; /* its certificate's end, for the cache */
} pending;

enum { WORKERS_MAX = 7 };

struct fleet {
	gw *g;
	size_t n, cap;
	json_t *index; /* id -> position + 1 */
	const ferry_trust *trust;
	fleet_filter where;
	unsigned refused;
	sqlite3 *cache;    /* messages opened before (fleet_set_cache) */
	json_t *cached;    /* hash -> not after */
	unsigned char anchor[32];
	/* Inventories waiting to be opened, opened by the worker threads as
	 * they come (the broker's backlog of retained messages arrives while
	 * the first ones are checked) and by settle().  Entries are pointers,
	 * so they stay put while the array grows.  All under mu. */
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	pending **pend;
	size_t n_pend, cap_pend;
	size_t next;   /* the next entry to open */
	size_t n_done; /* entries opened */
	size_t idle;   /* workers waiting for work */
	pthread_t th[WORKERS_MAX];
	size_t n_th;
	bool started, stop;
};

fleet *fleet_new(void)
{
	fleet *fl = calloc(1, sizeof(*fl));
	if (fl && !(fl->index = json_object())) {
		free(fl);
		return NULL;
	}
	if (fl) {
		pthread_mutex_init(&fl->mu, NULL);
		pthread_cond_init(&fl->work, NULL);
		pthread_cond_init(&fl->done, NULL);
	}
	return fl;
}

void fleet_set_trust(fleet *fl, const ferry_trust *trust)
{
	fl->trust = trust;
}

/* SHA-256 of the trust anchor, the gateway of the topic (and a NUL) and the
 * message: what a cached opening is good for */
static void sha256_hex(const unsigned char anchor[32], const char *gateway, const void *b, size_t nb, char out[65])
{
	unsigned char md[32];
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL) || !EVP_DigestUpdate(c, anchor, 32) ||
	    !EVP_DigestUpdate(c, gateway, strlen(gateway) + 1) || !EVP_DigestUpdate(c, b, nb) ||
	    !EVP_DigestFinal_ex(c, md, NULL)) {
		out[0] = 0;
	} else {
		for (int i = 0; i < 32; i++)
			snprintf(out + 2 * i, 3, "%02x", md[i]);
	}
	EVP_MD_CTX_free(c);
}

ferry_err fleet_set_cache(fleet *fl, const char *path, const char *ca_path, ferry_status *st)
{
	FILE *f = fopen(ca_path, "rb");
	unsigned char buf[65536];
	size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
	sqlite3_stmt *s = NULL;

	if (f)
		fclose(f);
	if (!n)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: cannot read", ca_path);
	unsigned int mdlen = 0;
	EVP_Digest(buf, n, fl->anchor, &mdlen, EVP_sha256(), NULL);
	if (sqlite3_open_v2(path, &fl->cache, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL) ||
	    sqlite3_busy_timeout(fl->cache, 10000) ||
	    /* a cache: WAL with NORMAL sync may lose the last run's rows on a
	     * power cut, never the file */
	    sqlite3_exec(fl->cache, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL) ||
	    sqlite3_exec(fl->cache, "CREATE TABLE IF NOT EXISTS opened(hash TEXT PRIMARY KEY,"
				    " not_after INTEGER NOT NULL, seen INTEGER NOT NULL)", NULL, NULL, NULL) ||
	    sqlite3_prepare_v2(fl->cache, "SELECT hash, not_after FROM opened", -1, &s, NULL)) {
		ferry_err e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", path, sqlite3_errmsg(fl->cache));
		sqlite3_close(fl->cache);
		fl->cache = NULL;
		return e;
	}
	fl->cached = json_object();
	while (sqlite3_step(s) == SQLITE_ROW)
		json_object_set_new(fl->cached, (const char *)sqlite3_column_text(s, 0),
				    json_integer((json_int_t)sqlite3_column_int64(s, 1)));
	sqlite3_finalize(s);
	return FERRY_OK;
}

/* The payload of a compact JWS, not checked: for a message whose very bytes
 * were opened before. */
static json_t *payload_of(const char *jws, size_t len)
{
	const char *a = memchr(jws, '.', len);
	const char *b = a ? memchr(a + 1, '.', len - (size_t)(a + 1 - jws)) : NULL;
	ferry_status st = {0};
	json_t *o = NULL;
	if (!b)
		return NULL;
	unsigned char *buf = NULL;
	size_t n = 0;
	if (ferry_b64url_decode(a + 1, (size_t)(b - a - 1), &buf, &n) &&
	    ferry_json_load_object((const char *)buf, n, &o, &st))
		o = NULL;
	free(buf);
	return o;
}

/* Records what this run opened, and forgets what it no longer saw. */
static void cache_save(fleet *fl, pending *const *batch, size_t n)
{
	sqlite3_stmt *ins = NULL, *touch = NULL, *q = NULL;
	int64_t now = (int64_t)time(NULL), run = 0;

	if (!fl->cache || sqlite3_exec(fl->cache, "BEGIN IMMEDIATE", NULL, NULL, NULL))
		return;
	/* each run is numbered; what it did not see goes */
	if (!sqlite3_prepare_v2(fl->cache, "SELECT ifnull(max(seen), 0) + 1 FROM opened", -1, &q, NULL) &&
	    sqlite3_step(q) == SQLITE_ROW)
		run = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	if (run && !sqlite3_prepare_v2(fl->cache, "INSERT OR REPLACE INTO opened VALUES(?,?,?)", -1, &ins, NULL) &&
	    !sqlite3_prepare_v2(fl->cache, "UPDATE opened SET seen = ? WHERE hash = ?", -1, &touch, NULL)) {
		for (size_t i = 0; i < n; i++) {
			const pending *p = batch[i];
			if (!p->inv || !p->hash[0])
				continue;
			if (p->cached) {
				sqlite3_bind_int64(touch, 1, run);
				sqlite3_bind_text(touch, 2, p->hash, -1, SQLITE_STATIC);
				sqlite3_step(touch);
				sqlite3_reset(touch);
			} else if (p->not_after > now) {
				sqlite3_bind_text(ins, 1, p->hash, -1, SQLITE_STATIC);
				sqlite3_bind_int64(ins, 2, p->not_after);
				sqlite3_bind_int64(ins, 3, run);
				sqlite3_step(ins);
				sqlite3_reset(ins);
			}
		}
		char del[128];
		snprintf(del, sizeof(del), "DELETE FROM opened WHERE seen < %lld OR not_after <= %lld", (long long)run,
			 (long long)now);
		sqlite3_exec(fl->cache, del, NULL, NULL, NULL);
	}
	sqlite3_finalize(ins);
	sqlite3_finalize(touch);
	sqlite3_exec(fl->cache, "COMMIT", NULL, NULL, NULL);
}

static void pending_free(pending *p)
{
	if (p) {
		free(p->payload);
		json_decref(p->inv);
		free(p);
	}
}

void fleet_free(fleet *fl)
{
	if (!fl)
		return;
	pthread_mutex_lock(&fl->mu);
	fl->stop = true;
	pthread_cond_broadcast(&fl->work);
	pthread_mutex_unlock(&fl->mu);
	for (size_t t = 0; t < fl->n_th; t++)
		pthread_join(fl->th[t], NULL);
	sqlite3_close(fl->cache);
	json_decref(fl->cached);
	for (size_t i = 0; i < fl->n_pend; i++)
		pending_free(fl->pend[i]);
	free(fl->pend);
	for (size_t i = 0; i < fl->n; i++)
		json_decref(fl->g[i].inv);
	free(fl->g);
	json_decref(fl->index);
	pthread_cond_destroy(&fl->work);
	pthread_cond_destroy(&fl->done);
	pthread_mutex_destroy(&fl->mu);
	free(fl);
}

static void settle(fleet *fl);
static void queue(fleet *fl, pending *p);

unsigned fleet_refused(fleet *fl)
{
	settle(fl);
	return fl->refused;
}

fleet_filter *fleet_filter_new(void)
{
	return calloc(1, sizeof(fleet_filter));
}

void fleet_filter_free(fleet_filter *f)
{
	free(f);
}

ferry_err fleet_where(fleet *fl, const char *s, ferry_status *st)
{
	return fleet_filter_add(&fl->where, s, st);
}

ferry_err fleet_filter_add(fleet_filter *fl, const char *s, ferry_status *st)
{
	static const struct {
		const char *txt;
		cond_op op;
	} ops[] = {{"<=", OP_LE}, {">=", OP_GE}, {"!=", OP_NE}, {"<", OP_LT}, {">", OP_GT}, {"=", OP_EQ}};
	cond c = {0};

	if (fl->n_conds == CONDS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "at most %d conditions", CONDS_MAX);
	size_t klen = strcspn(s, "<>=!");
	if (!s[klen])
		return ferry_fail(st, FERRY_E_MALFORMED, "\"%s\" has no =, !=, <, <=, > or >=", s);
	const char *key = s, *rest = s + klen;
	size_t i;
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strncmp(rest, ops[i].txt, strlen(ops[i].txt)))
			break;
	if (i == sizeof(ops) / sizeof(ops[0]))
		return ferry_fail(st, FERRY_E_MALFORMED, "\"%s\": no operator after the key", s);
	c.op = ops[i].op;
	const char *val = rest + strlen(ops[i].txt);
	if (!strncmp(key, "component.", 10)) {
		c.kind = C_COMP;
		key += 10;
		klen -= 10;
	}
	if (!klen || klen > 64 || !ferry_charset_ok(key, klen, FERRY_CS_ID))
		return ferry_fail(st, FERRY_E_MALFORMED, "\"%s\": the key must be 1-64 characters of [A-Za-z0-9._-]", s);
	snprintf(c.key, sizeof(c.key), "%.*s", (int)klen, key);
	if (strlen(val) >= sizeof(c.value) || !ferry_charset_ok(val, strlen(val), FERRY_CS_ANY))
		return ferry_fail(st, FERRY_E_MALFORMED, "\"%s\": the value is too long or has control characters", s);
	snprintf(c.value, sizeof(c.value), "%s", val);
	if (c.kind == C_COMP) {
		ferry_status vst = {0};
		if (ferry_semver_parse(val, &c.ver, &vst))
			return ferry_fail(st, FERRY_E_MALFORMED, "\"%s\": %s", s, vst.detail);
	} else if (c.op != OP_EQ && c.op != OP_NE) {
		return ferry_fail(st, FERRY_E_MALFORMED, "\"%s\": attributes take = or != (versions take <, >, ...: "
				  "component.NAME<V)", s);
	}
	fl->conds[fl->n_conds++] = c;
	return FERRY_OK;
}

static gw *gw_of(fleet *fl, const char *id)
{
	json_t *pos = json_object_get(fl->index, id);
	if (pos)
		return &fl->g[json_integer_value(pos) - 1];
	if (fl->n == fl->cap) {
		size_t cap = fl->cap ? fl->cap * 2 : 64;
		gw *g = realloc(fl->g, cap * sizeof(*g));
		if (!g)
			return NULL;
		fl->g = g;
		fl->cap = cap;
	}
	gw *g = &fl->g[fl->n++];
	memset(g, 0, sizeof(*g));
	snprintf(g->id, sizeof(g->id), "%s", id);
	json_object_set_new(fl->index, id, json_integer((json_int_t)fl->n));
	return g;
}

static bool clean_str(json_t *v, size_t max)
{
	if (!json_is_string(v) || json_string_length(v) > max)
		return false;
	size_t n = json_string_length(v);
	char *c = malloc(n + 1);
	if (!c)
		return false;
	clean_text(c, n + 1, json_string_value(v)); /* C0, DEL and C1 become '?' */
	json_string_set(v, c);
	free(c);
	return true;
}

/* The members the table uses, checked; the rest is left alone. */
static bool inventory_ok(json_t *inv, const char *topic_gw)
{
	json_t *g = json_object_get(inv, "gateway"), *attrs = json_object_get(g, "attributes"),
	       *devs = json_object_get(inv, "devices"), *v, *d;
	const char *k;
	size_t i;

	if (!json_is_object(g) || !json_is_string(json_object_get(g, "id")) ||
	    strcmp(json_string_value(json_object_get(g, "id")), topic_gw))
		return false;
	if (attrs && !json_is_object(attrs))
		return false;
	json_object_foreach(attrs, k, v) if (!clean_str(v, 255) || strlen(k) > 64) return false;
	if (!json_is_array(devs))
		return false;
	json_array_foreach(devs, i, d) {
		json_t *comps = json_object_get(d, "components"), *c;
		size_t j;
		if (!json_is_object(d) || !clean_str(json_object_get(d, "id"), 128) || !json_is_array(comps))
			return false;
		json_array_foreach(comps, j, c) {
			json_t *ver = json_object_get(c, "version");
			if (!json_is_object(c) || !json_is_string(json_object_get(c, "name")) ||
			    !ferry_charset_ok(json_string_value(json_object_get(c, "name")),
					      json_string_length(json_object_get(c, "name")), FERRY_CS_ID) ||
			    (ver && !json_is_null(ver) && !clean_str(ver, 64)))
				return false;
		}
	}
	return true;
}

void fleet_add(fleet *fl, const char *topic, const char *payload, size_t len)
{
	char id[65], kind[16];
	json_t *msg = NULL;
	ferry_status st = {0};

	if (strncmp(topic, "ferry/v1/", 9) || sscanf(topic + 9, "%64[A-Za-z0-9._-]/%15[a-z]", id, kind) != 2 ||
	    strlen(topic) != 9 + strlen(id) + 1 + strlen(kind))
		return;
	if (!len)
		return; /* a cleared retained message */
	if (!strcmp(kind, "inventory")) {
		/* the gateway's own word: opened on the worker threads */
		pending *p = calloc(1, sizeof(*p));
		if (!p || !(p->payload = malloc(len))) {
			free(p);
			return;
		}
		memcpy(p->payload, payload, len);
		p->len = len;
		snprintf(p->id, sizeof(p->id), "%s", id);
		snprintf(p->topic, sizeof(p->topic), "%s", topic);
		queue(fl, p);
		return;
	}
	/* the state is the broker's will or the gateway's "online", unsigned */
	if (ferry_json_load_object(payload, len, &msg, &st)) {
		char clean[sizeof(st.detail)];
		fl->refused++;
		clean_text(clean, sizeof(clean), st.detail);
		fprintf(stderr, "ferry: refused a message on %s: %s: %s\n", topic, ferry_err_code(st.code), clean);
		return;
	}
	gw *g = NULL;
	if (!strcmp(kind, "state")) {
		const char *s = json_string_value(json_object_get(msg, "state"));
		if (s && (!strcmp(s, "online") || !strcmp(s, "offline"))) {
			if ((g = gw_of(fl, id)))
				g->state = !strcmp(s, "online") ? 1 : 2;
		} else {
			fl->refused++;
		}
	}
	json_decref(msg);
}

/* Opens one inventory, or takes it from the cache when its very bytes
 * were opened before (same anchor, its certificate still valid).  On any
 * thread: it reads the fleet's trust and cache, which do not change once
 * messages come, and writes only *p. */
static void open_one(const fleet *fl, pending *p)
{
	json_t *inv = NULL;
	time_t now = time(NULL);

	if (fl->cache) {
		sha256_hex(fl->anchor, p->id, p->payload, p->len, p->hash);
		json_t *hit = p->hash[0] ? json_object_get(fl->cached, p->hash) : NULL;
		if (hit && json_integer_value(hit) > now) {
			inv = payload_of(p->payload, p->len);
			if (inv && inventory_ok(inv, p->id)) {
				p->inv = inv;
				p->cached = true;
				return;
			}
			json_decref(inv);
			inv = NULL;
		}
	}
	if (ferry_report_open_until(p->payload, p->len, fl->trust, p->id, now, &inv, &p->not_after, &p->st))
		return;
	if (!inventory_ok(inv, p->id)) {
		ferry_fail(&p->st, FERRY_E_MALFORMED, "an inventory that names another gateway or lacks members");
		json_decref(inv);
		return;
	}
	p->inv = inv;
}

/* Opens the next waiting entry; with mu held, which it drops meanwhile.
 * False when none waits. */
static bool open_next(fleet *fl)
{
	if (fl->next >= fl->n_pend)
		return false;
	pending *p = fl->pend[fl->next++];
	pthread_mutex_unlock(&fl->mu);
	open_one(fl, p);
	pthread_mutex_lock(&fl->mu);
	if (++fl->n_done == fl->n_pend)
		pthread_cond_broadcast(&fl->done);
	return true;
}

static void *worker(void *arg)
{
	fleet *fl = arg;
	pthread_mutex_lock(&fl->mu);
	while (!fl->stop) {
		if (open_next(fl))
			continue;
		fl->idle++;
		pthread_cond_wait(&fl->work, &fl->mu);
		fl->idle--;
	}
	pthread_mutex_unlock(&fl->mu);
	return NULL;
}

/* Hands p to the workers, started with the first one: one per core but
 * the one that receives (at most WORKERS_MAX).  OpenSSL 3.0 lets threads
 * check certificates side by side now that certificates are read without
 * its decoder search (manifests/certparse.c).  Without a worker, settle()
 * opens everything. */
static void queue(fleet *fl, pending *p)
{
	pthread_mutex_lock(&fl->mu);
	if (fl->n_pend == fl->cap_pend) {
		size_t cap = fl->cap_pend ? fl->cap_pend * 2 : 256;
		pending **grown = realloc(fl->pend, cap * sizeof(*grown));
		if (!grown) {
			pthread_mutex_unlock(&fl->mu);
			pending_free(p);
			return;
		}
		fl->pend = grown;
		fl->cap_pend = cap;
	}
	fl->pend[fl->n_pend++] = p;
	if (!fl->started) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);
		size_t want = cores <= 1 ? 0 : cores - 1 > WORKERS_MAX ? WORKERS_MAX : (size_t)cores - 1;
		fl->started = true;
		for (size_t t = 0; t < want; t++)
			if (!pthread_create(&fl->th[fl->n_th], NULL, worker, fl))
				fl->n_th++;
	}
	if (fl->idle)
		pthread_cond_signal(&fl->work);
	pthread_mutex_unlock(&fl->mu);
}

/* Waits for every inventory that came to be opened (helping the workers),
 * then takes them in the order they came. */
static void settle(fleet *fl)
{
	pthread_mutex_lock(&fl->mu);
	while (open_next(fl))
		;
	while (fl->n_done < fl->n_pend)
		pthread_cond_wait(&fl->done, &fl->mu);
	pending **batch = fl->pend;
	size_t n = fl->n_pend;
	fl->pend = NULL;
	fl->n_pend = fl->cap_pend = fl->next = fl->n_done = 0;
	pthread_mutex_unlock(&fl->mu);
	if (!n)
		return;
	cache_save(fl, batch, n);
	for (size_t i = 0; i < n; i++) {
		pending *p = batch[i];
		gw *g = p->inv ? gw_of(fl, p->id) : NULL;
		if (g) {
			json_decref(g->inv);
			g->inv = p->inv;
			p->inv = NULL;
		} else {
			char clean[sizeof(p->st.detail)];
			fl->refused++;
			clean_text(clean, sizeof(clean), p->st.detail[0] ? p->st.detail : "out of memory");
			fprintf(stderr, "ferry: refused a message on %s: %s: %s\n", p->topic, ferry_err_code(p->st.code), clean);
		}
		pending_free(p);
	}
	free(batch);
}

static const char *state_name(int s)
{
	return s == 1 ? "online" : s == 2 ? "offline" : "unknown";
}

static const char *attr_of(const gw *g, const char *key)
{
	if (!strcmp(key, "gateway"))
		return g->id;
	if (!strcmp(key, "state"))
		return state_name(g->state);
	return json_string_value(json_object_get(json_object_get(json_object_get(g->inv, "gateway"), "attributes"), key));
}

static bool ver_holds(const char *text, const cond *c)
{
	ferry_semver v;
	ferry_status st = {0};
	int r;

	if (!text || ferry_semver_parse(text, &v, &st))
		r = -1; /* unknown: older than any */
	else
		r = ferry_semver_cmp(&v, &c->ver);
	switch (c->op) {
	case OP_EQ: return text && r == 0;
	case OP_NE: return !text || r != 0;
	case OP_LT: return r < 0;
	case OP_LE: return r <= 0;
	case OP_GT: return text && r > 0;
	case OP_GE: return text && r >= 0;
	}
	return false;
}

static bool filter_holds(const fleet_filter *f, const gw *g)
{
	for (size_t i = 0; i < f->n_conds; i++) {
		const cond *c = &f->conds[i];
		if (c->kind == C_ATTR) {
			const char *v = attr_of(g, c->key);
			bool eq = v && !strcmp(v, c->value);
			if (c->op == OP_EQ ? !eq : eq)
				return false;
			continue;
		}
		bool any = false;
		size_t k, j;
		json_t *d, *comp;
		json_array_foreach(json_object_get(g->inv, "devices"), k, d) {
			json_array_foreach(json_object_get(d, "components"), j, comp) {
				if (!strcmp(json_string_value(json_object_get(comp, "name")), c->key) &&
				    ver_holds(json_string_value(json_object_get(comp, "version")), c))
					any = true;
			}
		}
		if (!any)
			return false;
	}
	return true;
}

static bool matches(const fleet *fl, const gw *g)
{
	return filter_holds(&fl->where, g);
}

const json_t *fleet_inventory(fleet *fl, const char *id)
{
	json_t *pos;
	settle(fl);
	pos = json_object_get(fl->index, id);
	return pos ? fl->g[json_integer_value(pos) - 1].inv : NULL;
}

size_t fleet_select(fleet *fl, const fleet_filter *f, fleet_id **ids)
{
	settle(fl);
	size_t n = 0;
	*ids = calloc(fl->n ? fl->n : 1, sizeof(**ids));
	for (size_t i = 0; *ids && i < fl->n; i++)
		if (fl->g[i].inv && filter_holds(f, &fl->g[i]))
			snprintf((*ids)[n++], sizeof(fleet_id), "%s", fl->g[i].id);
	if (*ids)
		qsort(*ids, n, sizeof(fleet_id), (int (*)(const void *, const void *))strcmp);
	return n;
}

size_t fleet_matching(fleet *fl)
{
	settle(fl);
	size_t n = 0;
	for (size_t i = 0; i < fl->n; i++)
		n += matches(fl, &fl->g[i]);
	return n;
}

/* component name -> newest valid version text, over the whole fleet */
static json_t *newest(const fleet *fl)
{
	json_t *best = json_object();
	for (size_t i = 0; i < fl->n; i++) {
		size_t k, j;
		json_t *d, *comp;
		json_array_foreach(json_object_get(fl->g[i].inv, "devices"), k, d) {
			json_array_foreach(json_object_get(d, "components"), j, comp) {
				const char *name = json_string_value(json_object_get(comp, "name"));
				const char *ver = json_string_value(json_object_get(comp, "version"));
				ferry_semver v, b;
				ferry_status st = {0};
				if (!ver || ferry_semver_parse(ver, &v, &st))
					continue;
				const char *cur = json_string_value(json_object_get(best, name));
				if (!cur || (!ferry_semver_parse(cur, &b, &st) && ferry_semver_cmp(&v, &b) > 0))
					json_object_set_new(best, name, json_string(ver));
			}
		}
	}
	return best;
}

static bool behind(const json_t *best, const char *name, const char *ver)
{
	const char *top = json_string_value(json_object_get(best, name));
	ferry_semver v, b;
	ferry_status st = {0};
	if (!top)
		return false;
	if (!ver || ferry_semver_parse(ver, &v, &st))
		return true;
	return !ferry_semver_parse(top, &b, &st) && ferry_semver_cmp(&v, &b) < 0;
}

static int by_id(const void *a, const void *b)
{
	return strcmp((*(const gw *const *)a)->id, (*(const gw *const *)b)->id);
}

/* the visiting order: matching gateways by id */
static const gw **sorted(const fleet *fl, size_t *n)
{
	const gw **v = calloc(fl->n ? fl->n : 1, sizeof(*v));
	*n = 0;
	for (size_t i = 0; v && i < fl->n; i++)
		if (matches(fl, &fl->g[i]))
			v[(*n)++] = &fl->g[i];
	if (v)
		qsort(v, *n, sizeof(*v), by_id);
	return v;
}

typedef struct counts {
	size_t gateways, online, offline, devices, components, behind;
} counts;

typedef void (*row_fn)(void *ctx, const gw *g, const json_t *dev, const json_t *comp, bool is_behind);

static counts walk(const fleet *fl, const json_t *best, row_fn fn, void *ctx)
{
	counts n = {0};
	size_t ng;
	const gw **v = sorted(fl, &ng);

	for (size_t i = 0; v && i < ng; i++) {
		const gw *g = v[i];
		size_t k, j;
		json_t *d, *comp;
		n.gateways++;
		n.online += g->state == 1;
		n.offline += g->state == 2;
		if (!g->inv) {
			fn(ctx, g, NULL, NULL, false);
			continue;
		}
		json_array_foreach(json_object_get(g->inv, "devices"), k, d) {
			n.devices++;
			json_array_foreach(json_object_get(d, "components"), j, comp) {
				const char *name = json_string_value(json_object_get(comp, "name"));
				bool b = behind(best, name, json_string_value(json_object_get(comp, "version")));
				n.components++;
				n.behind += b;
				fn(ctx, g, d, comp, b);
			}
		}
	}
	free(v);
	return n;
}

typedef struct print_ctx {
	const fleet *fl;
	FILE *out;
	json_t *rows;
} print_ctx;

static void put_trimmed(FILE *out, char *line)
{
	size_t n = strlen(line);
	while (n && line[n - 1] == ' ')
		line[--n] = 0;
	fprintf(out, "%s\n", line);
}

static void print_row(void *ctx, const gw *g, const json_t *d, const json_t *comp, bool b)
{
	print_ctx *p = ctx;
	const char *dev = d ? json_string_value(json_object_get(d, "id")) : "(no inventory)";
	const char *name = comp ? json_string_value(json_object_get(comp, "name")) : "-";
	const char *ver = comp ? json_string_value(json_object_get(comp, "version")) : NULL;
	bool absent = d && json_is_false(json_object_get(d, "present"));
	char devcol[160], vercol[80];

	char line[1024];
	size_t n;

	snprintf(devcol, sizeof(devcol), "%s%s", dev, absent ? " (absent)" : "");
	snprintf(vercol, sizeof(vercol), "%s%s", ver ? ver : "-", b ? " *" : "");
	n = (size_t)snprintf(line, sizeof(line), "%-16s %-8s %-24s %-16s %-14s", g->id, state_name(g->state), devcol,
			     name, vercol);
	for (size_t i = 0; i < p->fl->where.n_conds && n < sizeof(line); i++) {
		const cond *c = &p->fl->where.conds[i];
		if (c->kind == C_ATTR && strcmp(c->key, "gateway") && strcmp(c->key, "state")) {
			const char *v = attr_of(g, c->key);
			n += (size_t)snprintf(line + n, sizeof(line) - n, " %-12s", v ? v : "-");
		}
	}
	put_trimmed(p->out, line);
}

void fleet_print(fleet *fl, FILE *out)
{
	settle(fl);
	json_t *best = newest(fl);
	print_ctx p = {.fl = fl, .out = out};

	char head[1024];
	size_t len = (size_t)snprintf(head, sizeof(head), "%-16s %-8s %-24s %-16s %-14s", "GATEWAY", "STATE", "DEVICE",
				      "COMPONENT", "VERSION");
	for (size_t i = 0; i < fl->where.n_conds && len < sizeof(head); i++)
		if (fl->where.conds[i].kind == C_ATTR && strcmp(fl->where.conds[i].key, "gateway") && strcmp(fl->where.conds[i].key, "state"))
			len += (size_t)snprintf(head + len, sizeof(head) - len, " %-12s", fl->where.conds[i].key);
	put_trimmed(out, head);
	counts n = walk(fl, best, print_row, &p);
	fprintf(out, "%zu gateway%s (%zu online, %zu offline), %zu device%s, %zu component%s, %zu behind the newest "
		"version (*)", n.gateways, n.gateways == 1 ? "" : "s", n.online, n.offline, n.devices,
		n.devices == 1 ? "" : "s", n.components, n.components == 1 ? "" : "s", n.behind);
	if (fl->where.n_conds)
		fprintf(out, "; %zu of %zu gateways match", n.gateways, fl->n);
	fputc('\n', out);
	json_decref(best);
}

static void json_row(void *ctx, const gw *g, const json_t *d, const json_t *comp, bool b)
{
	print_ctx *p = ctx;
	json_t *attrs = json_object_get(json_object_get(g->inv, "gateway"), "attributes");
	json_t *r = json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:b}", "gateway", g->id, "state", state_name(g->state),
			      "attributes", attrs ? json_incref(attrs) : json_object(), "device",
			      d ? json_incref(json_object_get(d, "id")) : json_null(), "component",
			      comp ? json_incref(json_object_get(comp, "name")) : json_null(), "version",
			      comp && json_object_get(comp, "version") ? json_incref(json_object_get(comp, "version"))
								       : json_null(),
			      "behind", b);
	if (r && d)
		json_object_set_new(r, "present", json_boolean(!json_is_false(json_object_get(d, "present"))));
	json_array_append_new(p->rows, r);
}

json_t *fleet_json(fleet *fl)
{
	settle(fl);
	json_t *best = newest(fl);
	print_ctx p = {.fl = fl, .rows = json_array()};
	counts n = walk(fl, best, json_row, &p);
	json_t *o = json_pack("{s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:O}", "rows", p.rows, "counts", "gateways",
			      (json_int_t)n.gateways, "online", (json_int_t)n.online, "offline", (json_int_t)n.offline,
			      "devices", (json_int_t)n.devices, "components", (json_int_t)n.components, "behind",
			      (json_int_t)n.behind, "known", (json_int_t)fl->n, "newest", best);
	json_decref(best);
	return o;
}

void fleet_print_json(fleet *fl, FILE *out)
{
	json_t *o = fleet_json(fl);
	json_dumpf(o, out, JSON_INDENT(1) | JSON_SORT_KEYS);
	fputc('\n', out);
	json_decref(o);
}
