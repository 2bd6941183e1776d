/* Strict JSON reading for signed formats: duplicate keys refused, every field
 * checked for type and bounds, errors naming the field. */
#ifndef FERRY_JSONFIELD_H
#define FERRY_JSONFIELD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

/* Parse a JSON object from len bytes; duplicate keys, NUL bytes, trailing data
 * and non-objects are refused as malformed. */
ferry_err ferry_json_load_object(const char *buf, size_t len, json_t **out, ferry_status *st) FERRY_WUR;

/* Character classes for string fields. */
typedef enum ferry_charset {
	FERRY_CS_ANY,     /* any UTF-8 without control characters */
	FERRY_CS_ID,      /* [A-Za-z0-9._-] */
	FERRY_CS_HEX,     /* [0-9a-f] */
	FERRY_CS_B64URL,  /* [A-Za-z0-9_-] plus '.' (compact JWS) */
} ferry_charset;

/* A string field copied into out (size outsz, which must exceed max).
 * Missing: malformed when required, else out = "" and *present = false. */
ferry_err ferry_json_str(const json_t *obj, const char *key, bool required, size_t min, size_t max,
			 ferry_charset cs, char *out, size_t outsz, bool *present, ferry_status *st) FERRY_WUR;
/* A string field left in place (borrowed from obj), for long values. */
ferry_err ferry_json_str_ref(const json_t *obj, const char *key, bool required, size_t min, size_t max,
			     ferry_charset cs, const char **out, ferry_status *st) FERRY_WUR;
/* An integer in [min, max]; missing optional fields leave *out untouched. */
ferry_err ferry_json_int(const json_t *obj, const char *key, bool required, int64_t min, int64_t max,
			 int64_t *out, bool *present, ferry_status *st) FERRY_WUR;
ferry_err ferry_json_bool(const json_t *obj, const char *key, bool *out, ferry_status *st) FERRY_WUR;
/* An object or array member (borrowed); NULL when absent and optional. */
ferry_err ferry_json_member(const json_t *obj, const char *key, bool required, json_type type,
			    const json_t **out, ferry_status *st) FERRY_WUR;
bool ferry_charset_ok(const char *s, size_t len, ferry_charset cs);

#endif
