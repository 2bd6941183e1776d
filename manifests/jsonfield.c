/* Strict JSON field access.  Everything a signer wrote passes through here, so
 * every rule of the formats about types and bounds lives in one place. */
#include "ferry/jsonfield.h"

#include <stdio.h>
#include <string.h>

ferry_err ferry_json_load_object(const char *buf, size_t len, json_t **out, ferry_status *st)
{
	json_error_t jerr;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);

	if (!j)
		return ferry_fail(st, FERRY_E_MALFORMED, "JSON: %s at byte %d", jerr.text, jerr.position);
	if (!json_is_object(j)) {
		json_decref(j);
		return ferry_fail(st, FERRY_E_MALFORMED, "JSON: top level is not an object");
	}
	*out = j;
	return FERRY_OK;
}

bool ferry_charset_ok(const char *s, size_t len, ferry_charset cs)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
		switch (cs) {
		case FERRY_CS_ANY:
			if (c < 0x20 || c == 0x7f)
				return false;
			break;
		case FERRY_CS_ID:
			if (!alnum && c != '.' && c != '_' && c != '-')
				return false;
			break;
		case FERRY_CS_HEX:
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
				return false;
			break;
		case FERRY_CS_B64URL:
			if (!alnum && c != '_' && c != '-' && c != '.')
				return false;
			break;
		}
	}
	return true;
}

static const char *charset_name(ferry_charset cs)
{
	switch (cs) {
	case FERRY_CS_ANY: return "printable characters";
	case FERRY_CS_ID: return "[A-Za-z0-9._-]";
	case FERRY_CS_HEX: return "lowercase hex digits";
	case FERRY_CS_B64URL: return "base64url and '.'";
	}
	return "?";
}

ferry_err ferry_json_str_ref(const json_t *obj, const char *key, bool required, size_t min, size_t max,
			     ferry_charset cs, const char **out, ferry_status *st)
{
	const json_t *v = json_object_get(obj, key);
	size_t len;

	*out = NULL;
	if (!v) {
		if (required)
			return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" is missing", key);
		return FERRY_OK;
	}
	if (!json_is_string(v))
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must be a string", key);
	len = json_string_length(v);
	if (len < min || len > max)
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must be %zu-%zu characters, not %zu",
				  key, min, max, len);
	if (!ferry_charset_ok(json_string_value(v), len, cs))
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must contain only %s", key,
				  charset_name(cs));
	*out = json_string_value(v);
	return FERRY_OK;
}

ferry_err ferry_json_str(const json_t *obj, const char *key, bool required, size_t min, size_t max,
			 ferry_charset cs, char *out, size_t outsz, bool *present, ferry_status *st)
{
	const char *s;
	ferry_err e;

	if (max >= outsz)
		return ferry_fail(st, FERRY_E_INTERNAL, "field \"%s\": buffer too small", key);
	if ((e = ferry_json_str_ref(obj, key, required, min, max, cs, &s, st)))
		return e;
	if (present)
		*present = s != NULL;
	snprintf(out, outsz, "%s", s ? s : "");
	return FERRY_OK;
}

ferry_err ferry_json_int(const json_t *obj, const char *key, bool required, int64_t min, int64_t max,
			 int64_t *out, bool *present, ferry_status *st)
{
	const json_t *v = json_object_get(obj, key);

	if (present)
		*present = v != NULL;
	if (!v)
		return required ? ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" is missing", key) : FERRY_OK;
	if (!json_is_integer(v))
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must be an integer", key);
	json_int_t i = json_integer_value(v);
	if (i < min || i > max)
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" is %lld, outside %lld..%lld", key,
				  (long long)i, (long long)min, (long long)max);
	*out = i;
	return FERRY_OK;
}

ferry_err ferry_json_bool(const json_t *obj, const char *key, bool *out, ferry_status *st)
{
	const json_t *v = json_object_get(obj, key);

	if (!v)
		return FERRY_OK;
	if (!json_is_boolean(v))
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must be true or false", key);
	*out = json_is_true(v);
	return FERRY_OK;
}

ferry_err ferry_json_member(const json_t *obj, const char *key, bool required, json_type type,
			    const json_t **out, ferry_status *st)
{
	const json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (!v)
		return required ? ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" is missing", key) : FERRY_OK;
	if (json_typeof(v) != type)
		return ferry_fail(st, FERRY_E_MALFORMED, "field \"%s\" must be %s", key,
				  type == JSON_OBJECT ? "an object" : type == JSON_ARRAY ? "an array" : "of another type");
	*out = v;
	return FERRY_OK;
}
