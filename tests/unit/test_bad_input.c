/* Hostile input, table-driven: each entry is a command or manifest that a
 * gateway must refuse, with the reason code docs/protocol.md gives for it.
 * A few valid entries guard against a verifier that refuses everything.
 *
 * Certificates are made in memory for a fixed `now`, so the table does not
 * depend on the wall clock. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jose/b64.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/command.h"
#include "ferry/jws.h"
#include "ferry/manifest.h"
#include "pki.h"

#define NOW 1800000000LL
#define DAY 86400

enum signer { S_GOOD, S_ED, S_EXPIRED, S_FUTURE, S_OTHER_CA, S_CA_AS_LEAF, S_GATEWAY, S_BROKER, S_SWAPPED,
	      S_OFF_CURVE, S_COMPRESSED, S_COUNT };

static struct world {
	ferry_trust *trust;
	X509 *ca, *other_ca;
	EVP_PKEY *ca_key, *other_key;
	X509 *cert[S_COUNT];
	EVP_PKEY *key[S_COUNT];
	char x5c[S_COUNT][2048]; /* JSON array text */
	char dir[64];
} w;

static char *b64url(const void *p, size_t n)
{
	size_t m = jose_b64_enc_buf(p, n, NULL, 0);
	char *s = malloc(m + 1);
	jose_b64_enc_buf(p, n, s, m);
	s[m] = '\0';
	return s;
}

static void set_x5c(enum signer s, const unsigned char *der, int n)
{
	char *b64 = malloc((size_t)(n + 2) / 3 * 4 + 1);
	EVP_EncodeBlock((unsigned char *)b64, der, n);
	snprintf(w.x5c[s], sizeof(w.x5c[s]), "[\"%s\"]", b64);
	free(b64);
}

static void issue(enum signer s, ferry_pki_kind kind, ferry_pki_keytype kt, time_t nb, time_t na, X509 *ca,
		  EVP_PKEY *cakey)
{
	ferry_pki_req r = {.kind = kind, .keytype = kt, .cn = "test signer", .not_before = nb, .not_after = na,
			   .issuer_key = cakey, .issuer_cert = ca};
	ferry_status st = {0};
	unsigned char *der = NULL;
	int n;

	assert_int_equal(ferry_pki_issue(&r, &w.cert[s], &w.key[s], &st), FERRY_OK);
	n = i2d_X509(w.cert[s], &der);
	assert_true(n > 0);
	set_x5c(s, der, n);
	OPENSSL_free(der);
}

/* Certificates changed after the CA signed them, and one the CA signed
 * with its key in compressed form: what the certificate reader
 * (manifests/certparse.c) must get right.  S_SWAPPED is S_GOOD's with the
 * key point of S_OTHER_CA's leaf put in place of its own; S_OFF_CURVE has
 * a point that is not on the curve. */
static void alter(void)
{
	const unsigned char *point, *other;
	int plen, olen;
	unsigned char *der = NULL, *at;
	int n = i2d_X509(w.cert[S_GOOD], &der);

	assert_true(n > 0);
	assert_int_equal(X509_PUBKEY_get0_param(NULL, &point, &plen, NULL, X509_get_X509_PUBKEY(w.cert[S_GOOD])), 1);
	assert_int_equal(X509_PUBKEY_get0_param(NULL, &other, &olen, NULL, X509_get_X509_PUBKEY(w.cert[S_OTHER_CA])),
			 1);
	assert_int_equal(plen, 65);
	assert_int_equal(olen, 65);
	assert_non_null(at = memmem(der, (size_t)n, point, (size_t)plen));
	memcpy(at, other, 65);
	set_x5c(S_SWAPPED, der, n);
	memcpy(at, point, 65);
	at[64] ^= 1; /* y no longer fits x */
	set_x5c(S_OFF_CURVE, der, n);
	OPENSSL_free(der);

	X509 *c = X509_dup(w.cert[S_GOOD]);
	EVP_PKEY *k = EVP_PKEY_dup(w.key[S_GOOD]);
	assert_non_null(c);
	assert_non_null(k);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(k, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
							OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED), 1);
	assert_int_equal(X509_set_pubkey(c, k), 1);
	assert_true(X509_sign(c, w.ca_key, EVP_sha256()) > 0);
	assert_int_equal(X509_PUBKEY_get0_param(NULL, &point, &plen, NULL, X509_get_X509_PUBKEY(c)), 1);
	assert_int_equal(plen, 33);
	der = NULL;
	n = i2d_X509(c, &der);
	assert_true(n > 0);
	set_x5c(S_COMPRESSED, der, n);
	OPENSSL_free(der);
	w.cert[S_COMPRESSED] = c;
	w.key[S_COMPRESSED] = k;
}

static int setup(void **state)
{
	ferry_status st = {0};
	ferry_pki_req r = {.kind = FERRY_PKI_CA, .keytype = FERRY_PKI_P256, .cn = "test CA",
			   .not_before = NOW - 10 * DAY, .not_after = NOW + 3650 * DAY};
	char path[128];

	assert_int_equal(ferry_pki_issue(&r, &w.ca, &w.ca_key, &st), FERRY_OK);
	r.cn = "other CA";
	assert_int_equal(ferry_pki_issue(&r, &w.other_ca, &w.other_key, &st), FERRY_OK);
	issue(S_GOOD, FERRY_PKI_SIGNER, FERRY_PKI_P256, NOW - DAY, NOW + 365 * DAY, w.ca, w.ca_key);
	issue(S_ED, FERRY_PKI_SIGNER, FERRY_PKI_ED25519, NOW - DAY, NOW + 365 * DAY, w.ca, w.ca_key);
	issue(S_EXPIRED, FERRY_PKI_SIGNER, FERRY_PKI_P256, NOW - 9 * DAY, NOW - 2 * DAY, w.ca, w.ca_key);
	issue(S_FUTURE, FERRY_PKI_SIGNER, FERRY_PKI_P256, NOW + 2 * DAY, NOW + 9 * DAY, w.ca, w.ca_key);
	issue(S_OTHER_CA, FERRY_PKI_SIGNER, FERRY_PKI_P256, NOW - DAY, NOW + 365 * DAY, w.other_ca, w.other_key);
	issue(S_CA_AS_LEAF, FERRY_PKI_CA, FERRY_PKI_P256, NOW - DAY, NOW + 365 * DAY, w.ca, w.ca_key);
	/* TLS identities from the same CA: a gateway's client certificate (it
	 * signs the gateway's reports) and a server's */
	issue(S_GATEWAY, FERRY_PKI_CLIENT, FERRY_PKI_P256, NOW - DAY, NOW + 365 * DAY, w.ca, w.ca_key);
	issue(S_BROKER, FERRY_PKI_SERVER, FERRY_PKI_P256, NOW - DAY, NOW + 365 * DAY, w.ca, w.ca_key);
	alter();
	snprintf(w.dir, sizeof(w.dir), "/tmp/ferry-bad-XXXXXX");
	assert_non_null(mkdtemp(w.dir));
	assert_int_equal(ferry_pki_write(w.dir, "ca", w.ca, w.ca_key, &st), FERRY_OK);
	snprintf(path, sizeof(path), "%s/ca.pem", w.dir);
	assert_int_equal(ferry_trust_load(path, &w.trust, &st), FERRY_OK);
	*state = &w;
	return 0;
}

static int teardown(void **state)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/ca.pem", w.dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.key", w.dir);
	unlink(path);
	rmdir(w.dir);
	ferry_trust_free(w.trust);
	for (int i = 0; i < S_COUNT; i++) {
		X509_free(w.cert[i]);
		EVP_PKEY_free(w.key[i]);
	}
	X509_free(w.ca);
	X509_free(w.other_ca);
	EVP_PKEY_free(w.ca_key);
	EVP_PKEY_free(w.other_key);
	return 0;
}

/* ES256 or EdDSA over "h.p" with key, as base64url of the raw signature. */
static char *sign_raw(EVP_PKEY *key, const char *input)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[160], raw[64];
	size_t len = sizeof(der);
	bool ed = EVP_PKEY_get_id(key) == EVP_PKEY_ED25519;
	char *out;

	assert_int_equal(EVP_DigestSignInit(md, NULL, ed ? NULL : EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(md, der, &len, (const unsigned char *)input, strlen(input)), 1);
	EVP_MD_CTX_free(md);
	if (ed)
		return b64url(der, len);
	const unsigned char *p = der;
	ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
	BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32);
	BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32);
	ECDSA_SIG_free(sig);
	out = b64url(raw, 64);
	return out;
}

/* header text with "X5C" replaced by the x5c of signer xs */
static char *make_header(const char *tmpl, enum signer xs)
{
	const char *at = strstr(tmpl, "X5C");
	size_t n = strlen(tmpl) + strlen(w.x5c[xs]) + 1;
	char *h = malloc(n);
	if (at)
		snprintf(h, n, "%.*s%s%s", (int)(at - tmpl), tmpl, w.x5c[xs], at + 3);
	else
		snprintf(h, n, "%s", tmpl);
	return h;
}

enum mutation { M_NONE, M_TAMPER_PAYLOAD, M_TAMPER_SIG, M_TWO_PARTS, M_FOUR_PARTS, M_BAD_B64_HEADER,
		M_BAD_B64_PAYLOAD, M_BAD_B64_SIG, M_EMPTY_SIG, M_HS256, M_NONE_ALG, M_HUGE };

typedef enum kind { CMD, MAN } kind;

typedef struct tcase {
	const char *name;
	kind kind;
	const char *payload; /* NULL: the kind's baseline */
	const char *header;  /* NULL: {"alg":"ES256","x5c":X5C} */
	enum signer x5c;     /* whose certificate goes in x5c */
	enum signer key;     /* whose key signs */
	enum mutation mut;
	ferry_err want;
} tcase;

#define CMD_OK "{\"iss\":\"acme\",\"sub\":\"gw-1\",\"jti\":\"j-1\",\"iat\":1800000000,\"nbf\":1800000000," \
	       "\"exp\":1800000600,\"op\":\"update.cancel\",\"update_id\":\"u-1\"}"
#define CMD_T(fields) "{\"iss\":\"acme\",\"sub\":\"gw-1\",\"jti\":\"j-1\",\"iat\":1800000000," fields "}"
#define COMP(extra) "{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\"," \
	"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1024," \
	"\"sha256\":\"" SHA "\",\"format\":\"mcuboot\"" extra "}"
#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA2 "1111111111111111111111111111111111111111111111111111111111111111"
#define MAN_T(comps) "{\"sequence\":4,\"created\":1800000000,\"components\":[" comps "]}"
#define MAN_OK MAN_T(COMP(""))

static const tcase cases[] = {
	/* --- shape and encoding */
	{"tampered payload", CMD, NULL, NULL, S_GOOD, S_GOOD, M_TAMPER_PAYLOAD, FERRY_E_BAD_SIGNATURE},
	{"tampered signature", CMD, NULL, NULL, S_GOOD, S_GOOD, M_TAMPER_SIG, FERRY_E_BAD_SIGNATURE},
	{"two parts", CMD, NULL, NULL, S_GOOD, S_GOOD, M_TWO_PARTS, FERRY_E_MALFORMED},
	{"four parts", CMD, NULL, NULL, S_GOOD, S_GOOD, M_FOUR_PARTS, FERRY_E_MALFORMED},
	{"bad base64 in header", CMD, NULL, NULL, S_GOOD, S_GOOD, M_BAD_B64_HEADER, FERRY_E_MALFORMED},
	{"bad base64 in payload", CMD, NULL, NULL, S_GOOD, S_GOOD, M_BAD_B64_PAYLOAD, FERRY_E_MALFORMED},
	{"bad base64 in signature", CMD, NULL, NULL, S_GOOD, S_GOOD, M_BAD_B64_SIG, FERRY_E_MALFORMED},
	{"empty signature", CMD, NULL, NULL, S_GOOD, S_GOOD, M_EMPTY_SIG, FERRY_E_MALFORMED},
	{"larger than 1 MiB", CMD, NULL, NULL, S_GOOD, S_GOOD, M_HUGE, FERRY_E_MALFORMED},
	/* --- header */
	{"alg none", CMD, NULL, "{\"alg\":\"none\",\"x5c\":X5C}", S_GOOD, S_GOOD, M_NONE_ALG, FERRY_E_BAD_SIGNATURE},
	{"alg HS256", CMD, NULL, "{\"alg\":\"HS256\",\"x5c\":X5C}", S_GOOD, S_GOOD, M_HS256, FERRY_E_BAD_SIGNATURE},
	{"alg RS256", CMD, NULL, "{\"alg\":\"RS256\",\"x5c\":X5C}", S_GOOD, S_GOOD, M_NONE, FERRY_E_BAD_SIGNATURE},
	{"alg missing", CMD, NULL, "{\"x5c\":X5C}", S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"unknown crit", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":X5C,\"crit\":[\"exp\"],\"exp\":1}", S_GOOD, S_GOOD,
	 M_NONE, FERRY_E_UNSUPPORTED},
	{"empty crit", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":X5C,\"crit\":[]}", S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"duplicate key in header", CMD, NULL, "{\"alg\":\"ES256\",\"alg\":\"ES256\",\"x5c\":X5C}", S_GOOD, S_GOOD,
	 M_NONE, FERRY_E_MALFORMED},
	{"header not an object", CMD, NULL, "[\"ES256\"]", S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"wrong typ", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":X5C,\"typ\":\"ferry-manifest\"}", S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	/* --- chain */
	{"missing x5c", CMD, NULL, "{\"alg\":\"ES256\"}", S_GOOD, S_GOOD, M_NONE, FERRY_E_UNTRUSTED_SIGNER},
	{"x5c not an array", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":\"MIIB\"}", S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"x5c not base64", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":[\"***\"]}", S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"x5c base64 but not DER", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":[\"AAAA\"]}", S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"chain to another CA", CMD, NULL, NULL, S_OTHER_CA, S_OTHER_CA, M_NONE, FERRY_E_UNTRUSTED_SIGNER},
	{"expired leaf certificate", CMD, NULL, NULL, S_EXPIRED, S_EXPIRED, M_NONE, FERRY_E_UNTRUSTED_SIGNER},
	{"not-yet-valid leaf certificate", CMD, NULL, NULL, S_FUTURE, S_FUTURE, M_NONE, FERRY_E_UNTRUSTED_SIGNER},
	{"CA certificate as leaf", CMD, NULL, NULL, S_CA_AS_LEAF, S_CA_AS_LEAF, M_NONE, FERRY_E_UNTRUSTED_SIGNER},
	{"command signed by a gateway's certificate", CMD, NULL, NULL, S_GATEWAY, S_GATEWAY, M_NONE,
	 FERRY_E_UNTRUSTED_SIGNER},
	{"command signed by the broker's certificate", CMD, NULL, NULL, S_BROKER, S_BROKER, M_NONE,
	 FERRY_E_UNTRUSTED_SIGNER},
	{"leaf key did not sign", CMD, NULL, NULL, S_GOOD, S_OTHER_CA, M_NONE, FERRY_E_BAD_SIGNATURE},
	{"leaf key swapped after the CA signed", CMD, NULL, NULL, S_SWAPPED, S_OTHER_CA, M_NONE,
	 FERRY_E_UNTRUSTED_SIGNER},
	{"leaf key not on the curve", CMD, NULL, NULL, S_OFF_CURVE, S_GOOD, M_NONE, FERRY_E_UNTRUSTED_SIGNER},
	{"Ed25519 leaf with alg ES256", CMD, NULL, "{\"alg\":\"ES256\",\"x5c\":X5C}", S_ED, S_ED, M_NONE,
	 FERRY_E_BAD_SIGNATURE},
	/* --- command payload */
	{"payload is an array", CMD, "[1,2]", NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"trailing garbage after payload", CMD, CMD_OK "x", NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"duplicate key in payload", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.cancel\","
		"\"update_id\":\"u-1\",\"update_id\":\"u-2\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"expired command", CMD, CMD_T("\"nbf\":1799990000,\"exp\":1799999000,\"op\":\"update.cancel\","
		"\"update_id\":\"u-1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_EXPIRED},
	{"not-yet-valid command", CMD, CMD_T("\"nbf\":1800001000,\"exp\":1800009000,\"op\":\"update.cancel\","
		"\"update_id\":\"u-1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_NOT_YET_VALID},
	{"wrong gateway", CMD, "{\"iss\":\"acme\",\"sub\":\"gw-2\",\"jti\":\"j-1\",\"iat\":1800000000,\"nbf\":1800000000,"
		"\"exp\":1800000600,\"op\":\"update.cancel\",\"update_id\":\"u-1\"}", NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_WRONG_GATEWAY},
	{"iat as a string", CMD, "{\"iss\":\"acme\",\"sub\":\"gw-1\",\"jti\":\"j-1\",\"iat\":\"1800000000\","
		"\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.cancel\",\"update_id\":\"u-1\"}", NULL, S_GOOD,
	 S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"sub as a number", CMD, "{\"iss\":\"acme\",\"sub\":7,\"jti\":\"j-1\",\"iat\":1800000000,\"nbf\":1800000000,"
		"\"exp\":1800000600,\"op\":\"update.cancel\",\"update_id\":\"u-1\"}", NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"negative nbf", CMD, CMD_T("\"nbf\":-5,\"exp\":1800000600,\"op\":\"update.cancel\",\"update_id\":\"u-1\""),
	 NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"exp before nbf", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1799999999,\"op\":\"update.cancel\","
		"\"update_id\":\"u-1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"jti of 129 characters", CMD, "{\"iss\":\"acme\",\"sub\":\"gw-1\",\"jti\":\""
		"0123456789012345678901234567890123456789012345678901234567890123"
		"01234567890123456789012345678901234567890123456789012345678901234\",\"iat\":1800000000,"
		"\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.cancel\",\"update_id\":\"u-1\"}", NULL, S_GOOD,
	 S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"update_id of 65 characters", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.cancel\","
		"\"update_id\":\"01234567890123456789012345678901234567890123456789012345678901234\""), NULL, S_GOOD,
	 S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"update_id with a slash", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.cancel\","
		"\"update_id\":\"u/1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"unknown op", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.reboot\","
		"\"update_id\":\"u-1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_UNSUPPORTED},
	{"request without manifest", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.request\","
		"\"update_id\":\"u-1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"http link", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.download\","
		"\"update_id\":\"u-1\",\"links\":{\"mcu\":\"http://127.0.0.1/a\"}"), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_UNSUPPORTED},
	{"empty links", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.download\","
		"\"update_id\":\"u-1\",\"links\":{}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"keys not JWEs", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.download\","
		"\"update_id\":\"u-1\",\"links\":{\"mcu\":\"https://h/a\"},\"keys\":{\"mcu\":\"not a JWE\"}"), NULL,
	 S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"empty keys", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.download\","
		"\"update_id\":\"u-1\",\"links\":{\"mcu\":\"https://h/a\"},\"keys\":{}"), NULL, S_GOOD, S_GOOD,
	 M_NONE, FERRY_E_MALFORMED},
	{"keys for a name that is no id", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":"
		"\"update.download\",\"update_id\":\"u-1\",\"links\":{\"mcu\":\"https://h/a\"},\"keys\":{\"a/b\":"
		"\"e30.a.b.c.d\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"keys as a list", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,\"op\":\"update.download\","
		"\"update_id\":\"u-1\",\"links\":{\"mcu\":\"https://h/a\"},\"keys\":[\"e30.a.b.c.d\"]"), NULL,
	 S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	/* --- manifest payload */
	{"manifest signed as a command", MAN, NULL, "{\"alg\":\"ES256\",\"x5c\":X5C,\"typ\":\"ferry-cmd\"}", S_GOOD,
	 S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"manifest signed by a gateway's certificate", MAN, NULL, NULL, S_GATEWAY, S_GATEWAY, M_NONE,
	 FERRY_E_UNTRUSTED_SIGNER},
	{"empty components", MAN, MAN_T(""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"duplicate component names", MAN, MAN_T(COMP("") "," COMP("")), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"negative size", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":-1,"
		"\"sha256\":\"" SHA "\",\"format\":\"mcuboot\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"huge size", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1099511627776,"
		"\"sha256\":\"" SHA "\",\"format\":\"mcuboot\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"sha256 of 63 characters", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1,"
		"\"sha256\":\"123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"format\":\"raw\"}"),
	 NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"sha256 in uppercase", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1,"
		"\"sha256\":\"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\",\"format\":\"raw\"}"),
	 NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"sha256 not hex", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1,"
		"\"sha256\":\"g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\",\"format\":\"raw\"}"),
	 NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"bad semver", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.02.3\",\"size\":1,"
		"\"sha256\":\"" SHA "\",\"format\":\"raw\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"unknown format", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"firmware\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1,"
		"\"sha256\":\"" SHA "\",\"format\":\"ihex\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_UNSUPPORTED},
	{"unknown type", MAN, MAN_T("{\"name\":\"mcu\",\"type\":\"bootloader\",\"adapter\":\"serial-smp\","
		"\"target\":{\"vendor_id\":\"acme\",\"class_id\":\"s2\"},\"version\":\"1.2.3\",\"size\":1,"
		"\"sha256\":\"" SHA "\",\"format\":\"raw\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_UNSUPPORTED},
	{"unknown delta format", MAN, MAN_T(COMP(",\"deltas\":[{\"base_sha256\":\"" SHA2 "\",\"sha256\":\"" SHA
		"\",\"size\":9,\"format\":\"bsdiff\"}]")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_UNSUPPORTED},
	{"deltas not a list", MAN, MAN_T(COMP(",\"deltas\":{\"base_sha256\":\"" SHA2 "\"}")), NULL, S_GOOD, S_GOOD,
	 M_NONE, FERRY_E_MALFORMED},
	{"deltas empty", MAN, MAN_T(COMP(",\"deltas\":[]")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"a delta from the image itself", MAN, MAN_T(COMP(",\"deltas\":[{\"base_sha256\":\"" SHA "\",\"sha256\":\""
		SHA2 "\",\"size\":9,\"format\":\"ferry-delta-1\"}]")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"two deltas from one base", MAN, MAN_T(COMP(",\"deltas\":[{\"base_sha256\":\"" SHA2 "\",\"sha256\":\""
		SHA "\",\"size\":9,\"format\":\"ferry-delta-1\"},{\"base_sha256\":\"" SHA2 "\",\"sha256\":\"" SHA
		"\",\"size\":8,\"format\":\"ferry-delta-1\"}]")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"a delta without its size", MAN, MAN_T(COMP(",\"deltas\":[{\"base_sha256\":\"" SHA2 "\",\"sha256\":\""
		SHA "\",\"format\":\"ferry-delta-1\"}]")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	/* 1024 bytes are 1073 encrypted: 32 of header and one chunk's 17 */
	{"encrypted", MAN, MAN_T(COMP(",\"encryption\":{\"format\":\"ferry-enc-1\",\"size\":1073,\"sha256\":\"" SHA2
		"\"}")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_OK},
	{"unknown encryption format", MAN, MAN_T(COMP(",\"encryption\":{\"format\":\"aes-ctr\",\"size\":1073,"
		"\"sha256\":\"" SHA2 "\"}")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_UNSUPPORTED},
	{"ciphertext size that does not fit the image", MAN, MAN_T(COMP(",\"encryption\":{\"format\":"
		"\"ferry-enc-1\",\"size\":1072,\"sha256\":\"" SHA2 "\"}")), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"ciphertext without its digest", MAN, MAN_T(COMP(",\"encryption\":{\"format\":\"ferry-enc-1\","
		"\"size\":1073}")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"encryption as a string", MAN, MAN_T(COMP(",\"encryption\":\"yes\"")), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"encrypted with deltas", MAN, MAN_T(COMP(",\"deltas\":[{\"base_sha256\":\"" SHA2 "\",\"sha256\":\"" SHA
		"\",\"size\":9,\"format\":\"ferry-delta-1\"}],\"encryption\":{\"format\":\"ferry-enc-1\","
		"\"size\":1073,\"sha256\":\"" SHA2 "\"}")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"min_link physical", MAN, MAN_T(COMP(",\"min_link\":\"physical\",\"encrypted_for_device\":false")), NULL,
	 S_GOOD, S_GOOD, M_NONE, FERRY_OK},
	{"min_link that is no level", MAN, MAN_T(COMP(",\"min_link\":\"wired\"")), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_UNSUPPORTED},
	{"min_link as a number", MAN, MAN_T(COMP(",\"min_link\":2")), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"encrypted_for_device as text", MAN, MAN_T(COMP(",\"encrypted_for_device\":\"yes\"")), NULL, S_GOOD, S_GOOD,
	 M_NONE, FERRY_E_MALFORMED},
	{"after names a missing component", MAN, MAN_T(COMP(",\"after\":[\"nothing\"]")), NULL, S_GOOD, S_GOOD,
	 M_NONE, FERRY_E_MALFORMED},
	{"after names itself", MAN, MAN_T(COMP(",\"after\":[\"mcu\"]")), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_E_MALFORMED},
	{"after cycle", MAN, MAN_T("{\"name\":\"a\",\"type\":\"firmware\",\"adapter\":\"x\",\"target\":{\"vendor_id\":\"v\","
		"\"class_id\":\"c\"},\"version\":\"1.0.0\",\"size\":1,\"sha256\":\"" SHA "\",\"format\":\"raw\",\"after\":[\"b\"]},"
		"{\"name\":\"b\",\"type\":\"firmware\",\"adapter\":\"x\",\"target\":{\"vendor_id\":\"v\",\"class_id\":\"c\"},"
		"\"version\":\"1.0.0\",\"size\":1,\"sha256\":\"" SHA "\",\"format\":\"raw\",\"after\":[\"a\"]}"), NULL,
	 S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"component name with a slash", MAN, MAN_T("{\"name\":\"a/b\",\"type\":\"firmware\",\"adapter\":\"x\","
		"\"target\":{\"vendor_id\":\"v\",\"class_id\":\"c\"},\"version\":\"1.0.0\",\"size\":1,\"sha256\":\"" SHA
		"\",\"format\":\"raw\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"target missing", MAN, MAN_T("{\"name\":\"a\",\"type\":\"firmware\",\"adapter\":\"x\",\"version\":\"1.0.0\","
		"\"size\":1,\"sha256\":\"" SHA "\",\"format\":\"raw\"}"), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"allow_downgrade as a string", MAN, "{\"sequence\":4,\"created\":1800000000,\"allow_downgrade\":\"yes\","
		"\"components\":[" COMP("") "]}", NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	{"manifest expired", MAN, "{\"sequence\":4,\"created\":1700000000,\"expires\":1799990000,\"components\":["
		COMP("") "]}", NULL, S_GOOD, S_GOOD, M_NONE, FERRY_E_EXPIRED},
	{"sequence as a float", MAN, "{\"sequence\":4.0,\"created\":1800000000,\"components\":[" COMP("") "]}", NULL,
	 S_GOOD, S_GOOD, M_NONE, FERRY_E_MALFORMED},
	/* --- valid ones: the verifier must not refuse everything */
	{"valid ES256 command", CMD, NULL, NULL, S_GOOD, S_GOOD, M_NONE, FERRY_OK},
	{"valid command, leaf key in compressed form", CMD, NULL, NULL, S_COMPRESSED, S_COMPRESSED, M_NONE, FERRY_OK},
	{"valid EdDSA command", CMD, NULL, "{\"alg\":\"EdDSA\",\"x5c\":X5C}", S_ED, S_ED, M_NONE, FERRY_OK},
	{"valid command, unknown fields ignored", CMD, CMD_T("\"nbf\":1800000000,\"exp\":1800000600,"
		"\"op\":\"update.cancel\",\"update_id\":\"u-1\",\"future\":{\"x\":[1]}"), NULL, S_GOOD, S_GOOD, M_NONE,
	 FERRY_OK},
	{"valid command at nbf minus skew", CMD, CMD_T("\"nbf\":1800000300,\"exp\":1800000600,\"op\":\"update.cancel\","
		"\"update_id\":\"u-1\""), NULL, S_GOOD, S_GOOD, M_NONE, FERRY_OK},
	{"valid manifest", MAN, NULL, NULL, S_GOOD, S_GOOD, M_NONE, FERRY_OK},
};

static char *build(const tcase *c)
{
	const char *payload = c->payload ? c->payload : c->kind == CMD ? CMD_OK : MAN_OK;
	char *hdr = make_header(c->header ? c->header : c->kind == CMD ? "{\"alg\":\"ES256\",\"x5c\":X5C,\"typ\":\"ferry-cmd\"}"
									  : "{\"alg\":\"ES256\",\"x5c\":X5C}", c->x5c);
	char *h64 = b64url(hdr, strlen(hdr)), *p64 = b64url(payload, strlen(payload)), *s64 = NULL;
	size_t n = strlen(h64) + strlen(p64) + 2;
	char *input = malloc(n), *out;

	snprintf(input, n, "%s.%s", h64, p64);
	if (c->mut == M_NONE_ALG) {
		s64 = strdup("");
	} else if (c->mut == M_HS256) {
		unsigned char mac[32];
		unsigned int ml = sizeof(mac);
		HMAC(EVP_sha256(), "secret", 6, (const unsigned char *)input, strlen(input), mac, &ml);
		s64 = b64url(mac, ml);
	} else {
		s64 = sign_raw(w.key[c->key], input);
	}
	if (c->mut == M_TAMPER_SIG)
		s64[3] = s64[3] == 'A' ? 'B' : 'A';
	n = strlen(input) + strlen(s64) + 2 + (c->mut == M_HUGE ? FERRY_JWS_MAX : 0) + 8;
	out = malloc(n);
	switch (c->mut) {
	case M_TAMPER_PAYLOAD: {
		/* change one payload character to another valid base64url one */
		snprintf(out, n, "%s.%s", input, s64);
		char *p = strchr(out, '.') + 5;
		*p = *p == 'A' ? 'B' : 'A';
		break;
	}
	case M_TWO_PARTS: snprintf(out, n, "%s", input); break;
	case M_FOUR_PARTS: snprintf(out, n, "%s.%s.%s", input, s64, s64); break;
	case M_BAD_B64_HEADER: snprintf(out, n, "%s!.%s.%s", h64, p64, s64); break;
	case M_BAD_B64_PAYLOAD: snprintf(out, n, "%s.%s+/.%s", h64, p64, s64); break;
	case M_BAD_B64_SIG: snprintf(out, n, "%s.%s==", input, s64); break;
	case M_EMPTY_SIG:
	case M_NONE_ALG: snprintf(out, n, "%s.", input); break;
	case M_HUGE:
		snprintf(out, n, "%s.%s", input, s64);
		memset(out + strlen(out), 'A', FERRY_JWS_MAX);
		out[n - 8] = '\0';
		break;
	default: snprintf(out, n, "%s.%s", input, s64); break;
	}
	free(hdr);
	free(h64);
	free(p64);
	free(s64);
	free(input);
	return out;
}

static void test_table(void **state)
{
	size_t n = sizeof(cases) / sizeof(cases[0]), refused = 0;

	for (size_t i = 0; i < n; i++) {
		const tcase *c = &cases[i];
		char *jws = build(c);
		ferry_status st = {0};
		ferry_err got;

		if (c->kind == CMD) {
			ferry_command cmd;
			got = ferry_command_verify(jws, strlen(jws), w.trust, "gw-1", NOW, 300, &cmd, NULL, &st);
			if (got == FERRY_OK)
				ferry_command_free(&cmd);
			else
				assert_null(cmd.links);
		} else {
			ferry_manifest m;
			got = ferry_manifest_verify(jws, strlen(jws), w.trust, NOW, 300, &m, NULL, &st);
			if (got == FERRY_OK)
				ferry_manifest_free(&m);
			else
				assert_null(m.c);
		}
		if (got != c->want)
			fail_msg("case \"%s\": got %s (%s), wanted %s", c->name, ferry_err_code(got), st.detail,
				 ferry_err_code(c->want));
		if (c->want != FERRY_OK) {
			refused++;
			if (!st.detail[0])
				fail_msg("case \"%s\": refused without a detail", c->name);
		}
		free(jws);
	}
	assert_true(refused >= 30);
}

/* The `after` lists reorder installation; ties keep the listed order. */
static void test_install_order(void **state)
{
	static const char payload[] = MAN_T(
		"{\"name\":\"a\",\"type\":\"firmware\",\"adapter\":\"x\",\"target\":{\"vendor_id\":\"v\",\"class_id\":\"c\"},"
		"\"version\":\"1.0.0\",\"size\":1,\"sha256\":\"" SHA "\",\"format\":\"raw\",\"after\":[\"c\"]},"
		"{\"name\":\"b\",\"type\":\"firmware\",\"adapter\":\"x\",\"target\":{\"vendor_id\":\"v\",\"class_id\":\"c\"},"
		"\"version\":\"1.0.0\",\"size\":1,\"sha256\":\"" SHA "\",\"format\":\"raw\"},"
		"{\"name\":\"c\",\"type\":\"firmware\",\"adapter\":\"x\",\"target\":{\"vendor_id\":\"v\",\"class_id\":\"c\"},"
		"\"version\":\"1.0.0\",\"size\":1,\"sha256\":\"" SHA "\",\"format\":\"raw\"}");
	tcase c = {"order", MAN, payload, NULL, S_GOOD, S_GOOD, M_NONE, FERRY_OK};
	char *jws = build(&c);
	ferry_manifest m;
	ferry_status st = {0};

	assert_int_equal(ferry_manifest_verify(jws, strlen(jws), w.trust, NOW, 300, &m, NULL, &st), FERRY_OK);
	assert_int_equal(m.n, 3);
	assert_string_equal(m.c[m.order[0]].name, "b");
	assert_string_equal(m.c[m.order[1]].name, "c");
	assert_string_equal(m.c[m.order[2]].name, "a");
	ferry_manifest_free(&m);
	free(jws);
}

/* What ferry_jws_sign makes, ferry verifies, and the payload survives. */
static void test_sign_round_trip(void **state)
{
	STACK_OF(X509) *chain = sk_X509_new_null();
	ferry_status st = {0};
	ferry_command cmd;
	json_t *payload = NULL;
	char *jws;

	sk_X509_push(chain, w.cert[S_GOOD]);
	assert_int_equal(ferry_jws_sign(CMD_OK, strlen(CMD_OK), w.key[S_GOOD], chain, "ferry-cmd", &jws, &st), FERRY_OK);
	assert_int_equal(ferry_command_verify(jws, strlen(jws), w.trust, "gw-1", NOW, 300, &cmd, &payload, &st),
			 FERRY_OK);
	assert_string_equal(cmd.jti, "j-1");
	assert_int_equal(cmd.op, FERRY_OP_UPDATE_CANCEL);
	assert_string_equal(json_string_value(json_object_get(payload, "iss")), "acme");
	json_decref(payload);
	ferry_command_free(&cmd);
	free(jws);
	/* a key that is not the certificate's is refused at signing */
	assert_int_equal(ferry_jws_sign(CMD_OK, strlen(CMD_OK), w.key[S_OTHER_CA], chain, NULL, &jws, &st),
			 FERRY_E_MALFORMED);
	sk_X509_free(chain);
}

/* The base64url decoder every JWS part goes through: canonical and
 * unpadded only. */
static void test_b64url(void **state)
{
	static const struct {
		const char *in;
		const char *out; /* NULL: refused */
		size_t len;
	} b64[] = {
	    {"", "", 0},
	    {"QQ", "A", 1},
	    {"QUI", "AB", 2},
	    {"QUJD", "ABC", 3},
	    {"-_8", "\xfb\xff", 2},
	    {"QR", NULL, 0},   /* bits after the last byte */
	    {"QUJ", NULL, 0},  /* same, with two bytes */
	    {"QQ==", NULL, 0}, /* padding */
	    {"Q", NULL, 0},    /* a length no encoding has */
	    {"+/8", NULL, 0},  /* the standard alphabet */
	    {"QU I", NULL, 0}, /* whitespace */
	};
	(void)state;
	for (size_t i = 0; i < sizeof(b64) / sizeof(b64[0]); i++) {
		unsigned char *out = NULL;
		size_t n = 99;
		bool ok = ferry_b64url_decode(b64[i].in, strlen(b64[i].in), &out, &n);
		if (!b64[i].out) {
			assert_false(ok);
			assert_null(out);
			continue;
		}
		assert_true(ok);
		assert_int_equal(n, b64[i].len);
		assert_memory_equal(out, b64[i].out, n);
		assert_int_equal(out[n], 0);
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_install_order),
		cmocka_unit_test(test_sign_round_trip),
		cmocka_unit_test(test_b64url),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
