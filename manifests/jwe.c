/* Wrapping and unwrapping content keys (ferry/jwe.h).  libjose does ECDH-ES,
 * AES key wrap and AES-GCM; what is allowed is decided here, before libjose
 * sees the JWE: exactly one algorithm pair, no compression, no extensions. */
#include "ferry/jwe.h"

#include <errno.h>
#include <jose/jwe.h>
#include <jose/openssl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/jsonfield.h"
#include "ferry/jws.h"

static bool is_p256(EVP_PKEY *k)
{
	char group[32];
	return k && EVP_PKEY_is_a(k, "EC") &&
	       EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) &&
	       !strcmp(group, "prime256v1");
}

/* A symmetric JWK's secret ("k"), wiped before the JWK is freed: the
 * content-encryption key libjose made for one wrapping. */
static void wipe_secret(json_t *jwk)
{
	json_t *k = json_object_get(jwk, "k");
	if (json_is_string(k))
		OPENSSL_cleanse((char *)json_string_value(k), json_string_length(k));
}

ferry_err ferry_jwe_wrap(const uint8_t key[32], EVP_PKEY *pub, char **out, ferry_status *st)
{
	static const char *const parts[] = {"protected", "encrypted_key", "iv", "ciphertext", "tag"};
	json_t *jwk = NULL, *jwe = NULL, *rcp = NULL, *cek = NULL, *hdr = NULL;
	ferry_err e = FERRY_OK;
	size_t len = 0;

	*out = NULL;
	if (!is_p256(pub))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "the recipient's key is not a P-256 key");
	jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, pub);
	json_object_del(jwk, "d"); /* whatever was given, only its public half is used */
	jwe = json_pack("{s:{s:s}}", "protected", "enc", FERRY_JWE_ENC);
	rcp = json_pack("{s:{s:s}}", "header", "alg", FERRY_JWE_ALG);
	cek = json_object();
	if (!jwk || !jwe || !rcp || !cek || !jose_jwe_enc_jwk(NULL, jwe, rcp, jwk, cek) ||
	    !(hdr = jose_jwe_hdr(jwe, jwe))) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot wrap the key (libjose)");
		goto out;
	}
	/* compact: every header is protected */
	json_object_set_new(jwe, "protected", hdr);
	json_object_del(jwe, "unprotected");
	json_object_del(jwe, "header");
	if (!jose_jwe_enc_cek(NULL, jwe, cek, key, 32)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot encrypt the key (libjose)");
		goto out;
	}
	for (size_t i = 0; i < 5; i++) {
		const char *v = json_string_value(json_object_get(jwe, parts[i]));
		if (!v) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "the JWE lacks its %s", parts[i]);
			goto out;
		}
		len += strlen(v) + 1;
	}
	if (!(*out = malloc(len))) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	(*out)[0] = '\0';
	for (size_t i = 0; i < 5; i++) {
		if (i)
			strcat(*out, ".");
		strcat(*out, json_string_value(json_object_get(jwe, parts[i])));
	}
out:
	json_decref(jwk);
	json_decref(jwe);
	json_decref(rcp);
	wipe_secret(cek);
	json_decref(cek);
	return e;
}

/* The protected header: strict JSON, the one algorithm pair, nothing that
 * changes how it is read. */
static ferry_err check_header(const char *p, size_t len, ferry_status *st)
{
	unsigned char *raw = NULL;
	size_t n;
	json_t *h;
	json_error_t je;
	const char *alg, *enc;
	ferry_err e = FERRY_OK;

	if (!len || !ferry_b64url_decode(p, len, &raw, &n))
		return ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: the JWE header is not base64url");
	h = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, &je);
	free(raw);
	if (!json_is_object(h)) {
		json_decref(h);
		return ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: the JWE header is not a JSON object");
	}
	alg = json_string_value(json_object_get(h, "alg"));
	enc = json_string_value(json_object_get(h, "enc"));
	if (!alg || !enc)
		e = ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: the JWE header lacks alg or enc");
	else if (strcmp(alg, FERRY_JWE_ALG) || strcmp(enc, FERRY_JWE_ENC))
		e = ferry_fail(st, FERRY_E_UNSUPPORTED, "wrapped key: alg %.32s with enc %.32s; only %s with %s is "
			       "accepted", alg, enc, FERRY_JWE_ALG, FERRY_JWE_ENC);
	else if (json_object_get(h, "zip") || json_object_get(h, "crit"))
		e = ferry_fail(st, FERRY_E_UNSUPPORTED, "wrapped key: the JWE header has %s",
			       json_object_get(h, "zip") ? "zip" : "crit");
	else if (!json_is_object(json_object_get(h, "epk")))
		e = ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: the JWE header has no epk");
	json_decref(h);
	return e;
}

ferry_err ferry_jwe_unwrap(const char *compact, const json_t *jwk, uint8_t key[32], ferry_status *st)
{
	static const char *const parts[] = {"protected", "encrypted_key", "iv", "ciphertext", "tag"};
	size_t len = strlen(compact), start = 0, k = 0;
	json_t *jwe = json_object();
	ferry_err e = FERRY_OK;

	if (len > FERRY_JWE_MAX || !ferry_charset_ok(compact, len, FERRY_CS_B64URL)) {
		json_decref(jwe);
		return ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: not a compact JWE of at most %d characters",
				  FERRY_JWE_MAX);
	}
	for (size_t i = 0; i <= len && k < 6; i++) {
		if (i < len && compact[i] != '.')
			continue;
		if (k < 5)
			json_object_set_new(jwe, parts[k], json_stringn(compact + start, i - start));
		k++;
		start = i + 1;
	}
	if (k != 5) {
		json_decref(jwe);
		return ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: a compact JWE has five parts, not %zu", k);
	}
	const char *ph = json_string_value(json_object_get(jwe, "protected"));
	if ((e = check_header(ph, strlen(ph), st))) {
		json_decref(jwe);
		return e;
	}
	size_t ptl = 0;
	uint8_t *pt = jose_jwe_dec(NULL, jwe, NULL, jwk, &ptl);
	json_decref(jwe);
	if (!pt)
		return ferry_fail(st, FERRY_E_DECRYPT_FAILED, "wrapped key: it does not unwrap with this gateway's "
				  "key-agreement key (wrapped for another key, or altered)");
	if (ptl != 32)
		e = ferry_fail(st, FERRY_E_MALFORMED, "wrapped key: the content key is %zu bytes, not 32", ptl);
	else
		memcpy(key, pt, 32);
	OPENSSL_cleanse(pt, ptl);
	free(pt);
	return e;
}

ferry_err ferry_jwe_load_key(const char *path, json_t **jwk, ferry_status *st)
{
	FILE *f = fopen(path, "re");
	EVP_PKEY *k;

	*jwk = NULL;
	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!k)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: not a PEM private key", path);
	if (!is_p256(k)) {
		EVP_PKEY_free(k);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: not a P-256 key", path);
	}
	*jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, k);
	EVP_PKEY_free(k);
	if (!*jwk || !json_object_get(*jwk, "d")) {
		json_decref(*jwk);
		*jwk = NULL;
		return ferry_fail(st, FERRY_E_INTERNAL, "%s: cannot make a JWK of it", path);
	}
	return FERRY_OK;
}
