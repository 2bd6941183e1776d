/* Reading DER certificates, without OpenSSL 3.0's slow key decoding where
 * that is safe (certparse.c says how).  Internal to the formats library. */
#ifndef FERRY_CERTPARSE_H
#define FERRY_CERTPARSE_H

#include <limits.h>
#include <openssl/x509.h>
#include <stddef.h>

typedef struct ferry_certparse ferry_certparse;

/* NULL when out of memory; ferry_certparse_der() then reads every
 * certificate with d2i_X509(). */
ferry_certparse *ferry_certparse_new(void);
void ferry_certparse_free(ferry_certparse *cp);

/* Exactly one DER certificate filling der[0..len), or NULL.  cp may be
 * NULL.  Safe from several threads at once on one cp. */
X509 *ferry_certparse_der(const ferry_certparse *cp, const unsigned char *der, size_t len);

/* An ES256 signature (R || S) over msg by leaf's key, when leaf was read
 * above with its P-256 key: 1 good, 0 bad; -1 when this path does not
 * apply, and the caller checks it through EVP. */
int ferry_certparse_es256(const X509 *leaf, const unsigned char *msg, size_t len, const unsigned char sig[64]);

#endif
