/* Manifest specs.  An operator writes what the update is; the tool adds what a
 * machine must compute (size, digest, creation time) so a hand-typed digest can
 * never be wrong, and then checks the result with the gateway's own parser. */
#include "spec.h"

#include <errno.h>
#include <fcntl.h>
#include <jose/b64.h>
#include <openssl/crypto.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delta.h"
#include "ferry/delta.h"
#include "ferry/enc.h"
#include "ferry/manifest.h"
#include "files.h"
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

/* What a person may write in a spec.  The gateway ignores members of a
 * signed manifest it does not know (the protocol grows that way), so a
 * misspelt key here would be signed and then silently ignored: it is
 * refused with the file, the line and the key instead. */
static const char *const top_keys[] = {"sequence", "created", "expires", "allow_downgrade", "atomic", "components",
				       NULL};
static const char *const component_keys[] = {"name",    "type",    "adapter",    "target",  "version",
					      "format",  "file",    "after",      "delta_from", "encrypt",
					      "min_link", "encrypted_for_device", NULL};
static const char *const target_keys[] = {"vendor_id", "class_id", "match", NULL};

static bool listed(const char *const *keys, const char *k)
{
	for (; *keys; keys++)
		if (!strcmp(*keys, k))
			return true;
	return false;
}

static ferry_err known_keys(const char *file, const json_t *lines, const json_t *o, const char *path,
			    const char *const *keys, ferry_status *st)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)o, k, v) {
		char full[512];
		snprintf(full, sizeof(full), "%s%s%s", path, *path ? "." : "", k);
		if (!listed(keys, k))
			return ferry_fail(st, FERRY_E_MALFORMED, "%s:%lld: %s: not a key of a manifest spec", file,
					  (long long)json_integer_value(json_object_get(lines, full)), full);
	}
	return FERRY_OK;
}

static ferry_err check_keys(const char *file, const json_t *spec, const json_t *lines, ferry_status *st)
{
	const json_t *comps = json_object_get(spec, "components"), *c;
	size_t i;
	ferry_err e;

	if ((e = known_keys(file, lines, spec, "", top_keys, st)))
		return e;
	json_array_foreach(comps, i, c) {
		char path[64], sub[96];
		const json_t *t = json_object_get(c, "target");
		snprintf(path, sizeof(path), "components[%zu]", i);
		if (json_is_object(c) && (e = known_keys(file, lines, c, path, component_keys, st)))
			return e;
		snprintf(sub, sizeof(sub), "%s.target", path);
		if (json_is_object(t) && (e = known_keys(file, lines, t, sub, target_keys, st)))
			return e;
	}
	return FERRY_OK;
}

/* delta_from: a patch from each older image to this one, written beside
 * the image as IMAGE.from-BASE12.fdl; `deltas` gets what the gateway needs,
 * files gets each patch's path as NAME@BASE (so `ferry deploy` publishes
 * it and links it for every gateway). */
static ferry_err make_deltas(json_t *c, size_t i, const char *dir, const char *img_path, const char *img_hex,
			     json_t *files, ferry_status *st)
{
	const json_t *from = json_object_get(c, "delta_from"), *f;
	const char *name = json_string_value(json_object_get(c, "name"));
	char *nw = NULL;
	size_t nn = 0, k;
	json_t *deltas = json_array();
	ferry_err e = FERRY_OK;

	if (!json_is_array(from) || json_array_size(from) < 1 || json_array_size(from) > FERRY_DELTAS_MAX) {
		json_decref(deltas);
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: delta_from must list 1-%d older images", i,
				  FERRY_DELTAS_MAX);
	}
	if ((e = ferry_read_file(img_path, FERRY_DELTA_MAKE_MAX, &nw, &nn, st))) {
		json_decref(deltas);
		return e;
	}
	json_array_foreach(from, k, f) {
		char path[4096], out[4200], base_hex[65], patch_hex[65], *old = NULL;
		unsigned char *patch = NULL, md[32];
		size_t on = 0, pn = 0;
		const char *p = json_string_value(f);
		if (!p || !p[0]) {
			e = ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: delta_from[%zu] is not a file name", i, k);
			break;
		}
		snprintf(path, sizeof(path), "%s%s%s", p[0] == '/' ? "" : dir, p[0] == '/' ? "" : "/", p);
		if ((e = ferry_read_file(path, FERRY_DELTA_MAKE_MAX, &old, &on, st)))
			break;
		EVP_Digest(old, on, md, NULL, EVP_sha256(), NULL);
		ferry_hex32_fmt(md, base_hex);
		if (!strcmp(base_hex, img_hex)) {
			free(old);
			e = ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: delta_from[%zu] (%s) is the image itself",
				       i, k, p);
			break;
		}
		snprintf(out, sizeof(out), "%s.from-%.12s.fdl", img_path, base_hex);
		e = ferry_delta_make((unsigned char *)old, on, (unsigned char *)nw, nn, &patch, &pn, st);
		free(old);
		if (!e)
			e = ferry_write_file(out, patch, pn, st);
		if (!e) {
			EVP_Digest(patch, pn, md, NULL, EVP_sha256(), NULL);
			ferry_hex32_fmt(md, patch_hex);
			json_array_append_new(deltas, json_pack("{s:s,s:s,s:I,s:s}", "base_sha256", base_hex, "sha256",
								 patch_hex, "size", (json_int_t)pn, "format",
								 FERRY_DELTA_FORMAT));
			if (files && name) {
				char key[200];
				snprintf(key, sizeof(key), "%s@%s", name, base_hex);
				json_object_set_new(files, key, json_string(out));
			}
		}
		free(patch);
		if (e)
			break;
	}
	free(nw);
	if (e) {
		json_decref(deltas);
		return e;
	}
	json_object_del(c, "delta_from");
	json_object_set_new(c, "deltas", deltas);
	return FERRY_OK;
}

/* The image encrypted with a fresh content key into IMAGE.fenc (written
 * through a temporary file, 0644: it is ciphertext); `encryption` gets its
 * size and digest, files its path, keys the content key. */
static ferry_err encrypt_image(json_t *c, size_t i, const char *img_path, json_t *files, json_t *keys, json_t *made,
			       ferry_status *st)
{
	const json_t *done = json_object_get(made, img_path);
	const char *name = json_string_value(json_object_get(c, "name"));
	char out[4200], tmp[4300], hex[65], b64[64];
	uint8_t key[FERRY_ENC_KEY];
	int64_t size;
	ferry_err e;

	if (!keys)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "components[%zu]: encrypt: this command keeps no content keys "
				  "(ferry manifest sign and ferry deploy do)", i);
	if (!name)
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: an encrypted component needs a name", i);
	if (json_object_get(c, "delta_from"))
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: an encrypted component takes no delta_from", i);
	if (done) {
		/* another component of this spec encrypted the same file: one
		 * ciphertext, one key (a second one would overwrite IMAGE.fenc) */
		json_object_set_new(c, "encryption", json_deep_copy(json_object_get(done, "encryption")));
		json_object_set(keys, name, json_object_get(done, "key"));
		if (files)
			json_object_set(files, name, json_object_get(done, "out"));
		return FERRY_OK;
	}
	if (!ferry_enc_keygen(key))
		return ferry_fail(st, FERRY_E_INTERNAL, "no random content key (libsodium)");
	snprintf(out, sizeof(out), "%s.fenc", img_path);
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	int in = open(img_path, O_RDONLY | O_CLOEXEC), fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (in < 0 || fd < 0)
		e = ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", in < 0 ? img_path : tmp, strerror(errno));
	else if (!(e = ferry_enc_encrypt(in, fd, key, st)) && (fsync(fd) || rename(tmp, out)))
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", out, strerror(errno));
	if (in >= 0)
		close(in);
	if (fd >= 0)
		close(fd);
	if (e)
		unlink(tmp);
	if (!e)
		e = hash_file(out, &size, hex, st);
	size_t bn = e ? 0 : jose_b64_enc_buf(key, sizeof(key), b64, sizeof(b64) - 1);
	if (!e && bn >= sizeof(b64))
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot encode the content key");
	OPENSSL_cleanse(key, sizeof(key));
	if (e)
		return e;
	b64[bn] = '\0';
	json_object_set_new(c, "encryption", json_pack("{s:s,s:I,s:s}", "format", FERRY_ENC_FORMAT, "size",
						       (json_int_t)size, "sha256", hex));
	json_object_set_new(keys, name, json_string(b64));
	OPENSSL_cleanse(b64, sizeof(b64));
	if (files)
		json_object_set_new(files, name, json_string(out));
	json_object_set_new(made, img_path, json_pack("{s:O,s:O,s:s}", "encryption", json_object_get(c, "encryption"),
						      "key", json_object_get(keys, name), "out", out));
	return FERRY_OK;
}

static ferry_err fill_component(json_t *c, size_t i, const char *dir, bool encrypt_all, json_t *files,
				json_t *keys, json_t *made, ferry_status *st)
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
	if (files && json_is_string(json_object_get(c, "name")))
		json_object_set_new(files, json_string_value(json_object_get(c, "name")), json_string(path));
	const json_t *enc = json_object_get(c, "encrypt");
	if (enc && !json_is_boolean(enc))
		return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: encrypt must be true or false", i);
	if ((encrypt_all || json_is_true(enc)) && (e = encrypt_image(c, i, path, files, keys, made, st)))
		return e;
	json_object_del(c, "encrypt");
	if (json_object_get(c, "delta_from") && (e = make_deltas(c, i, dir, path, hex, files, st)))
		return e;
	json_object_del(c, "file");
	json_object_set_new(c, "size", json_integer(size));
	json_object_set_new(c, "sha256", json_string(hex));
	return FERRY_OK;
}

ferry_err ferry_spec_load(const char *spec_path, time_t now, bool encrypt_all, json_t **payload, json_t *files,
			  json_t *keys, ferry_status *st)
{
	char dirbuf[4096];
	json_t *spec, *comps, *c, *lines = NULL;
	ferry_manifest m;
	size_t i;
	ferry_err e;

	if ((e = ferry_yaml_to_json(spec_path, &spec, &lines, st)))
		return e;
	snprintf(dirbuf, sizeof(dirbuf), "%s", spec_path);
	const char *dir = dirname(dirbuf);
	comps = json_object_get(spec, "components");
	if (!json_is_object(spec) || !json_is_array(comps)) {
		json_decref(spec);
		json_decref(lines);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: needs a \"components\" list", spec_path);
	}
	e = check_keys(spec_path, spec, lines, st);
	json_decref(lines);
	if (e) {
		json_decref(spec);
		return e;
	}
	json_t *made = json_object(); /* image path -> its encryption, when encrypted */
	json_array_foreach(comps, i, c) {
		if ((e = fill_component(c, i, dir, encrypt_all, files, keys, made, st))) {
			ferry_status_prefix(st, "%s: ", spec_path);
			json_decref(made);
			json_decref(spec);
			return e;
		}
	}
	json_decref(made);
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
