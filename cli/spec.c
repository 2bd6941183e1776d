/* Manifest specs.  An operator writes what the update is; the tool adds what a
 * machine must compute (size, digest, creation time) so a hand-typed digest can
 * never be wrong, and then checks the result with the gateway's own parser. */
#include "spec.h"

#include <errno.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/manifest.h"
#include "ferry/yaml.h"

/* Size and SHA-256 of a file, streamed. */
static ferry_err hash_file(const char *path, int64_t *size, char hex[65], ferry_status *st)
{
	FILE *f = fopen(path, "rb");
	EVP_MD_CTX *md;
	unsigned char buf[65536], dig[32];
	size_t n;
	int64_t total = 0;

	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		fclose(f);
		return ferry_fail(st, FERRY_E_INTERNAL, "SHA-256 unavailable");
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		EVP_DigestUpdate(md, buf, n);
		total += (int64_t)n;
	}
	bool bad = ferror(f);
	fclose(f);
	EVP_DigestFinal_ex(md, dig, NULL);
	EVP_MD_CTX_free(md);
	if (bad)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: read error", path);
	*size = total;
	ferry_hex32_fmt(dig, hex);
	return FERRY_OK;
}

static ferry_err fill_component(json_t *c, size_t i, const char *dir, ferry_status *st)
{
	const json_t *file = json_object_get(c, "file");
	char path[4096], hex[65];
	int64_t size;
	ferry_err e;

	if (!json_is_object(c))
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu] must be a mapping", i);
	if (!json_is_string(file))
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: \"file\" (the image) is missing", i);
	if (json_object_get(c, "size") || json_object_get(c, "sha256"))
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: size and sha256 come from the file; "
				  "leave them out", i);
	const char *f = json_string_value(file);
	snprintf(path, sizeof(path), "%s%s%s", f[0] == '/' ? "" : dir, f[0] == '/' ? "" : "/", f);
	if ((e = hash_file(path, &size, hex, st)))
		return e;
	json_object_del(c, "file");
	json_object_set_new(c, "size", json_integer(size));
	json_object_set_new(c, "sha256", json_string(hex));
	return FERRY_OK;
}

ferry_err ferry_spec_load(const char *spec_path, time_t now, json_t **payload, ferry_status *st)
{
	char dirbuf[4096];
	json_t *spec, *comps, *c;
	ferry_manifest m;
	size_t i;
	ferry_err e;

	if ((e = ferry_yaml_to_json(spec_path, &spec, NULL, st)))
		return e;
	snprintf(dirbuf, sizeof(dirbuf), "%s", spec_path);
	const char *dir = dirname(dirbuf);
	comps = json_object_get(spec, "components");
	if (!json_is_object(spec) || !json_is_array(comps)) {
		json_decref(spec);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: needs a \"components\" list", spec_path);
	}
	json_array_foreach(comps, i, c) {
		if ((e = fill_component(c, i, dir, st))) {
			ferry_status_prefix(st, "%s: ", spec_path);
			json_decref(spec);
			return e;
		}
	}
	if (!json_object_get(spec, "created"))
		json_object_set_new(spec, "created", json_integer(now));
	if ((e = ferry_manifest_parse(spec, &m, st))) {
		ferry_status_prefix(st, "%s: ", spec_path);
		json_decref(spec);
		return e;
	}
	ferry_manifest_free(&m);
	*payload = spec;
	return FERRY_OK;
}
