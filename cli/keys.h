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

#endif
