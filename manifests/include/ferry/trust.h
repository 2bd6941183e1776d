/* Trust anchors and x5c certificate chains (RFC 7515 §4.1.6). */
#ifndef FERRY_TRUST_H
#define FERRY_TRUST_H

#include <jansson.h>
#include <openssl/x509.h>
#include <time.h>

#include "ferry/err.h"

/* At most this many certificates in an x5c chain, and bytes per certificate. */
#define FERRY_X5C_MAX 8
#define FERRY_CERT_DER_MAX 16384

/* One trust anchor set: the CA certificates from one PEM file, nothing else
 * (no system store, so a public CA can never sign for our gateways). */
typedef struct ferry_trust ferry_trust;

ferry_err ferry_trust_load(const char *pem_path, ferry_trust **out, ferry_status *st) FERRY_WUR;
void ferry_trust_free(ferry_trust *t);

/* Decode an x5c array (standard base64 DER, leaf first) and verify the chain
 * against t at time `at`: strict X.509 rules, no partial chains, the leaf must
 * not be a CA and must allow digitalSignature.  On success *leaf is the
 * caller's.  Errors: malformed (bad encoding), untrusted_signer (chain). */
ferry_err ferry_trust_verify_x5c(const ferry_trust *t, const json_t *x5c, time_t at, X509 **leaf,
				 ferry_status *st) FERRY_WUR;

/* A gateway's key-agreement certificate (docs/encryption.md): it chains to
 * t at `at`, is no CA, allows keyAgreement, names gateway_id as its CN and
 * holds a P-256 key.  untrusted_signer (or unsupported) otherwise. */
ferry_err ferry_trust_verify_kek(const ferry_trust *t, X509 *cert, const char *gateway_id, time_t at,
				 ferry_status *st) FERRY_WUR;

#endif
