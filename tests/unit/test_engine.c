/* The engine in process: the real ferryd engine (commands, journal, store,
 * runner, scheduler, adapter host) with two scripted adapters and the
 * cloud's publish wrapped (-Wl,--wrap), driven by signed commands.
 *
 * The scripted adapters stand for the devices: "fake" runs images on trial
 * and can revert them (ABI 2, CAP_ROLLBACK), "fake-nr" cannot revert.  Each
 * device can be told to fail at one operation, to come back on its old
 * image, to refuse commits, to fail its abort, or to hold a write until it
 * is cancelled.  The images are put in the store beforehand, so no
 * download touches the network (the integration tests cover downloads).
 *
 * Every wait is for a report to arrive; the deadline is only a failsafe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adapter_host.h"
#include "cloud.h"
#include "config.h"
#include "engine.h"
#include "ferry/jws.h"
#include "ferry/manifest.h"
#include "journal.h"
#include "pki.h"

#define GW "gw-t"
#define DEVS_MAX 8
#define FAILSAFE_S 60

/* ---- the wrapped cloud ---- */

typedef struct pub {
	char suffix[16];
	json_t *body;
	int mid;
} pub;

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pub *p;
	size_t n, cap;
	int next_mid;
	bool connected, ack;
	int unacked[4096];
	size_t n_unacked;
} C = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static ferry_cloud_events EV;

/* On: each `allowed` report of a component is checked, as it goes out,
 * against what a restart would find: the journal, read by a connection of
 * its own, must hold that component's link already. */
static struct {
	bool on;
	int checked, unlinked;
} LINKS;
static char dir[64];

static void check_link_kept(const json_t *body)
{
	const char *uid = json_string_value(json_object_get(body, "update_id"));
	const char *comp = json_string_value(json_object_get(body, "component"));
	char path[256];
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;

	if (!uid || !comp || strcmp(json_string_value(json_object_get(body, "stage")) ?: "", "allowed"))
		return;
	snprintf(path, sizeof(path), "file:%s/state/journal.db?mode=ro", dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT link FROM components WHERE update_id = ? AND name = ?", -1,
					    &q, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(q, 1, uid, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(q, 2, comp, -1, SQLITE_TRANSIENT);
	LINKS.checked++;
	if (sqlite3_step(q) != SQLITE_ROW || sqlite3_column_type(q, 0) == SQLITE_NULL)
		LINKS.unlinked++;
	sqlite3_finalize(q);
	sqlite3_close(db);
}

ferry_err __wrap_ferry_cloud_publish(ferry_cloud *c, const char *suffix, const char *payload, bool retain, int *mid,
				     ferry_status *st);
bool __wrap_ferry_cloud_connected(ferry_cloud *c);

ferry_err __wrap_ferry_cloud_publish(ferry_cloud *c, const char *suffix, const char *payload, bool retain, int *mid,
				     ferry_status *st)
{
	int m;
	bool ack;

	pthread_mutex_lock(&C.lock);
	if (!C.connected) {
		pthread_mutex_unlock(&C.lock);
		return ferry_fail(st, FERRY_E_INTERNAL, "not connected");
	}
	if (C.n == C.cap)
		C.p = realloc(C.p, (C.cap = C.cap ? 2 * C.cap : 256) * sizeof(*C.p));
	m = ++C.next_mid;
	snprintf(C.p[C.n].suffix, sizeof(C.p[C.n].suffix), "%s", suffix);
	C.p[C.n].body = json_loads(payload, 0, NULL);
	C.p[C.n].mid = m;
	if (LINKS.on && !strcmp(suffix, "stage"))
		check_link_kept(C.p[C.n].body);
	C.n++;
	ack = C.ack;
	if (!ack && C.n_unacked < 4096)
		C.unacked[C.n_unacked++] = m;
	pthread_cond_broadcast(&C.cond);
	pthread_mutex_unlock(&C.lock);
	if (mid)
		*mid = m;
	if (ack)
		EV.published(EV.ctx, m); /* the broker has it */
	return FERRY_OK;
}

bool __wrap_ferry_cloud_connected(ferry_cloud *c)
{
	pthread_mutex_lock(&C.lock);
	bool up = C.connected;
	pthread_mutex_unlock(&C.lock);
	return up;
}

/* ---- the scripted adapters ---- */

typedef enum fop { OP_NONE, OP_OPEN, OP_CHECK, OP_WRITE, OP_ACTIVATE, OP_CONFIRM, OP_COMMIT } fop;

typedef struct fdev {
	char id[16], component[16], cls[16];
	char running[16]; /* the image it boots for good */
	char trial[16];   /* the image it runs on trial, "" none */
	bool revertible;
	fop fail_at;
	int commit_refusals; /* commits refused before one is taken */
	bool reverts_itself; /* activate "boots" the image, but it falls back at once */
	bool abort_fails;
	bool hold_write; /* write waits until cancelled */
	bool gate_write; /* write waits while F.gate_shut */
	int bad_code;    /* write returns this number, not a reason code */
	bool junk_detail; /* write fills detail to the brim, no NUL, with control bytes */
	char link[24];    /* the link it declares ("" none) */
} fdev;

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	fdev d[DEVS_MAX];
	size_t n;
	char log[8192];
	int active, max_active;
	int holding; /* writes waiting to be cancelled */
	bool gate_shut; /* gated writes wait while it is */
	int gated;      /* writes waiting at the gate */
} F = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

typedef struct fsess {
	fdev *d;
	const ferry_session_host_v1 *sh;
} fsess;

static void note(const fdev *d, const char *op)
{
	size_t n = strlen(F.log);
	snprintf(F.log + n, sizeof(F.log) - n, "%s:%s;", d->id, op);
}

static int f_init(const ferry_host_v1 *h, void **st, char *detail)
{
	*st = NULL;
	return 0;
}

static void f_fini(void *st)
{
}

static int discover(bool revertible, ferry_device_v1 *devs, size_t max, size_t *n)
{
	pthread_mutex_lock(&F.lock);
	*n = 0;
	for (size_t i = 0; i < F.n && *n < max; i++) {
		fdev *d = &F.d[i];
		ferry_device_v1 *o = &devs[(*n)++];
		if (d->revertible != revertible) {
			(*n)--;
			continue;
		}
		snprintf(o->id, sizeof(o->id), "%s", d->id);
		snprintf(o->vendor_id, sizeof(o->vendor_id), "acme");
		snprintf(o->class_id, sizeof(o->class_id), "%s", d->cls);
		snprintf(o->match[0].key, sizeof(o->match[0].key), "slot");
		snprintf(o->match[0].value, sizeof(o->match[0].value), "%s", d->id);
		o->n_match = 1;
		snprintf(o->components[0].key, sizeof(o->components[0].key), "%s", d->component);
		snprintf(o->components[0].value, sizeof(o->components[0].value), "%s", d->running);
		o->n_components = 1;
		if (d->link[0]) {
			snprintf(o->attributes[0].key, sizeof(o->attributes[0].key), "link");
			snprintf(o->attributes[0].value, sizeof(o->attributes[0].value), "%s", d->link);
			o->n_attributes = 1;
		}
	}
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int f_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	return discover(true, devs, max, n);
}

static int nr_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	return discover(false, devs, max, n);
}

static int f_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **out, char *detail)
{
	fsess *x = calloc(1, sizeof(*x));
	pthread_mutex_lock(&F.lock);
	for (size_t i = 0; i < F.n; i++)
		if (!strcmp(F.d[i].id, dev->id))
			x->d = &F.d[i];
	note(x->d, "open");
	bool fail = x->d->fail_at == OP_OPEN;
	if (!fail && ++F.active > F.max_active)
		F.max_active = F.active;
	pthread_mutex_unlock(&F.lock);
	if (fail) {
		free(x);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: no answer", dev->id);
	}
	x->sh = sh;
	*out = x;
	return 0;
}

/* Log the operation; the scripted failure, if this is it. */
static int op(fsess *x, fop which, const char *name, char *detail)
{
	pthread_mutex_lock(&F.lock);
	note(x->d, name);
	bool fail = x->d->fail_at == which;
	pthread_mutex_unlock(&F.lock);
	return fail ? ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: %s failed", x->d->id, name) : 0;
}

static int f_check(void *s, const ferry_image_v1 *img, char *detail)
{
	return op(s, OP_CHECK, "check", detail);
}

static int f_write(void *s, const ferry_image_v1 *img, uint64_t *off, char *detail)
{
	fsess *x = s;
	int rc = op(x, OP_WRITE, "write", detail);

	if (rc)
		return rc;
	if (x->d->bad_code)
		return x->d->bad_code;
	if (x->d->junk_detail) {
		memset(detail, 'A', FERRY_ADAPTER_DETAIL_MAX);
		detail[3] = '\n';
		detail[4] = (char)0xff;
		return FERRY_ADAPTER_E_INSTALL_FAILED;
	}
	if (x->d->gate_write) {
		pthread_mutex_lock(&F.lock);
		F.gated++;
		pthread_cond_broadcast(&F.cond);
		while (F.gate_shut && !x->sh->cancelled(x->sh->ctx)) { /* ferryd stopping ends it too */
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += 1;
			pthread_cond_timedwait(&F.cond, &F.lock, &until);
		}
		F.gated--;
		pthread_mutex_unlock(&F.lock);
	}
	if (x->d->hold_write) {
		pthread_mutex_lock(&F.lock);
		F.holding++;
		pthread_cond_broadcast(&F.cond);
		pthread_mutex_unlock(&F.lock);
		while (!x->sh->cancelled(x->sh->ctx)) {
			struct timespec ts = {0, 5 * 1000000L};
			nanosleep(&ts, NULL);
		}
		pthread_mutex_lock(&F.lock);
		F.holding--;
		pthread_mutex_unlock(&F.lock);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled");
	}
	x->sh->progress(x->sh->ctx, img->length / 2, img->length);
	x->sh->progress(x->sh->ctx, img->length, img->length);
	*off = img->length;
	return 0;
}

static int f_activate(void *s, const ferry_image_v1 *img, char *detail)
{
	fsess *x = s;
	int rc = op(x, OP_ACTIVATE, "activate", detail);
	if (rc)
		return rc;
	pthread_mutex_lock(&F.lock);
	if (x->d->reverts_itself)
		x->d->trial[0] = '\0';
	else if (x->d->revertible)
		snprintf(x->d->trial, sizeof(x->d->trial), "%s", img->version);
	else
		snprintf(x->d->running, sizeof(x->d->running), "%s", img->version);
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int f_confirm(void *s, const ferry_image_v1 *img, char *version, char *detail)
{
	fsess *x = s;
	int rc = op(x, OP_CONFIRM, "confirm", detail);
	if (rc)
		return rc;
	pthread_mutex_lock(&F.lock);
	snprintf(version, FERRY_ADAPTER_STR_MAX, "%s", x->d->trial[0] ? x->d->trial : x->d->running);
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int f_commit(void *s, const ferry_image_v1 *img, char *detail)
{
	fsess *x = s;
	int rc = op(x, OP_COMMIT, "commit", detail);
	if (rc)
		return rc;
	pthread_mutex_lock(&F.lock);
	if (x->d->commit_refusals > 0) {
		x->d->commit_refusals--;
		pthread_mutex_unlock(&F.lock);
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s refuses the commit", x->d->id);
	}
	if (x->d->trial[0]) {
		snprintf(x->d->running, sizeof(x->d->running), "%s", x->d->trial);
		x->d->trial[0] = '\0';
	}
	pthread_mutex_unlock(&F.lock);
	return 0;
}

static int f_abort(void *s, const ferry_image_v1 *img, char *detail)
{
	fsess *x = s;
	pthread_mutex_lock(&F.lock);
	note(x->d, "abort");
	bool fails = x->d->abort_fails;
	if (!fails)
		x->d->trial[0] = '\0';
	pthread_mutex_unlock(&F.lock);
	return fails ? ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s does not answer", x->d->id) : 0;
}

static void f_close(void *s)
{
	pthread_mutex_lock(&F.lock);
	F.active--;
	pthread_mutex_unlock(&F.lock);
	free(s);
}

static const char *const raw[] = {"raw", NULL};
static const ferry_adapter_v2 fake_table = {
	.abi = 2, .name = "fake", .formats = raw, .caps = FERRY_ADAPTER_CAP_ROLLBACK, .max_sessions = 8,
	.init = f_init, .fini = f_fini, .discover = f_discover, .open = f_open, .check = f_check, .write = f_write,
	.activate = f_activate, .confirm = f_confirm, .commit = f_commit, .abort = f_abort, .close = f_close};
static const ferry_adapter_v2 nr_table = {
	.abi = 2, .name = "fake-nr", .formats = raw, .caps = 0, .max_sessions = 8,
	.init = f_init, .fini = f_fini, .discover = nr_discover, .open = f_open, .check = f_check, .write = f_write,
	.activate = f_activate, .confirm = f_confirm, .commit = f_commit, .abort = f_abort, .close = f_close};

static void add_dev(const char *id, const char *component, const char *cls, const char *running, bool revertible)
{
	fdev *d = &F.d[F.n++];
	memset(d, 0, sizeof(*d));
	snprintf(d->id, sizeof(d->id), "%s", id);
	snprintf(d->component, sizeof(d->component), "%s", component);
	snprintf(d->cls, sizeof(d->cls), "%s", cls);
	snprintf(d->running, sizeof(d->running), "%s", running);
	d->revertible = revertible;
}

static fdev *dev(const char *id)
{
	for (size_t i = 0; i < F.n; i++)
		if (!strcmp(F.d[i].id, id))
			return &F.d[i];
	fail_msg("no device %s", id);
	return NULL;
}

/* ---- the world: PKI, config, engine ---- */

static ferry_config cfg;
static ferry_engine *eng;
static pthread_t eng_thread;
static volatile sig_atomic_t eng_stop;
static EVP_PKEY *cmd_key, *man_key;
static STACK_OF(X509) *cmd_chain, *man_chain;
static int dummy_cloud;
static int64_t seq_no;

static void *engine_main(void *arg)
{
	ferry_engine_run(eng, &eng_stop);
	return NULL;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void start_engine(const char *extra_yaml)
{
	char path[256], yaml[4096];
	ferry_status st = {0};

	snprintf(yaml, sizeof(yaml),
		 "gateway_id: " GW "\n"
		 "broker: {host: 127.0.0.1, ca: %s/pki/ca.pem, cert: %s/pki/gw-" GW ".pem, key: %s/pki/gw-" GW ".key}\n"
		 "trust: {command_ca: %s/pki/ca.pem, manifest_ca: %s/pki/ca.pem}\n"
		 "state_dir: %s/state\n"
		 "download: {ca: %s/pki/ca.pem}\n"
		 "plugin_dir: %s/plugins\n"
		 "%s",
		 dir, dir, dir, dir, dir, dir, dir, dir, extra_yaml ? extra_yaml : "");
	snprintf(path, sizeof(path), "%s/ferryd.yaml", dir);
	write_file(path, yaml);
	if (ferry_config_load(path, &cfg, &st))
		fail_msg("config: %s", st.detail);
	if (ferry_engine_new(&cfg, &eng, &st))
		fail_msg("engine: %s", st.detail);
	assert_int_equal(ferry_adapters_add_builtin(ferry_engine_adapters(eng), &cfg, &fake_table), 0);
	assert_int_equal(ferry_adapters_add_builtin(ferry_engine_adapters(eng), &cfg, &nr_table), 0);
	EV = ferry_engine_cloud_events(eng);
	ferry_engine_attach_cloud(eng, (ferry_cloud *)&dummy_cloud);
	eng_stop = 0;
	assert_int_equal(pthread_create(&eng_thread, NULL, engine_main, NULL), 0);
}

static void stop_engine(void)
{
	eng_stop = 1;
	ferry_engine_wake(eng);
	pthread_join(eng_thread, NULL);
	ferry_engine_free(eng);
	ferry_config_free(&cfg);
	eng = NULL;
}

static int setup(void **state)
{
	static const char *const gws[] = {GW};
	char p[256];
	ferry_status st = {0};

	snprintf(dir, sizeof(dir), "/tmp/ferry-engine-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(p, sizeof(p), "%s/pki", dir);
	if (ferry_pki_init(p, gws, 1, &st))
		fail_msg("pki: %s", st.detail);
	snprintf(p, sizeof(p), "%s/pki/cmd-signer.key", dir);
	assert_int_equal(ferry_pki_load_key(p, &cmd_key, &st), FERRY_OK);
	snprintf(p, sizeof(p), "%s/pki/cmd-signer.pem", dir);
	assert_int_equal(ferry_pki_load_certs(p, &cmd_chain, &st), FERRY_OK);
	snprintf(p, sizeof(p), "%s/pki/manifest-signer.key", dir);
	assert_int_equal(ferry_pki_load_key(p, &man_key, &st), FERRY_OK);
	snprintf(p, sizeof(p), "%s/pki/manifest-signer.pem", dir);
	assert_int_equal(ferry_pki_load_certs(p, &man_chain, &st), FERRY_OK);
	return 0;
}

static int teardown(void **state)
{
	char cmd[200];
	EVP_PKEY_free(cmd_key);
	EVP_PKEY_free(man_key);
	sk_X509_pop_free(cmd_chain, X509_free);
	sk_X509_pop_free(man_chain, X509_free);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Each test: fresh state, devices, and an engine; the PKI is shared. */
static int per_test_setup(void **state)
{
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s/state %s/plugins && mkdir -p %s/state %s/plugins", dir, dir, dir, dir);
	assert_int_equal(system(cmd), 0);
	pthread_mutex_lock(&C.lock);
	for (size_t i = 0; i < C.n; i++)
		json_decref(C.p[i].body);
	C.n = 0;
	C.connected = true;
	C.ack = true;
	C.n_unacked = 0;
	pthread_mutex_unlock(&C.lock);
	F.n = 0;
	F.log[0] = '\0';
	F.active = F.max_active = F.holding = 0;
	F.gate_shut = false;
	F.gated = 0;
	return 0;
}

static int per_test_teardown(void **state)
{
	if (eng)
		stop_engine();
	return 0;
}

/* ---- signed input ---- */

static char *sign(const json_t *payload, EVP_PKEY *key, STACK_OF(X509) *chain, const char *typ)
{
	char *text = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS), *out = NULL;
	ferry_status st = {0};
	if (ferry_jws_sign(text, strlen(text), key, chain, typ, &out, &st))
		fail_msg("sign: %s", st.detail);
	free(text);
	return out;
}

/* An image of `size` bytes for a component, put in the store; its digest
 * into sha (hex). */
static void image(const char *name, int64_t size, char sha[65])
{
	unsigned char dig[32];
	char path[512];
	unsigned char *buf = malloc((size_t)size);
	int fd;

	/* every name gives other bytes: images of different updates never share
	 * a digest (the store lets go of an ended update's images) */
	unsigned seed = 0;
	for (const char *c = name; *c; c++)
		seed = seed * 31 + (unsigned char)*c;
	for (int64_t i = 0; i < size; i++)
		buf[i] = (unsigned char)(i * 7 + seed + (seed >> 8) * (uint64_t)i);
	snprintf(path, sizeof(path), "%s/state/store", dir);
	mkdir(path, 0700);
	EVP_Digest(buf, (size_t)size, dig, NULL, EVP_sha256(), NULL);
	ferry_hex32_fmt(dig, sha);
	snprintf(path, sizeof(path), "%s/state/store/%s", dir, sha);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0444);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, (size_t)size), size);
	close(fd);
	free(buf);
}

/* A component for the manifest: NAME ADAPTER CLASS VERSION [after...]. */
static const char *next_format = "raw";

static json_t *component(const char *name, const char *adapter, const char *cls, const char *version,
			 const char *match_slot, const char *after)
{
	static unsigned made;
	char sha[65], seed[160];
	/* never the image of an earlier update: the runner lets go of those
	 * (the store prunes) while the next test step may already write its own */
	snprintf(seed, sizeof(seed), "%s-%s-%s-%u", name, adapter, version, ++made);
	image(seed, 1000, sha);
	json_t *target = json_pack("{s:s,s:s}", "vendor_id", "acme", "class_id", cls);
	if (match_slot)
		json_object_set_new(target, "match", json_pack("{s:s}", "slot", match_slot));
	json_t *c = json_pack("{s:s,s:s,s:s,s:o,s:s,s:I,s:s,s:s}", "name", name, "type", "firmware", "adapter", adapter,
			      "target", target, "version", version, "size", (json_int_t)1000, "sha256", sha, "format",
			      next_format);
	next_format = "raw";
	if (after)
		json_object_set_new(c, "after", json_pack("[s]", after));
	return c;
}

static char *manifest(json_t *components, bool atomic)
{
	json_t *m = json_pack("{s:I,s:I,s:O}", "sequence", (json_int_t)++seq_no, "created", (json_int_t)time(NULL),
			      "components", components);
	if (atomic)
		json_object_set_new(m, "atomic", json_true());
	char *out = sign(m, man_key, man_chain, "ferry-manifest");
	json_decref(m);
	return out;
}

static size_t reply_mark;

static void command(const char *op, const char *update, const char *man, const json_t *components)
{
	static int jti;
	char jt[32];
	int64_t now = time(NULL);
	json_t *p;

	snprintf(jt, sizeof(jt), "t-%d-%d", (int)getpid(), ++jti);
	p = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "iss", "test", "sub", GW, "jti", jt, "iat", (json_int_t)now,
		      "nbf", (json_int_t)(now - 10), "exp", (json_int_t)(now + 600), "op", op);
	if (update)
		json_object_set_new(p, "update_id", json_string(update));
	if (man)
		json_object_set_new(p, "manifest", json_string(man));
	if (components) {
		json_t *links = json_object(), *c;
		size_t i;
		json_array_foreach(components, i, c) {
			char url[128];
			snprintf(url, sizeof(url), "https://127.0.0.1:9/%s", json_string_value(json_object_get(c, "name")));
			json_object_set_new(links, json_string_value(json_object_get(c, "name")), json_string(url));
		}
		json_object_set_new(p, "links", links);
	}
	char *jws = sign(p, cmd_key, cmd_chain, "ferry-cmd");
	json_decref(p);
	pthread_mutex_lock(&C.lock);
	reply_mark = C.n; /* commands are answered in order: its reply comes after this */
	pthread_mutex_unlock(&C.lock);
	EV.command(EV.ctx, jws, strlen(jws));
	free(jws);
}

/* ---- what was published ---- */

static bool is_report(const pub *p, const char *update, const char *comp, const char *device, const char *stage)
{
	const json_t *b = p->body;
	const char *d = json_string_value(json_object_get(b, "device"));
	return !strcmp(p->suffix, "stage") && !strcmp(json_string_value(json_object_get(b, "update_id")), update) &&
	       (!comp || !strcmp(json_string_value(json_object_get(b, "component")), comp)) &&
	       (!device ? !d : (d && !strcmp(d, device))) &&
	       (!stage || !strcmp(json_string_value(json_object_get(b, "stage")), stage));
}

/* Index of the first report that fits, waited for. */
static size_t wait_report(const char *update, const char *comp, const char *device, const char *stage)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += FAILSAFE_S;
	pthread_mutex_lock(&C.lock);
	for (;;) {
		for (size_t i = 0; i < C.n; i++)
			if (is_report(&C.p[i], update, comp, device, stage)) {
				pthread_mutex_unlock(&C.lock);
				return i;
			}
		if (pthread_cond_timedwait(&C.cond, &C.lock, &until)) {
			pthread_mutex_unlock(&C.lock);
			fail_msg("no %s report for %s/%s on %s", stage, update, comp, device ? device : "-");
		}
	}
}

/* The reply to the last command sent, waited for: "accepted" or the reason. */
static const char *wait_reply(const char *update, const char *op)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += FAILSAFE_S;
	pthread_mutex_lock(&C.lock);
	for (;;) {
		for (size_t i = reply_mark; i < C.n; i++)
			if (!strcmp(C.p[i].suffix, "reply") &&
			    !strcmp(json_string_value(json_object_get(C.p[i].body, "op")) ?: "", op) &&
			    !strcmp(json_string_value(json_object_get(C.p[i].body, "update_id")) ?: "", update)) {
				const char *r = json_string_value(json_object_get(C.p[i].body, "result"));
				if (strcmp(r, "accepted"))
					r = json_string_value(json_object_get(C.p[i].body, "reason"));
				pthread_mutex_unlock(&C.lock);
				return r;
			}
		if (pthread_cond_timedwait(&C.cond, &C.lock, &until)) {
			pthread_mutex_unlock(&C.lock);
			fail_msg("no reply to %s %s", op, update);
		}
	}
}

static const char *reply_detail(const char *update, const char *op)
{
	const char *d = NULL;
	pthread_mutex_lock(&C.lock);
	for (size_t i = C.n; i-- > 0 && !d;)
		if (!strcmp(C.p[i].suffix, "reply") &&
		    !strcmp(json_string_value(json_object_get(C.p[i].body, "op")) ?: "", op) &&
		    !strcmp(json_string_value(json_object_get(C.p[i].body, "update_id")) ?: "", update))
			d = json_string_value(json_object_get(C.p[i].body, "detail"));
	pthread_mutex_unlock(&C.lock);
	return d ? d : "";
}

static size_t count(const char *update, const char *comp, const char *device, const char *stage)
{
	size_t n = 0;
	pthread_mutex_lock(&C.lock);
	for (size_t i = 0; i < C.n; i++)
		n += is_report(&C.p[i], update, comp, device, stage);
	pthread_mutex_unlock(&C.lock);
	return n;
}

/* The outcome of one device step, waited for. */
static const char *outcome(const char *update, const char *comp, const char *device)
{
	static const char *const finals[] = {"installed", "already_installed", "failed", "rolled_back", "cancelled"};
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += FAILSAFE_S;
	pthread_mutex_lock(&C.lock);
	for (;;) {
		for (size_t i = 0; i < C.n; i++)
			for (size_t k = 0; k < 5; k++)
				if (is_report(&C.p[i], update, comp, device, finals[k])) {
					pthread_mutex_unlock(&C.lock);
					return finals[k];
				}
		if (pthread_cond_timedwait(&C.cond, &C.lock, &until)) {
			pthread_mutex_unlock(&C.lock);
			fail_msg("no outcome for %s/%s on %s", update, comp, device);
		}
	}
}

/* Until n reports fit. */
static void wait_count(const char *update, const char *comp, const char *device, const char *stage, size_t n)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += FAILSAFE_S;
	pthread_mutex_lock(&C.lock);
	for (;;) {
		size_t k = 0;
		for (size_t i = 0; i < C.n; i++)
			k += is_report(&C.p[i], update, comp, device, stage);
		if (k >= n)
			break;
		if (pthread_cond_timedwait(&C.cond, &C.lock, &until)) {
			pthread_mutex_unlock(&C.lock);
			fail_msg("fewer than %zu %s reports for %s/%s", n, stage, update, comp);
		}
	}
	pthread_mutex_unlock(&C.lock);
}

static const json_t *report_at(size_t i)
{
	pthread_mutex_lock(&C.lock);
	const json_t *b = C.p[i].body;
	pthread_mutex_unlock(&C.lock);
	return b;
}

/* Sequence numbers of one update rise by one from 1, each once. */
static void assert_seq_whole(const char *update)
{
	json_int_t want = 1;
	pthread_mutex_lock(&C.lock);
	for (size_t i = 0; i < C.n; i++)
		if (!strcmp(C.p[i].suffix, "stage") &&
		    !strcmp(json_string_value(json_object_get(C.p[i].body, "update_id")), update))
			assert_int_equal(json_integer_value(json_object_get(C.p[i].body, "seq")), want++);
	pthread_mutex_unlock(&C.lock);
}

/* The update's state in the journal (a second handle on the file). */
static ferry_ustate state_of(const char *update)
{
	char path[256];
	ferry_journal *j;
	ferry_jupdate u;
	ferry_status st = {0};
	snprintf(path, sizeof(path), "%s/state/journal.db", dir);
	assert_int_equal(ferry_journal_open(path, &j, &st), FERRY_OK);
	/* REFUSED stands for "not admitted yet": the command is still on its way */
	ferry_ustate s = ferry_journal_update_get(j, update, &u, &st) ? FERRY_U_REFUSED : u.state;
	ferry_jupdate_free(&u);
	ferry_journal_close(j);
	return s;
}

/* Wait until the update has ended in the journal: its last outcome report
 * is committed before the state moves, so poll the state on each report. */
static ferry_ustate wait_end(const char *update)
{
	for (int i = 0; i < FAILSAFE_S * 100; i++) {
		ferry_ustate s = state_of(update);
		if (ferry_ustate_final(s) && s != FERRY_U_REFUSED)
			return s;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	fail_msg("update %s did not end", update);
	return FERRY_U_FAILED;
}

/* ---- the tests ---- */

/* request, download, check, install, one command each; one component to
 * three devices; each stage of the device steps carries its device. */
static void test_staged_fan_out(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	add_dev("w3", "fw", "widget", "1.0.0", true);
	add_dev("g1", "gadget-fw", "gadget", "1.0.0", true); /* another class: not taken */
	start_engine(NULL);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "1.1.0", NULL, NULL));
	char *m = manifest(comps, false);

	command("update.request", "u1", m, NULL);
	assert_string_equal(wait_reply("u1", "update.request"), "accepted");
	const json_t *allowed = report_at(wait_report("u1", "fw", NULL, "allowed"));
	assert_int_equal(json_array_size(json_object_get(allowed, "devices")), 3);
	assert_string_equal(json_string_value(json_array_get(json_object_get(allowed, "devices"), 1)), "w2");
	command("update.download", "u1", NULL, comps);
	assert_string_equal(wait_reply("u1", "update.download"), "accepted");
	wait_report("u1", "fw", NULL, "downloaded");
	/* the report that ends a phase comes with the state the next command needs */
	command("update.check", "u1", NULL, NULL);
	assert_string_equal(wait_reply("u1", "update.check"), "accepted");
	wait_report("u1", "fw", NULL, "verified");
	assert_int_equal(count("u1", NULL, "g1", NULL), 0);
	command("update.install", "u1", NULL, NULL);
	assert_string_equal(wait_reply("u1", "update.install"), "accepted");
	for (int i = 1; i <= 3; i++) {
		char d[8];
		snprintf(d, sizeof(d), "w%d", i);
		assert_string_equal(outcome("u1", "fw", d), "installed");
		assert_true(count("u1", "fw", d, "installing") >= 1);
		assert_int_equal(count("u1", "fw", d, "activating"), 1);
		assert_string_equal(dev(d)->running, "1.1.0");
	}
	assert_int_equal(wait_end("u1"), FERRY_U_DONE);
	assert_string_equal(dev("g1")->running, "1.0.0");
	assert_int_equal(count("u1", "fw", NULL, "installed"), 0); /* outcomes name their device */
	assert_seq_whole("u1");
	free(m);
	json_decref(comps);
}

/* Two devices of one class on different versions: one has it already, the
 * other gets it; `match` picks one of several. */
static void test_already_and_match(void **state)
{
	add_dev("w1", "fw", "widget", "1.1.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	add_dev("w3", "fw", "widget", "1.0.0", true);
	start_engine(NULL);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "1.1.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.deploy", "u2", m, comps);
	assert_string_equal(outcome("u2", "fw", "w1"), "already_installed");
	assert_string_equal(outcome("u2", "fw", "w2"), "installed");
	assert_string_equal(outcome("u2", "fw", "w3"), "installed");
	assert_null(strstr(F.log, "w1:open"));
	assert_int_equal(wait_end("u2"), FERRY_U_DONE);
	free(m);
	json_decref(comps);

	comps = json_pack("[o]", component("fw", "fake", "widget", "1.2.0", "w3", NULL));
	m = manifest(comps, false);
	F.log[0] = '\0';
	command("update.deploy", "u3", m, comps);
	assert_string_equal(outcome("u3", "fw", "w3"), "installed");
	assert_int_equal(wait_end("u3"), FERRY_U_DONE);
	assert_int_equal(count("u3", "fw", "w1", NULL) + count("u3", "fw", "w2", NULL), 0);
	assert_string_equal(dev("w2")->running, "1.1.0");
	assert_string_equal(dev("w3")->running, "1.2.0");
	free(m);
	json_decref(comps);

	/* a match no device has: refused at once, nothing changes */
	comps = json_pack("[o]", component("fw", "fake", "widget", "1.3.0", "w9", NULL));
	m = manifest(comps, false);
	command("update.deploy", "u4", m, comps);
	assert_string_equal(wait_reply("u4", "update.deploy"), "no_matching_device");
	assert_non_null(strstr(reply_detail("u4", "update.deploy"), "3 known"));
	assert_int_equal(count("u4", NULL, NULL, NULL) + count("u4", NULL, "w1", NULL), 0);
	free(m);
	json_decref(comps);
}

/* Steps on different devices run at the same time, within the limits. */
static void test_parallel_limit(void **state)
{
	for (int i = 0; i < 6; i++) {
		char id[8];
		snprintf(id, sizeof(id), "w%d", i);
		add_dev(id, "fw", "widget", "1.0.0", true);
		F.d[i].hold_write = true;
	}
	start_engine("install: {parallel: 4}\n");
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.deploy", "u5", m, comps);
	/* four writes hold at once: as many as install.parallel, no more */
	pthread_mutex_lock(&F.lock);
	while (F.holding < 4)
		pthread_cond_wait(&F.cond, &F.lock);
	assert_int_equal(F.active, 4);
	pthread_mutex_unlock(&F.lock);
	command("update.cancel", "u5", NULL, NULL);
	assert_string_equal(wait_reply("u5", "update.cancel"), "accepted");
	assert_int_equal(wait_end("u5"), FERRY_U_CANCELLED);
	for (int i = 0; i < 6; i++) {
		char id[8];
		snprintf(id, sizeof(id), "w%d", i);
		assert_string_equal(outcome("u5", "fw", id), "cancelled");
		assert_string_equal(dev(id)->running, "1.0.0");
	}
	assert_int_equal(F.max_active, 4);
	assert_int_equal(F.active, 0);
	free(m);
	json_decref(comps);
}

/* A cancel while the update is queued behind another one: it ends without
 * ever touching a device. */
static void test_cancel_queued(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("g1", "gfw", "gadget", "1.0.0", true);
	dev("w1")->hold_write = true;
	start_engine("updates: {parallel: 1}\n"); /* u7 queues behind u6 */
	json_t *c1 = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	json_t *c2 = json_pack("[o]", component("gfw", "fake", "gadget", "2.0.0", NULL, NULL));
	char *m1 = manifest(c1, false), *m2 = manifest(c2, false);
	command("update.deploy", "u6", m1, c1);
	pthread_mutex_lock(&F.lock);
	while (F.holding < 1)
		pthread_cond_wait(&F.cond, &F.lock);
	pthread_mutex_unlock(&F.lock);
	command("update.deploy", "u7", m2, c2);
	assert_string_equal(wait_reply("u7", "update.deploy"), "accepted");
	command("update.cancel", "u7", NULL, NULL);
	assert_string_equal(wait_reply("u7", "update.cancel"), "accepted");
	command("update.cancel", "u6", NULL, NULL);
	assert_string_equal(outcome("u6", "fw", "w1"), "cancelled");
	assert_string_equal(outcome("u7", "gfw", "g1"), "cancelled");
	assert_int_equal(wait_end("u7"), FERRY_U_CANCELLED);
	assert_null(strstr(F.log, "g1:"));
	assert_int_equal(count("u7", "gfw", NULL, "downloaded"), 0);
	/* ended: a second cancel is refused */
	command("update.cancel", "u7", NULL, NULL);
	assert_string_equal(wait_reply("u7", "update.cancel"), "wrong_stage");
	free(m1);
	free(m2);
	json_decref(c1);
	json_decref(c2);
}

/* A slow update holds up nobody: while one waits in the middle of a push,
 * another update to another device downloads, checks and installs. */
static void test_slow_update_holds_nobody(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("g1", "gfw", "gadget", "1.0.0", true);
	dev("w1")->hold_write = true;
	start_engine(NULL);
	json_t *c1 = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	json_t *c2 = json_pack("[o]", component("gfw", "fake", "gadget", "2.0.0", NULL, NULL));
	char *m1 = manifest(c1, false), *m2 = manifest(c2, false);
	command("update.deploy", "u-slow", m1, c1);
	pthread_mutex_lock(&F.lock);
	while (F.holding < 1)
		pthread_cond_wait(&F.cond, &F.lock);
	pthread_mutex_unlock(&F.lock);
	command("update.deploy", "u-quick", m2, c2);
	assert_int_equal(wait_end("u-quick"), FERRY_U_DONE);
	assert_string_equal(outcome("u-quick", "gfw", "g1"), "installed");
	pthread_mutex_lock(&F.lock);
	assert_int_equal(F.holding, 1); /* still in the middle of its push */
	pthread_mutex_unlock(&F.lock);
	assert_int_equal(state_of("u-slow"), FERRY_U_INSTALLING);
	command("update.cancel", "u-slow", NULL, NULL);
	assert_string_equal(outcome("u-slow", "fw", "w1"), "cancelled");
	free(m1);
	free(m2);
	json_decref(c1);
	json_decref(c2);
}

/* Two updates for one device: the second touches it only once the first
 * has let go of it, whatever runs in parallel. */
static void test_one_device_one_update(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	dev("w1")->hold_write = true;
	start_engine(NULL);
	json_t *c1 = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	json_t *c2 = json_pack("[o]", component("fw", "fake", "widget", "3.0.0", NULL, NULL));
	char *m1 = manifest(c1, false), *m2 = manifest(c2, false);
	command("update.deploy", "u-first", m1, c1);
	pthread_mutex_lock(&F.lock);
	while (F.holding < 1)
		pthread_cond_wait(&F.cond, &F.lock);
	pthread_mutex_unlock(&F.lock);
	dev("w1")->hold_write = false; /* the write under way still waits */
	command("update.deploy", "u-second", m2, c2);
	wait_report("u-second", "fw", NULL, "downloaded");
	assert_int_equal(count("u-second", "fw", "w1", "installing"), 0);
	command("update.cancel", "u-first", NULL, NULL);
	size_t first_end = wait_report("u-first", "fw", "w1", "cancelled");
	size_t second_push = wait_report("u-second", "fw", "w1", "installing");
	assert_true(second_push > first_end);
	assert_int_equal(wait_end("u-second"), FERRY_U_DONE);
	assert_string_equal(outcome("u-second", "fw", "w1"), "installed");
	free(m1);
	free(m2);
	json_decref(c1);
	json_decref(c2);
}

/* Reports the broker did not acknowledge stay in the outbox and go out
 * again, with the same seq, at the next connection. */
static void test_lost_ack(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	start_engine(NULL);
	pthread_mutex_lock(&C.lock);
	C.ack = false;
	pthread_mutex_unlock(&C.lock);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.deploy", "u8", m, comps);
	size_t first = wait_report("u8", "fw", "w1", "installed");
	json_int_t seq = json_integer_value(json_object_get(report_at(first), "seq"));
	assert_int_equal(wait_end("u8"), FERRY_U_DONE);
	pthread_mutex_lock(&C.lock);
	C.ack = true;
	pthread_mutex_unlock(&C.lock);
	EV.connected(EV.ctx); /* reconnected: the outbox goes out again */
	wait_count("u8", "fw", "w1", "installed", 2);
	/* every copy has the same seq, so the cloud can drop the duplicate */
	pthread_mutex_lock(&C.lock);
	for (size_t i = 0; i < C.n; i++)
		if (is_report(&C.p[i], "u8", "fw", "w1", "installed"))
			assert_int_equal(json_integer_value(json_object_get(C.p[i].body, "seq")), seq);
	pthread_mutex_unlock(&C.lock);
	/* events are handled in order: once a command sent after the flush is
	 * answered, so is every acknowledgement the flush produced */
	command("inventory.refresh", NULL, NULL, NULL);
	wait_reply("", "inventory.refresh");
	command("inventory.refresh", NULL, NULL, NULL);
	wait_reply("", "inventory.refresh");
	pthread_mutex_lock(&C.lock);
	size_t before = C.n;
	pthread_mutex_unlock(&C.lock);
	/* acknowledged now: another connection sends nothing of u8 again */
	EV.connected(EV.ctx);
	command("inventory.refresh", NULL, NULL, NULL);
	wait_reply("", "inventory.refresh");
	pthread_mutex_lock(&C.lock);
	for (size_t i = before; i < C.n; i++)
		assert_false(!strcmp(C.p[i].suffix, "stage"));
	pthread_mutex_unlock(&C.lock);
	/* a cloud that lost reports asks where the update stands */
	command("update.status", "u8", NULL, NULL);
	assert_string_equal(wait_reply("u8", "update.status"), "accepted");
	pthread_mutex_lock(&C.lock);
	json_t *status = NULL;
	for (size_t i = reply_mark; i < C.n; i++)
		if (!strcmp(C.p[i].suffix, "reply") &&
		    !strcmp(json_string_value(json_object_get(C.p[i].body, "op")) ?: "", "update.status"))
			status = json_object_get(C.p[i].body, "status");
	assert_non_null(status);
	assert_string_equal(json_string_value(json_object_get(status, "state")), "done");
	json_t *c0 = json_array_get(json_object_get(status, "components"), 0);
	assert_string_equal(json_string_value(json_object_get(c0, "name")), "fw");
	json_t *s0 = json_array_get(json_object_get(c0, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "device")), "w1");
	assert_string_equal(json_string_value(json_object_get(s0, "stage")), "installed");
	pthread_mutex_unlock(&C.lock);
	command("update.status", "nope", NULL, NULL);
	assert_string_equal(wait_reply("nope", "update.status"), "unknown_update");
	free(m);
	json_decref(comps);
}

/* All or nothing, success: every device runs on trial before any commit. */
static void test_atomic_success(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	add_dev("w3", "fw", "widget", "1.0.0", true);
	add_dev("r1", "rfw", "radio", "1.0.0", false);
	start_engine(NULL);
	json_t *comps = json_pack("[oo]", component("rfw", "fake-nr", "radio", "3.0.0", NULL, NULL),
				  component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, true);
	command("update.deploy", "u9", m, comps);
	for (int i = 1; i <= 3; i++) {
		char d[8];
		snprintf(d, sizeof(d), "w%d", i);
		assert_string_equal(outcome("u9", "fw", d), "installed");
		assert_string_equal(dev(d)->running, "2.0.0");
	}
	assert_string_equal(outcome("u9", "rfw", "r1"), "installed");
	assert_int_equal(wait_end("u9"), FERRY_U_DONE);
	/* every trial came before the device that cannot revert was touched, and
	 * before any commit */
	size_t last_trial = 0;
	for (int i = 1; i <= 3; i++) {
		char d[8];
		snprintf(d, sizeof(d), "w%d", i);
		size_t t = wait_report("u9", "fw", d, "trial");
		assert_string_equal(json_string_value(json_object_get(report_at(t), "version")), "2.0.0");
		if (t > last_trial)
			last_trial = t;
	}
	assert_true(wait_report("u9", "rfw", "r1", "installing") > last_trial);
	for (int i = 1; i <= 3; i++) {
		char d[8];
		snprintf(d, sizeof(d), "w%d", i);
		assert_true(wait_report("u9", "fw", d, "installed") > wait_report("u9", "rfw", "r1", "installed"));
	}
	const char *r1 = strstr(F.log, "r1:activate");
	assert_non_null(r1);
	assert_null(strstr(r1, ":activate;w")); /* no widget activated after the radio */
	assert_seq_whole("u9");
	free(m);
	json_decref(comps);
}

/* All or nothing, a failure at each position: the device that fails is
 * rolled back with its own reason, every other activated device is put
 * back, the rest never start, and every device runs its old image. */
static void test_atomic_failure_each_position(void **state)
{
	for (int pos = 1; pos <= 3; pos++) {
		char uid[8], bad[8];
		per_test_teardown(state);
		per_test_setup(state);
		add_dev("w1", "fw", "widget", "1.0.0", true);
		add_dev("w2", "fw", "widget", "1.0.0", true);
		add_dev("w3", "fw", "widget", "1.0.0", true);
		snprintf(bad, sizeof(bad), "w%d", pos);
		dev(bad)->reverts_itself = true;
		start_engine("install: {parallel: 1}\n"); /* one at a time: the position is exact */
		json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
		char *m = manifest(comps, true);
		snprintf(uid, sizeof(uid), "ua%d", pos);
		command("update.deploy", uid, m, comps);
		assert_int_equal(wait_end(uid), FERRY_U_FAILED);
		for (int i = 1; i <= 3; i++) {
			char d[8];
			snprintf(d, sizeof(d), "w%d", i);
			const char *o = outcome(uid, "fw", d);
			if (i == pos) {
				assert_string_equal(o, "rolled_back");
				const json_t *r = report_at(wait_report(uid, "fw", d, "rolled_back"));
				assert_string_equal(json_string_value(json_object_get(r, "reason")), "version_mismatch");
			} else if (i < pos) {
				assert_string_equal(o, "rolled_back"); /* it was on trial: put back */
				const json_t *r = report_at(wait_report(uid, "fw", d, "rolled_back"));
				assert_non_null(strstr(json_string_value(json_object_get(r, "detail")), bad));
			} else {
				assert_string_equal(o, "cancelled"); /* never started */
				assert_int_equal(count(uid, "fw", d, "installing"), 0);
			}
			assert_string_equal(dev(d)->running, "1.0.0");
			assert_string_equal(dev(d)->trial, "");
			assert_int_equal(count(uid, "fw", d, "installed"), 0);
		}
		assert_null(strstr(F.log, "commit"));
		assert_seq_whole(uid);
		free(m);
		json_decref(comps);
	}
}

/* rolled_back only when the device was seen back on its old image: an abort
 * that cannot reach the device makes it failed, image unknown. */
static void test_rolled_back_or_failed(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	dev("w1")->fail_at = OP_CONFIRM;
	dev("w2")->fail_at = OP_CONFIRM;
	dev("w2")->abort_fails = true;
	start_engine(NULL);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.deploy", "u10", m, comps);
	assert_string_equal(outcome("u10", "fw", "w1"), "rolled_back");
	assert_string_equal(outcome("u10", "fw", "w2"), "failed");
	const json_t *r = report_at(wait_report("u10", "fw", "w2", "failed"));
	assert_non_null(strstr(json_string_value(json_object_get(r, "detail")), "unknown"));
	assert_non_null(strstr(json_string_value(json_object_get(r, "detail")), "does not answer"));
	assert_int_equal(wait_end("u10"), FERRY_U_FAILED);
	assert_string_equal(dev("w1")->running, "1.0.0");
	assert_string_equal(dev("w1")->trial, "");
	free(m);
	json_decref(comps);
}

/* A commit refused twice is retried and taken; one refused every time ends
 * the step failed, saying what the device runs. */
static void test_commit_retried(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	dev("w1")->commit_refusals = 2;
	dev("w2")->commit_refusals = 100;
	start_engine(NULL);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, true);
	command("update.deploy", "u11", m, comps);
	assert_string_equal(outcome("u11", "fw", "w1"), "installed");
	assert_string_equal(outcome("u11", "fw", "w2"), "failed");
	const json_t *r = report_at(wait_report("u11", "fw", "w2", "failed"));
	assert_non_null(strstr(json_string_value(json_object_get(r, "detail")), "runs 2.0.0 on trial"));
	assert_int_equal(wait_end("u11"), FERRY_U_FAILED);
	assert_string_equal(dev("w1")->running, "2.0.0");
	free(m);
	json_decref(comps);
}

/* An atomic manifest with two devices that cannot revert is refused. */
static void test_atomic_refused(void **state)
{
	add_dev("r1", "rfw", "radio", "1.0.0", false);
	add_dev("r2", "rfw", "radio", "1.0.0", false);
	start_engine(NULL);
	json_t *comps = json_pack("[o]", component("rfw", "fake-nr", "radio", "3.0.0", NULL, NULL));
	char *m = manifest(comps, true);
	command("update.deploy", "u12", m, comps);
	assert_string_equal(wait_reply("u12", "update.deploy"), "unsupported");
	assert_non_null(strstr(reply_detail("u12", "update.deploy"), "at most one"));
	free(m);
	json_decref(comps);
	/* without atomic it is taken */
	comps = json_pack("[o]", component("rfw", "fake-nr", "radio", "3.0.0", NULL, NULL));
	m = manifest(comps, false);
	command("update.deploy", "u13", m, comps);
	assert_string_equal(outcome("u13", "rfw", "r1"), "installed");
	assert_string_equal(outcome("u13", "rfw", "r2"), "installed");
	free(m);
	json_decref(comps);
}

/* Order: on one device the listed order; across devices only `after`; a
 * step after one that failed is never started. */
static void test_order(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("g1", "gfw", "gadget", "1.0.0", true);
	dev("w1")->fail_at = OP_WRITE;
	start_engine(NULL);
	json_t *comps = json_pack("[oo]", component("fw", "fake", "widget", "2.0.0", NULL, NULL),
				  component("gfw", "fake", "gadget", "2.0.0", NULL, "fw"));
	char *m = manifest(comps, false);
	command("update.deploy", "u14", m, comps);
	assert_string_equal(outcome("u14", "fw", "w1"), "failed");
	assert_string_equal(outcome("u14", "gfw", "g1"), "cancelled");
	const json_t *r = report_at(wait_report("u14", "gfw", "g1", "cancelled"));
	assert_non_null(strstr(json_string_value(json_object_get(r, "detail")), "fw on w1"));
	assert_null(strstr(F.log, "g1:write")); /* checked, never pushed */
	assert_int_equal(wait_end("u14"), FERRY_U_FAILED);
	free(m);
	json_decref(comps);
}

/* An ABI 1 plugin loads, installs, and counts as unable to revert. */
static void test_abi1_plugin(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "mkdir -p %s/legacy && cp %s %s/plugins/", dir, FERRY_ABI1_PLUGIN, dir);
	assert_int_equal(system(cmd), 0);
	add_dev("w1", "fw", "widget", "1.0.0", true);
	char extra[256];
	snprintf(extra, sizeof(extra), "adapters: {legacy: {dir: %s/legacy, component: lfw}}\n", dir);
	start_engine(extra);
	json_t *comps = json_pack("[o]", component("lfw", "legacy", "legacy", "1.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.deploy", "u15", m, comps);
	assert_string_equal(outcome("u15", "lfw", "legacy-0"), "installed");
	free(m);
	json_decref(comps);
	/* atomic: one ABI 1 device is the one that cannot revert, activated last */
	comps = json_pack("[oo]", component("lfw", "legacy", "legacy", "1.1.0", NULL, NULL),
			  component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	m = manifest(comps, true);
	command("update.deploy", "u16", m, comps);
	assert_string_equal(outcome("u16", "lfw", "legacy-0"), "installed");
	assert_string_equal(outcome("u16", "fw", "w1"), "installed");
	assert_true(wait_report("u16", "lfw", "legacy-0", "installing") > wait_report("u16", "fw", "w1", "trial"));
	free(m);
	json_decref(comps);
}

/* What a plugin hands back is checked: a number that is no reason code is
 * adapter_error naming it; a detail without a NUL or with control bytes is
 * cut and cleaned. */
static void test_plugin_output_checked(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	dev("w1")->bad_code = 99;
	dev("w2")->junk_detail = true;
	start_engine(NULL);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.deploy", "u17", m, comps);
	assert_string_equal(outcome("u17", "fw", "w1"), "failed");
	assert_string_equal(outcome("u17", "fw", "w2"), "failed");
	const json_t *r1 = report_at(wait_report("u17", "fw", "w1", "failed"));
	assert_string_equal(json_string_value(json_object_get(r1, "reason")), "adapter_error");
	assert_non_null(strstr(json_string_value(json_object_get(r1, "detail")), "write returned 99"));
	const json_t *r2 = report_at(wait_report("u17", "fw", "w2", "failed"));
	const char *d = json_string_value(json_object_get(r2, "detail"));
	assert_string_equal(json_string_value(json_object_get(r2, "reason")), "install_failed");
	assert_true(strlen(d) < FERRY_ADAPTER_DETAIL_MAX);
	assert_true(strlen(d) > 200);
	assert_null(strchr(d, '\n'));
	for (const char *p = d; *p; p++)
		assert_true(*p >= 0x20 && *p < 0x7f);
	free(m);
	json_decref(comps);
}

/* Declared link security: a word the host does not know counts as
 * unauthenticated; a component that needs more is refused for that device
 * before anything moves, and an image encrypted for the device goes. */
static void test_link_declared(void **state)
{
	add_dev("l1", "lfw", "lamp", "1.0.0", true);
	add_dev("l2", "lfw", "lamp", "1.0.0", true);
	snprintf(dev("l1")->link, sizeof(dev("l1")->link), "quantum");
	snprintf(dev("l2")->link, sizeof(dev("l2")->link), "physical");
	start_engine(NULL);
	json_t *c = component("lfw", "fake", "lamp", "2.0.0", NULL, NULL);
	json_object_set_new(c, "min_link", json_string("bonded-encrypted"));
	json_t *comps = json_pack("[o]", c);
	char *m = manifest(comps, false);
	command("update.deploy", "u-l1", m, comps);
	assert_string_equal(wait_reply("u-l1", "update.deploy"), "link_insecure");
	assert_non_null(strstr(reply_detail("u-l1", "update.deploy"), "the link to l1 is unauthenticated"));
	assert_null(strstr(F.log, "open"));
	free(m);
	json_decref(comps);
	/* the one that is a wire alone: taken */
	c = component("lfw", "fake", "lamp", "2.0.0", "l2", NULL);
	json_object_set_new(c, "min_link", json_string("physical"));
	comps = json_pack("[o]", c);
	m = manifest(comps, false);
	command("update.deploy", "u-l2", m, comps);
	assert_string_equal(outcome("u-l2", "lfw", "l2"), "installed");
	free(m);
	json_decref(comps);
	/* encrypted for the device: over any link */
	c = component("lfw", "fake", "lamp", "3.0.0", NULL, NULL);
	json_object_set_new(c, "min_link", json_string("physical"));
	json_object_set_new(c, "encrypted_for_device", json_true());
	comps = json_pack("[o]", c);
	m = manifest(comps, false);
	command("update.deploy", "u-l3", m, comps);
	assert_string_equal(outcome("u-l3", "lfw", "l1"), "installed");
	free(m);
	json_decref(comps);
}

/* self in an all-or-nothing update: the new file runs on trial and is put
 * back, with its version, when another device fails; kept when all came up. */
static void test_self_trial(void **state)
{
	char extra[512], path[256], cmd[600], buf[64] = "";
	FILE *f;

	/* as an activation cut between its trial file and keeping the old file
	 * left it: the old file in place, no copy of it yet */
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p %s/target && printf old > %s/target/app.conf && printf '\\nfile\\n1.0.0\\n' > "
		 "%s/target/app.conf.ferry-trial",
		 dir, dir, dir);
	assert_int_equal(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/target/app.conf", dir);
	snprintf(extra, sizeof(extra),
		 "adapters: {self: {vendor_id: acme, class_id: gateway, files: [{name: cfg, path: %s}]}}\n", path);
	add_dev("w1", "fw", "widget", "1.0.0", true);
	dev("w1")->reverts_itself = true;
	start_engine(extra);
	next_format = "file";
	json_t *cfg_c = component("cfg", "self", "gateway", "1.0.0", NULL, NULL); /* in this order */
	/* after: the file runs on trial before the widget fails */
	json_t *comps = json_pack("[oo]", cfg_c, component("fw", "fake", "widget", "2.0.0", NULL, "cfg"));
	char *m = manifest(comps, true);
	command("update.deploy", "u18", m, comps);
	assert_int_equal(wait_end("u18"), FERRY_U_FAILED);
	assert_string_equal(outcome("u18", "cfg", "self"), "rolled_back");
	assert_string_equal(outcome("u18", "fw", "w1"), "rolled_back");
	assert_non_null(f = fopen(path, "r"));
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "old");
	snprintf(cmd, sizeof(cmd), "test ! -e %s.ferry-trial && test ! -e %s.ferry-previous && test ! -e %s.ferry-version",
		 path, path, path);
	assert_int_equal(system(cmd), 0);
	free(m);
	json_decref(comps);

	dev("w1")->reverts_itself = false;
	next_format = "file";
	cfg_c = component("cfg", "self", "gateway", "1.0.0", NULL, NULL);
	comps = json_pack("[oo]", cfg_c, component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	m = manifest(comps, true);
	command("update.deploy", "u19", m, comps);
	assert_int_equal(wait_end("u19"), FERRY_U_DONE);
	assert_string_equal(outcome("u19", "cfg", "self"), "installed");
	snprintf(cmd, sizeof(cmd), "test ! -e %s.ferry-trial && test ! -e %s.ferry-previous && grep -qx 1.0.0 %s.ferry-version",
		 path, path, path);
	assert_int_equal(system(cmd), 0);
	free(m);
	json_decref(comps);
}

/* The journal as a crash left it: update `id`, all or nothing, installing,
 * with component fw verified and its steps at the given stages (NULL: not
 * started).  The manifest is signed as the cloud would. */
static void crafted(const char *id, const char *m, const char *const *devs, const ferry_stage *stages, size_t n,
		    bool cancel)
{
	static const char *const names[] = {"fw"};
	char path[256];
	ferry_journal *j;
	ferry_status st = {0};
	ferry_jstep_new steps[DEVS_MAX];
	ferry_jupdate u = {.state = FERRY_U_ALLOWED, .sequence = seq_no, .created = time(NULL), .deploy = true,
			   .atomic = true, .manifest = (char *)m};
	char *body;
	int64_t seq;

	snprintf(u.id, sizeof(u.id), "%s", id);
	for (size_t i = 0; i < n; i++)
		steps[i] = (ferry_jstep_new){.component = "fw", .device = devs[i], .adapter = "fake"};
	snprintf(path, sizeof(path), "%s/state/journal.db", dir);
	assert_int_equal(ferry_journal_open(path, &j, &st), FERRY_OK);
	assert_int_equal(ferry_journal_update_add(j, &u, names, NULL, NULL, NULL, 1, NULL, 0, steps, n, &st), FERRY_OK);
	static const ferry_stage comp[] = {FERRY_S_ALLOWED, FERRY_S_DOWNLOADED, FERRY_S_VERIFYING, FERRY_S_VERIFIED};
	for (size_t k = 0; k < 4; k++) {
		ferry_transition t = {.update_id = id, .component = "fw", .stage = comp[k], .total = -1, .ts_ms = 1000};
		assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
		free(body);
	}
	for (ferry_ustate s2 = FERRY_U_ALLOWED; s2 < FERRY_U_INSTALLING; s2++)
		assert_int_equal(ferry_journal_update_move(j, id, s2, s2 + 1, &st), FERRY_OK);
	for (size_t i = 0; i < n; i++) {
		if (stages[i] == FERRY_S_NONE)
			continue;
		ferry_transition t = {.update_id = id, .component = "fw", .device = devs[i], .stage = FERRY_S_INSTALLING,
				      .total = -1, .ts_ms = 1000};
		assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
		free(body);
		if (stages[i] != FERRY_S_INSTALLING) {
			t.stage = stages[i];
			t.reason = "install_failed";
			t.detail = "crafted";
			assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
			free(body);
		}
	}
	if (cancel)
		assert_int_equal(ferry_journal_cancel_request(j, id, &st), FERRY_OK);
	ferry_journal_close(j);
}

/* A step of an all-or-nothing update failed, and ferryd stopped before the
 * update went back: after the restart it goes back, whatever the other
 * devices could still do -- it never commits. */
static void test_atomic_resume_after_failure(void **state)
{
	static const char *const devs[] = {"w1", "w2", "w3"};
	static const ferry_stage stages[] = {FERRY_S_FAILED, FERRY_S_INSTALLING, FERRY_S_NONE};
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	add_dev("w3", "fw", "widget", "1.0.0", true);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, true);
	crafted("u20", m, devs, stages, 3, false);
	start_engine(NULL);
	assert_int_equal(wait_end("u20"), FERRY_U_FAILED);
	assert_string_equal(outcome("u20", "fw", "w2"), "cancelled");
	assert_string_equal(outcome("u20", "fw", "w3"), "cancelled");
	assert_null(strstr(F.log, ":write"));
	assert_null(strstr(F.log, ":commit"));
	free(m);
	json_decref(comps);
}

/* A cancel accepted before a restart is carried out after it. */
static void test_cancel_survives_restart(void **state)
{
	static const char *const devs[] = {"w1", "w2"};
	static const ferry_stage stages[] = {FERRY_S_INSTALLING, FERRY_S_NONE};
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "fw", "widget", "1.0.0", true);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, true);
	crafted("u21", m, devs, stages, 2, true);
	start_engine(NULL);
	assert_int_equal(wait_end("u21"), FERRY_U_CANCELLED);
	assert_string_equal(outcome("u21", "fw", "w1"), "cancelled");
	assert_string_equal(outcome("u21", "fw", "w2"), "cancelled");
	assert_null(strstr(F.log, ":write"));
	free(m);
	json_decref(comps);
}

/* A deploy killed after it was allowed and its links kept, before its
 * download began: after the restart it goes on by itself.  One killed
 * before its links were kept waits for update.download. */
static void test_deploy_resumes_from_allowed(void **state)
{
	static const char *const names[] = {"fw"};
	static const char *const devs[] = {"w1"};
	char path[256];
	ferry_journal *j;
	ferry_status st = {0};
	char *body;
	int64_t seq;

	add_dev("w1", "fw", "widget", "1.0.0", true);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m1 = manifest(comps, false);
	json_t *comps2 = json_pack("[o]", component("fw", "fake", "widget", "3.0.0", NULL, NULL));
	char *m2 = manifest(comps2, false);
	snprintf(path, sizeof(path), "%s/state/journal.db", dir);
	assert_int_equal(ferry_journal_open(path, &j, &st), FERRY_OK);
	const char *ids[] = {"u-linked", "u-unlinked"};
	char *ms[] = {m1, m2};
	for (int k = 0; k < 2; k++) {
		ferry_jstep_new step = {.component = "fw", .device = devs[0], .adapter = "fake"};
		ferry_jupdate u = {.state = FERRY_U_ALLOWED, .sequence = seq_no - 1 + k, .created = time(NULL),
				   .deploy = true, .manifest = ms[k]};
		snprintf(u.id, sizeof(u.id), "%s", ids[k]);
		assert_int_equal(ferry_journal_update_add(j, &u, names, NULL, NULL, NULL, 1, NULL, 0, &step, 1, &st), FERRY_OK);
		ferry_transition t = {.update_id = ids[k], .component = "fw", .stage = FERRY_S_ALLOWED, .total = -1,
				      .ts_ms = 1000};
		assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
		free(body);
	}
	assert_int_equal(ferry_journal_set_link(j, "u-linked", "fw", "https://127.0.0.1:9/fw", &st), FERRY_OK);
	ferry_journal_close(j);
	start_engine(NULL);
	assert_int_equal(wait_end("u-linked"), FERRY_U_DONE);
	assert_string_equal(outcome("u-linked", "fw", "w1"), "installed");
	assert_int_equal(state_of("u-unlinked"), FERRY_U_ALLOWED);
	free(m1);
	free(m2);
	json_decref(comps);
	json_decref(comps2);
}

/* The links of a deploy are kept in the transaction that admits it: when
 * its first report goes out (the earliest a watcher could see it and a
 * kill could follow), a restart finds every link and goes on, never
 * waiting for an update.download nobody sends. */
static void test_deploy_links_kept_with_admission(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("g1", "gfw", "gadget", "1.0.0", true);
	start_engine(NULL);
	json_t *comps = json_pack("[oo]", component("fw", "fake", "widget", "2.0.0", NULL, NULL),
				  component("gfw", "fake", "gadget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	LINKS.on = true;
	command("update.deploy", "u-links", m, comps);
	assert_int_equal(wait_end("u-links"), FERRY_U_DONE);
	LINKS.on = false;
	assert_int_equal(LINKS.checked, 2);
	assert_int_equal(LINKS.unlinked, 0);
	free(m);
	json_decref(comps);
}

/* A second update.download (fresh links) leaves a job behind: it must not
 * run a later phase by itself -- nothing is installed without
 * update.install. */
static void test_leftover_job_runs_nothing(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("g1", "gfw", "gadget", "1.0.0", true);
	dev("g1")->hold_write = true;
	start_engine("updates: {parallel: 1}\n");
	/* the runner is busy with another update, so both downloads queue */
	json_t *busy = json_pack("[o]", component("gfw", "fake", "gadget", "2.0.0", NULL, NULL));
	char *mb = manifest(busy, false);
	command("update.deploy", "u-busy", mb, busy);
	pthread_mutex_lock(&F.lock);
	while (F.holding < 1)
		pthread_cond_wait(&F.cond, &F.lock);
	pthread_mutex_unlock(&F.lock);
	json_t *comps = json_pack("[o]", component("fw", "fake", "widget", "2.0.0", NULL, NULL));
	char *m = manifest(comps, false);
	command("update.request", "u22", m, NULL);
	assert_string_equal(wait_reply("u22", "update.request"), "accepted");
	command("update.download", "u22", NULL, comps);
	assert_string_equal(wait_reply("u22", "update.download"), "accepted");
	command("update.download", "u22", NULL, comps); /* fresh links: a second job */
	assert_string_equal(wait_reply("u22", "update.download"), "accepted");
	command("update.cancel", "u-busy", NULL, NULL);
	wait_report("u22", "fw", NULL, "downloaded");
	/* the leftover download job finds the update downloaded and does
	 * nothing: the check is the cloud's to ask for */
	command("update.check", "u22", NULL, NULL);
	assert_string_equal(wait_reply("u22", "update.check"), "accepted");
	wait_report("u22", "fw", NULL, "verified");
	command("update.check", "u22", NULL, NULL);
	assert_string_equal(wait_reply("u22", "update.check"), "wrong_stage");
	assert_int_equal(state_of("u22"), FERRY_U_VERIFIED);
	assert_int_equal(count("u22", "fw", "w1", "installing"), 0);
	assert_null(strstr(F.log, "w1:write"));
	free(m);
	free(mb);
	json_decref(comps);
	json_decref(busy);
}

/* The device that cannot revert goes last: a revertible component that
 * comes after it cannot be all or nothing. */
static void test_atomic_after_refused(void **state)
{
	add_dev("r1", "rfw", "radio", "1.0.0", false);
	add_dev("w1", "fw", "widget", "1.0.0", true);
	start_engine(NULL);
	json_t *comps = json_pack("[oo]", component("rfw", "fake-nr", "radio", "3.0.0", NULL, NULL),
				  component("fw", "fake", "widget", "2.0.0", NULL, "rfw"));
	char *m = manifest(comps, true);
	command("update.deploy", "u23", m, comps);
	assert_string_equal(wait_reply("u23", "update.deploy"), "unsupported");
	assert_non_null(strstr(reply_detail("u23", "update.deploy"), "must be activated last"));
	free(m);
	json_decref(comps);
}

/* Bytes and files under DIR/state/store (partial/ included), images only:
 * not the store's record of the boot. */
static long long store_bytes(int *files)
{
	char cmd[300];
	long long bytes = 0;
	FILE *p;
	snprintf(cmd, sizeof(cmd), "find %s/state/store -type f ! -name .boot -printf '%%s\\n'", dir);
	assert_non_null(p = popen(cmd, "r"));
	*files = 0;
	for (long long b; fscanf(p, "%lld", &b) == 1; (*files)++)
		bytes += b;
	pclose(p);
	return bytes;
}

/* The store lets go of what ended updates used: through a hundred updates
 * it never holds more than the running one's image and the one the device
 * runs (a delta's base), stays under its cap, and a partial download of an
 * ended update is gone too.  The runner prunes
 * after each update, before it takes the next: so the next update's first
 * report from the runner (downloaded) says the prune is done. */
static void test_store_bounded(void **state)
{
	add_dev("w1", "fw", "widget", "1.0.0", true);
	dev("w1")->gate_write = true;
	/* one runner: it prunes after each update, before it takes the next */
	start_engine("store: {cap: 4000}\nupdates: {parallel: 1}\n");
	for (int i = 1; i <= 100; i++) {
		char v[16], uid[16], junk[300];
		int files;
		snprintf(v, sizeof(v), "1.%d.0", i);
		snprintf(uid, sizeof(uid), "s%d", i);
		json_t *c = component("fw", "fake", "widget", v, NULL, NULL);
		if (i % 10 == 0) { /* and a partial download of it, left by a crash */
			snprintf(junk, sizeof(junk), "%s/state/store/partial/%s", dir,
				 json_string_value(json_object_get(c, "sha256")));
			write_file(junk, "half an image");
		}
		json_t *comps = json_pack("[o]", c);
		char *m = manifest(comps, false);
		/* counted while the update is held at its push, so it cannot
		 * end (and let go of its image) before the count */
		pthread_mutex_lock(&F.lock);
		F.gate_shut = true;
		pthread_mutex_unlock(&F.lock);
		command("update.deploy", uid, m, comps);
		pthread_mutex_lock(&F.lock);
		while (F.gated < 1)
			pthread_cond_wait(&F.cond, &F.lock);
		pthread_mutex_unlock(&F.lock);
		long long bytes = store_bytes(&files);
		assert_true(bytes <= 4000);
		/* this update's image, and the one the device runs (kept as the
		 * base for a delta); every older one is gone */
		assert_int_equal(files, (i % 10 == 0 ? 2 : 1) + (i > 1));
		pthread_mutex_lock(&F.lock);
		F.gate_shut = false;
		pthread_cond_broadcast(&F.cond);
		pthread_mutex_unlock(&F.lock);
		assert_int_equal(wait_end(uid), FERRY_U_DONE);
		free(m);
		json_decref(comps);
	}
	assert_string_equal(dev("w1")->running, "1.100.0");
	/* after a restart (the next command is answered after the prune at
	 * the latest) only the image the device runs stays, as its base */
	stop_engine();
	start_engine("store: {cap: 4000}\n");
	command("inventory.refresh", NULL, NULL, NULL);
	wait_reply("", "inventory.refresh");
	int files;
	assert_int_equal(store_bytes(&files), 1000);
	assert_int_equal(files, 1);
}

/* The image a device was last given stays as its base for a delta, and
 * gives way when an update needs the room: with a cap of 1500 bytes and a
 * 1000-byte base kept, an update that must fetch 1000 bytes is admitted
 * only because the base is let go of; one that would not fit even then is
 * refused, and the base stays. */
static void test_bases_give_way(void **state)
{
	char path[600];
	add_dev("w1", "fw", "widget", "1.0.0", true);
	add_dev("w2", "gw", "widget", "1.0.0", true);
	start_engine("store: {cap: 1500}\n");
	json_t *c1 = component("fw", "fake", "widget", "1.1.0", NULL, NULL);
	json_t *comps = json_pack("[O]", c1);
	char *m = manifest(comps, false);
	command("update.deploy", "b1", m, comps);
	assert_int_equal(wait_end("b1"), FERRY_U_DONE);
	free(m);
	json_decref(comps);
	snprintf(path, sizeof(path), "%s/state/store/%s", dir, json_string_value(json_object_get(c1, "sha256")));
	assert_int_equal(access(path, F_OK), 0); /* kept: w1 runs it */

	/* two images to fetch (2000 bytes) do not fit even without the base */
	json_t *c2 = component("fw", "fake", "widget", "1.2.0", NULL, NULL);
	json_t *c3 = component("gw", "fake", "widget", "1.1.0", NULL, NULL);
	char p2[600], p3[600];
	snprintf(p2, sizeof(p2), "%s/state/store/%s", dir, json_string_value(json_object_get(c2, "sha256")));
	snprintf(p3, sizeof(p3), "%s/state/store/%s", dir, json_string_value(json_object_get(c3, "sha256")));
	unlink(p2);
	unlink(p3);
	comps = json_pack("[O,O]", c2, c3);
	m = manifest(comps, false);
	command("update.deploy", "b2", m, comps);
	assert_string_equal(wait_reply("b2", "update.deploy"), "insufficient_space");
	assert_int_equal(access(path, F_OK), 0); /* a refusal changes nothing */
	free(m);
	json_decref(comps);

	/* one image to fetch fits once the base goes */
	comps = json_pack("[O]", c2);
	m = manifest(comps, false);
	command("update.deploy", "b3", m, comps);
	assert_string_equal(wait_reply("b3", "update.deploy"), "accepted");
	assert_int_not_equal(access(path, F_OK), 0);
	wait_end("b3"); /* the link leads nowhere: it fails, and that is all */
	free(m);
	json_decref(comps);
	json_decref(c1);
	json_decref(c2);
	json_decref(c3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_staged_fan_out, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_bases_give_way, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_already_and_match, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_parallel_limit, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_queued, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_lost_ack, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_atomic_success, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_atomic_failure_each_position, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_rolled_back_or_failed, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_commit_retried, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_atomic_refused, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_order, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_abi1_plugin, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_link_declared, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_plugin_output_checked, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_self_trial, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_atomic_resume_after_failure, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_survives_restart, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_leftover_job_runs_nothing, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_atomic_after_refused, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_store_bounded, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_slow_update_holds_nobody, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_one_device_one_update, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_deploy_resumes_from_allowed, per_test_setup, per_test_teardown),
		cmocka_unit_test_setup_teardown(test_deploy_links_kept_with_admission, per_test_setup, per_test_teardown),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
