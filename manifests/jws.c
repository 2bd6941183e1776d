/* Compact JWS verification and signing.
 *
 * libjose checks ES256 signatures; it has no EdDSA, no crit handling and no
 * compact parser, so those parts are here.  The order of checks decides which
 * reason a bad token gets: shape and encoding (malformed), algorithm and crit
 * (bad_signature, unsupported), chain (untrusted_signer), signature
 * (bad_signature), and only then is the payload parsed. */
#include "ferry/jws.h"

#include <jose/b64.h>
#include <jose/jws.h>
#include <jose/openssl.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "certparse.h"
#include "ferry/jsonfield.h"

static int b64url_value(char c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A'
	       : c >= 'a' && c <= 'z' ? c - 'a' + 26
	       : c >= '0' && c <= '9' ? c - '0' + 52
	       : c == '-' ? 62
	       : c == '_' ? 63
	                  : -1;
}

/* OpenSSL's table decoder does the work, on a copy mapped to the standard
 * alphabet and padded: libjose's decoder was a tenth of the time `ferry
 * fleet` spent opening ten thousand reports. */
bool ferry_b64url_decode(const char *p, size_t len, unsigned char **out, size_t *outlen)
{
	size_t padded = (len + 3) / 4 * 4, tail = len % 4;
	int last = len ? b64url_value(p[len - 1]) : 0;

	*out = NULL;
	if (tail == 1 || !ferry_charset_ok(p, len, FERRY_CS_B64URL) || memchr(p, '=', len) ||
	    (tail == 2 && (last & 0x0f)) || (tail == 3 && (last & 0x03)) || padded > INT_MAX)
		return false;
	unsigned char *t = malloc(padded + 1), *o = malloc(padded / 4 * 3 + 1);
	int n = -1;
	if (t && o) {
		for (size_t i = 0; i < len; i++)
			t[i] = p[i] == '-' ? '+' : p[i] == '_' ? '/' : (unsigned char)p[i];
		memset(t + len, '=', padded - len);
		n = EVP_DecodeBlock(o, t, (int)padded);
	}
	free(t);
	if (n < 0) {
		free(o);
		return false;
	}
	/* EVP_DecodeBlock counts each '=' as a zero byte */
	*outlen = (size_t)n - (padded - len);
	o[*outlen] = '\0';
	*out = o;
	return true;
}

/* Decode one base64url part; canonical, unpadded, non-empty. */
static ferry_err b64_part(const char *p, size_t len, const char *what, unsigned char **out, size_t *outlen,
			  ferry_status *st)
{
	if (len == 0)
		return ferry_fail(st, FERRY_E_MALFORMED, "JWS %s is empty", what);
	if (memchr(p, '.', len) || !ferry_b64url_decode(p, len, out, outlen))
		return ferry_fail(st, FERRY_E_MALFORMED, "JWS %s is not base64url", what);
	return FERRY_OK;
}

static ferry_err split(const char *c, size_t len, size_t off[3], size_t plen[3], ferry_status *st)
{
	const char *d1, *d2;

	if (len > FERRY_JWS_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "JWS is %zu bytes, more than %d", len, FERRY_JWS_MAX);
	d1 = memchr(c, '.', len);
	d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - c)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - c)))
		return ferry_fail(st, FERRY_E_MALFORMED, "JWS compact serialization needs exactly 3 parts");
	off[0] = 0;
	plen[0] = (size_t)(d1 - c);
	off[1] = (size_t)(d1 + 1 - c);
	plen[1] = (size_t)(d2 - d1 - 1);
	off[2] = (size_t)(d2 + 1 - c);
	plen[2] = len - off[2];
	return FERRY_OK;
}

/* alg allow-list and crit.  Nothing in ferry's formats is a critical
 * extension, so any crit entry names something we do not implement. */
static ferry_err check_header(const json_t *hdr, const char *typ_expected, char alg[8], ferry_status *st)
{
	const char *a, *typ;
	const json_t *crit;
	ferry_err e;

	if ((e = ferry_json_str_ref(hdr, "alg", true, 1, 32, FERRY_CS_ANY, &a, st)))
		return e;
	if (strcmp(a, "ES256") && strcmp(a, "EdDSA"))
		return ferry_fail(st, FERRY_E_BAD_SIGNATURE, "algorithm \"%s\" is not allowed (ES256 or EdDSA only)", a);
	snprintf(alg, 8, "%s", a);
	if ((e = ferry_json_member(hdr, "crit", false, JSON_ARRAY, &crit, st)))
		return e;
	if (crit) {
		const json_t *c = json_array_get(crit, 0);
		if (!c || !json_is_string(c))
			return ferry_fail(st, FERRY_E_MALFORMED, "crit must be a non-empty array of names");
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "critical header \"%.64s\" is not understood",
				  json_string_value(c));
	}
	if ((e = ferry_json_str_ref(hdr, "typ", false, 1, 64, FERRY_CS_ANY, &typ, st)))
		return e;
	if (typ && typ_expected && strcmp(typ, typ_expected))
		return ferry_fail(st, FERRY_E_MALFORMED, "typ is \"%s\", expected \"%s\"", typ, typ_expected);
	return FERRY_OK;
}

static bool key_is(EVP_PKEY *k, const char *alg)
{
	if (!strcmp(alg, "EdDSA"))
		return EVP_PKEY_get_id(k) == EVP_PKEY_ED25519;
	char grp[32] = "";
	size_t gl = 0;
	return EVP_PKEY_get_id(k) == EVP_PKEY_EC &&
	       EVP_PKEY_get_utf8_string_param(k, "group", grp, sizeof(grp), &gl) && !strcmp(grp, "prime256v1");
}

/* ES256 (RFC 7518, 3.4): the signature is R || S, 32 bytes each; OpenSSL
 * takes it as a DER ECDSA-Sig-Value, built here from the two numbers, and
 * verifies it over SHA-256 of "header.payload" with the certificate's own
 * key (its named curve keeps OpenSSL on its fast P-256 code).  A key that
 * certparse.c read itself is checked there, without EVP's copy of it. */
static bool verify_es256(X509 *leaf, EVP_PKEY *k, const char *c, const size_t plen[3], const unsigned char *sig,
			 size_t siglen)
{
	unsigned char *der = NULL;
	bool ok = false;

	if (siglen != 64)
		return false;
	int fast = ferry_certparse_es256(leaf, (const unsigned char *)c, plen[0] + 1 + plen[1], sig);
	if (fast >= 0)
		return fast == 1;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
		r = s = NULL; /* es has them */
		int dl = i2d_ECDSA_SIG(es, &der);
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		if (dl > 0 && md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1)
			ok = EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)c, plen[0] + 1 + plen[1]) == 1;
		EVP_MD_CTX_free(md);
	}
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	OPENSSL_free(der);
	return ok;
}

static bool verify_eddsa(EVP_PKEY *k, const char *c, const size_t plen[3], const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = false;

	if (md && siglen == 64 && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1)
		ok = EVP_DigestVerify(md, sig, siglen, (const unsigned char *)c, plen[0] + 1 + plen[1]) == 1;
	EVP_MD_CTX_free(md);
	return ok;
}

static ferry_err check_signature(X509 *leaf, const char *alg, const char *c, const size_t plen[3],
				 const unsigned char *sig, size_t siglen, ferry_status *st)
{
	EVP_PKEY *k = X509_get0_pubkey(leaf);
	bool ok;

	if (!k || !key_is(k, alg))
		return ferry_fail(st, FERRY_E_BAD_SIGNATURE, "the signer certificate's key does not fit alg %s", alg);
	ok = !strcmp(alg, "EdDSA") ? verify_eddsa(k, c, plen, sig, siglen) : verify_es256(leaf, k, c, plen, sig, siglen);
	ERR_clear_error();
	if (!ok)
		return ferry_fail(st, FERRY_E_BAD_SIGNATURE, "signature does not verify with the signer certificate's key");
	return FERRY_OK;
}

/* Roles, by extended key usage: a TLS identity (serverAuth, clientAuth)
 * never signs commands or manifests, so a gateway's key (which signs its
 * reports) or the broker's cannot speak for the operator; a report is
 * signed by a client certificate. */
static ferry_err check_role(X509 *leaf, const char *typ_expected, ferry_status *st)
{
	bool has_eku = (X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) != 0;
	uint32_t eku = has_eku ? X509_get_extended_key_usage(leaf) : 0;

	if (typ_expected && !strcmp(typ_expected, "ferry-report")) {
		if (!(eku & XKU_SSL_CLIENT))
			return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER,
					  "a report is signed by a gateway's client certificate (clientAuth); this is not one");
	} else if (eku & (XKU_SSL_CLIENT | XKU_SSL_SERVER)) {
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER,
				  "a TLS certificate (clientAuth or serverAuth) does not sign commands or manifests");
	}
	return FERRY_OK;
}

ferry_err ferry_jws_verify(const char *c, size_t len, const ferry_trust *trust, time_t at,
			   const char *typ_expected, ferry_jws *out, ferry_status *st)
{
	size_t off[3] = {0}, plen[3] = {0}, hlen = 0, blen = 0;
	unsigned char *hraw = NULL, *braw = NULL, *sraw = NULL;
	size_t slen = 0;
	ferry_jws v = {0};
	ferry_err e;

	memset(out, 0, sizeof(*out));
	if ((e = split(c, len, off, plen, st)) ||
	    (e = b64_part(c + off[0], plen[0], "header", &hraw, &hlen, st)))
		goto out;
	if ((e = ferry_json_load_object((const char *)hraw, hlen, &v.header, st))) {
		ferry_status_prefix(st, "JWS header: ");
		goto out;
	}
	/* The algorithm before the rest: an "alg":"none" token (empty
	 * signature) is an attack on the algorithm, and is named as one. */
	if ((e = check_header(v.header, typ_expected, v.alg, st)) ||
	    (e = b64_part(c + off[1], plen[1], "payload", &braw, &blen, st)) ||
	    (e = b64_part(c + off[2], plen[2], "signature", &sraw, &slen, st)) ||
	    (e = ferry_trust_verify_x5c(trust, json_object_get(v.header, "x5c"), at, &v.leaf, st)) ||
	    (e = check_role(v.leaf, typ_expected, st)) || (e = check_signature(v.leaf, v.alg, c, plen, sraw, slen, st)))
		goto out;
	if ((e = ferry_json_load_object((const char *)braw, blen, &v.payload, st))) {
		ferry_status_prefix(st, "JWS payload: ");
		goto out;
	}
	*out = v;
	memset(&v, 0, sizeof(v));
out:
	ferry_jws_clear(&v);
	free(hraw);
	free(braw);
	free(sraw);
	return e;
}

void ferry_jws_clear(ferry_jws *jws)
{
	json_decref(jws->header);
	json_decref(jws->payload);
	X509_free(jws->leaf);
	memset(jws, 0, sizeof(*jws));
}

/* x5c entries are standard base64 of the DER. */
static json_t *x5c_of(STACK_OF(X509) *chain)
{
	json_t *arr = json_array();

	for (int i = 0; arr && i < sk_X509_num(chain); i++) {
		unsigned char *der = NULL;
		int n = i2d_X509(sk_X509_value(chain, i), &der);
		char *b64 = n > 0 ? malloc((size_t)(n + 2) / 3 * 4 + 1) : NULL;
		if (!b64 || EVP_EncodeBlock((unsigned char *)b64, der, n) <= 0 ||
		    json_array_append_new(arr, json_string(b64))) {
			json_decref(arr);
			arr = NULL;
		}
		free(b64);
		OPENSSL_free(der);
	}
	return arr;
}

static char *b64url(const void *p, size_t n)
{
	size_t m = jose_b64_enc_buf(p, n, NULL, 0);
	char *s = m == SIZE_MAX ? NULL : malloc(m + 1);
	if (s) {
		jose_b64_enc_buf(p, n, s, m);
		s[m] = '\0';
	}
	return s;
}

/* EdDSA: sign "header.payload" with OpenSSL, no digest (Ed25519 hashes itself). */
static char *sign_eddsa(EVP_PKEY *key, const char *input, size_t len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char sig[64];
	size_t siglen = sizeof(sig);
	char *out = NULL;

	if (md && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
	    EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, len) == 1)
		out = b64url(sig, siglen);
	EVP_MD_CTX_free(md);
	return out;
}

static char *sign_es256(EVP_PKEY *key, const char *hdr64, const char *pay64)
{
	json_t *jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, key);
	json_t *jws = json_pack("{s:s}", "payload", pay64);
	json_t *sig = json_pack("{s:s}", "protected", hdr64);
	char *out = NULL;

	if (jwk && jws && sig && !json_object_set_new(jwk, "alg", json_string("ES256")) &&
	    jose_jws_sig(NULL, jws, sig, jwk)) {
		const char *s = json_string_value(json_object_get(jws, "signature"));
		out = s ? strdup(s) : NULL;
	}
	json_decref(jwk);
	json_decref(jws);
	json_decref(sig);
	return out;
}

ferry_err ferry_jws_sign(const char *payload, size_t len, EVP_PKEY *key, STACK_OF(X509) *chain,
			 const char *typ, char **out, ferry_status *st)
{
	const char *alg = key_is(key, "EdDSA") ? "EdDSA" : key_is(key, "ES256") ? "ES256" : NULL;
	json_t *hdr = NULL, *x5c = NULL;
	char *hjson = NULL, *h64 = NULL, *p64 = NULL, *input = NULL, *s64 = NULL;
	ferry_err e = FERRY_OK;

	*out = NULL;
	if (!alg)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "signing key must be EC P-256 (ES256) or Ed25519 (EdDSA)");
	if (!chain || sk_X509_num(chain) < 1)
		return ferry_fail(st, FERRY_E_MALFORMED, "a signer certificate is needed for x5c");
	if (X509_check_private_key(sk_X509_value(chain, 0), key) != 1) {
		ERR_clear_error();
		return ferry_fail(st, FERRY_E_MALFORMED, "the signing key does not belong to the first certificate");
	}
	x5c = x5c_of(chain);
	hdr = x5c ? json_pack("{s:s,s:O}", "alg", alg, "x5c", x5c) : NULL;
	if (hdr && typ)
		json_object_set_new(hdr, "typ", json_string(typ));
	hjson = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
	h64 = hjson ? b64url(hjson, strlen(hjson)) : NULL;
	p64 = b64url(payload, len);
	if (!h64 || !p64) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot encode the JWS");
		goto out;
	}
	size_t ilen = strlen(h64) + 1 + strlen(p64);
	input = malloc(ilen + 1);
	if (!input) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	snprintf(input, ilen + 1, "%s.%s", h64, p64);
	s64 = !strcmp(alg, "EdDSA") ? sign_eddsa(key, input, ilen) : sign_es256(key, h64, p64);
	if (!s64) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "signing with %s failed", alg);
		goto out;
	}
	*out = malloc(ilen + 1 + strlen(s64) + 1);
	if (!*out) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	snprintf(*out, ilen + 1 + strlen(s64) + 1, "%s.%s", input, s64);
out:
	ERR_clear_error();
	json_decref(hdr);
	json_decref(x5c);
	free(hjson);
	free(h64);
	free(p64);
	free(input);
	free(s64);
	return e;
}
