/* `ferry deploy` and `ferry watch`: an update sent to gateways and followed
 * to its end, and the reports of any update as they come. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "files.h"
#include "follow.h"
#include "keys.h"
#include "ferry/jsonfield.h"
#include "ferry/jws.h"
#include "ferry/manifest.h"
#include "ferry/trust.h"
#include "opconfig.h"
#include "opmqtt.h"
#include "spec.h"

#define GATEWAYS_MAX 4096

static const char help_deploy[] =
	"usage: ferry deploy SPEC.yaml|MANIFEST.jws --gateway ID [--gateway ID]...\n"
	"                    [--op update.deploy|update.request] [--ttl S] [--atomic]\n"
	"                    [--update ID] [--link NAME=URL]... [--keys F] [--config F] [--json]\n"
	"\n"
	"Signs the manifest (from a spec, with the config's manifest signer; a signed\n"
	"manifest is checked against the org CA), puts each image on the file host\n"
	"(files.dir, named by its sha256), signs one command per gateway with links\n"
	"to files.base_url + sha256 that only that gateway can use, until\n"
	"files.link_ttl (or --link), publishes them and follows every\n"
	"report until each target has ended.  On a terminal: one live line per\n"
	"gateway, component and device; otherwise one line per report, or one JSON\n"
	"object per report with --json.  --ttl: the commands' lifetime (default\n"
	"3600 s); deploy waits no longer.  Ctrl-C offers to send update.cancel.\n"
	"Encrypted components (the spec's encrypt: true) have their content keys\n"
	"wrapped for each gateway's decryption_cert from its inventory; --keys F\n"
	"gives the keys of an already signed manifest (manifest sign --encrypt).\n"
	"Exit status: 0 every target installed or already installed; 1 a failure,\n"
	"a rollback or a refusal (each printed with its reason); 2 usage or I/O.\n";

static const char help_watch[] =
	"usage: ferry watch [--gateway ID] [--update ID] [--config F] [--json]\n"
	"\n"
	"Prints stage reports and replies as gateways send them, until interrupted:\n"
	"live lines on a terminal, else one line (or with --json one JSON object) per\n"
	"message.\n";

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

static void catch_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* a broker that closed the connection must not kill the tool mid-write */
	signal(SIGPIPE, SIG_IGN);
}

typedef struct watch_ctx {
	follow *f;
	const char *gw, *update;
	json_t *certs; /* gateway -> decryption_cert (PEM) from retained inventories, when asked */
} watch_ctx;

/* An inventory's payload, signed (compact JWS) or not, without checking
 * the signature: what is taken from it, the key-agreement certificate, is
 * checked on its own against the org CA. */
static json_t *inventory_payload(const char *payload, size_t len)
{
	const char *d1 = memchr(payload, '.', len), *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - payload)) : NULL;
	unsigned char *raw = NULL;
	size_t n = 0;
	json_t *j;

	if (len && payload[0] == '{')
		return json_loadb(payload, len, JSON_REJECT_DUPLICATES, NULL);
	if (!d2 || !ferry_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &raw, &n))
		return NULL;
	j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	return j;
}

static void on_msg(void *ctx, const char *topic, const char *payload, size_t len, bool retained)
{
	watch_ctx *w = ctx;
	char gw[65];
	if (retained && w->certs && sscanf(topic, "ferry/v1/%64[^/]/inventory", gw) == 1) {
		json_t *inv = inventory_payload(payload, len);
		const json_t *c = json_object_get(json_object_get(inv, "gateway"), "decryption_cert");
		if (json_is_string(c))
			json_object_set(w->certs, gw, (json_t *)c);
		json_decref(inv);
		return;
	}
	if (retained)
		return; /* replies and reports are never retained: such a message is a replay */
	follow_message(w->f, topic, payload, len, w->gw, w->update);
}

static follow_mode mode_for(bool json)
{
	return json ? FOLLOW_JSON : isatty(STDOUT_FILENO) ? FOLLOW_TTY : FOLLOW_PLAIN;
}

static int subscribe_reports(op_mqtt *m, const char *gw, ferry_status *st)
{
	char t[128];
	const char *g = gw ? gw : "+";

	snprintf(t, sizeof(t), "ferry/v1/%s/reply", g);
	if (op_mqtt_subscribe(m, t, st))
		return -1;
	snprintf(t, sizeof(t), "ferry/v1/%s/stage", g);
	return op_mqtt_subscribe(m, t, st) ? -1 : 0;
}

int cli_watch(int argc, char **argv)
{
	static const struct option opts[] = {{"gateway", required_argument, NULL, 'g'},
					     {"update", required_argument, NULL, 'u'},
					     {"config", required_argument, NULL, 'c'},
					     {"json", no_argument, NULL, 'j'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *cfgp = NULL;
	watch_ctx w = {0};
	bool json = false;
	ferry_status st = {0};
	op_config cfg;
	op_mqtt *m = NULL;
	int c;

	if (cli_wants_help(argc, argv)) {
		fputs(help_watch, stdout);
		return CLI_OK;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'g': w.gw = optarg; break;
		case 'u': w.update = optarg; break;
		case 'c': cfgp = optarg; break;
		case 'j': json = true; break;
		default: fputs(help_watch, stderr); return CLI_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ferry watch: unexpected argument \"%s\"\n", argv[optind]);
		return CLI_USAGE;
	}
	if (w.gw && !ferry_charset_ok(w.gw, strlen(w.gw), FERRY_CS_ID)) {
		fprintf(stderr, "ferry watch: --gateway \"%s\" is not a gateway id\n", w.gw);
		return CLI_USAGE;
	}
	if (op_config_load(cfgp, &cfg, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	ferry_trust *trust = NULL;
	if (ferry_trust_load(cfg.gateway_ca, &trust, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	w.f = follow_new(mode_for(json), stdout, trust);
	catch_signals();
	if (!w.f || op_mqtt_connect(&cfg, on_msg, &w, &m, &st) || subscribe_reports(m, w.gw, &st)) {
		cli_error(&st);
		op_mqtt_free(m);
		follow_free(w.f);
		ferry_trust_free(trust);
		return CLI_USAGE;
	}
	fprintf(stderr, "ferry watch: following %s (Ctrl-C ends)\n", w.gw ? w.gw : "every gateway");
	while (!interrupted && op_mqtt_loop(m, 200))
		follow_draw(w.f, false);
	follow_draw(w.f, true);
	if (follow_refused(w.f))
		fprintf(stderr, "ferry watch: %u message%s refused\n", follow_refused(w.f), follow_refused(w.f) == 1 ? "" : "s");
	op_mqtt_free(m);
	follow_free(w.f);
	ferry_trust_free(trust);
	return CLI_OK;
}

/* The file host serves images by their sha256: copy one there unless it
 * is there already (a temp file, then rename). */
static int publish_image(const char *dir, const char *src, const char *sha, ferry_status *st)
{
	char dst[2048], tmp[2100];
	struct stat sb;

	snprintf(dst, sizeof(dst), "%s/%s", dir, sha);
	if (lstat(dst, &sb) == 0 && S_ISREG(sb.st_mode))
		return 0;
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%d", dir, sha, (int)getpid());
	FILE *in = fopen(src, "rb");
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	FILE *out = fd >= 0 ? fdopen(fd, "wb") : NULL;
	char buf[65536];
	size_t n;
	int rc = 0;

	if (!in || !out) {
		ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", !in ? src : tmp, strerror(errno));
		rc = -1;
	}
	while (!rc && (n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			rc = -1;
	if (!rc && (ferror(in) || fflush(out) || fsync(fileno(out))))
		rc = -1;
	if (in)
		fclose(in);
	if (out)
		fclose(out);
	else if (fd >= 0)
		close(fd);
	if (!rc && rename(tmp, dst))
		rc = -1;
	if (rc) {
		if (!st->code)
			ferry_fail(st, FERRY_E_MALFORMED, "publishing %s to %s: %s", src, dir, strerror(errno));
		unlink(tmp);
	}
	return rc;
}

json_t *cli_images_of(const ferry_manifest *m)
{
	json_t *images = json_object();
	for (size_t i = 0; i < m->n; i++) {
		char hex[65];
		/* an encrypted image is on the file host as its ciphertext */
		ferry_hex32_fmt(m->c[i].encrypted ? m->c[i].enc.sha256 : m->c[i].sha256, hex);
		json_object_set_new(images, m->c[i].name, json_string(hex));
		for (size_t k = 0; k < m->c[i].n_deltas; k++) {
			char key[FERRY_ID_MAX + 66], base[65];
			ferry_hex32_fmt(m->c[i].deltas[k].base_sha256, base);
			ferry_hex32_fmt(m->c[i].deltas[k].sha256, hex);
			snprintf(key, sizeof(key), "%s@%s", m->c[i].name, base);
			json_object_set_new(images, key, json_string(hex));
		}
	}
	return images;
}

typedef struct deploy_args {
	const char *input, *op, *uid, *cfgp, *keys_file;
	const char *gws[GATEWAYS_MAX];
	size_t n_gws;
	int64_t ttl;
	bool atomic, json;
	json_t *links; /* from --link */
} deploy_args;

int cli_sign_manifest(const op_config *cfg, const json_t *payload, char **jws)
{
	ferry_status st = {0};
	EVP_PKEY *key = NULL;
	STACK_OF(X509) *certs = NULL;
	char *pj = NULL;
	int rc;

	if (!cfg->manifest_signer.key[0]) {
		fprintf(stderr, "ferry: %s has no manifest_signer to sign with\n", cfg->file);
		return CLI_USAGE;
	}
	if ((rc = cli_load_signer(cfg->manifest_signer.key, cfg->manifest_signer.cert, NULL, &key, &certs)))
		return rc;
	if (!(pj = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS)) ||
	    ferry_jws_sign(pj, strlen(pj), key, certs, "ferry-manifest", jws, &st)) {
		if (!pj)
			ferry_fail(&st, FERRY_E_INTERNAL, "out of memory");
		cli_error(&st);
		rc = CLI_USAGE;
	}
	free(pj);
	EVP_PKEY_free(key);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}

int cli_load_manifest(const char *input, bool atomic, const op_config *cfg, char **jws, ferry_manifest *m,
		      json_t **spec_payload, json_t *keys)
{
	ferry_status st = {0};
	char *buf = NULL;
	size_t len;
	int rc = CLI_USAGE;

	if (ferry_read_file(input, FERRY_JWS_MAX, &buf, &len, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	len = ferry_trim_len(buf, len);
	buf[len] = 0;
	if (!strncmp(buf, "eyJ", 3)) { /* a compact JWS: base64url of '{"' */
		ferry_trust *trust = NULL;
		if (ferry_trust_load(cfg->gateway_ca, &trust, &st) ||
		    ferry_manifest_verify(buf, len, trust, time(NULL), 300, m, NULL, &st)) {
			cli_error(&st);
			rc = st.code == FERRY_E_MALFORMED && !trust ? CLI_USAGE : CLI_REFUSED;
			ferry_trust_free(trust);
			free(buf);
			return rc;
		}
		ferry_trust_free(trust);
		if (atomic && !m->atomic) {
			fprintf(stderr, "ferry deploy: %s is signed without `atomic: true`; --atomic cannot change it\n",
				input);
			ferry_manifest_free(m);
			free(buf);
			return CLI_USAGE;
		}
		*jws = buf;
		return CLI_OK;
	}
	free(buf);
	/* a spec */
	json_t *payload = NULL, *files = json_object();
	if (!cfg->manifest_signer.key[0]) {
		fprintf(stderr, "ferry deploy: %s has no manifest_signer to sign %s with\n", cfg->file, input);
		json_decref(files);
		return CLI_USAGE;
	}
	if (ferry_spec_load(input, time(NULL), false, &payload, files, keys, &st)) {
		cli_error(&st);
		rc = CLI_REFUSED;
		goto out;
	}
	if (atomic)
		json_object_set_new(payload, "atomic", json_true());
	if (ferry_manifest_parse(payload, m, &st)) {
		cli_error(&st);
		rc = CLI_REFUSED;
		goto out;
	}
	if (cfg->files.dir[0]) {
		for (size_t i = 0; i < m->n; i++) {
			char hex[65];
			ferry_hex32_fmt(m->c[i].encrypted ? m->c[i].enc.sha256 : m->c[i].sha256, hex);
			const char *src = json_string_value(json_object_get(files, m->c[i].name));
			if (src && publish_image(cfg->files.dir, src, hex, &st)) {
				cli_error(&st);
				ferry_manifest_free(m);
				rc = CLI_USAGE;
				goto out;
			}
			for (size_t k = 0; k < m->c[i].n_deltas; k++) {
				char key[FERRY_ID_MAX + 66], base[65];
				ferry_hex32_fmt(m->c[i].deltas[k].base_sha256, base);
				ferry_hex32_fmt(m->c[i].deltas[k].sha256, hex);
				snprintf(key, sizeof(key), "%s@%s", m->c[i].name, base);
				src = json_string_value(json_object_get(files, key));
				if (src && publish_image(cfg->files.dir, src, hex, &st)) {
					cli_error(&st);
					ferry_manifest_free(m);
					rc = CLI_USAGE;
					goto out;
				}
			}
		}
	}
	if ((rc = cli_sign_manifest(cfg, payload, jws))) {
		ferry_manifest_free(m);
		goto out;
	}
	if (spec_payload)
		*spec_payload = json_incref(payload);
	rc = CLI_OK;
out:
	json_decref(payload);
	json_decref(files);
	return rc;
}

/* The link for gateway gw to image sha: base_url + sha, and with a link
 * secret the device-bound, expiring form config/nginx-ferry.conf checks:
 * md5 = base64url(MD5(EXPIRES + PATH + GW + " " + SECRET)). */
bool cli_make_link(const op_config *cfg, const char *gw, const char *sha, time_t expires, char *out, size_t n)
{
	int len = snprintf(out, n, "%s%s", cfg->files.base_url, sha);
	if (len < 0 || (size_t)len >= n)
		return false;
	if (!cfg->files.link_secret[0])
		return true;
	const char *path = strchr(out + 8, '/'); /* after https:// and the host */
	char text[2048], b64[64];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int tl = snprintf(text, sizeof(text), "%lld%s%s %s", (long long)expires, path ? path : "/", gw,
			  cfg->files.link_secret);
	if (tl < 0 || (size_t)tl >= sizeof(text) || !EVP_Digest(text, (size_t)tl, md, &mdlen, EVP_md5(), NULL))
		return false;
	int bl = EVP_EncodeBlock((unsigned char *)b64, md, (int)mdlen);
	while (bl > 0 && b64[bl - 1] == '=')
		b64[--bl] = 0;
	for (int i = 0; i < bl; i++)
		b64[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
	size_t used = (size_t)len;
	len = snprintf(out + used, n - used, "?md5=%s&expires=%lld", b64, (long long)expires);
	return len > 0 && (size_t)len < n - used;
}

void cli_new_id(const char *prefix, char *out, size_t n)
{
	unsigned char r[3] = {0};
	time_t now = time(NULL);
	struct tm tm;
	char when[32];

	RAND_bytes(r, sizeof(r));
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y%m%d-%H%M%S", &tm);
	snprintf(out, n, "%s%s-%02x%02x%02x", prefix, when, r[0], r[1], r[2]);
}

/* On Ctrl-C at a terminal: ask, and send update.cancel to every gateway.
 * The MQTT session is kept alive while the operator thinks. */
static bool ask_cancel(const deploy_args *a, const char *uid, op_mqtt *mq)
{
	char line[16];

	if (!isatty(STDIN_FILENO) || !isatty(STDERR_FILENO))
		return false;
	fprintf(stderr, "\nsend update.cancel for %s to %zu gateway%s? [y/N] ", uid, a->n_gws, a->n_gws == 1 ? "" : "s");
	interrupted = 0;
	for (;;) {
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		int r = poll(&pfd, 1, 200);
		if (r > 0)
			break;
		if (interrupted || (r < 0 && errno != EINTR))
			return false; /* a second Ctrl-C: no */
		op_mqtt_loop(mq, 0);
	}
	if (!fgets(line, sizeof(line), stdin))
		return false;
	return line[0] == 'y' || line[0] == 'Y';
}

/* links for one gateway: component -> given URL, or the file host's
 * link for that gateway (images: component -> sha256) */
static json_t *links_for(const op_config *cfg, const deploy_args *a, const json_t *images, const char *gw)
{
	json_t *links = json_object();
	const char *name;
	json_t *sha;
	time_t expires = time(NULL) + cfg->files.link_ttl_s;

	json_object_foreach((json_t *)images, name, sha) {
		char url[1400];
		const char *given = json_string_value(json_object_get(a->links, name));
		if (given)
			snprintf(url, sizeof(url), "%s", given);
		else if (!cli_make_link(cfg, gw, json_string_value(sha), expires, url, sizeof(url))) {
			json_decref(links);
			return NULL;
		}
		json_object_set_new(links, name, json_string(url));
	}
	return links;
}

static int send_all(op_mqtt *m, const deploy_args *a, const op_config *cfg, const char *op, const char *uid,
		    const char *manifest, const json_t *images, const json_t *wrapped, EVP_PKEY *key,
		    STACK_OF(X509) *certs, follow *f, const char *const *names, size_t n_names)
{
	ferry_status st = {0};

	for (size_t i = 0; i < a->n_gws; i++) {
		char jti[33], t[128], *jws = NULL;
		json_t *links = images ? links_for(cfg, a, images, a->gws[i]) : NULL;
		if (images && !links) {
			fprintf(stderr, "ferry deploy: a link for %s would be too long\n", a->gws[i]);
			return CLI_USAGE;
		}
		int rc = cli_command_sign(op, a->gws[i], uid, manifest, links, json_object_get(wrapped, a->gws[i]), a->ttl,
					  key, certs, jti, &jws);
		json_decref(links);
		if (rc)
			return rc;
		if (f && !follow_expect(f, a->gws[i], uid, jti, names, n_names, !strcmp(op, "update.request"))) {
			fprintf(stderr, "ferry deploy: out of memory; nothing sent to %s\n", a->gws[i]);
			free(jws);
			return CLI_USAGE;
		}
		snprintf(t, sizeof(t), "ferry/v1/%s/cmd", a->gws[i]);
		if (op_mqtt_publish(m, t, jws, &st)) {
			cli_error(&st);
			free(jws);
			return CLI_USAGE;
		}
		free(jws);
	}
	return CLI_OK;
}

static int add_link(json_t *links, const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg || strncmp(eq + 1, "https://", 8)) {
		fprintf(stderr, "ferry deploy: --link wants NAME=https://..., not \"%s\"\n", arg);
		return CLI_USAGE;
	}
	char name[65];
	snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
	json_object_set_new(links, name, json_string(eq + 1));
	return CLI_OK;
}

static int parse_deploy(int argc, char **argv, deploy_args *a)
{
	static const struct option opts[] = {{"gateway", required_argument, NULL, 'g'},
					     {"op", required_argument, NULL, 'o'},
					     {"ttl", required_argument, NULL, 't'},
					     {"atomic", no_argument, NULL, 'a'},
					     {"update", required_argument, NULL, 'u'},
					     {"link", required_argument, NULL, 'l'},
					     {"keys", required_argument, NULL, 'K'},
					     {"config", required_argument, NULL, 'c'},
					     {"json", no_argument, NULL, 'j'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'g':
			if (a->n_gws == GATEWAYS_MAX || !ferry_charset_ok(optarg, strlen(optarg), FERRY_CS_ID) ||
			    strlen(optarg) > 64) {
				fprintf(stderr, "ferry deploy: --gateway \"%s\" is not a gateway id (or too many)\n", optarg);
				return CLI_USAGE;
			}
			bool twice = false;
			for (size_t i = 0; i < a->n_gws; i++)
				twice = twice || !strcmp(a->gws[i], optarg);
			if (!twice) /* one command per gateway, however often it is named */
				a->gws[a->n_gws++] = optarg;
			break;
		case 'o': a->op = optarg; break;
		case 't': if (!cli_int("--ttl", optarg, 60, 30 * 86400, &a->ttl)) return CLI_USAGE; break;
		case 'a': a->atomic = true; break;
		case 'u': a->uid = optarg; break;
		case 'l': if (add_link(a->links, optarg)) return CLI_USAGE; break;
		case 'c': a->cfgp = optarg; break;
		case 'K': a->keys_file = optarg; break;
		case 'j': a->json = true; break;
		default: fputs(help_deploy, stderr); return CLI_USAGE;
		}
	}
	if (optind + 1 != argc || !a->n_gws) {
		fprintf(stderr, "ferry deploy: give one SPEC.yaml or MANIFEST.jws and at least one --gateway\n");
		return CLI_USAGE;
	}
	a->input = argv[optind];
	if (strcmp(a->op, "update.deploy") && strcmp(a->op, "update.request")) {
		fprintf(stderr, "ferry deploy: --op is update.deploy or update.request, not \"%s\"\n", a->op);
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* Each gateway's content keys, wrapped for the decryption_cert its
 * retained inventory publishes, once that certificate chains to the org
 * CA, names the gateway and is for key agreement.  Any gateway without
 * one: nothing is sent to any. */
static int wrap_for_each(op_mqtt *mq, watch_ctx *w, const deploy_args *a, const ferry_trust *trust,
			 const json_t *keys, json_t **out)
{
	ferry_status st = {0};
	char t[128];

	*out = json_object();
	for (size_t i = 0; i < a->n_gws; i++) {
		snprintf(t, sizeof(t), "ferry/v1/%s/inventory", a->gws[i]);
		if (op_mqtt_subscribe(mq, t, &st)) {
			cli_error(&st);
			return CLI_USAGE;
		}
	}
	if (op_mqtt_sync(mq, &st)) { /* every retained inventory is in */
		cli_error(&st);
		return CLI_USAGE;
	}
	for (size_t i = 0; i < a->n_gws; i++) {
		const char *pem = json_string_value(json_object_get(w->certs, a->gws[i]));
		X509 *x = NULL;
		json_t *k = NULL;
		if (cli_kek_of(trust, a->gws[i], pem, &x, &st)) {
			fprintf(stderr, "ferry deploy: %s: %s; nothing sent\n", ferry_err_code(st.code), st.detail);
			return st.code == FERRY_E_UNSUPPORTED ? CLI_USAGE : CLI_REFUSED;
		}
		ferry_err e = cli_wrap_keys(keys, x, &k, &st);
		X509_free(x);
		if (e) {
			cli_error(&st);
			return CLI_USAGE;
		}
		json_object_set_new(*out, a->gws[i], k);
	}
	return CLI_OK;
}

int cli_deploy(int argc, char **argv)
{
	deploy_args a = {.op = "update.deploy", .ttl = 3600, .links = json_object()};
	ferry_status st = {0};
	ferry_manifest m = {0};
	op_config cfg;
	op_mqtt *mq = NULL;
	follow *f = NULL;
	ferry_trust *trust = NULL;
	EVP_PKEY *key = NULL;
	STACK_OF(X509) *certs = NULL;
	json_t *images = json_object(), *keys = json_object(), *wrapped = NULL, *w_certs = NULL;
	char *manifest = NULL, uid[65];
	const char *names[FERRY_COMPONENTS_MAX];
	size_t n_enc = 0;
	int rc;

	if (cli_wants_help(argc, argv)) {
		fputs(help_deploy, stdout);
		rc = CLI_OK;
		goto out;
	}
	if ((rc = parse_deploy(argc, argv, &a)))
		goto out;
	if (op_config_load(a.cfgp, &cfg, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	if ((rc = cli_load_signer(cfg.command_signer.key, cfg.command_signer.cert, NULL, &key, &certs)) ||
	    (rc = cli_load_manifest(a.input, a.atomic, &cfg, &manifest, &m, NULL, keys)))
		goto out;
	if (a.keys_file) {
		json_decref(keys);
		if (cli_read_keys(a.keys_file, &keys, &st)) {
			cli_error(&st);
			rc = CLI_USAGE;
			goto out;
		}
	}
	for (size_t i = 0; i < m.n; i++) {
		names[i] = m.c[i].name;
		n_enc += m.c[i].encrypted;
	}
	if (cli_keys_cover(&m, keys, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	json_decref(images);
	images = cli_images_of(&m);
	if (a.uid)
		snprintf(uid, sizeof(uid), "%s", a.uid);
	else
		cli_new_id("u-", uid, sizeof(uid));
	if (ferry_trust_load(cfg.gateway_ca, &trust, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	f = follow_new(mode_for(a.json), stdout, trust);
	watch_ctx w = {.f = f, .certs = n_enc ? json_object() : NULL};
	w_certs = w.certs;
	catch_signals();
	if (!f || op_mqtt_connect(&cfg, on_msg, &w, &mq, &st) || subscribe_reports(mq, a.n_gws == 1 ? a.gws[0] : NULL, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	if (n_enc && (rc = wrap_for_each(mq, &w, &a, trust, keys, &wrapped)))
		goto out;
	if ((rc = send_all(mq, &a, &cfg, a.op, uid, manifest, images, wrapped, key, certs, f, names, m.n)))
		goto out;
	fprintf(stderr, "ferry deploy: %s sent to %zu gateway%s (%s)\n", uid, a.n_gws, a.n_gws == 1 ? "" : "s", a.op);
	time_t until = time(NULL) + a.ttl + 60;
	bool cancel_asked = false;
	while (!follow_done(f) && time(NULL) < until) {
		if (interrupted) {
			follow_draw(f, true);
			if (cancel_asked || !ask_cancel(&a, uid, mq)) {
				fprintf(stderr, "ferry deploy: stopped following %s (signal %d); the gateways go on\n", uid, (int)interrupted);
				rc = 130;
				goto out;
			}
			cancel_asked = true;
			if ((rc = send_all(mq, &a, &cfg, "update.cancel", uid, NULL, NULL, NULL, key, certs, NULL, NULL, 0)))
				goto out;
			fprintf(stderr, "ferry deploy: update.cancel sent; following what the gateways do\n");
		}
		if (!op_mqtt_loop(mq, 200)) {
			rc = CLI_USAGE;
			goto out;
		}
		follow_draw(f, false);
	}
	follow_draw(f, true);
	if (!follow_done(f))
		fprintf(stderr, "ferry deploy: the commands expired before every gateway had answered\n");
	rc = follow_result(f, true);
	if (follow_refused(f))
		fprintf(stderr, "ferry deploy: %u message%s refused\n", follow_refused(f),
			follow_refused(f) == 1 ? "" : "s");
	fprintf(stderr, "ferry deploy: %s %s\n", uid, rc ? "did not install everywhere" : "installed everywhere");
out:
	op_mqtt_free(mq);
	follow_free(f);
	ferry_trust_free(trust);
	ferry_manifest_free(&m);
	free(manifest);
	json_decref(images);
	json_decref(keys);
	json_decref(wrapped);
	json_decref(w_certs);
	json_decref(a.links);
	EVP_PKEY_free(key);
	sk_X509_pop_free(certs, X509_free);
	return rc;
}
