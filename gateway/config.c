/* ferryd's configuration.  One table lists every key with its type, bounds
 * and default; the loader walks it, so adding a key is one line here and one
 * paragraph in config/ferryd.yaml.  Unknown keys are refused: on a gateway
 * nobody can reach by hand, a misspelt key silently ignored is worse than a
 * daemon that will not start and says why. */
#include "config.h"

#include <errno.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/jsonfield.h"
#include "ferry/manifest.h"
#include "ferry/yaml.h"

typedef enum kind { K_STR, K_ID, K_PATH, K_INT, K_I64, K_BOOL } kind;

typedef struct field {
	const char *key; /* dotted path */
	kind kind;
	size_t off, size;
	bool required;
	int64_t min, max;
	const char *def; /* default, as text; NULL: none */
} field;

#define F(k, kd, member, req, mn, mx, d) {k, kd, offsetof(ferry_config, member), sizeof(((ferry_config *)0)->member), req, mn, mx, d}

static const field fields[] = {
	F("gateway_id", K_ID, gateway_id, true, 1, 64, NULL),
	F("broker.host", K_STR, broker.host, true, 1, 255, NULL),
	F("broker.port", K_INT, broker.port, false, 1, 65535, "8883"),
	F("broker.ca", K_PATH, broker.ca, true, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("broker.cert", K_PATH, broker.cert, true, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("broker.key", K_PATH, broker.key, true, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("broker.keepalive", K_INT, broker.keepalive_s, false, 5, 3600, "30"),
	F("broker.reconnect_min_ms", K_INT, broker.reconnect_min_ms, false, 10, 600000, "1000"),
	F("broker.reconnect_max_ms", K_INT, broker.reconnect_max_ms, false, 10, 3600000, "60000"),
	F("topic_prefix", K_STR, topic_prefix, false, 1, 200, NULL),
	F("trust.command_ca", K_PATH, trust.command_ca, true, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("trust.manifest_ca", K_PATH, trust.manifest_ca, true, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("trust.clock_skew", K_INT, trust.clock_skew_s, false, 0, 3600, "300"),
	F("trust.min_time", K_I64, trust.min_time, false, 0, INT64_C(1) << 40, "1735689600"),
	F("state_dir", K_PATH, state_dir, true, 1, FERRY_CFG_PATH_MAX - 64, NULL),
	F("store.dir", K_PATH, store.dir, false, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("store.cap", K_I64, store.cap_bytes, false, 0, INT64_C(1) << 50, "0"),
	F("download.ca", K_PATH, download.ca, true, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("download.connect_timeout", K_INT, download.connect_timeout_s, false, 1, 600, "30"),
	F("download.low_speed_bytes", K_INT, download.low_speed_bytes, false, 1, 1 << 30, "1024"),
	F("download.low_speed_time", K_INT, download.low_speed_time_s, false, 1, 3600, "60"),
	F("download.retries", K_INT, download.retries, false, 0, 100, "5"),
	F("download.retry_delay_ms", K_INT, download.retry_delay_ms, false, 0, 600000, "1000"),
	F("download.parallel", K_INT, download.parallel, false, 1, 16, "2"),
	F("download.deadline", K_INT, download.deadline_s, false, 0, 30 * 86400, "86400"),
	F("install.parallel", K_INT, install.parallel, false, 1, 64, "8"),
	F("updates.parallel", K_INT, updates.parallel, false, 1, 16, "4"),
	F("plugin_dir", K_PATH, plugin_dir, false, 1, FERRY_CFG_PATH_MAX - 1, FERRY_PLUGIN_DIR),
	F("decryption.key", K_PATH, decryption.key, false, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("decryption.cert", K_PATH, decryption.cert, false, 1, FERRY_CFG_PATH_MAX - 1, NULL),
	F("reports.sign", K_BOOL, reports.sign, false, 0, 1, "true"),
};

/* Sections whose keys belong to someone else (adapters) or to the user. */
static const char *const open_sections[] = {"adapters", "attributes", "min_link"};

static unsigned long line_of(const json_t *lines, const char *key)
{
	const json_t *l = json_object_get(lines, key);
	return l ? (unsigned long)json_integer_value(l) : 0;
}

static ferry_err bad(ferry_status *st, const char *file, const json_t *lines, const char *key, const char *what)
{
	return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lu: %s: %s", file, line_of(lines, key), key, what);
}

static const json_t *lookup(const json_t *root, const char *dotted)
{
	char buf[128];
	const json_t *cur = root;

	snprintf(buf, sizeof(buf), "%s", dotted);
	for (char *save = NULL, *part = strtok_r(buf, ".", &save); part && cur; part = strtok_r(NULL, ".", &save))
		cur = json_is_object(cur) ? json_object_get(cur, part) : NULL;
	return cur;
}

static ferry_err set_field(ferry_config *c, const field *f, const json_t *v, const char *file, const json_t *lines,
			   ferry_status *st)
{
	char *dst = (char *)c + f->off;
	char txt[32];

	if (f->kind == K_BOOL) {
		if (!json_is_boolean(v))
			return bad(st, file, lines, f->key, "must be true or false");
		*(bool *)dst = json_is_true(v);
		return FERRY_OK;
	}
	if (f->kind == K_INT || f->kind == K_I64) {
		json_int_t i;
		if (json_is_integer(v))
			i = json_integer_value(v);
		else
			return bad(st, file, lines, f->key, "must be an integer");
		if (i < f->min || i > f->max) {
			snprintf(txt, sizeof(txt), "%lld..%lld", (long long)f->min, (long long)f->max);
			char msg[96];
			snprintf(msg, sizeof(msg), "must be in %s", txt);
			return bad(st, file, lines, f->key, msg);
		}
		if (f->kind == K_INT)
			*(int *)dst = (int)i;
		else
			*(int64_t *)dst = i;
		return FERRY_OK;
	}
	if (!json_is_string(v))
		return bad(st, file, lines, f->key, "must be a string");
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	if (len < (size_t)f->min || len > (size_t)f->max || len >= f->size)
		return bad(st, file, lines, f->key, "has the wrong length");
	if (!ferry_charset_ok(s, len, f->kind == K_ID ? FERRY_CS_ID : FERRY_CS_ANY))
		return bad(st, file, lines, f->key, f->kind == K_ID ? "must contain only [A-Za-z0-9._-]"
								  : "contains control characters");
	if (f->kind == K_PATH && s[0] != '/')
		return bad(st, file, lines, f->key, "must be an absolute path");
	memcpy(dst, s, len + 1);
	return FERRY_OK;
}

static ferry_err apply_default(ferry_config *c, const field *f)
{
	char *dst = (char *)c + f->off;
	if (f->kind == K_INT)
		*(int *)dst = (int)strtol(f->def, NULL, 10);
	else if (f->kind == K_I64)
		*(int64_t *)dst = strtoll(f->def, NULL, 10);
	else if (f->kind == K_BOOL)
		*(bool *)dst = !strcmp(f->def, "true");
	else
		snprintf(dst, f->size, "%s", f->def);
	return FERRY_OK;
}

static bool known_key(const char *dotted)
{
	size_t n = strlen(dotted);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const char *k = fields[i].key;
		/* the key itself, or a section that contains known keys */
		if (!strcmp(k, dotted) || (!strncmp(k, dotted, n) && k[n] == '.'))
			return true;
	}
	for (size_t i = 0; i < sizeof(open_sections) / sizeof(open_sections[0]); i++)
		if (!strcmp(open_sections[i], dotted))
			return true;
	return false;
}

static bool is_open_section(const char *dotted)
{
	for (size_t i = 0; i < sizeof(open_sections) / sizeof(open_sections[0]); i++)
		if (!strcmp(open_sections[i], dotted))
			return true;
	return false;
}

static ferry_err check_unknown(const json_t *obj, const char *prefix, const char *file, const json_t *lines,
			       ferry_status *st)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)obj, k, v) {
		char dotted[256];
		snprintf(dotted, sizeof(dotted), "%s%s%s", prefix, *prefix ? "." : "", k);
		if (!known_key(dotted))
			return bad(st, file, lines, dotted, "unknown key");
		if (json_is_object(v) && !is_open_section(dotted)) {
			ferry_err e = check_unknown(v, dotted, file, lines, st);
			if (e)
				return e;
		}
	}
	return FERRY_OK;
}

static ferry_err check_open_sections(ferry_config *c, const char *file, const json_t *lines, ferry_status *st)
{
	const char *k;
	json_t *v;

	if (c->adapters && !json_is_object(c->adapters))
		return bad(st, file, lines, "adapters", "must be a mapping of adapter name to its section");
	json_object_foreach(c->adapters, k, v) {
		char dotted[128];
		snprintf(dotted, sizeof(dotted), "adapters.%s", k);
		if (!ferry_charset_ok(k, strlen(k), FERRY_CS_ID) || !json_is_object(v))
			return bad(st, file, lines, dotted, "must be a mapping named by the adapter");
	}
	if (c->attributes && !json_is_object(c->attributes))
		return bad(st, file, lines, "attributes", "must be a mapping of name to text");
	if (json_object_size(c->attributes) > FERRY_CFG_ATTRS_MAX)
		return bad(st, file, lines, "attributes", "has too many entries");
	json_object_foreach(c->attributes, k, v) {
		char dotted[128];
		snprintf(dotted, sizeof(dotted), "attributes.%s", k);
		if (!ferry_charset_ok(k, strlen(k), FERRY_CS_ID) || strlen(k) > 64)
			return bad(st, file, lines, dotted, "names must be 1-64 characters of [A-Za-z0-9._-]");
		/* `rack: 4` in YAML means the text "4" to the person who wrote it. */
		if (json_is_integer(v)) {
			char txt[32];
			snprintf(txt, sizeof(txt), "%lld", (long long)json_integer_value(v));
			json_object_set_new(c->attributes, k, json_string(txt));
		} else if (json_is_boolean(v)) {
			json_object_set_new(c->attributes, k, json_string(json_is_true(v) ? "true" : "false"));
		} else if (!json_is_string(v) || json_string_length(v) > 256) {
			return bad(st, file, lines, dotted, "must be text of at most 256 characters");
		}
	}
	if (c->min_link && !json_is_object(c->min_link))
		return bad(st, file, lines, "min_link", "must be a mapping of component name to a link level");
	json_object_foreach(c->min_link, k, v) {
		char dotted[128];
		snprintf(dotted, sizeof(dotted), "min_link.%.64s", k);
		if (!ferry_charset_ok(k, strlen(k), FERRY_CS_ID) || strlen(k) > 64)
			return bad(st, file, lines, dotted, "component names are 1-64 characters of [A-Za-z0-9._-]");
		if (ferry_link_rank(json_string_value(v)) < 0)
			return bad(st, file, lines, dotted, "must be physical, bonded-encrypted or unauthenticated");
	}
	return FERRY_OK;
}

static ferry_err load(const char *path, const json_t *root, const json_t *lines, ferry_config *c, ferry_status *st)
{
	ferry_err e;

	if (!json_is_object(root))
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: the top level must be a mapping", path);
	if ((e = check_unknown(root, "", path, lines, st)))
		return e;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const field *f = &fields[i];
		const json_t *v = lookup(root, f->key);
		if (v && !json_is_null(v))
			e = set_field(c, f, v, path, lines, st);
		else if (f->required)
			e = ferry_fail(st, FERRY_E_MALFORMED, "%s: %s: required key is missing", path, f->key);
		else if (f->def)
			e = apply_default(c, f);
		if (e)
			return e;
	}
	c->adapters = json_incref(json_object_get(root, "adapters"));
	c->attributes = json_incref(json_object_get(root, "attributes"));
	c->min_link = json_incref(json_object_get(root, "min_link"));
	if ((e = check_open_sections(c, path, lines, st)))
		return e;
	if (!c->topic_prefix[0])
		snprintf(c->topic_prefix, sizeof(c->topic_prefix), "ferry/v1/%s", c->gateway_id);
	if (strpbrk(c->topic_prefix, "+#"))
		return bad(st, path, lines, "topic_prefix", "must not contain MQTT wildcards");
	if (!c->store.dir[0])
		snprintf(c->store.dir, sizeof(c->store.dir), "%s/store", c->state_dir);
	if (c->broker.reconnect_max_ms < c->broker.reconnect_min_ms)
		return bad(st, path, lines, "broker.reconnect_max_ms", "must not be below reconnect_min_ms");
	return FERRY_OK;
}

ferry_err ferry_config_load(const char *path, ferry_config *c, ferry_status *st)
{
	json_t *root = NULL, *lines = NULL;
	ferry_err e;

	memset(c, 0, sizeof(*c));
	if ((e = ferry_yaml_to_json(path, &root, &lines, st)))
		return e;
	snprintf(c->file, sizeof(c->file), "%s", path);
	c->lines = lines;
	if ((e = load(path, root, lines, c, st)))
		ferry_config_free(c);
	json_decref(root);
	return e;
}

void ferry_config_free(ferry_config *c)
{
	json_decref(c->adapters);
	json_decref(c->attributes);
	json_decref(c->min_link);
	json_decref(c->lines);
	c->adapters = c->attributes = c->min_link = c->lines = NULL;
}

/* The certificates in a PEM file; how many, -1 when it cannot be read. */
static int pem_certs(const char *path, X509 **first)
{
	FILE *f = fopen(path, "r");
	X509 *x;
	int n = 0;

	if (first)
		*first = NULL;
	if (!f)
		return -1;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
		if (first && !*first)
			*first = x;
		else
			X509_free(x);
		n++;
	}
	fclose(f);
	return n;
}

static ferry_err bad_file(const ferry_config *c, const char *key, const char *path, const char *what,
			  ferry_status *st)
{
	char msg[FERRY_CFG_PATH_MAX + 160];
	snprintf(msg, sizeof(msg), "%s: %s", path, what);
	return bad(st, c->file, c->lines, key, msg);
}

static ferry_err check_certs(const ferry_config *c, const char *key, const char *path, ferry_status *st)
{
	int n = pem_certs(path, NULL);
	if (n < 0)
		return bad_file(c, key, path, strerror(errno), st);
	return n ? FERRY_OK : bad_file(c, key, path, "holds no PEM certificate", st);
}

/* A directory ferryd can write, or one it can make: the nearest existing
 * ancestor is a writable directory. */
static ferry_err check_dir(const ferry_config *c, const char *key, const char *path, ferry_status *st)
{
	char p[FERRY_CFG_PATH_MAX];
	struct stat sb;

	snprintf(p, sizeof(p), "%s", path);
	for (;;) {
		if (stat(p, &sb) == 0) {
			if (!S_ISDIR(sb.st_mode))
				return bad_file(c, key, p, "is not a directory", st);
			if (access(p, W_OK | X_OK))
				return bad_file(c, key, p,
						strcmp(p, path) ? "cannot be written, so the directory cannot be made in it"
								: "cannot be written",
						st);
			return FERRY_OK;
		}
		char *slash = strrchr(p, '/');
		if (!slash || slash == p)
			return bad_file(c, key, path, "no part of the path exists", st);
		*slash = '\0';
	}
}

/* The key-agreement key: both files or neither, a P-256 key and its
 * certificate, which says it is for key agreement. */
static ferry_err check_decryption(const ferry_config *c, ferry_status *st)
{
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	FILE *f;
	ferry_err e = FERRY_OK;
	int n;

	if (!c->decryption.key[0] && !c->decryption.cert[0])
		return FERRY_OK;
	if (!c->decryption.key[0] || !c->decryption.cert[0])
		return bad(st, c->file, c->lines, c->decryption.key[0] ? "decryption.key" : "decryption.cert",
			   "decryption needs both key and cert");
	if ((n = pem_certs(c->decryption.cert, &cert)) <= 0)
		return bad_file(c, "decryption.cert", c->decryption.cert,
				n < 0 ? strerror(errno) : "holds no PEM certificate", st);
	if (!(f = fopen(c->decryption.key, "r"))) {
		X509_free(cert);
		return bad_file(c, "decryption.key", c->decryption.key, strerror(errno), st);
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key)
		e = bad_file(c, "decryption.key", c->decryption.key, "holds no PEM private key (or it is encrypted)", st);
	else if (!EVP_PKEY_is_a(key, "EC") || EVP_PKEY_get_bits(key) != 256)
		e = bad_file(c, "decryption.key", c->decryption.key, "is not a P-256 key", st);
	else if (X509_check_private_key(cert, key) != 1)
		e = bad_file(c, "decryption.key", c->decryption.key,
			     "does not belong to the certificate in decryption.cert", st);
	else if (X509_get_key_usage(cert) == UINT32_MAX || !(X509_get_key_usage(cert) & KU_KEY_AGREEMENT))
		e = bad_file(c, "decryption.cert", c->decryption.cert, "is not a key-agreement certificate", st);
	X509_free(cert);
	EVP_PKEY_free(key);
	return e;
}

ferry_err ferry_config_check_files(const ferry_config *c, ferry_status *st)
{
	ferry_err e;
	X509 *cert = NULL;
	EVP_PKEY *key = NULL;
	FILE *f;
	int n;

	if ((e = check_certs(c, "broker.ca", c->broker.ca, st)) ||
	    (e = check_certs(c, "trust.command_ca", c->trust.command_ca, st)) ||
	    (e = check_certs(c, "trust.manifest_ca", c->trust.manifest_ca, st)) ||
	    (e = check_certs(c, "download.ca", c->download.ca, st)))
		return e;
	if ((n = pem_certs(c->broker.cert, &cert)) <= 0)
		return bad_file(c, "broker.cert", c->broker.cert, n < 0 ? strerror(errno) : "holds no PEM certificate",
				st);
	if (!(f = fopen(c->broker.key, "r"))) {
		X509_free(cert);
		return bad_file(c, "broker.key", c->broker.key, strerror(errno), st);
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!key)
		e = bad_file(c, "broker.key", c->broker.key, "holds no PEM private key (or it is encrypted)", st);
	else if (X509_check_private_key(cert, key) != 1)
		e = bad_file(c, "broker.key", c->broker.key, "does not belong to the certificate in broker.cert", st);
	X509_free(cert);
	EVP_PKEY_free(key);
	if (e || (e = check_decryption(c, st)) || (e = check_dir(c, "state_dir", c->state_dir, st)))
		return e;
	return check_dir(c, "store.dir", c->store.dir, st);
}
