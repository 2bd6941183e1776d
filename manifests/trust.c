/* Certificate chains for signed commands and manifests.
 *
 * Rules, each of which stops a known mistake: a dedicated store with only the
 * configured CA (never the system's); the x5c tail only as untrusted
 * intermediates; X509_V_FLAG_X509_STRICT; no partial chains, so an
 * intermediate can never stand in for the anchor; the verification time set
 * explicitly from the caller's clock; and X509_verify_cert() == 1 exactly,
 * since it can return negative values. */
#include "ferry/trust.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "certparse.h"

struct ferry_trust {
	X509_STORE *store;
	ferry_certparse *cp; /* reads x5c certificates; NULL: d2i_X509 */
};

ferry_err ferry_trust_load(const char *pem_path, ferry_trust **out, ferry_status *st)
{
	FILE *f = fopen(pem_path, "r");
	ferry_trust *t;
	X509 *x;
	int n = 0;

	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "CA file %s: cannot open", pem_path);
	t = calloc(1, sizeof(*t));
	if (!t || !(t->store = X509_STORE_new())) {
		fclose(f);
		free(t);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
		int ok = X509_STORE_add_cert(t->store, x);
		X509_free(x);
		if (!ok) {
			fclose(f);
			ferry_trust_free(t);
			return ferry_fail(st, FERRY_E_MALFORMED, "CA file %s: certificate %d not usable", pem_path, n + 1);
		}
		n++;
	}
	ERR_clear_error(); /* the loop ends on a "no start line" error */
	fclose(f);
	if (n == 0) {
		ferry_trust_free(t);
		return ferry_fail(st, FERRY_E_MALFORMED, "CA file %s: no PEM certificate in it", pem_path);
	}
	t->cp = ferry_certparse_new(); /* without it, slower, same answers */
	*out = t;
	return FERRY_OK;
}

void ferry_trust_free(ferry_trust *t)
{
	if (!t)
		return;
	X509_STORE_free(t->store);
	ferry_certparse_free(t->cp);
	free(t);
}

/* Standard base64 (not url-safe) DER, exactly one certificate, nothing after it. */
static ferry_err decode_cert(const ferry_trust *t, const json_t *v, size_t idx, X509 **out, ferry_status *st)
{
	const char *s;
	size_t len, dlen;
	unsigned char *der;
	int n;

	if (!json_is_string(v))
		return ferry_fail(st, FERRY_E_MALFORMED, "x5c[%zu] is not a string", idx);
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0 || len % 4 || len > (FERRY_CERT_DER_MAX / 3) * 4 + 4)
		return ferry_fail(st, FERRY_E_MALFORMED, "x5c[%zu] has a bad base64 length %zu", idx, len);
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			  c == '+' || c == '/' || (c == '=' && i >= len - 2);
		if (!ok || (i == len - 2 && c == '=' && s[len - 1] != '='))
			return ferry_fail(st, FERRY_E_MALFORMED, "x5c[%zu] is not standard base64", idx);
	}
	der = malloc(len / 4 * 3 + 1);
	if (!der)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	n = EVP_DecodeBlock(der, (const unsigned char *)s, (int)len);
	if (n < 0) {
		free(der);
		return ferry_fail(st, FERRY_E_MALFORMED, "x5c[%zu] is not standard base64", idx);
	}
	/* EVP_DecodeBlock counts the padding as zero bytes; take them off. */
	dlen = (size_t)n - (s[len - 1] == '=') - (s[len - 2] == '=');
	*out = ferry_certparse_der(t->cp, der, dlen);
	if (!*out) {
		free(der);
		ERR_clear_error();
		return ferry_fail(st, FERRY_E_MALFORMED, "x5c[%zu] is not one DER certificate", idx);
	}
	free(der);
	return FERRY_OK;
}

static ferry_err check_chain(const ferry_trust *t, X509 *leaf, STACK_OF(X509) *inter, time_t at,
			     ferry_status *st)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_VERIFY_PARAM *param;
	int rc;
	ferry_err e = FERRY_OK;

	if (!ctx || !X509_STORE_CTX_init(ctx, t->store, leaf, inter)) {
		X509_STORE_CTX_free(ctx);
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot set up chain verification");
	}
	param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT | X509_V_FLAG_USE_CHECK_TIME);
	X509_VERIFY_PARAM_clear_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
	X509_VERIFY_PARAM_set_time(param, at);
	X509_VERIFY_PARAM_set_depth(param, FERRY_X5C_MAX);
	rc = X509_verify_cert(ctx);
	if (rc != 1) {
		int err = X509_STORE_CTX_get_error(ctx);
		e = ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "signer certificate: %s (depth %d)",
			       X509_verify_cert_error_string(err), X509_STORE_CTX_get_error_depth(ctx));
	}
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return e;
}

/* The leaf signs data, never certificates: refuse a CA certificate and one
 * whose keyUsage leaves out digitalSignature. */
static ferry_err check_leaf_usage(X509 *leaf, ferry_status *st)
{
	uint32_t ku;

	if (X509_check_ca(leaf))
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "signer certificate is a CA certificate");
	ku = X509_get_key_usage(leaf);
	if (ku != UINT32_MAX && !(ku & KU_DIGITAL_SIGNATURE))
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "signer certificate does not allow digitalSignature");
	return FERRY_OK;
}

ferry_err ferry_trust_verify_x5c(const ferry_trust *t, const json_t *x5c, time_t at, X509 **leaf,
				 ferry_status *st)
{
	STACK_OF(X509) *inter = NULL;
	X509 *l = NULL;
	size_t n;
	ferry_err e;

	*leaf = NULL;
	if (!x5c)
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "protected header has no x5c certificate chain");
	if (!json_is_array(x5c) || (n = json_array_size(x5c)) == 0 || n > FERRY_X5C_MAX)
		return ferry_fail(st, FERRY_E_MALFORMED, "x5c must be an array of 1-%d certificates", FERRY_X5C_MAX);
	if ((e = decode_cert(t, json_array_get(x5c, 0), 0, &l, st)))
		return e;
	if (!(inter = sk_X509_new_null())) {
		X509_free(l);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	for (size_t i = 1; i < n; i++) {
		X509 *c;
		if ((e = decode_cert(t, json_array_get(x5c, i), i, &c, st)))
			goto out;
		if (!sk_X509_push(inter, c)) {
			X509_free(c);
			e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
			goto out;
		}
	}
	if ((e = check_chain(t, l, inter, at, st)) || (e = check_leaf_usage(l, st)))
		goto out;
	*leaf = l;
	l = NULL;
out:
	X509_free(l);
	sk_X509_pop_free(inter, X509_free);
	return e;
}

ferry_err ferry_trust_verify_kek(const ferry_trust *t, X509 *cert, const char *gateway_id, time_t at,
				 ferry_status *st)
{
	X509_NAME *subject = X509_get_subject_name(cert);
	int at_cn = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
	const ASN1_STRING *cn = at_cn >= 0 ? X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at_cn)) : NULL;
	uint32_t ku = X509_get_key_usage(cert);
	EVP_PKEY *k = X509_get0_pubkey(cert);
	char group[32] = "";
	ferry_err e;

	if ((e = check_chain(t, cert, NULL, at, st)))
		return e;
	if (X509_check_ca(cert))
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "key-agreement certificate is a CA certificate");
	if (ku == UINT32_MAX || !(ku & KU_KEY_AGREEMENT))
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "the certificate is not for key agreement");
	/* exactly one CN, exactly the gateway's id (no NUL cut short) */
	if (!cn || X509_NAME_get_index_by_NID(subject, NID_commonName, at_cn) >= 0 ||
	    (size_t)ASN1_STRING_length(cn) != strlen(gateway_id) ||
	    memcmp(ASN1_STRING_get0_data(cn), gateway_id, strlen(gateway_id)))
		return ferry_fail(st, FERRY_E_UNTRUSTED_SIGNER, "the key-agreement certificate names \"%.*s\", not %s",
				  cn ? (ASN1_STRING_length(cn) > 64 ? 64 : ASN1_STRING_length(cn)) : 0,
				  cn ? (const char *)ASN1_STRING_get0_data(cn) : "", gateway_id);
	if (!k || !EVP_PKEY_is_a(k, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) ||
	    strcmp(group, "prime256v1"))
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "the key-agreement key is not a P-256 key");
	return FERRY_OK;
}
