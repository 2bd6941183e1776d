/* `ferry cmd`: sign a command for one gateway, or verify one as that gateway
 * would (without its replay store). */
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "files.h"
#include "ferry/command.h"
#include "ferry/jsonfield.h"
#include "ferry/jwe.h"
#include "ferry/jws.h"
#include "keys.h"
#include "pki.h"

static const char help_sign[] =
	"usage: ferry cmd sign --op OP --gateway ID --update ID [--manifest F]\n"
	"                      [--link NAME=URL]... [--keys F --wrap-key-for CERT]\n"
	"                      [--wrapped-key NAME=JWE]...\n"
	"                      [--nbf T] [--exp T | --ttl S]\n"
	"                      [--iss ORG] [--jti J] --key K --cert C [--chain F]\n"
	"\n"
	"Prints a signed command (compact JWS) for gateway ID.  OP is one of\n"
	"update.request, update.download, update.check, update.install,\n"
	"update.deploy, update.cancel, update.status, inventory.refresh.\n"
	"--manifest F embeds the signed manifest in F; --link gives a component's\n"
	"HTTPS download URL.  --keys F (from `ferry manifest sign --encrypt`) with\n"
	"--wrap-key-for CERT wraps each content key for the gateway's key-agreement\n"
	"certificate CERT (its inventory's decryption_cert); --wrapped-key gives a\n"
	"key wrapped elsewhere (a compact JWE, e.g. from a key service) as it is.  NBF\n"
	"defaults to now, the expiry to now + 3600 s (--ttl).  The jti is random\n"
	"unless given.  K is a P-256 or Ed25519 private key, C its certificate.\n";

static const char help_verify[] =
	"usage: ferry cmd verify FILE --ca CA --gateway ID [--at T] [--skew S]\n"
	"\n"
	"Verifies the command in FILE as gateway ID would at time T (default now)\n"
	"with S seconds of skew (default 300): signature, chain to CA, addressee,\n"
	"validity window, fields.  Prints the payload JSON and exits 0, or prints\n"
	"the reason code and detail and exits 1.\n";

typedef struct sign_args {
	const char *op, *gw, *update, *manifest, *iss, *jti, *key, *cert, *chain;
	int64_t nbf, exp, ttl;
	json_t *links;
	json_t *keys; /* wrapped: component -> JWE */
} sign_args;

static int add_link(json_t *links, const char *arg)
{
	const char *eq = strchr(arg, '=');

	if (!eq || eq == arg) {
		fprintf(stderr, "ferry cmd sign: --link wants NAME=URL, not \"%s\"\n", arg);
		return CLI_USAGE;
	}
	char name[FERRY_ID_MAX + 66]; /* NAME, or NAME@BASE for a delta */
	if ((size_t)(eq - arg) >= sizeof(name)) {
		fprintf(stderr, "ferry cmd sign: --link: the name before = is longer than %zu characters\n",
			sizeof(name) - 1);
		return CLI_USAGE;
	}
	snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
	json_object_set_new(links, name, json_string(eq + 1));
	return CLI_OK;
}

static json_t *random_jti(void)
{
	unsigned char r[16];
	char hex[33];

	if (RAND_bytes(r, sizeof(r)) != 1)
		return NULL;
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", r[i]);
	return json_string(hex);
}

/* The payload, checked with the gateway's own parser before it is signed.
 * manifest_text: the signed manifest it carries, or NULL. */
static int build_payload(const sign_args *a, const char *manifest_text, json_t **out)
{
	time_t now = time(NULL);
	int64_t nbf = a->nbf >= 0 ? a->nbf : now;
	int64_t exp = a->exp >= 0 ? a->exp : nbf + a->ttl;
	json_t *p = json_pack("{s:s,s:s,s:o,s:I,s:I,s:I,s:s}", "iss", a->iss, "sub", a->gw, "jti",
			      a->jti ? json_string(a->jti) : random_jti(), "iat", (json_int_t)now, "nbf",
			      (json_int_t)nbf, "exp", (json_int_t)exp, "op", a->op);
	ferry_status st = {0};
	ferry_command cmd;

	if (!p)
		return CLI_USAGE;
	if (a->update)
		json_object_set_new(p, "update_id", json_string(a->update));
	if (json_object_size(a->links))
		json_object_set(p, "links", a->links);
	if (json_object_size(a->keys))
		json_object_set(p, "keys", a->keys);
	if (manifest_text)
		json_object_set_new(p, "manifest", json_string(manifest_text));
	if (ferry_command_parse(p, &cmd, &st)) {
		cli_error(&st);
		json_decref(p);
		return CLI_REFUSED;
	}
	ferry_command_free(&cmd);
	*out = p;
	return CLI_OK;
}

static int do_sign(int argc, char **argv)
{
	static const struct option opts[] = {
		{"op", required_argument, NULL, 'O'},      {"gateway", required_argument, NULL, 'g'},
		{"update", required_argument, NULL, 'u'},  {"manifest", required_argument, NULL, 'm'},
		{"link", required_argument, NULL, 'l'},    {"nbf", required_argument, NULL, 'n'},
		{"exp", required_argument, NULL, 'e'},     {"ttl", required_argument, NULL, 't'},
		{"iss", required_argument, NULL, 'i'},     {"jti", required_argument, NULL, 'j'},
		{"key", required_argument, NULL, 'k'},     {"cert", required_argument, NULL, 'c'},
		{"chain", required_argument, NULL, 'C'},   {"keys", required_argument, NULL, 'K'},
		{"wrap-key-for", required_argument, NULL, 'W'}, {"wrapped-key", required_argument, NULL, 'w'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *keys_file = NULL, *wrap_for = NULL;
	json_t *plain_keys = NULL, *given = json_object();
	sign_args a = {.iss = "ferry", .nbf = -1, .exp = -1, .ttl = 3600, .links = json_object()};
	const int64_t tmax = INT64_C(1) << 53;
	ferry_status st = {0};
	EVP_PKEY *pkey = NULL;
	STACK_OF(X509) *certs = NULL;
	json_t *payload = NULL;
	char *pj = NULL, *jws = NULL, *mtext = NULL;
	int c, rc = CLI_USAGE;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'O': a.op = optarg; break;
		case 'g': a.gw = optarg; break;
		case 'u': a.update = optarg; break;
		case 'm': a.manifest = optarg; break;
		case 'l': if (add_link(a.links, optarg)) goto out; break;
		case 'n': if (!cli_int("--nbf", optarg, 0, tmax, &a.nbf)) goto out; break;
		case 'e': if (!cli_int("--exp", optarg, 0, tmax, &a.exp)) goto out; break;
		case 't': if (!cli_int("--ttl", optarg, 1, tmax, &a.ttl)) goto out; break;
		case 'i': a.iss = optarg; break;
		case 'j': a.jti = optarg; break;
		case 'k': a.key = optarg; break;
		case 'c': a.cert = optarg; break;
		case 'C': a.chain = optarg; break;
		case 'K': keys_file = optarg; break;
		case 'W': wrap_for = optarg; break;
		case 'w': {
			const char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg || eq - optarg > FERRY_ID_MAX) {
				fprintf(stderr, "ferry cmd sign: --wrapped-key wants NAME=JWE, not \"%.80s\"\n", optarg);
				goto out;
			}
			char name[FERRY_ID_MAX + 1];
			snprintf(name, sizeof(name), "%.*s", (int)(eq - optarg), optarg);
			json_object_set_new(given, name, json_string(eq + 1));
			break;
		}
		default: fputs(help_sign, stderr); goto out;
		}
	}
	if (optind != argc || !a.op || !a.gw) {
		fprintf(stderr, "ferry cmd sign: --op and --gateway are required, and no other arguments\n");
		goto out;
	}
	if (!keys_file != !wrap_for) {
		fprintf(stderr, "ferry cmd sign: --keys and --wrap-key-for go together\n");
		goto out;
	}
	if (keys_file) {
		STACK_OF(X509) *kc = NULL;
		if (ferry_pki_load_certs(wrap_for, &kc, &st)) {
			cli_error(&st);
			goto out;
		}
		ferry_err e = cli_read_keys(keys_file, &plain_keys, &st);
		if (!e)
			e = cli_wrap_keys(plain_keys, sk_X509_value(kc, 0), &a.keys, &st);
		sk_X509_pop_free(kc, X509_free);
		if (e) {
			cli_error(&st);
			goto out;
		}
	}
	if (json_object_size(given)) {
		if (!a.keys)
			a.keys = json_object();
		json_object_update(a.keys, given);
	}
	if (a.manifest) {
		size_t len;
		if (ferry_read_file(a.manifest, FERRY_JWS_MAX, &mtext, &len, &st)) {
			cli_error(&st);
			goto out;
		}
		mtext[ferry_trim_len(mtext, len)] = 0;
	}
	if ((rc = cli_load_signer(a.key, a.cert, a.chain, &pkey, &certs)) || (rc = build_payload(&a, mtext, &payload)))
		goto out;
	if (!(pj = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS)) ||
	    ferry_jws_sign(pj, strlen(pj), pkey, certs, "ferry-cmd", &jws, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	printf("%s\n", jws);
	rc = CLI_OK;
out:
	json_decref(a.links);
	json_decref(a.keys);
	json_decref(plain_keys);
	json_decref(given);
	json_decref(payload);
	free(mtext);
	free(pj);
	free(jws);
	EVP_PKEY_free(pkey);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

int cli_command_sign(const char *op, const char *gw, const char *uid, const char *manifest, json_t *links,
		     json_t *keys, int64_t ttl, EVP_PKEY *key, STACK_OF(X509) *certs, char jti[33], char **jws)
{
	sign_args a = {.op = op, .gw = gw, .update = uid, .iss = "ferry", .nbf = -1, .exp = -1, .ttl = ttl,
		       .links = links, .keys = keys};
	ferry_status st = {0};
	json_t *payload = NULL;
	char *pj = NULL;
	int rc = build_payload(&a, manifest, &payload);

	if (rc)
		return rc;
	snprintf(jti, 33, "%s", json_string_value(json_object_get(payload, "jti")));
	if (!(pj = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS)) ||
	    ferry_jws_sign(pj, strlen(pj), key, certs, "ferry-cmd", jws, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
	}
	free(pj);
	json_decref(payload);
	return rc;
}

typedef struct verify_args {
	const char *gateway;
	time_t at;
	long skew;
} verify_args;

static ferry_err verify_command(const char *buf, size_t len, const ferry_trust *trust, void *arg, json_t **payload,
				ferry_status *st)
{
	const verify_args *a = arg;
	ferry_command cmd;
	ferry_err e = ferry_command_verify(buf, len, trust, a->gateway, a->at, a->skew, &cmd, payload, st);

	if (!e)
		ferry_command_free(&cmd);
	return e;
}

static int do_verify(int argc, char **argv)
{
	static const struct option opts[] = {{"ca", required_argument, NULL, 'a'}, {"gateway", required_argument, NULL, 'g'},
					     {"at", required_argument, NULL, 't'}, {"skew", required_argument, NULL, 's'},
					     {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	const char *ca = NULL, *gw = NULL;
	int64_t at = time(NULL), skew = 300;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'a': ca = optarg; break;
		case 'g': gw = optarg; break;
		case 't': if (!cli_int("--at", optarg, 0, INT64_C(1) << 53, &at)) return CLI_USAGE; break;
		case 's': if (!cli_int("--skew", optarg, 0, 86400, &skew)) return CLI_USAGE; break;
		default: fputs(help_verify, stderr); return CLI_USAGE;
		}
	}
	if (optind + 1 != argc || !ca || !gw) {
		fprintf(stderr, "ferry cmd verify: give one FILE, --ca CA and --gateway ID\n");
		return CLI_USAGE;
	}
	return cli_verify_file(argv[optind], ca, verify_command, &(verify_args){gw, (time_t)at, (long)skew});
}

int cli_cmd(int argc, char **argv)
{
	bool help = cli_wants_help(argc, argv);

	if (argc >= 2 && !strcmp(argv[1], "sign"))
		return help ? (fputs(help_sign, stdout), CLI_OK) : do_sign(argc - 1, argv + 1);
	if (argc >= 2 && !strcmp(argv[1], "verify"))
		return help ? (fputs(help_verify, stdout), CLI_OK) : do_verify(argc - 1, argv + 1);
	fputs(help_sign, help ? stdout : stderr);
	fputs(help_verify, help ? stdout : stderr);
	return help ? CLI_OK : CLI_USAGE;
}
