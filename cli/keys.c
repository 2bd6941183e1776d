/* Content keys on the operator's side (docs/encryption.md): the keys file
 * of `ferry manifest sign --encrypt`, and each key wrapped for one
 * gateway's key-agreement certificate. */
#include "keys.h"

#include <openssl/crypto.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "files.h"
#include "ferry/jwe.h"
#include "ferry/jws.h"
#include "ferry/manifest.h"
#include "ferry/trust.h"
#include <openssl/pem.h>
#include <time.h>

ferry_err cli_read_keys(const char *path, json_t **out, ferry_status *st)
{
	json_error_t je;
	const char *name;
	json_t *v, *k;
	char *buf = NULL;
	size_t len;
	ferry_err e;

	*out = NULL;
	if ((e = ferry_read_file(path, 64 * 1024, &buf, &len, st)))
		return e;
	k = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if (!json_is_object(k) || !json_object_size(k)) {
		json_decref(k);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: not a keys file of `ferry manifest sign --encrypt` (a JSON "
				  "object)", path);
	}
	json_object_foreach(k, name, v) {
		unsigned char *raw = NULL;
		size_t n = 0;
		bool ok = json_is_string(v) &&
			  ferry_b64url_decode(json_string_value(v), json_string_length(v), &raw, &n) && n == 32;
		if (raw)
			OPENSSL_cleanse(raw, n);
		free(raw);
		if (!ok) {
			json_decref(k);
			return ferry_fail(st, FERRY_E_MALFORMED, "%s: the key of %.64s is not 32 bytes in base64url", path,
					  name);
		}
	}
	*out = k;
	return FERRY_OK;
}

ferry_err cli_wrap_keys(const json_t *keys, X509 *cert, json_t **out, ferry_status *st)
{
	const char *name;
	json_t *v, *w;
	EVP_PKEY *pub = cert ? X509_get0_pubkey(cert) : NULL;
	uint32_t ku = cert ? X509_get_key_usage(cert) : 0;

	*out = NULL;
	if (!pub || ku == UINT32_MAX || !(ku & KU_KEY_AGREEMENT))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "the certificate to wrap keys for is not a key-agreement "
				  "certificate");
	w = json_object();
	json_object_foreach((json_t *)keys, name, v) {
		unsigned char *raw = NULL;
		size_t n = 0;
		char *jwe = NULL;
		ferry_err e = json_is_string(v) &&
					      ferry_b64url_decode(json_string_value(v), json_string_length(v), &raw, &n) &&
					      n == 32
				      ? ferry_jwe_wrap(raw, pub, &jwe, st)
				      : ferry_fail(st, FERRY_E_MALFORMED, "the key of %.64s is not 32 bytes", name);
		if (raw)
			OPENSSL_cleanse(raw, n);
		free(raw);
		if (e) {
			json_decref(w);
			return e;
		}
		json_object_set_new(w, name, json_string(jwe));
		free(jwe);
	}
	*out = w;
	return FERRY_OK;
}

ferry_err cli_kek_of(const ferry_trust *trust, const char *gw, const char *pem, X509 **out, ferry_status *st)
{
	BIO *b = pem ? BIO_new_mem_buf(pem, -1) : NULL;
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	ferry_err e;

	BIO_free(b);
	*out = NULL;
	if (!x)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "%s publishes no decryption_cert in its inventory (its config has "
				  "no decryption section, or it never connected)", gw);
	if ((e = ferry_trust_verify_kek(trust, x, gw, time(NULL), st))) {
		ferry_status_prefix(st, "%s: its decryption_cert: ", gw);
		X509_free(x);
		return e;
	}
	*out = x;
	return FERRY_OK;
}

ferry_err cli_keys_cover(const ferry_manifest *m, const json_t *keys, ferry_status *st)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->c[i].encrypted && !json_is_string(json_object_get(keys, m->c[i].name)))
			return ferry_fail(st, FERRY_E_MALFORMED, "%s is encrypted and no content key for it is at hand "
					  "(--keys F)", m->c[i].name);
	return FERRY_OK;
}
