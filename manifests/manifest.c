/* Manifests: what an update contains, read strictly from a signed payload.
 * Everything the gateway later relies on without looking again -- sizes,
 * digests, names, install order -- is established here. */
#include "ferry/manifest.h"

#include <stdlib.h>
#include <string.h>

#include "ferry/enc.h"
#include "ferry/jsonfield.h"
#include "ferry/jws.h"

#define TIME_MAX_JSON ((int64_t)1 << 53)

static const char *const ctype_names[] = {"firmware", "configuration", "application"};
static const char *const format_names[FERRY_FORMAT_COUNT] = {"raw", "dfu", "dfuse", "mcuboot", "rauc-bundle", "file"};

const char *ferry_ctype_name(ferry_ctype t)
{
	return (unsigned)t < 3 ? ctype_names[t] : "?";
}

int ferry_link_rank(const char *level)
{
	static const char *const levels[] = {"unauthenticated", "bonded-encrypted", "physical"};
	for (int i = 0; level && i < 3; i++)
		if (!strcmp(level, levels[i]))
			return i;
	return -1;
}

const char *ferry_format_name(ferry_format f)
{
	return (unsigned)f < FERRY_FORMAT_COUNT ? format_names[f] : "?";
}

int ferry_hex32(const char *hex, uint8_t out[32])
{
	if (strlen(hex) != 64 || !ferry_charset_ok(hex, 64, FERRY_CS_HEX))
		return -1;
	for (int i = 0; i < 32; i++) {
		int hi = hex[2 * i] <= '9' ? hex[2 * i] - '0' : hex[2 * i] - 'a' + 10;
		int lo = hex[2 * i + 1] <= '9' ? hex[2 * i + 1] - '0' : hex[2 * i + 1] - 'a' + 10;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

void ferry_hex32_fmt(const uint8_t in[32], char out[65])
{
	static const char d[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[64] = '\0';
}

static ferry_err sha_field(const json_t *o, const char *key, uint8_t out[32], ferry_status *st)
{
	const char *s;
	ferry_err e = ferry_json_str_ref(o, key, true, 64, 64, FERRY_CS_HEX, &s, st);
	if (e)
		return e;
	if (ferry_hex32(s, out))
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must be 64 lowercase hex digits", key);
	return FERRY_OK;
}

static ferry_err parse_target(const json_t *t, ferry_component *c, ferry_status *st)
{
	const json_t *match;
	const char *k;
	json_t *v;
	ferry_err e;

	if ((e = ferry_json_str(t, "vendor_id", true, 1, FERRY_ID_MAX, FERRY_CS_ANY, c->vendor_id,
				sizeof(c->vendor_id), NULL, st)) ||
	    (e = ferry_json_str(t, "class_id", true, 1, FERRY_ID_MAX, FERRY_CS_ANY, c->class_id,
				sizeof(c->class_id), NULL, st)) ||
	    (e = ferry_json_member(t, "match", false, JSON_OBJECT, &match, st)))
		return e;
	if (!match)
		return FERRY_OK;
	if (json_object_size(match) > FERRY_MATCH_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "target.match has more than %d entries", FERRY_MATCH_MAX);
	json_object_foreach((json_t *)match, k, v) {
		ferry_kv *kv = &c->match[c->n_match];
		size_t kl = strlen(k);
		if (kl == 0 || kl > FERRY_ID_MAX || !ferry_charset_ok(k, kl, FERRY_CS_ID))
			return ferry_fail(st, FERRY_E_MALFORMED, "target.match key \"%.64s\" is not an id", k);
		if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > FERRY_ID_MAX ||
		    !ferry_charset_ok(json_string_value(v), json_string_length(v), FERRY_CS_ANY))
			return ferry_fail(st, FERRY_E_MALFORMED, "target.match.%s must be a string of 1-%d characters",
					  k, FERRY_ID_MAX);
		snprintf(kv->key, sizeof(kv->key), "%s", k);
		snprintf(kv->value, sizeof(kv->value), "%s", json_string_value(v));
		c->n_match++;
	}
	return FERRY_OK;
}

static ferry_err parse_delta(const json_t *d, const ferry_component *c, ferry_delta *out, ferry_status *st)
{
	ferry_err e;

	if (!json_is_object(d))
		return ferry_fail(st, FERRY_E_MALFORMED, "not an object");
	if ((e = sha_field(d, "base_sha256", out->base_sha256, st)) || (e = sha_field(d, "sha256", out->sha256, st)) ||
	    (e = ferry_json_int(d, "size", true, 1, FERRY_IMAGE_SIZE_MAX, &out->size, NULL, st)) ||
	    (e = ferry_json_str(d, "format", true, 1, FERRY_FORMAT_MAX, FERRY_CS_ID, out->format,
				sizeof(out->format), NULL, st)))
		return e;
	if (strcmp(out->format, "ferry-delta-1"))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "delta format \"%s\" is not supported (ferry-delta-1 is)",
				  out->format);
	if (!memcmp(out->base_sha256, c->sha256, 32))
		return ferry_fail(st, FERRY_E_MALFORMED, "a delta from the image itself");
	return FERRY_OK;
}

/* deltas: up to FERRY_DELTAS_MAX patches, each from another base. */
static ferry_err parse_deltas(const json_t *arr, ferry_component *c, ferry_status *st)
{
	const json_t *d;
	size_t i;

	if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > FERRY_DELTAS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "deltas must be an array of 1-%d patches", FERRY_DELTAS_MAX);
	json_array_foreach(arr, i, d) {
		ferry_err e = parse_delta(d, c, &c->deltas[i], st);
		if (e) {
			ferry_status_prefix(st, "deltas[%zu]: ", i);
			return e;
		}
		for (size_t k = 0; k < i; k++)
			if (!memcmp(c->deltas[k].base_sha256, c->deltas[i].base_sha256, 32))
				return ferry_fail(st, FERRY_E_MALFORMED, "deltas[%zu]: a second delta from the base of "
						  "deltas[%zu]", i, k);
		c->n_deltas = i + 1;
	}
	return FERRY_OK;
}

/* encryption: the ciphertext's format, size and digest.  Its size follows
 * from the plaintext's, so a lying one is refused before any byte moves. */
static ferry_err parse_encryption(const json_t *o, ferry_component *c, ferry_status *st)
{
	ferry_err e;

	if ((e = ferry_json_str(o, "format", true, 1, FERRY_FORMAT_MAX, FERRY_CS_ID, c->enc.format,
				sizeof(c->enc.format), NULL, st)) ||
	    (e = ferry_json_int(o, "size", true, 1, FERRY_IMAGE_SIZE_MAX * 2, &c->enc.size, NULL, st)) ||
	    (e = sha_field(o, "sha256", c->enc.sha256, st)))
		return e;
	if (strcmp(c->enc.format, FERRY_ENC_FORMAT))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "encryption format \"%s\" is not supported (%s is)",
				  c->enc.format, FERRY_ENC_FORMAT);
	if (c->enc.size != ferry_enc_size(c->size))
		return ferry_fail(st, FERRY_E_MALFORMED, "a %s image of %lld bytes is %lld bytes encrypted, not %lld",
				  FERRY_ENC_FORMAT, (long long)c->size, (long long)ferry_enc_size(c->size),
				  (long long)c->enc.size);
	if (c->n_deltas)
		return ferry_fail(st, FERRY_E_MALFORMED, "an encrypted component has no deltas");
	c->encrypted = true;
	return FERRY_OK;
}

static ferry_err parse_component(const json_t *o, ferry_component *c, ferry_status *st)
{
	char buf[FERRY_FORMAT_MAX + 1];
	const char *ver;
	const json_t *target, *deltas, *enc;
	int i;
	ferry_err e;

	if (!json_is_object(o))
		return ferry_fail(st, FERRY_E_MALFORMED, "not an object");
	if ((e = ferry_json_str(o, "name", true, 1, FERRY_ID_MAX, FERRY_CS_ID, c->name, sizeof(c->name), NULL, st)))
		return e;
	if ((e = ferry_json_str(o, "type", true, 1, FERRY_FORMAT_MAX, FERRY_CS_ID, buf, sizeof(buf), NULL, st)))
		return e;
	for (i = 0; i < 3 && strcmp(buf, ctype_names[i]); i++)
		;
	if (i == 3)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "type \"%s\" is not firmware, configuration or application", buf);
	c->type = (ferry_ctype)i;
	if ((e = ferry_json_str(o, "adapter", true, 1, FERRY_ID_MAX, FERRY_CS_ID, c->adapter, sizeof(c->adapter),
				NULL, st)) ||
	    (e = ferry_json_member(o, "target", true, JSON_OBJECT, &target, st)) ||
	    (e = parse_target(target, c, st)) ||
	    (e = ferry_json_str_ref(o, "version", true, 1, FERRY_SEMVER_MAX, FERRY_CS_ANY, &ver, st)) ||
	    (e = ferry_semver_parse(ver, &c->version, st)) ||
	    (e = ferry_json_int(o, "size", true, 1, FERRY_IMAGE_SIZE_MAX, &c->size, NULL, st)) ||
	    (e = sha_field(o, "sha256", c->sha256, st)) ||
	    (e = ferry_json_str(o, "format", true, 1, FERRY_FORMAT_MAX, FERRY_CS_ID, buf, sizeof(buf), NULL, st)))
		return e;
	for (i = 0; i < FERRY_FORMAT_COUNT && strcmp(buf, format_names[i]); i++)
		;
	if (i == FERRY_FORMAT_COUNT)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "format \"%s\" is not supported", buf);
	c->format = (ferry_format)i;
	if ((e = ferry_json_member(o, "deltas", false, JSON_ARRAY, &deltas, st)) ||
	    (e = ferry_json_member(o, "encryption", false, JSON_OBJECT, &enc, st)))
		return e;
	if (deltas && (e = parse_deltas(deltas, c, st)))
		return e;
	if ((e = ferry_json_str(o, "min_link", false, 1, FERRY_LINK_MAX, FERRY_CS_ID, c->min_link, sizeof(c->min_link),
				NULL, st)) ||
	    (e = ferry_json_bool(o, "encrypted_for_device", &c->encrypted_for_device, st)))
		return e;
	if (c->min_link[0] && ferry_link_rank(c->min_link) < 0)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "min_link \"%s\" is not physical, bonded-encrypted or "
				  "unauthenticated", c->min_link);
	if (enc && (e = parse_encryption(enc, c, st))) {
		ferry_status_prefix(st, "encryption: ");
		return e;
	}
	return FERRY_OK;
}

/* `after` names components of this manifest, never the component itself. */
static ferry_err parse_after(const json_t *o, ferry_manifest *m, size_t idx, ferry_status *st)
{
	const json_t *after, *v;
	ferry_component *c = &m->c[idx];
	size_t i;
	ferry_err e;

	if ((e = ferry_json_member(o, "after", false, JSON_ARRAY, &after, st)) || !after)
		return e;
	if (json_array_size(after) > FERRY_COMPONENTS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "after lists too many names");
	json_array_foreach(after, i, v) {
		size_t j;
		if (!json_is_string(v))
			return ferry_fail(st, FERRY_E_MALFORMED, "after[%zu] must be a string", i);
		for (j = 0; j < m->n && strcmp(m->c[j].name, json_string_value(v)); j++)
			;
		if (j == m->n)
			return ferry_fail(st, FERRY_E_MALFORMED, "after names \"%.64s\", which is not in the manifest",
					  json_string_value(v));
		if (j == idx)
			return ferry_fail(st, FERRY_E_MALFORMED, "a component cannot come after itself");
		c->after[c->n_after++] = j;
	}
	return FERRY_OK;
}

/* Install order: repeatedly take the first listed component whose `after`
 * components are all placed.  Stable, and a cycle leaves some unplaced. */
static ferry_err order_components(ferry_manifest *m, ferry_status *st)
{
	bool placed[FERRY_COMPONENTS_MAX] = {false};

	for (size_t k = 0; k < m->n; k++) {
		size_t i;
		for (i = 0; i < m->n; i++) {
			bool ready = !placed[i];
			for (size_t a = 0; ready && a < m->c[i].n_after; a++)
				ready = placed[m->c[i].after[a]];
			if (ready)
				break;
		}
		if (i == m->n)
			return ferry_fail(st, FERRY_E_MALFORMED, "components: the after lists form a cycle");
		placed[i] = true;
		m->order[k] = i;
	}
	return FERRY_OK;
}

static ferry_err parse_manifest(const json_t *p, ferry_manifest *m, ferry_status *st)
{
	const json_t *comps, *o;
	size_t i;
	ferry_err e;

	if ((e = ferry_json_int(p, "sequence", true, 0, TIME_MAX_JSON, &m->sequence, NULL, st)) ||
	    (e = ferry_json_int(p, "created", true, 0, TIME_MAX_JSON, &m->created, NULL, st)) ||
	    (e = ferry_json_int(p, "expires", false, 1, TIME_MAX_JSON, &m->expires, NULL, st)) ||
	    (e = ferry_json_bool(p, "allow_downgrade", &m->allow_downgrade, st)) ||
	    (e = ferry_json_bool(p, "atomic", &m->atomic, st)) ||
	    (e = ferry_json_member(p, "components", true, JSON_ARRAY, &comps, st)))
		return e;
	m->n = json_array_size(comps);
	if (m->n == 0 || m->n > FERRY_COMPONENTS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "components must list 1-%d components", FERRY_COMPONENTS_MAX);
	if (!(m->c = calloc(m->n, sizeof(*m->c))))
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	json_array_foreach(comps, i, o) {
		if ((e = parse_component(o, &m->c[i], st))) {
			ferry_status_prefix(st, "components[%zu]: ", i);
			return e;
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(m->c[j].name, m->c[i].name))
				return ferry_fail(st, FERRY_E_MALFORMED, "components[%zu]: name \"%s\" is used twice", i,
						  m->c[i].name);
	}
	json_array_foreach(comps, i, o) {
		if ((e = parse_after(o, m, i, st))) {
			ferry_status_prefix(st, "components[%zu]: ", i);
			return e;
		}
	}
	return order_components(m, st);
}

ferry_err ferry_manifest_parse(const json_t *p, ferry_manifest *m, ferry_status *st)
{
	ferry_err e;

	memset(m, 0, sizeof(*m));
	if ((e = parse_manifest(p, m, st))) {
		ferry_status_prefix(st, "manifest: ");
		ferry_manifest_free(m);
	}
	return e;
}

ferry_err ferry_manifest_verify(const char *compact, size_t len, const ferry_trust *trust, time_t now, long skew,
				ferry_manifest *out, json_t **payload, ferry_status *st)
{
	ferry_jws jws;
	ferry_err e;

	memset(out, 0, sizeof(*out));
	if ((e = ferry_jws_verify(compact, len, trust, now, "ferry-manifest", &jws, st))) {
		ferry_status_prefix(st, "manifest: ");
		return e;
	}
	e = ferry_manifest_parse(jws.payload, out, st);
	if (!e && out->expires && (int64_t)now - skew >= out->expires) {
		e = ferry_fail(st, FERRY_E_EXPIRED, "manifest: expired at %lld, now is %lld", (long long)out->expires,
			       (long long)now);
		ferry_manifest_free(out);
	}
	if (!e && payload)
		*payload = json_incref(jws.payload);
	ferry_jws_clear(&jws);
	return e;
}

const ferry_component *ferry_manifest_find(const ferry_manifest *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->c[i].name, name))
			return &m->c[i];
	return NULL;
}

void ferry_manifest_free(ferry_manifest *m)
{
	free(m->c);
	m->c = NULL;
	m->n = 0;
}
