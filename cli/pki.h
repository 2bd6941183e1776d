/* A demo PKI for ferry: organisation CA, signers, broker and gateway
 * certificates, made with OpenSSL so a first run needs no other tool. */
#ifndef FERRY_CLI_PKI_H
#define FERRY_CLI_PKI_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <time.h>

#include "ferry/err.h"

typedef enum ferry_pki_kind {
	FERRY_PKI_CA,     /* CA:TRUE, keyCertSign + cRLSign */
	FERRY_PKI_SIGNER, /* CA:FALSE, digitalSignature: command and manifest signers */
	FERRY_PKI_SERVER, /* CA:FALSE, serverAuth, SAN localhost and 127.0.0.1 */
	FERRY_PKI_CLIENT, /* CA:FALSE, clientAuth: a gateway's MQTT identity */
	FERRY_PKI_KEK,    /* CA:FALSE, keyAgreement: what content keys are wrapped for */
} ferry_pki_kind;

typedef enum ferry_pki_keytype { FERRY_PKI_P256, FERRY_PKI_ED25519 } ferry_pki_keytype;

typedef struct ferry_pki_req {
	ferry_pki_kind kind;
	ferry_pki_keytype keytype;
	const char *cn;
	time_t not_before, not_after;
	EVP_PKEY *issuer_key;  /* NULL: self-signed */
	X509 *issuer_cert;
	EVP_PKEY *subject_key; /* NULL: a fresh key of keytype */
} ferry_pki_req;

/* One certificate and its key (both the caller's). */
ferry_err ferry_pki_issue(const ferry_pki_req *req, X509 **cert_out, EVP_PKEY **key_out,
			  ferry_status *st) FERRY_WUR;
/* DIR/NAME.pem and DIR/NAME.key (PKCS#8, mode 0600), each via temp + rename. */
ferry_err ferry_pki_write(const char *dir, const char *name, X509 *cert, EVP_PKEY *key,
			  ferry_status *st) FERRY_WUR;
ferry_err ferry_pki_load_key(const char *path, EVP_PKEY **out, ferry_status *st) FERRY_WUR;
/* One or more PEM certificates, leaf first. */
ferry_err ferry_pki_load_certs(const char *path, STACK_OF(X509) **out, ferry_status *st) FERRY_WUR;
/* The most gateway certificates one ferry pki init makes. */
#define FERRY_PKI_GATEWAYS_MAX 4096
/* The demo PKI of `ferry pki init`; never overwrites a file. */
ferry_err ferry_pki_init(const char *dir, const char *const *gateways, size_t n_gateways,
			 ferry_status *st) FERRY_WUR;

#endif
