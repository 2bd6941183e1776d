/* `ferry manifest`: sign a manifest from a YAML spec, or verify one exactly
 * as a gateway would (minus the gateway's own sequence and version state). */
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "files.h"
#include "spec.h"
#include "ferry/jws.h"
#include "ferry/manifest.h"

static const char help_sign[] =
	"usage: ferry manifest sign SPEC.yaml --key K --cert C [--chain F] [--encrypt] -o OUT\n"
	"\n"
	"Reads SPEC.yaml (see docs/manifest.md), computes each component's size and\n"
	"sha256 from its `file`, checks the result as a gateway would, and writes the\n"
	"signed manifest (compact JWS) to OUT.  K is a P-256 (ES256) or Ed25519 (EdDSA)\n"
	"private key; C its certificate (leaf first); F more chain certificates.\n"
	"--encrypt encrypts every component (the spec's `encrypt: true` one): each\n"
	"image goes to FILE.fenc under a fresh content key, and the keys to OUT.keys\n"
	"(mode 0600), for `ferry cmd sign --keys OUT.keys --wrap-key-for CERT`.\n";

static const char help_verify[] =
	"usage: ferry manifest verify FILE --ca CA [--at T] [--skew S]\n"
	"\n"
	"Verifies the signed manifest in FILE against the CA certificates in CA at\n"
	"time T (default now) with S seconds of clock skew (default 300).  Prints the\n"
	"payload JSON and exits 0, or prints the reason code and detail and exits 1.\n";

static int do_sign(int argc, char **argv)
{
	static const struct option opts[] = {{"key", required_argument, NULL, 'k'}, {"cert", required_argument, NULL, 'c'},
					     {"chain", required_argument, NULL, 'C'}, {"output", required_argument, NULL, 'o'},
					     {"encrypt", no_argument, NULL, 'E'}, {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *key = NULL, *cert = NULL, *chain = NULL, *outp = NULL;
	bool encrypt = false;
	json_t *keys = json_object();
	char *kj = NULL;
	ferry_status st = {0};
	EVP_PKEY *pkey = NULL;
	STACK_OF(X509) *certs = NULL;
	json_t *payload = NULL;
	char *pj = NULL, *jws = NULL;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "k:c:C:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k': key = optarg; break;
		case 'c': cert = optarg; break;
		case 'C': chain = optarg; break;
		case 'o': outp = optarg; break;
		case 'E': encrypt = true; break;
		default: fputs(help_sign, stderr); json_decref(keys); return CLI_USAGE;
		}
	}
	if (optind + 1 != argc || !outp) {
		fprintf(stderr, "ferry manifest sign: give one SPEC.yaml and -o OUT\n");
		json_decref(keys);
		return CLI_USAGE;
	}
	char keys_path[4200];
	snprintf(keys_path, sizeof(keys_path), "%s.keys", outp);
	if ((rc = cli_load_signer(key, cert, chain, &pkey, &certs))) {
		json_decref(keys);
		return rc;
	}
	/* the keys are written first: a manifest is never there without them */
	if (ferry_spec_load(argv[optind], time(NULL), encrypt, &payload, NULL, keys, &st) ||
	    !(pj = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS)) ||
	    ferry_jws_sign(pj, strlen(pj), pkey, certs, "ferry-manifest", &jws, &st) ||
	    (json_object_size(keys) &&
	     (!(kj = json_dumps(keys, JSON_COMPACT | JSON_SORT_KEYS)) ||
	      ferry_write_secret(keys_path, kj, strlen(kj), &st))) ||
	    ferry_write_file(outp, jws, strlen(jws), &st)) {
		if (!st.code)
			ferry_fail(&st, FERRY_E_INTERNAL, "cannot serialise the manifest");
		cli_error(&st);
		rc = st.code == FERRY_E_INTERNAL ? CLI_USAGE : CLI_REFUSED;
	} else {
		printf("signed manifest written to %s\n", outp);
		if (json_object_size(keys))
			printf("content keys of its %zu encrypted component%s written to %s\n", json_object_size(keys),
			       json_object_size(keys) == 1 ? "" : "s", keys_path);
	}
	if (kj)
		OPENSSL_cleanse(kj, strlen(kj));
	free(kj);
	json_decref(keys);
	json_decref(payload);
	free(pj);
	free(jws);
	EVP_PKEY_free(pkey);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

typedef struct verify_args {
	time_t at;
	long skew;
} verify_args;

static ferry_err verify_manifest(const char *buf, size_t len, const ferry_trust *trust, void *arg, json_t **payload,
				 ferry_status *st)
{
	const verify_args *a = arg;
	ferry_manifest m;
	ferry_err e = ferry_manifest_verify(buf, len, trust, a->at, a->skew, &m, payload, st);

	if (!e)
		ferry_manifest_free(&m);
	return e;
}

static int do_verify(int argc, char **argv)
{
	static const struct option opts[] = {{"ca", required_argument, NULL, 'a'}, {"at", required_argument, NULL, 't'},
					     {"skew", required_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *ca = NULL;
	int64_t at = time(NULL), skew = 300;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:t:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'a': ca = optarg; break;
		case 't': if (!cli_int("--at", optarg, 0, INT64_C(1) << 53, &at)) return CLI_USAGE; break;
		case 's': if (!cli_int("--skew", optarg, 0, 86400, &skew)) return CLI_USAGE; break;
		default: fputs(help_verify, stderr); return CLI_USAGE;
		}
	}
	if (optind + 1 != argc || !ca) {
		fprintf(stderr, "ferry manifest verify: give one FILE and --ca CA\n");
		return CLI_USAGE;
	}
	return cli_verify_file(argv[optind], ca, verify_manifest, &(verify_args){(time_t)at, (long)skew});
}

int cli_manifest(int argc, char **argv)
{
	bool help = cli_wants_help(argc, argv);

	if (argc >= 2 && !strcmp(argv[1], "sign")) {
		if (help)
			return fputs(help_sign, stdout), CLI_OK;
		return do_sign(argc - 1, argv + 1);
	}
	if (argc >= 2 && !strcmp(argv[1], "verify")) {
		if (help)
			return fputs(help_verify, stdout), CLI_OK;
		return do_verify(argc - 1, argv + 1);
	}
	fputs(help_sign, help ? stdout : stderr);
	fputs(help_verify, help ? stdout : stderr);
	return help ? CLI_OK : CLI_USAGE;
}
