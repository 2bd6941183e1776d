/* Content keys wrapped for one gateway: a compact JWE (RFC 7516) with
 * alg ECDH-ES+A256KW and enc A256GCM whose plaintext is the 32-byte key of
 * an encrypted image (docs/encryption.md).  libjose does the cryptography;
 * this file fixes the algorithms and checks the shape. */
#ifndef FERRY_JWE_H
#define FERRY_JWE_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdint.h>

#include "ferry/err.h"

#define FERRY_JWE_ALG "ECDH-ES+A256KW"
#define FERRY_JWE_ENC "A256GCM"
/* A wrapped key is a few hundred characters; anything near this is not one. */
#define FERRY_JWE_MAX 4096

/* Wrap key (32 bytes) for the P-256 public key in pub.  *out is malloc'd. */
ferry_err ferry_jwe_wrap(const uint8_t key[32], EVP_PKEY *pub, char **out, ferry_status *st) FERRY_WUR;

/* Unwrap a compact JWE with jwk, a P-256 private key as a JWK.  The
 * protected header must name exactly FERRY_JWE_ALG and FERRY_JWE_ENC, with
 * no zip and no crit (unsupported otherwise); a JWE that does not decrypt
 * with jwk (wrapped for another key, or altered) is decrypt_failed; a
 * plaintext that is not 32 bytes is malformed. */
ferry_err ferry_jwe_unwrap(const char *compact, const json_t *jwk, uint8_t key[32], ferry_status *st) FERRY_WUR;

/* The private key in a PEM file as a JWK (the caller's), checked to be
 * P-256. */
ferry_err ferry_jwe_load_key(const char *path, json_t **jwk, ferry_status *st) FERRY_WUR;

#endif
