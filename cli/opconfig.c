/* operator.yaml: one table of keys, read strictly.  A misspelt key in the
 * file that says which broker and which signing key to use must never be
 * passed over, so every key not in the table is refused by name. */
#include "opconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.h"
#include "ferry/jsonfield.h"
#include "ferry/yaml.h"

typedef enum op_kind { O_STR, O_PATH, O_INT, O_URL, O_SECRET } op_kind;

typedef struct op_field {
	const char *key;
	op_kind kind;
	size_t off, size;
	bool required;
	int min, max; /* O_INT: the range; strings: the length */
	const char *def;
} op_field;

#define OF(k, kd, m, req, mn, mx, d) {k, kd, offsetof(op_config, m), sizeof(((op_config *)0)->m), req, mn, mx, d}

static const op_field op_fields[] = {
	OF("broker.host", O_STR, broker.host, true, 1, 255, NULL),
	OF("broker.port", O_INT, broker.port, false, 1, 65535, "8884"),
	OF("broker.ca", O_PATH, broker.ca, true, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("broker.cert", O_PATH, broker.cert, true, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("broker.key", O_PATH, broker.key, true, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("broker.keepalive", O_INT, broker.keepalive_s, false, 5, 3600, "30"),
	OF("command_signer.key", O_PATH, command_signer.key, true, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("command_signer.cert", O_PATH, command_signer.cert, true, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("manifest_signer.key", O_PATH, manifest_signer.key, false, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("manifest_signer.cert", O_PATH, manifest_signer.cert, false, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("gateway_ca", O_PATH, gateway_ca, true, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("files.base_url", O_URL, files.base_url, true, 9, 1000, NULL),
	OF("files.dir", O_PATH, files.dir, false, 1, OPCFG_PATH_MAX - 1, NULL),
	OF("files.link_secret", O_SECRET, files.link_secret, false, 16, 255, NULL),
	OF("files.link_ttl", O_INT, files.link_ttl_s, false, 60, 30 * 86400, "86400"),
	OF("state_dir", O_PATH, state_dir, true, 1, OPCFG_PATH_MAX - 64, NULL),
};
#define N_FIELDS (sizeof(op_fields) / sizeof(op_fields[0]))

static const char *const sections[] = {"broker", "command_signer", "manifest_signer", "files", NULL};

static long line_of(const json_t *lines, const char *key)
{
	return (long)json_integer_value(json_object_get(lines, key));
}

static ferry_err refuse(ferry_status *st, const char *file, const json_t *lines, const char *key, const char *what)
{
	return ferry_fail(st, FERRY_E_MALFORMED, "%s:%ld: %s: %s", file, line_of(lines, key), key, what);
}

static const op_field *field_of(const char *dotted)
{
	for (size_t i = 0; i < N_FIELDS; i++)
		if (!strcmp(op_fields[i].key, dotted))
			return &op_fields[i];
	return NULL;
}

/* every key in the file is a field or a section of fields */
static ferry_err only_known(const json_t *obj, const char *prefix, const char *file, const json_t *lines,
			    ferry_status *st)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)obj, k, v) {
		char dotted[128];
		snprintf(dotted, sizeof(dotted), "%s%s%s", prefix, *prefix ? "." : "", k);
		if (strchr(k, '.'))
			return refuse(st, file, lines, dotted, "write it as nested keys (files:, then link_secret: under it)");
		bool section = false;
		for (const char *const *s = sections; *s && !*prefix; s++)
			section = section || !strcmp(*s, k);
		if (section) {
			if (!json_is_object(v))
				return refuse(st, file, lines, dotted, "must be a mapping");
			ferry_err e = only_known(v, dotted, file, lines, st);
			if (e)
				return e;
		} else if (!field_of(dotted)) {
			return refuse(st, file, lines, dotted, "not a key of operator.yaml");
		}
	}
	return FERRY_OK;
}

static ferry_err set_one(op_config *c, const op_field *f, const json_t *v, const json_t *lines, ferry_status *st)
{
	char *dst = (char *)c + f->off;

	if (f->kind == O_INT) {
		if (!json_is_integer(v) || json_integer_value(v) < f->min || json_integer_value(v) > f->max) {
			char what[64];
			snprintf(what, sizeof(what), "must be an integer in %d..%d", f->min, f->max);
			return refuse(st, c->file, lines, f->key, what);
		}
		*(int *)dst = (int)json_integer_value(v);
		return FERRY_OK;
	}
	if (!json_is_string(v))
		return refuse(st, c->file, lines, f->key, "must be a string");
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);
	if (len < (size_t)f->min || len > (size_t)f->max || len >= f->size)
		return refuse(st, c->file, lines, f->key, "has the wrong length");
	if (!ferry_charset_ok(s, len, FERRY_CS_ANY))
		return refuse(st, c->file, lines, f->key, "contains control characters");
	if (f->kind == O_PATH && s[0] != '/')
		return refuse(st, c->file, lines, f->key, "must be an absolute path");
	if (f->kind == O_URL && (strncmp(s, "https://", 8) || s[len - 1] != '/'))
		return refuse(st, c->file, lines, f->key, "must be an https:// URL ending in /");
	memcpy(dst, s, len + 1);
	return FERRY_OK;
}

static const json_t *lookup(const json_t *root, const char *dotted)
{
	const char *dot = strchr(dotted, '.');
	if (!dot)
		return json_object_get(root, dotted);
	char sec[64];
	snprintf(sec, sizeof(sec), "%.*s", (int)(dot - dotted), dotted);
	return json_object_get(json_object_get(root, sec), dot + 1);
}

ferry_err op_config_load(const char *path, op_config *c, ferry_status *st)
{
	json_t *root = NULL, *lines = NULL;
	ferry_err e;

	memset(c, 0, sizeof(*c));
	if (!path || !*path)
		path = getenv("FERRY_OPERATOR_CONFIG");
	if (path && *path) {
		snprintf(c->file, sizeof(c->file), "%s", path);
	} else {
		const char *home = getenv("HOME");
		if (!home || !*home)
			return ferry_fail(st, FERRY_E_MALFORMED, "no operator config: give --config F, or set "
					  "FERRY_OPERATOR_CONFIG or HOME");
		snprintf(c->file, sizeof(c->file), "%s/.config/ferry/operator.yaml", home);
	}
	if (access(c->file, R_OK))
		return ferry_fail(st, FERRY_E_MALFORMED, "operator config %s: %s (ferry pki init writes one; "
				  "--config names another)", c->file, strerror(errno));
	if ((e = ferry_yaml_to_json(c->file, &root, &lines, st)))
		return e;
	if (!json_is_object(root)) {
		e = ferry_fail(st, FERRY_E_MALFORMED, "%s: must be a mapping", c->file);
		goto out;
	}
	if ((e = only_known(root, "", c->file, lines, st)))
		goto out;
	for (size_t i = 0; i < N_FIELDS && !e; i++) {
		const op_field *f = &op_fields[i];
		const json_t *v = lookup(root, f->key);
		if (v)
			e = set_one(c, f, v, lines, st);
		else if (f->required)
			e = ferry_fail(st, FERRY_E_MALFORMED, "%s: %s is missing", c->file, f->key);
		else if (f->def) {
			json_t *d = json_integer(atoi(f->def));
			e = set_one(c, f, d, lines, st);
			json_decref(d);
		}
	}
	if (!e && !c->manifest_signer.key[0] != !c->manifest_signer.cert[0])
		e = ferry_fail(st, FERRY_E_MALFORMED, "%s: manifest_signer needs both key and cert", c->file);
out:
	json_decref(root);
	json_decref(lines);
	return e;
}

ferry_err op_config_write_default(const char *dir, ferry_status *st)
{
	char abs[PATH_MAX], path[PATH_MAX + 32], secret[65];
	static char text[16 * OPCFG_PATH_MAX];
	unsigned char r[32];

	if (!realpath(dir, abs)) /* (realpath wants PATH_MAX bytes) */
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", dir, strerror(errno));
	if (strlen(abs) > OPCFG_PATH_MAX - 64)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: the path is too long for operator.yaml", abs);
	if (RAND_bytes(r, sizeof(r)) != 1)
		return ferry_fail(st, FERRY_E_INTERNAL, "no random bytes for the link secret");
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(secret + 2 * i, 3, "%02x", r[i]);
	snprintf(path, sizeof(path), "%s/operator.yaml", abs);
	if (access(path, F_OK) == 0)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s already exists; not overwriting it", path);
	int n = snprintf(text, sizeof(text),
			 "# The operator's config: what `ferry deploy`, `watch` and `fleet` use.\n"
			 "# Written by `ferry pki init`; every key is in docs/cli.md.\n"
			 "broker:\n"
			 "  host: 127.0.0.1\n"
			 "  port: 8884                 # the operators' listener (config/mosquitto-ferry.conf)\n"
			 "  ca: %s/ca.pem             # verifies the broker\n"
			 "  cert: %s/operator.pem     # this operator's client certificate\n"
			 "  key: %s/operator.key\n"
			 "command_signer:\n"
			 "  key: %s/cmd-signer.key\n"
			 "  cert: %s/cmd-signer.pem\n"
			 "manifest_signer:\n"
			 "  key: %s/manifest-signer.key\n"
			 "  cert: %s/manifest-signer.pem\n"
			 "gateway_ca: %s/ca.pem       # the gateways' certificates chain to it\n"
			 "files:\n"
			 "  base_url: https://127.0.0.1:8443/files/   # images are fetched as base_url + sha256\n"
			 "  dir: %s/files             # the file host's directory: deploy copies images there\n"
			 "  link_secret: %s\n"
			 "  link_ttl: 86400\n"
			 "state_dir: %s/operator-state\n",
			 abs, abs, abs, abs, abs, abs, abs, abs, abs, secret, abs);
	if (n < 0 || (size_t)n >= sizeof(text))
		return ferry_fail(st, FERRY_E_INTERNAL, "operator.yaml would be too long");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	ferry_err e = FERRY_OK;
	if (fd < 0 || write(fd, text, (size_t)n) != n || fsync(fd))
		e = ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return e;
}
