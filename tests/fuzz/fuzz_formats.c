/* libFuzzer targets over the command and manifest parsers.
 *
 * Built twice.  fuzz_fields (FERRY_FUZZ_FIELDS) feeds every input straight
 * to strict JSON and the field parsers of both formats, with no signature
 * step, so it runs fast and goes deep into the field rules.  fuzz_formats
 * is the end-to-end one; its first input byte picks a path, so one corpus
 * reaches all of them:
 *   0: bytes as a command payload (strict JSON, then the field parser)
 *   1: bytes as a manifest payload
 *   2: bytes as a compact JWS, verified as a command against the test CA
 *   3: bytes as a payload, signed with a valid signer, then verified as a
 *      command and as a manifest -- this drives arbitrary payloads through
 *      the whole verify path past the signature check.
 * FERRY_FUZZ_TARGET selects the default interpretation of the seeds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/command.h"
#include "ferry/jsonfield.h"
#include "ferry/jws.h"
#include "ferry/manifest.h"
#include "pki.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ferry_trust *trust;
static EVP_PKEY *signer_key;
static STACK_OF(X509) *signer_chain;
static const time_t now = 1764000000;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
#ifdef FERRY_FUZZ_FIELDS
	return 0; /* no keys needed */
#endif
	ferry_status st = {0};
	X509 *ca, *leaf;
	EVP_PKEY *ca_key;
	char dir[] = "/tmp/ferry-fuzz-XXXXXX", path[64];
	ferry_pki_req req = {.kind = FERRY_PKI_CA, .keytype = FERRY_PKI_P256, .cn = "fuzz CA",
			     .not_before = now - 86400, .not_after = now + 86400 * 365};

	if (ferry_pki_issue(&req, &ca, &ca_key, &st))
		abort();
	req = (ferry_pki_req){.kind = FERRY_PKI_SIGNER, .keytype = FERRY_PKI_P256, .cn = "fuzz signer",
			      .not_before = now - 86400, .not_after = now + 86400 * 365, .issuer_key = ca_key,
			      .issuer_cert = ca};
	if (ferry_pki_issue(&req, &leaf, &signer_key, &st) || !mkdtemp(dir) ||
	    ferry_pki_write(dir, "ca", ca, ca_key, &st))
		abort();
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	if (ferry_trust_load(path, &trust, &st))
		abort();
	signer_chain = sk_X509_new_null();
	sk_X509_push(signer_chain, leaf);
	/* The trust is in memory now; leave no files behind. */
	unlink(path);
	snprintf(path, sizeof(path), "%s/ca.key", dir);
	unlink(path);
	rmdir(dir);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return 0;
}

static void as_payloads(const char *p, size_t n)
{
	json_t *j;
	ferry_command c;
	ferry_manifest m;

	if (ferry_json_load_object(p, n, &j, NULL))
		return;
	if (ferry_command_parse(j, &c, NULL) == FERRY_OK)
		ferry_command_free(&c);
	if (ferry_manifest_parse(j, &m, NULL) == FERRY_OK)
		ferry_manifest_free(&m);
	json_decref(j);
}

static void signed_and_verified(const char *p, size_t n)
{
	char *jws;
	ferry_command c;
	ferry_manifest m;
	ferry_status st;

	if (ferry_jws_sign(p, n, signer_key, signer_chain, NULL, &jws, NULL))
		return;
	if (ferry_command_verify(jws, strlen(jws), trust, "gw-1", now, 300, &c, NULL, &st) == FERRY_OK)
		ferry_command_free(&c);
	if (ferry_manifest_verify(jws, strlen(jws), trust, now, 300, &m, NULL, &st) == FERRY_OK)
		ferry_manifest_free(&m);
	free(jws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ferry_command c;
	const char *p = (const char *)data + 1;

	if (size < 1 || size > 65536)
		return 0;
#ifdef FERRY_FUZZ_FIELDS
	/* the shared seeds start with fuzz_formats' path byte: skip it */
	as_payloads(p - (data[0] < 4 ? 0 : 1), size - (data[0] < 4 ? 1 : 0));
	return 0;
#endif
	switch (data[0] % 4) {
	case 0:
	case 1:
		as_payloads(p, size - 1);
		break;
	case 2:
		if (ferry_command_verify(p, size - 1, trust, "gw-1", now, 300, &c, NULL, NULL) == FERRY_OK)
			ferry_command_free(&c);
		break;
	case 3:
		signed_and_verified(p, size - 1);
		break;
	}
	return 0;
}
