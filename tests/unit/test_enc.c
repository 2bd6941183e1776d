/* ferry-enc-1 and wrapped content keys: what the operator's tool encrypts
 * decrypts to the same bytes; a stream cut, reordered, altered, extended
 * or under another key is refused naming what was wrong; a wrapped key
 * unwraps only with its gateway's key and only with the one algorithm
 * pair. */
#define _GNU_SOURCE
#include <jose/b64.h>
#include <jose/jwe.h>
#include <jose/openssl.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "keys.h"
#include "ferry/enc.h"
#include "ferry/jwe.h"
#include "ferry/trust.h"
#include "pki.h"

#define CHUNK_CT (FERRY_ENC_CHUNK + FERRY_ENC_ABYTES)

static int fd_of(const void *p, size_t n)
{
	int fd = memfd_create("test-enc", MFD_CLOEXEC);
	assert_true(fd >= 0);
	if (n)
		assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static unsigned char *slurp(int fd, size_t *n)
{
	off_t end = lseek(fd, 0, SEEK_END);
	unsigned char *p = malloc((size_t)end + 1);
	assert_non_null(p);
	assert_int_equal(pread(fd, p, (size_t)end, 0), end);
	*n = (size_t)end;
	return p;
}

typedef struct out {
	unsigned char *p;
	size_t n;
} out;

static ferry_err sink(void *ctx, const unsigned char *p, size_t n, ferry_status *st)
{
	out *o = ctx;
	(void)st;
	o->p = realloc(o->p, o->n + n);
	assert_non_null(o->p);
	memcpy(o->p + o->n, p, n);
	o->n += n;
	return FERRY_OK;
}

/* Encrypt n pseudo-random bytes; the plaintext and ciphertext come back. */
static unsigned char *encrypt_n(size_t n, const uint8_t key[32], unsigned char **plain, size_t *ct_len)
{
	unsigned char *p = malloc(n + 1);
	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 131 + (i >> 9));
	int in = fd_of(p, n), o = fd_of(NULL, 0);
	ferry_status st = {0};
	assert_int_equal(ferry_enc_encrypt(in, o, key, &st), FERRY_OK);
	unsigned char *c = slurp(o, ct_len);
	close(in);
	close(o);
	*plain = p;
	return c;
}

static ferry_err decrypt_buf(const unsigned char *c, size_t n, const uint8_t key[32], uint64_t max, out *o,
			     ferry_status *st)
{
	int fd = fd_of(c, n);
	ferry_err e = ferry_enc_decrypt(fd, key, max, sink, o, st);
	close(fd);
	return e;
}

static void test_round_trips(void **state)
{
	static const size_t sizes[] = {1, 100, FERRY_ENC_CHUNK - 1, FERRY_ENC_CHUNK, FERRY_ENC_CHUNK + 1,
				       3 * FERRY_ENC_CHUNK, 300001};
	uint8_t key[32];
	(void)state;
	assert_true(ferry_enc_keygen(key));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char *plain, *c;
		size_t n;
		out o = {0};
		ferry_status st = {0};
		c = encrypt_n(sizes[i], key, &plain, &n);
		assert_int_equal((int64_t)n, ferry_enc_size((int64_t)sizes[i]));
		assert_memory_equal(c, "FEN1", 4);
		assert_int_equal(decrypt_buf(c, n, key, sizes[i], &o, &st), FERRY_OK);
		assert_int_equal(o.n, sizes[i]);
		assert_memory_equal(o.p, plain, sizes[i]);
		free(o.p);
		/* one byte less allowed than the image has */
		o = (out){0};
		assert_int_equal(decrypt_buf(c, n, key, sizes[i] - 1, &o, &st), FERRY_E_SIZE_MISMATCH);
		free(o.p);
		free(c);
		free(plain);
	}
}

static void expect_refused(const unsigned char *c, size_t n, const uint8_t key[32], const char *why)
{
	out o = {0};
	ferry_status st = {0};
	assert_int_equal(decrypt_buf(c, n, key, 1u << 30, &o, &st), FERRY_E_DECRYPT_FAILED);
	if (!strstr(st.detail, why))
		fail_msg("\"%s\" does not say \"%s\"", st.detail, why);
	free(o.p);
}

static void test_damage_refused(void **state)
{
	uint8_t key[32], other[32];
	unsigned char *plain, *c, *bad;
	size_t n;
	(void)state;
	assert_true(ferry_enc_keygen(key));
	assert_true(ferry_enc_keygen(other));
	c = encrypt_n(3 * FERRY_ENC_CHUNK + 5000, key, &plain, &n); /* 4 chunks */
	bad = malloc(n + 100);
	assert_non_null(bad);

	/* cut at a chunk boundary: no final chunk */
	expect_refused(c, FERRY_ENC_HEADER + 2 * CHUNK_CT, key, "without its final chunk");
	/* cut inside a chunk */
	expect_refused(c, FERRY_ENC_HEADER + CHUNK_CT + 1000, key, "chunk 1 fails authentication");
	/* cut inside the header */
	expect_refused(c, 20, key, "shorter than its header");
	/* chunks 0 and 1 swapped */
	memcpy(bad, c, n);
	memcpy(bad + FERRY_ENC_HEADER, c + FERRY_ENC_HEADER + CHUNK_CT, CHUNK_CT);
	memcpy(bad + FERRY_ENC_HEADER + CHUNK_CT, c + FERRY_ENC_HEADER, CHUNK_CT);
	expect_refused(bad, n, key, "chunk 0 fails authentication");
	/* chunk 1 repeated in place of chunk 2 */
	memcpy(bad, c, n);
	memcpy(bad + FERRY_ENC_HEADER + 2 * CHUNK_CT, c + FERRY_ENC_HEADER + CHUNK_CT, CHUNK_CT);
	expect_refused(bad, n, key, "chunk 2 fails authentication");
	/* 16 zero bytes in the last chunk */
	memcpy(bad, c, n);
	memset(bad + n - 100, 0, 16);
	expect_refused(bad, n, key, "chunk 3 fails authentication");
	/* bytes after a short final chunk make it fail; after a full one,
	 * they are bytes after the end */
	memcpy(bad, c, n);
	memset(bad + n, 0, 10);
	expect_refused(bad, n + 10, key, "chunk 3 fails authentication");
	free(c);
	free(plain);
	c = encrypt_n(2 * FERRY_ENC_CHUNK, key, &plain, &n);
	memcpy(bad, c, n);
	memset(bad + n, 0, 10);
	expect_refused(bad, n + 10, key, "bytes follow the final chunk");
	/* another key */
	expect_refused(c, n, other, "chunk 0 fails authentication");
	/* the header: magic, chunk size, the stream header as additional data */
	memcpy(bad, c, n);
	bad[0] = 'X';
	expect_refused(bad, n, key, "no FEN1 magic");
	memcpy(bad, c, n);
	bad[5] = 0x20; /* 65536 + 8192 */
	expect_refused(bad, n, key, "chunk size 73728");
	memcpy(bad, c, n);
	bad[10] ^= 1;
	expect_refused(bad, n, key, "chunk 0 fails authentication");
	free(bad);
	free(c);
	free(plain);
}

/* A P-256 key pair: the public half as EVP_PKEY, the private as a JWK. */
static void gateway_key(EVP_PKEY **pub, json_t **jwk)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	*jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, k);
	assert_non_null(*jwk);
	*pub = k;
}

static void test_wrap_unwrap(void **state)
{
	EVP_PKEY *pub, *pub2;
	json_t *jwk, *jwk2;
	uint8_t key[32], got[32];
	char *jwe = NULL;
	ferry_status st = {0};
	(void)state;
	gateway_key(&pub, &jwk);
	gateway_key(&pub2, &jwk2);
	assert_true(ferry_enc_keygen(key));
	assert_int_equal(ferry_jwe_wrap(key, pub, &jwe, &st), FERRY_OK);
	assert_int_equal(ferry_jwe_unwrap(jwe, jwk, got, &st), FERRY_OK);
	assert_memory_equal(got, key, 32);
	/* for another gateway's key */
	assert_int_equal(ferry_jwe_unwrap(jwe, jwk2, got, &st), FERRY_E_DECRYPT_FAILED);
	assert_non_null(strstr(st.detail, "wrapped for another key"));
	/* altered: a character of the encrypted key, then of the tag */
	char *dot = strchr(jwe, '.');
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	assert_int_equal(ferry_jwe_unwrap(jwe, jwk, got, &st), FERRY_E_DECRYPT_FAILED);
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	size_t len = strlen(jwe);
	jwe[len - 2] = jwe[len - 2] == 'A' ? 'B' : 'A';
	assert_int_equal(ferry_jwe_unwrap(jwe, jwk, got, &st), FERRY_E_DECRYPT_FAILED);
	/* shapes */
	assert_int_equal(ferry_jwe_unwrap("a.b.c.d", jwk, got, &st), FERRY_E_MALFORMED);
	assert_int_equal(ferry_jwe_unwrap("a.b.c.d.e.f", jwk, got, &st), FERRY_E_MALFORMED);
	assert_int_equal(ferry_jwe_unwrap("e30.b.c.d.e", jwk, got, &st), FERRY_E_MALFORMED); /* {} */
	assert_int_equal(ferry_jwe_unwrap("not base64!.b.c.d.e", jwk, got, &st), FERRY_E_MALFORMED);
	free(jwe);
	/* a key that is not P-256 is refused for wrapping */
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	assert_int_equal(ferry_jwe_wrap(key, ed, &jwe, &st), FERRY_E_UNSUPPORTED);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(pub2);
	json_decref(jwk);
	json_decref(jwk2);
}

/* JWEs libjose makes with other headers: each refused by name. */
static char *jose_compact(const json_t *jwk, const char *alg, const char *enc, const char *extra, size_t ptl)
{
	json_t *pub = json_deep_copy(jwk), *jwe = json_pack("{s:{s:s}}", "protected", "enc", enc);
	json_t *rcp = json_pack("{s:{s:s}}", "header", "alg", alg), *cek = json_object();
	uint8_t pt[64] = {1, 2, 3};
	json_object_del(pub, "d");
	if (extra)
		json_object_set_new(json_object_get(jwe, "protected"), extra, json_string("DEF"));
	assert_true(jose_jwe_enc_jwk(NULL, jwe, rcp, pub, cek));
	json_t *hdr = jose_jwe_hdr(jwe, jwe);
	json_object_set_new(jwe, "protected", hdr);
	json_object_del(jwe, "header");
	assert_true(jose_jwe_enc_cek(NULL, jwe, cek, pt, ptl));
	char *compact = NULL;
	const char *ek = json_string_value(json_object_get(jwe, "encrypted_key")); /* none with ECDH-ES */
	assert_true(asprintf(&compact, "%s.%s.%s.%s.%s", json_string_value(json_object_get(jwe, "protected")),
			     ek ? ek : "", json_string_value(json_object_get(jwe, "iv")),
			     json_string_value(json_object_get(jwe, "ciphertext")),
			     json_string_value(json_object_get(jwe, "tag"))) > 0);
	json_decref(pub);
	json_decref(jwe);
	json_decref(rcp);
	json_decref(cek);
	return compact;
}

static void test_other_headers_refused(void **state)
{
	EVP_PKEY *pub;
	json_t *jwk;
	uint8_t got[32];
	ferry_status st = {0};
	char *j;
	(void)state;
	gateway_key(&pub, &jwk);

	j = jose_compact(jwk, "ECDH-ES+A128KW", "A128GCM", NULL, 32);
	assert_int_equal(ferry_jwe_unwrap(j, jwk, got, &st), FERRY_E_UNSUPPORTED);
	assert_non_null(strstr(st.detail, "alg ECDH-ES+A128KW with enc A128GCM"));
	free(j);
	j = jose_compact(jwk, "ECDH-ES", "A256GCM", NULL, 32);
	assert_int_equal(ferry_jwe_unwrap(j, jwk, got, &st), FERRY_E_UNSUPPORTED);
	free(j);
	j = jose_compact(jwk, FERRY_JWE_ALG, "A256CBC-HS512", NULL, 32);
	assert_int_equal(ferry_jwe_unwrap(j, jwk, got, &st), FERRY_E_UNSUPPORTED);
	free(j);
	j = jose_compact(jwk, FERRY_JWE_ALG, FERRY_JWE_ENC, "zip", 32);
	assert_int_equal(ferry_jwe_unwrap(j, jwk, got, &st), FERRY_E_UNSUPPORTED);
	assert_non_null(strstr(st.detail, "zip"));
	free(j);
	/* the right pair, but not a 32-byte key inside */
	j = jose_compact(jwk, FERRY_JWE_ALG, FERRY_JWE_ENC, NULL, 16);
	assert_int_equal(ferry_jwe_unwrap(j, jwk, got, &st), FERRY_E_MALFORMED);
	assert_non_null(strstr(st.detail, "16 bytes"));
	free(j);
	j = jose_compact(jwk, FERRY_JWE_ALG, FERRY_JWE_ENC, NULL, 32);
	assert_int_equal(ferry_jwe_unwrap(j, jwk, got, &st), FERRY_OK);
	assert_int_equal(got[0], 1);
	free(j);
	EVP_PKEY_free(pub);
	json_decref(jwk);
}

static X509 *issue(ferry_pki_kind kind, const char *cn, X509 *ca, EVP_PKEY *ca_key, EVP_PKEY **key)
{
	time_t now = time(NULL);
	ferry_pki_req r = {.kind = kind, .keytype = FERRY_PKI_P256, .cn = cn, .not_before = now - 60,
			   .not_after = now + 86400, .issuer_key = ca_key, .issuer_cert = ca};
	X509 *c = NULL;
	EVP_PKEY *k = NULL;
	ferry_status st = {0};
	assert_int_equal(ferry_pki_issue(&r, &c, &k, &st), FERRY_OK);
	if (key)
		*key = k;
	else
		EVP_PKEY_free(k);
	return c;
}

/* The certificate `ferry deploy` wraps for: the org CA's, for key
 * agreement, naming the gateway; and `cli_wrap_keys` wraps only for one
 * that is for key agreement. */
static void test_kek_certificates(void **state)
{
	EVP_PKEY *ca_key, *other_key;
	X509 *ca = issue(FERRY_PKI_CA, "org", NULL, NULL, &ca_key);
	X509 *other = issue(FERRY_PKI_CA, "other org", NULL, NULL, &other_key);
	X509 *kek = issue(FERRY_PKI_KEK, "gw-1", ca, ca_key, NULL);
	X509 *client = issue(FERRY_PKI_CLIENT, "gw-1", ca, ca_key, NULL);
	X509 *foreign = issue(FERRY_PKI_KEK, "gw-1", other, other_key, NULL);
	char path[] = "/tmp/test-enc-ca.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	ferry_trust *t = NULL;
	ferry_status st = {0};
	(void)state;
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, ca), 1);
	fclose(f);
	assert_int_equal(ferry_trust_load(path, &t, &st), FERRY_OK);
	unlink(path);

	assert_int_equal(ferry_trust_verify_kek(t, kek, "gw-1", time(NULL), &st), FERRY_OK);
	assert_int_equal(ferry_trust_verify_kek(t, kek, "gw-2", time(NULL), &st), FERRY_E_UNTRUSTED_SIGNER);
	assert_non_null(strstr(st.detail, "names \"gw-1\", not gw-2"));
	assert_int_equal(ferry_trust_verify_kek(t, client, "gw-1", time(NULL), &st), FERRY_E_UNTRUSTED_SIGNER);
	assert_non_null(strstr(st.detail, "not for key agreement"));
	assert_int_equal(ferry_trust_verify_kek(t, foreign, "gw-1", time(NULL), &st), FERRY_E_UNTRUSTED_SIGNER);
	assert_int_equal(ferry_trust_verify_kek(t, kek, "gw-1", time(NULL) + 3 * 86400, &st),
			 FERRY_E_UNTRUSTED_SIGNER); /* expired */

	json_t *keys = json_pack("{s:s}", "app", "nb5XM4xvHsPb1MBsu8c3BS4pZ2BXV2nBtY9urfq9sZQ"), *w = NULL;
	assert_int_equal(cli_wrap_keys(keys, kek, &w, &st), FERRY_OK);
	assert_true(json_is_string(json_object_get(w, "app")));
	json_decref(w);
	assert_int_equal(cli_wrap_keys(keys, client, &w, &st), FERRY_E_UNSUPPORTED);
	assert_null(w);
	json_decref(keys);
	keys = json_pack("{s:s}", "app", "c2hvcnQ"); /* not 32 bytes */
	assert_int_equal(cli_wrap_keys(keys, kek, &w, &st), FERRY_E_MALFORMED);
	json_decref(keys);

	ferry_trust_free(t);
	X509_free(ca);
	X509_free(other);
	X509_free(kek);
	X509_free(client);
	X509_free(foreign);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_damage_refused),
		cmocka_unit_test(test_wrap_unwrap),
		cmocka_unit_test(test_other_headers_refused),
		cmocka_unit_test(test_kek_certificates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
