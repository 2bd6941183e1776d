/* Reading a DER certificate without OpenSSL 3.0's per-call decoder search.
 *
 * In OpenSSL 3.0 and 3.1, every d2i_X509() builds a fresh decoder chain
 * for the public key (OSSL_DECODER_CTX_new_for_pkey: every decoder and key
 * manager of every provider is constructed and compared, with nothing
 * cached; openssl/openssl#19119).  On the machines we measure, that is half
 * the cost of reading a certificate and checking its chain, and `ferry
 * fleet` reads one certificate per gateway.  OpenSSL 3.2 caches those
 * chains, so there this file only calls d2i_X509().
 *
 * For a P-256 key on 3.0/3.1, the certificate is read with the key left
 * undecoded (a library context holding only the null provider, so the
 * decoder search finds nothing at once), the key is made from the
 * SubjectPublicKeyInfo's own point on the named curve (EC_KEY_oct2key
 * refuses a point not on the curve), and set into the certificate.  Setting
 * it marks the TBSCertificate for re-encoding, so the issuer's signature is
 * later checked over the re-encoded bytes, which name the key that is used:
 * a certificate whose re-encoding differs from what the issuer signed fails
 * its signature check, and is refused, never misread.
 *
 * Anything else (another key type or curve, explicit curve parameters, any
 * failure on the way) is read by d2i_X509(), so its errors are the
 * library's own.
 *
 * Such a key is a legacy EC_KEY, so an ES256 signature by it is checked
 * with that key directly (ferry_certparse_es256) rather than through EVP,
 * which would first copy the key into a provider, curve and all. */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY: the only key path without the decoder search */
#include "certparse.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/provider.h>
#include <openssl/x509.h>
#include <stdlib.h>

#if OPENSSL_VERSION_NUMBER < 0x30200000L && !defined(OPENSSL_NO_DEPRECATED_3_0)
#define FAST_P256 1
#endif

struct ferry_certparse {
	OSSL_LIB_CTX *bare;  /* only the null provider: keys stay undecoded */
	OSSL_PROVIDER *null; /* its provider */
	EC_GROUP *p256;      /* copied into each key */
};

ferry_certparse *ferry_certparse_new(void)
{
	ferry_certparse *cp = calloc(1, sizeof(*cp));
#ifdef FAST_P256
	if (cp && (!(cp->bare = OSSL_LIB_CTX_new()) || !(cp->null = OSSL_PROVIDER_load(cp->bare, "null")) ||
		   !(cp->p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)))) {
		ferry_certparse_free(cp);
		ERR_clear_error();
		return NULL;
	}
#endif
	return cp;
}

void ferry_certparse_free(ferry_certparse *cp)
{
	if (!cp)
		return;
#ifdef FAST_P256
	EC_GROUP_free(cp->p256);
	OSSL_PROVIDER_unload(cp->null);
	OSSL_LIB_CTX_free(cp->bare);
#endif
	free(cp);
}

#ifdef FAST_P256
/* The certificate with its P-256 key set from its own point; NULL if it is
 * not exactly one DER certificate with such a key. */
static X509 *read_p256(const ferry_certparse *cp, const unsigned char *der, size_t len)
{
	const unsigned char *p = der, *point;
	const ASN1_OBJECT *alg_oid;
	ASN1_OBJECT *key_oid;
	X509_ALGOR *alg;
	const void *param;
	int param_type, point_len;
	EC_KEY *ec = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = (X509 *)ASN1_item_d2i_ex(NULL, &p, (long)len, ASN1_ITEM_rptr(X509), cp->bare, NULL);

	if (!x || p != der + len ||
	    !X509_PUBKEY_get0_param(&key_oid, &point, &point_len, &alg, X509_get_X509_PUBKEY(x)))
		goto fail;
	X509_ALGOR_get0(&alg_oid, &param_type, &param, alg);
	if (OBJ_obj2nid(key_oid) != NID_X9_62_id_ecPublicKey || param_type != V_ASN1_OBJECT ||
	    OBJ_obj2nid(param) != NID_X9_62_prime256v1)
		goto fail;
	if (!(ec = EC_KEY_new()) || !EC_KEY_set_group(ec, cp->p256) ||
	    !EC_KEY_oct2key(ec, point, (size_t)point_len, NULL) || !(key = EVP_PKEY_new()) ||
	    !EVP_PKEY_assign_EC_KEY(key, ec))
		goto fail;
	ec = NULL; /* the key holds it */
	if (!X509_set_pubkey(x, key))
		goto fail;
	EVP_PKEY_free(key);
	return x;
fail:
	EC_KEY_free(ec);
	EVP_PKEY_free(key);
	X509_free(x);
	ERR_clear_error();
	return NULL;
}
#endif

X509 *ferry_certparse_der(const ferry_certparse *cp, const unsigned char *der, size_t len)
{
	const unsigned char *p = der;
	X509 *x;

	if (len > LONG_MAX)
		return NULL;
#ifdef FAST_P256
	if (cp && (x = read_p256(cp, der, len)))
		return x;
#else
	(void)cp;
#endif
	x = d2i_X509(NULL, &p, (long)len);
	if (x && p != der + len) {
		X509_free(x);
		x = NULL;
	}
	return x;
}

int ferry_certparse_es256(const X509 *leaf, const unsigned char *msg, size_t len, const unsigned char sig[64])
{
#ifdef FAST_P256
	EVP_PKEY *k = X509_get0_pubkey(leaf);
	const EC_KEY *ec;
	unsigned char md[32];

	/* only a key read above: a legacy one, on P-256 */
	if (!k || EVP_PKEY_get0_provider(k) || EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
	    !(ec = EVP_PKEY_get0_EC_KEY(k)) || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1)
		return -1;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	int ok = -1;
	if (es && r && s && ECDSA_SIG_set0(es, r, s)) {
		r = s = NULL; /* es has them */
		if (EVP_Digest(msg, len, md, NULL, EVP_sha256(), NULL))
			ok = ECDSA_do_verify(md, sizeof(md), es, (EC_KEY *)ec) == 1;
	}
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	ERR_clear_error();
	return ok;
#else
	(void)leaf;
	(void)msg;
	(void)len;
	(void)sig;
	return -1;
#endif
}
