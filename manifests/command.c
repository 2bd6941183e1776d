/* Commands: the payload of a signed command, read strictly.  Which fields an
 * operation needs is decided here, so that a command that passes this file
 * can be acted on without further shape checks. */
#include "ferry/command.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "ferry/jsonfield.h"
#include "ferry/jwe.h"
#include "ferry/jws.h"

/* Times in JSON must survive a double; 2^53 s is far beyond any real date. */
#define TIME_MAX_JSON ((int64_t)1 << 53)

static const char *const op_names[FERRY_OP_COUNT] = {
	[FERRY_OP_UPDATE_REQUEST] = "update.request",   [FERRY_OP_UPDATE_DOWNLOAD] = "update.download",
	[FERRY_OP_UPDATE_CHECK] = "update.check",       [FERRY_OP_UPDATE_INSTALL] = "update.install",
	[FERRY_OP_UPDATE_DEPLOY] = "update.deploy",     [FERRY_OP_UPDATE_CANCEL] = "update.cancel",
	[FERRY_OP_INVENTORY_REFRESH] = "inventory.refresh", [FERRY_OP_UPDATE_STATUS] = "update.status",
};

const char *ferry_op_name(ferry_op op)
{
	return (unsigned)op < FERRY_OP_COUNT ? op_names[op] : "?";
}

int ferry_op_parse(const char *s, ferry_op *out)
{
	for (int i = 0; i < FERRY_OP_COUNT; i++)
		if (!strcmp(s, op_names[i])) {
			*out = (ferry_op)i;
			return 0;
		}
	return -1;
}

static bool op_needs_manifest(ferry_op op)
{
	return op == FERRY_OP_UPDATE_REQUEST || op == FERRY_OP_UPDATE_DEPLOY;
}

static bool op_needs_links(ferry_op op)
{
	return op == FERRY_OP_UPDATE_DOWNLOAD || op == FERRY_OP_UPDATE_DEPLOY;
}

static ferry_err parse_links(const json_t *obj, ferry_command *c, ferry_status *st)
{
	const char *name;
	json_t *v;
	size_t n = json_object_size(obj), i = 0;

	if (n == 0 || n > FERRY_LINKS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "links must name 1-%d components", FERRY_LINKS_MAX);
	c->links = calloc(n, sizeof(*c->links));
	if (!c->links)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	json_object_foreach((json_t *)obj, name, v) {
		const char *at = strchr(name, '@');
		size_t nl = at ? (size_t)(at - name) : strlen(name), ul;
		if (nl == 0 || nl > FERRY_ID_MAX || !ferry_charset_ok(name, nl, FERRY_CS_ID))
			return ferry_fail(st, FERRY_E_MALFORMED, "links: component name \"%.64s\" is not an id", name);
		/* NAME@BASE: a delta's link, BASE its base image's SHA-256 */
		if (at && (strlen(at + 1) != 64 || !ferry_charset_ok(at + 1, 64, FERRY_CS_HEX)))
			return ferry_fail(st, FERRY_E_MALFORMED,
					  "links: \"%.64s\": after the @ comes a delta's base_sha256 (64 lowercase hex digits)",
					  name);
		if (!json_is_string(v))
			return ferry_fail(st, FERRY_E_MALFORMED, "links.%s must be a string", name);
		ul = json_string_length(v);
		if (ul > FERRY_URL_MAX || !ferry_charset_ok(json_string_value(v), ul, FERRY_CS_ANY) ||
		    strchr(json_string_value(v), ' '))
			return ferry_fail(st, FERRY_E_MALFORMED, "links.%s is not a URL of at most %d characters",
					  name, FERRY_URL_MAX);
		/* Links are secrets: the detail names the component, never the URL. */
		if (strncmp(json_string_value(v), "https://", 8) || ul <= 8)
			return ferry_fail(st, FERRY_E_UNSUPPORTED, "links.%s is not an https:// URL", name);
		snprintf(c->links[i].component, sizeof(c->links[i].component), "%.*s", (int)nl, name);
		if (at) {
			c->links[i].delta = true;
			memcpy(c->links[i].base_hex, at + 1, 65);
		}
		if (!(c->links[i].url = strdup(json_string_value(v))))
			return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		c->n_links = ++i;
	}
	return FERRY_OK;
}

/* keys: component name -> compact JWE.  Only their shape here; the
 * gateway unwraps them. */
static ferry_err parse_keys(const json_t *obj, ferry_command *c, ferry_status *st)
{
	const char *name;
	json_t *v;
	size_t n = json_object_size(obj), i = 0;

	if (n == 0 || n > FERRY_LINKS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "keys must name 1-%d components", FERRY_LINKS_MAX);
	if (!(c->keys = calloc(n, sizeof(*c->keys))))
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	json_object_foreach((json_t *)obj, name, v) {
		size_t nl = strlen(name), vl;
		if (nl == 0 || nl > FERRY_ID_MAX || !ferry_charset_ok(name, nl, FERRY_CS_ID))
			return ferry_fail(st, FERRY_E_MALFORMED, "keys: component name \"%.64s\" is not an id", name);
		if (!json_is_string(v) || (vl = json_string_length(v)) == 0 || vl > FERRY_JWE_MAX ||
		    !ferry_charset_ok(json_string_value(v), vl, FERRY_CS_B64URL))
			return ferry_fail(st, FERRY_E_MALFORMED, "keys.%s is not a compact JWE of at most %d characters",
					  name, FERRY_JWE_MAX);
		snprintf(c->keys[i].component, sizeof(c->keys[i].component), "%s", name);
		if (!(c->keys[i].jwe = strdup(json_string_value(v))))
			return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		c->n_keys = ++i;
	}
	return FERRY_OK;
}

static ferry_err parse_fields(const json_t *p, ferry_command *c, ferry_status *st)
{
	const char *op, *manifest;
	const json_t *links, *keys;
	ferry_err e;

	if ((e = ferry_json_str(p, "iss", true, 1, FERRY_ISS_MAX, FERRY_CS_ANY, c->iss, sizeof(c->iss), NULL, st)) ||
	    (e = ferry_json_str(p, "sub", true, 1, FERRY_ID_MAX, FERRY_CS_ID, c->sub, sizeof(c->sub), NULL, st)) ||
	    (e = ferry_json_str(p, "jti", true, 1, FERRY_JTI_MAX, FERRY_CS_ANY, c->jti, sizeof(c->jti), NULL, st)) ||
	    (e = ferry_json_int(p, "iat", true, 0, TIME_MAX_JSON, &c->iat, NULL, st)) ||
	    (e = ferry_json_int(p, "nbf", true, 0, TIME_MAX_JSON, &c->nbf, NULL, st)) ||
	    (e = ferry_json_int(p, "exp", true, 0, TIME_MAX_JSON, &c->exp, NULL, st)) ||
	    (e = ferry_json_str_ref(p, "op", true, 1, 64, FERRY_CS_ANY, &op, st)))
		return e;
	if (c->exp <= c->nbf)
		return ferry_fail(st, FERRY_E_MALFORMED, "exp (%lld) must be after nbf (%lld)", (long long)c->exp,
				  (long long)c->nbf);
	if (ferry_op_parse(op, &c->op))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "op \"%.64s\" is not an operation this gateway knows", op);
	if (c->op != FERRY_OP_INVENTORY_REFRESH &&
	    (e = ferry_json_str(p, "update_id", true, 1, FERRY_ID_MAX, FERRY_CS_ID, c->update_id,
				sizeof(c->update_id), NULL, st)))
		return e;
	if (op_needs_manifest(c->op)) {
		if ((e = ferry_json_str_ref(p, "manifest", true, 1, FERRY_JWS_MAX, FERRY_CS_B64URL, &manifest, st)))
			return e;
		if (!(c->manifest = strdup(manifest)))
			return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	if (op_needs_links(c->op)) {
		if ((e = ferry_json_member(p, "links", true, JSON_OBJECT, &links, st)) ||
		    (e = parse_links(links, c, st)) ||
		    (e = ferry_json_member(p, "keys", false, JSON_OBJECT, &keys, st)))
			return e;
		if (keys && (e = parse_keys(keys, c, st)))
			return e;
	}
	return FERRY_OK;
}

ferry_err ferry_command_parse(const json_t *p, ferry_command *c, ferry_status *st)
{
	ferry_err e;

	memset(c, 0, sizeof(*c));
	if ((e = parse_fields(p, c, st))) {
		ferry_status_prefix(st, "command: ");
		ferry_command_free(c);
	}
	return e;
}

ferry_err ferry_command_check(const ferry_command *c, const char *gateway_id, time_t now, long skew,
			      ferry_status *st)
{
	if (strcmp(c->sub, gateway_id))
		return ferry_fail(st, FERRY_E_WRONG_GATEWAY, "command is for gateway \"%s\", this is \"%s\"", c->sub,
				  gateway_id);
	if ((int64_t)now + skew < c->nbf)
		return ferry_fail(st, FERRY_E_NOT_YET_VALID, "command is valid from %lld, now is %lld",
				  (long long)c->nbf, (long long)now);
	if ((int64_t)now - skew >= c->exp)
		return ferry_fail(st, FERRY_E_EXPIRED, "command expired at %lld, now is %lld", (long long)c->exp,
				  (long long)now);
	return FERRY_OK;
}

ferry_err ferry_command_verify(const char *compact, size_t len, const ferry_trust *trust, const char *gateway_id,
			       time_t now, long skew, ferry_command *out, json_t **payload, ferry_status *st)
{
	ferry_jws jws;
	ferry_err e;

	memset(out, 0, sizeof(*out));
	if ((e = ferry_jws_verify(compact, len, trust, now, "ferry-cmd", &jws, st))) {
		ferry_status_prefix(st, "command: ");
		return e;
	}
	e = ferry_command_parse(jws.payload, out, st);
	if (!e && (e = ferry_command_check(out, gateway_id, now, skew, st)))
		ferry_command_free(out);
	if (!e && payload)
		*payload = json_incref(jws.payload);
	ferry_jws_clear(&jws);
	return e;
}

void ferry_command_free(ferry_command *c)
{
	for (size_t i = 0; i < c->n_links; i++)
		free(c->links[i].url);
	free(c->links);
	for (size_t i = 0; i < c->n_keys; i++)
		free(c->keys[i].jwe);
	free(c->keys);
	c->keys = NULL;
	c->n_keys = 0;
	free(c->manifest);
	c->links = NULL;
	c->manifest = NULL;
	c->n_links = 0;
}
