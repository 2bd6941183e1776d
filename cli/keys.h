/* Content keys on the operator's side (docs/encryption.md). */
#ifndef FERRY_CLI_KEYS_H
#define FERRY_CLI_KEYS_H

#include <jansson.h>
#include <openssl/x509.h>

#include "ferry/err.h"

/* The content keys file of `ferry manifest sign --encrypt` (component ->
 * base64url of 32 bytes), checked. */
ferry_err cli_read_keys(const char *path, json_t **out, ferry_status *st) FERRY_WUR;
/* Each content key in keys wrapped for the key-agreement certificate cert:
 * *out gets component -> compact JWE, for a command's `keys`.  A
 * certificate that is not for key agreement is refused. */
ferry_err cli_wrap_keys(const json_t *keys, X509 *cert, json_t **out, ferry_status *st) FERRY_WUR;

/* Gateway gw's key-agreement certificate from the PEM its inventory
 * publishes (decryption_cert), checked: it chains to trust (the org CA),
 * names gw and is for key agreement.  *out is the caller's. */
typedef struct ferry_trust ferry_trust;
ferry_err cli_kek_of(const ferry_trust *trust, const char *gw, const char *pem, X509 **out,
		     ferry_status *st) FERRY_WUR;
/* Every encrypted component of m has its key in keys; names the first one
 * that does not. */
typedef struct ferry_manifest ferry_manifest;
ferry_err cli_keys_cover(const ferry_manifest *m, const json_t *keys, ferry_status *st) FERRY_WUR;

#endif
