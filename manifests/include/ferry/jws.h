/* Compact JWS (RFC 7515) as ferry uses it: ES256 or EdDSA, signer chain in
 * x5c, verified against one trust anchor set. */
#ifndef FERRY_JWS_H
#define FERRY_JWS_H

#include <jansson.h>
#include <stdbool.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <time.h>

#include "ferry/err.h"
#include "ferry/trust.h"

/* Upper bound for a compact JWS we are willing to look at.  A command may
 * carry a manifest, and a manifest lists at most FERRY_COMPONENTS_MAX
 * components, so 1 MiB is far above any honest input. */
#define FERRY_JWS_MAX (1024 * 1024)

typedef struct ferry_jws {
	json_t *header;  /* the protected header */
	json_t *payload; /* the payload, parsed strictly as a JSON object */
	X509 *leaf;      /* the certificate whose key verified the signature */
	char alg[8];     /* "ES256" or "EdDSA" */
} ferry_jws;

/* Verify a compact JWS: shape and encoding, the algorithm allow-list, crit,
 * the x5c chain against `trust` at time `at`, the signature with the leaf's
 * key, then the payload as strict JSON.  `typ`, when the header carries one,
 * must equal `typ_expected` (if that is non-NULL).  Nothing is returned
 * unless everything holds. */
ferry_err ferry_jws_verify(const char *compact, size_t len, const ferry_trust *trust, time_t at,
			   const char *typ_expected, ferry_jws *out, ferry_status *st) FERRY_WUR;
void ferry_jws_clear(ferry_jws *jws);

/* Decode canonical, unpadded base64url (RFC 7515, 2): the URL alphabet only
 * and zero bits after the last byte.  *out is malloc'd with a NUL after its
 * *outlen bytes.  False, with nothing allocated, on any other input. */
bool ferry_b64url_decode(const char *p, size_t len, unsigned char **out, size_t *outlen);

/* Sign payload bytes with key (P-256 gives ES256, Ed25519 gives EdDSA) and
 * put chain (leaf first) in x5c.  *out is a malloc'd NUL-terminated string. */
ferry_err ferry_jws_sign(const char *payload, size_t len, EVP_PKEY *key, STACK_OF(X509) *chain,
			 const char *typ, char **out, ferry_status *st) FERRY_WUR;

#endif
