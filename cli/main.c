/* `ferry`: the operator's tool.  Makes keys, signs manifests and commands, and
 * verifies them with the same code the gateway runs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "files.h"
#include "ferry/jws.h"
#include "ferry/trust.h"
#include "pki.h"

static const char usage[] =
	"usage: ferry COMMAND ...\n"
	"\n"
	"  pki init DIR [--gateway ID]...      make a demo PKI (CA, signers, broker, gateways)\n"
	"  manifest sign SPEC.yaml --key K --cert C [--chain F] -o OUT\n"
	"  manifest verify FILE --ca CA [--at T] [--skew S]\n"
	"  delta make OLD NEW -o PATCH          a ferry-delta-1 patch; delta apply BASE PATCH -o NEW\n"
	"  cmd sign --op OP --gateway ID ... --key K --cert C\n"
	"  cmd verify FILE --ca CA --gateway ID [--at T] [--skew S]\n"
	"  deploy SPEC|MANIFEST --gateway ID... [--op OP] [--ttl S] [--atomic] [--json]\n"
	"  watch [--gateway ID] [--update ID] [--json]\n"
	"  fleet [--where COND]... [--json]\n"
	"  campaign create|run|list|status|pause|resume|cancel|retry-failed ...\n"
	"  console [--listen 127.0.0.1:PORT]     a live web page of the fleet, campaigns and updates\n"
	"  version\n"
	"\n"
	"deploy, watch, fleet, campaign and console talk to the broker as the operator: --config F, else\n"
	"$FERRY_OPERATOR_CONFIG, else ~/.config/ferry/operator.yaml (ferry pki init\n"
	"writes one).\n"
	"\n"
	"Each command takes --help.  Exit status: 0 done, 1 input refused, 2 usage or I/O error.\n";

void cli_error(const ferry_status *st)
{
	fprintf(stderr, "ferry: %s: %s\n", ferry_err_code(st->code), st->detail);
}

bool cli_int(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < min || v > max) {
		fprintf(stderr, "ferry: %s: \"%s\" is not an integer in %lld..%lld\n", opt, s, (long long)min,
			(long long)max);
		return false;
	}
	*out = v;
	return true;
}

bool cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return true;
	return false;
}

int cli_load_signer(const char *key, const char *cert, const char *chain, EVP_PKEY **pkey,
		    STACK_OF(X509) **certs)
{
	ferry_status st = {0};
	STACK_OF(X509) *more = NULL;

	if (!key || !cert) {
		fprintf(stderr, "ferry: --key and --cert are required to sign\n");
		return CLI_USAGE;
	}
	if (ferry_pki_load_key(key, pkey, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	if (ferry_pki_load_certs(cert, certs, &st) || (chain && ferry_pki_load_certs(chain, &more, &st))) {
		cli_error(&st);
		EVP_PKEY_free(*pkey);
		sk_X509_pop_free(*certs, X509_free);
		*pkey = NULL;
		*certs = NULL;
		return CLI_USAGE;
	}
	while (more && sk_X509_num(more) > 0)
		sk_X509_push(*certs, sk_X509_shift(more));
	sk_X509_free(more);
	return CLI_OK;
}

int cli_verify_file(const char *path, const char *ca, cli_verify_fn verify, void *arg)
{
	ferry_status st = {0};
	ferry_trust *trust = NULL;
	json_t *payload = NULL;
	char *buf = NULL;
	size_t len;
	int rc = CLI_OK;

	if (ferry_trust_load(ca, &trust, &st) || ferry_read_file(path, FERRY_JWS_MAX, &buf, &len, &st)) {
		cli_error(&st);
		ferry_trust_free(trust);
		return CLI_USAGE;
	}
	if (verify(buf, ferry_trim_len(buf, len), trust, arg, &payload, &st)) {
		cli_error(&st);
		rc = CLI_REFUSED;
	} else {
		json_dumpf(payload, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		putchar('\n');
		json_decref(payload);
	}
	free(buf);
	ferry_trust_free(trust);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_USAGE : CLI_OK;
	}
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("ferry %s\n", FERRY_VERSION);
		return CLI_OK;
	}
	if (!strcmp(argv[1], "pki"))
		return cli_pki(argc - 1, argv + 1);
	if (!strcmp(argv[1], "manifest"))
		return cli_manifest(argc - 1, argv + 1);
	if (!strcmp(argv[1], "cmd"))
		return cli_cmd(argc - 1, argv + 1);
	if (!strcmp(argv[1], "deploy"))
		return cli_deploy(argc - 1, argv + 1);
	if (!strcmp(argv[1], "watch"))
		return cli_watch(argc - 1, argv + 1);
	if (!strcmp(argv[1], "fleet"))
		return cli_fleet(argc - 1, argv + 1);
	if (!strcmp(argv[1], "campaign"))
		return cli_campaign(argc - 1, argv + 1);
	if (!strcmp(argv[1], "delta"))
		return cli_delta(argc - 1, argv + 1);
	if (!strcmp(argv[1], "console"))
		return cli_console(argc - 1, argv + 1);
	fprintf(stderr, "ferry: unknown command \"%s\"\n%s", argv[1], usage);
	return CLI_USAGE;
}
