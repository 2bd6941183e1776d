/* `ferry campaign`: rollouts by attribute filter, one-shot or continuous, in
 * batches, with a failure threshold and a time window.  State lives in
 * campaigns.db in the operator's state directory (campaign.h);
 * `ferry campaign run` is the one process that sends commands. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "campaign.h"
#include "cli.h"
#include "fleet.h"
#include "keys.h"
#include "follow.h"
#include "ferry/jsonfield.h"
#include "ferry/manifest.h"
#include "ferry/report.h"
#include "ferry/trust.h"
#include "opconfig.h"
#include "opmqtt.h"

static const char help[] =
	"usage: ferry campaign create NAME --manifest SPEC|MANIFEST [--where COND]...\n"
	"                             [--continuous] [--batch N] [--advance-at P%]\n"
	"                             [--stop-at-failures N|P%] [--start TIME]\n"
	"                             [--window HH:MM-HH:MM] [--ttl S] [--atomic] [--keys F]\n"
	"       ferry campaign run [--until-idle]\n"
	"       ferry campaign list [--json]\n"
	"       ferry campaign status NAME [--json]\n"
	"       ferry campaign pause|resume|cancel NAME\n"
	"       ferry campaign retry-failed NAME [--manifest SPEC|MANIFEST [--keys F]]\n"
	"  (each takes --config F)\n"
	"\n"
	"A campaign sends one update to every gateway whose inventory matches the\n"
	"--where conditions (the syntax of `ferry fleet`; none: every gateway).\n"
	"One-shot: the gateways that match when it starts.  --continuous: also\n"
	"those that match later, until cancelled.  --batch N: N gateways at a\n"
	"time; the next batch starts when --advance-at (default 100%) of the\n"
	"batch has installed.  --stop-at-failures: stop sending once that many\n"
	"targets (or that share of them) failed, rolled back or refused.\n"
	"--start: not before TIME (YYYY-MM-DDTHH:MMZ, or seconds since the epoch).\n"
	"--window: send only between these local times.  --ttl: each command's\n"
	"lifetime (default 86400 s).  Nothing is sent until `ferry campaign run`\n"
	"runs: it drives every campaign, shows their progress and can be stopped\n"
	"and started again at any time (also by SIGKILL) without sending a\n"
	"gateway a second command for one step.  Encrypted components: their\n"
	"content keys (a spec's, or --keys F with a signed manifest) are kept in the\n"
	"campaign's state and wrapped for each gateway's decryption_cert.\n";

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

/* --config F wherever it is among the arguments; the rest left in order */
typedef struct common {
	op_config cfg;
	camp_db *db;
} common;

static int open_common(const char *cfgp, common *c)
{
	ferry_status st = {0};
	if (op_config_load(cfgp, &c->cfg, &st) || camp_db_open(c->cfg.state_dir, &c->db, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	return CLI_OK;
}

static bool name_ok(const char *n)
{
	size_t len = strlen(n);
	if (!len || len > CAMPAIGN_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
		      n[i] == '-' || n[i] == '_'))
			return false;
	return true;
}

static int check_name(const char *sub, const char *n)
{
	if (name_ok(n))
		return CLI_OK;
	fprintf(stderr, "ferry campaign %s: \"%s\" is not a campaign name (1-%d characters of [A-Za-z0-9_-])\n", sub, n,
		CAMPAIGN_NAME_MAX);
	return CLI_USAGE;
}

/* The content keys a campaign keeps for its encrypted components (in its
 * 0700 state dir; each command wraps them for its gateway): those a spec
 * made, or the keys file of a signed manifest.  None: *keys becomes NULL. */
static int keys_for(const ferry_manifest *m, const char *keys_file, json_t **keys)
{
	ferry_status st = {0};

	if (keys_file) {
		json_decref(*keys);
		if (cli_read_keys(keys_file, keys, &st)) {
			cli_error(&st);
			return CLI_USAGE;
		}
	}
	if (cli_keys_cover(m, *keys, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	if (!json_object_size(*keys)) {
		json_decref(*keys);
		*keys = NULL;
	}
	return CLI_OK;
}

static void fill_from_manifest(campaign *c, const ferry_manifest *m)
{
	json_decref(c->components);
	json_decref(c->images);
	c->components = json_array();
	c->images = cli_images_of(m); /* whole images, and deltas as NAME@BASE */
	for (size_t i = 0; i < m->n; i++)
		json_array_append_new(c->components, json_string(m->c[i].name));
	c->sequence = m->sequence;
	c->atomic = m->atomic;
}

static int do_create(int argc, char **argv)
{
	static const struct option opts[] = {{"manifest", required_argument, NULL, 'm'},
					     {"where", required_argument, NULL, 'w'},
					     {"continuous", no_argument, NULL, 'C'},
					     {"batch", required_argument, NULL, 'b'},
					     {"advance-at", required_argument, NULL, 'A'},
					     {"stop-at-failures", required_argument, NULL, 's'},
					     {"start", required_argument, NULL, 'S'},
					     {"window", required_argument, NULL, 'W'},
					     {"ttl", required_argument, NULL, 't'},
					     {"atomic", no_argument, NULL, 'a'},
					     {"config", required_argument, NULL, 'c'},
					     {"keys", required_argument, NULL, 'K'},
					     {NULL, 0, NULL, 0}};
	campaign c = {.advance_pct = 100, .win_from = -1, .win_to = -1, .ttl = 86400, .attempt = 1};
	const char *input = NULL, *cfgp = NULL, *keys_file = NULL;
	bool atomic = false;
	fleet_filter *filter = fleet_filter_new();
	ferry_status st = {0};
	ferry_manifest m = {0};
	common k = {0};
	int opt, rc = CLI_USAGE;

	c.where = json_array();
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		int64_t pct = 0, n = 0;
		switch (opt) {
		case 'm': input = optarg; break;
		case 'w':
			if (fleet_filter_add(filter, optarg, &st)) {
				fprintf(stderr, "ferry campaign create: --where: %s\n", st.detail);
				goto out;
			}
			json_array_append_new(c.where, json_string(optarg));
			break;
		case 'C': c.continuous = true; break;
		case 'b': if (!cli_int("--batch", optarg, 1, 1000000, &c.batch)) goto out; break;
		case 'A':
			if (!camp_parse_count(optarg, &n, &pct) || !pct) {
				fprintf(stderr, "ferry campaign create: --advance-at wants a share such as 80%%, not \"%s\"\n", optarg);
				goto out;
			}
			c.advance_pct = pct;
			break;
		case 's':
			if (!camp_parse_count(optarg, &c.stop_n, &c.stop_pct)) {
				fprintf(stderr, "ferry campaign create: --stop-at-failures wants N or P%%, not \"%s\"\n", optarg);
				goto out;
			}
			break;
		case 'S':
			if (!camp_parse_time(optarg, &c.start_at)) {
				fprintf(stderr, "ferry campaign create: --start wants YYYY-MM-DDTHH:MM[:SS]Z or seconds, "
						"not \"%s\"\n", optarg);
				goto out;
			}
			break;
		case 'W':
			if (!camp_parse_window(optarg, &c.win_from, &c.win_to)) {
				fprintf(stderr, "ferry campaign create: --window wants HH:MM-HH:MM (two different times), "
						"not \"%s\"\n", optarg);
				goto out;
			}
			break;
		case 't': if (!cli_int("--ttl", optarg, 60, 30 * 86400, &c.ttl)) goto out; break;
		case 'a': atomic = true; break;
		case 'c': cfgp = optarg; break;
		case 'K': keys_file = optarg; break;
		default: fputs(help, stderr); goto out;
		}
	}
	if (optind + 1 != argc || !input) {
		fprintf(stderr, "ferry campaign create: give a NAME and --manifest SPEC|MANIFEST\n");
		goto out;
	}
	if ((rc = check_name("create", argv[optind])))
		goto out;
	snprintf(c.name, sizeof(c.name), "%s", argv[optind]);
	c.keys = json_object();
	if ((rc = open_common(cfgp, &k)) ||
	    (rc = cli_load_manifest(input, atomic, &k.cfg, &c.manifest, &m, &c.payload, c.keys)) ||
	    (rc = keys_for(&m, keys_file, &c.keys)))
		goto out;
	fill_from_manifest(&c, &m);
	unsigned char r[3];
	if (RAND_bytes(r, sizeof(r)) != 1) {
		rc = CLI_USAGE;
		goto out;
	}
	snprintf(c.tag, sizeof(c.tag), "%02x%02x%02x", r[0], r[1], r[2]);
	c.created = time(NULL);
	if (camp_insert(k.db, &c, &st)) {
		cli_error(&st);
		rc = st.code == FERRY_E_MALFORMED ? CLI_USAGE : CLI_USAGE;
		goto out;
	}
	printf("campaign %s created: %zu component%s, manifest sequence %lld, %s%s\n", c.name, m.n, m.n == 1 ? "" : "s",
	       (long long)c.sequence, c.continuous ? "continuous" : "one-shot",
	       json_array_size(c.where) ? "" : ", every gateway");
	printf("`ferry campaign run` sends it\n");
	rc = CLI_OK;
out:
	fleet_filter_free(filter);
	ferry_manifest_free(&m);
	camp_free(&c);
	camp_db_close(k.db);
	return rc;
}

static int parse_simple(int argc, char **argv, const char *sub, bool need_name, const char **cfgp, bool *json,
			const char **manifest, const char **keys)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"json", no_argument, NULL, 'j'},
					     {"manifest", required_argument, NULL, 'm'},
					     {"until-idle", no_argument, NULL, 'u'},
					     {"keys", required_argument, NULL, 'K'},
					     {NULL, 0, NULL, 0}};
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'c')
			*cfgp = optarg;
		else if (opt == 'j' && json)
			*json = true;
		else if (opt == 'm' && manifest)
			*manifest = optarg;
		else if (opt == 'K' && keys)
			*keys = optarg;
		else {
			fprintf(stderr, "ferry campaign %s: unexpected option\n%s", sub, help);
			return CLI_USAGE;
		}
	}
	if (optind + (need_name ? 1 : 0) != argc) {
		fprintf(stderr, "ferry campaign %s: %s\n", sub, need_name ? "give one campaign NAME" : "no arguments");
		return CLI_USAGE;
	}
	return need_name ? check_name(sub, argv[optind]) : CLI_OK;
}

static const char *describe_where(const campaign *c, char *buf, size_t n)
{
	size_t i, used = 0;
	json_t *w;
	buf[0] = 0;
	json_array_foreach(c->where, i, w) used += (size_t)snprintf(buf + used, used < n ? n - used : 0, "%s%s",
								    i ? " " : "", json_string_value(w));
	return json_array_size(c->where) ? buf : "(every gateway)";
}

static json_t *status_json(camp_db *db, const campaign *c, ferry_status *st)
{
	json_t *counts = NULL;
	if (camp_counts(db, c, &counts, st))
		return NULL;
	json_t *o = json_pack("{s:s,s:s,s:s,s:O,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "name", c->name, "state",
			      c->state, "why", c->why, "where", c->where, "continuous", c->continuous, "batch",
			      (json_int_t)c->batch, "current_batch", (json_int_t)c->cur_batch, "advance_at_pct",
			      (json_int_t)c->advance_pct, "stop_at_failures", (json_int_t)c->stop_n,
			      "stop_at_failures_pct", (json_int_t)c->stop_pct, "attempt", (json_int_t)c->attempt,
			      "sequence", (json_int_t)c->sequence, "counts", counts);
	/* the targets that did not install, with why */
	sqlite3_stmt *s = NULL;
	json_t *bad = json_array();
	if (sqlite3_prepare_v2(camp_db_handle(db),
			       "SELECT gateway, state, reason, detail FROM targets WHERE campaign = ? AND state IN"
			       " ('failed','rolled_back','refused','cancelled') ORDER BY gateway",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
		while (sqlite3_step(s) == SQLITE_ROW)
			json_array_append_new(bad, json_pack("{s:s,s:s,s:s,s:s}", "gateway", sqlite3_column_text(s, 0),
							     "state", sqlite3_column_text(s, 1), "reason",
							     sqlite3_column_text(s, 2), "detail", sqlite3_column_text(s, 3)));
	}
	sqlite3_finalize(s);
	json_object_set_new(o, "not_installed", bad);
	return o;
}

static void print_counts(const json_t *n, const char *indent)
{
	printf("%stargeted %lld, pending %lld, in progress %lld, installed %lld, already installed %lld, failed %lld, "
	       "rolled back %lld, refused %lld, cancelled %lld\n",
	       indent, (long long)json_integer_value(json_object_get(n, "targeted")),
	       (long long)json_integer_value(json_object_get(n, "pending")),
	       (long long)json_integer_value(json_object_get(n, "in_progress")),
	       (long long)json_integer_value(json_object_get(n, "installed")),
	       (long long)json_integer_value(json_object_get(n, "already_installed")),
	       (long long)json_integer_value(json_object_get(n, "failed")),
	       (long long)json_integer_value(json_object_get(n, "rolled_back")),
	       (long long)json_integer_value(json_object_get(n, "refused")),
	       (long long)json_integer_value(json_object_get(n, "cancelled")));
	const char *k;
	json_t *v;
	if (json_object_size(json_object_get(n, "reasons"))) {
		printf("%s  not installed, by reason:", indent);
		json_object_foreach(json_object_get(n, "reasons"), k, v) printf(" %s %lld", k,
										(long long)json_integer_value(v));
		putchar('\n');
	}
}

static int do_status(int argc, char **argv)
{
	const char *cfgp = NULL;
	bool json = false;
	common k = {0};
	campaign c;
	ferry_status st = {0};
	int rc;

	if ((rc = parse_simple(argc, argv, "status", true, &cfgp, &json, NULL, NULL)) || (rc = open_common(cfgp, &k)))
		goto out;
	if (camp_get(k.db, argv[optind], &c, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	json_t *o = status_json(k.db, &c, &st);
	if (!o) {
		cli_error(&st);
		rc = CLI_USAGE;
	} else if (json) {
		json_dumpf(o, stdout, JSON_INDENT(1) | JSON_SORT_KEYS);
		putchar('\n');
	} else {
		char wb[1024];
		json_t *n = json_object_get(o, "counts");
		printf("campaign %s: %s%s%s\n", c.name, c.state, c.why[0] ? ": " : "", c.why);
		printf("  where %s; %s; manifest sequence %lld (attempt %lld)\n", describe_where(&c, wb, sizeof(wb)),
		       c.continuous ? "continuous" : "one-shot", (long long)c.sequence, (long long)c.attempt);
		if (c.batch)
			printf("  batches of %lld, now batch %lld; the next starts at %lld%% installed\n", (long long)c.batch,
			       (long long)c.cur_batch + 1, (long long)c.advance_pct);
		if (c.stop_n || c.stop_pct)
			printf("  stops once %lld%s of its targets did not install\n",
			       (long long)(c.stop_n ? c.stop_n : c.stop_pct), c.stop_n ? "" : "%");
		if (c.win_from >= 0)
			printf("  sends between %02lld:%02lld and %02lld:%02lld local time\n", (long long)c.win_from / 60,
			       (long long)c.win_from % 60, (long long)c.win_to / 60, (long long)c.win_to % 60);
		print_counts(n, "  ");
		const char *name;
		json_t *pc;
		json_object_foreach(json_object_get(n, "components"), name, pc) {
			printf("  component %s:\n", name);
			print_counts(pc, "    ");
		}
		size_t i;
		json_t *b;
		json_array_foreach(json_object_get(o, "not_installed"), i, b) {
			char d[300];
			clean_text(d, sizeof(d), json_string_value(json_object_get(b, "detail")));
			printf("  %s %s %s%s%s\n", json_string_value(json_object_get(b, "gateway")),
			       json_string_value(json_object_get(b, "state")), json_string_value(json_object_get(b, "reason")),
			       d[0] ? ": " : "", d);
		}
	}
	json_decref(o);
	camp_free(&c);
out:
	camp_db_close(k.db);
	return rc;
}

static int do_list(int argc, char **argv)
{
	const char *cfgp = NULL;
	bool json = false;
	common k = {0};
	ferry_status st = {0};
	char (*names)[CAMPAIGN_NAME_MAX + 1] = NULL;
	size_t n = 0;
	json_t *all = json_array();
	int rc;

	if ((rc = parse_simple(argc, argv, "list", false, &cfgp, &json, NULL, NULL)) || (rc = open_common(cfgp, &k)))
		goto out;
	if (camp_names(k.db, &names, &n, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	if (!json)
		printf("%-24s %-10s %8s %8s %8s %8s %8s\n", "CAMPAIGN", "STATE", "TARGETED", "PENDING", "RUNNING", "OK",
		       "FAILED");
	for (size_t i = 0; i < n; i++) {
		campaign c;
		json_t *counts = NULL;
		if (camp_get(k.db, names[i], &c, &st) || camp_counts(k.db, &c, &counts, &st)) {
			cli_error(&st);
			rc = CLI_USAGE;
			break;
		}
		long long failed = json_integer_value(json_object_get(counts, "failed")) +
				   json_integer_value(json_object_get(counts, "rolled_back")) +
				   json_integer_value(json_object_get(counts, "refused"));
		if (json)
			json_array_append_new(all, json_pack("{s:s,s:s,s:b,s:O}", "name", c.name, "state", c.state,
							     "continuous", c.continuous, "counts", counts));
		else
			printf("%-24s %-10s %8lld %8lld %8lld %8lld %8lld\n", c.name, c.state,
			       (long long)json_integer_value(json_object_get(counts, "targeted")),
			       (long long)json_integer_value(json_object_get(counts, "pending")),
			       (long long)json_integer_value(json_object_get(counts, "in_progress")),
			       (long long)(json_integer_value(json_object_get(counts, "installed")) +
					   json_integer_value(json_object_get(counts, "already_installed"))),
			       failed);
		json_decref(counts);
		camp_free(&c);
	}
	if (json && !rc) {
		json_dumpf(all, stdout, JSON_INDENT(1) | JSON_SORT_KEYS);
		putchar('\n');
	}
out:
	json_decref(all);
	free(names);
	camp_db_close(k.db);
	return rc;
}

/* pause, resume, cancel: a state change the runner acts on */
static int do_steer(int argc, char **argv, const char *sub)
{
	const char *cfgp = NULL;
	common k = {0};
	campaign c = {0};
	ferry_status st = {0};
	int rc;

	if ((rc = parse_simple(argc, argv, sub, true, &cfgp, NULL, NULL, NULL)) || (rc = open_common(cfgp, &k)))
		goto out;
	if (camp_begin(k.db, &st) || camp_get(k.db, argv[optind], &c, &st)) {
		cli_error(&st);
		camp_rollback(k.db);
		rc = CLI_USAGE;
		goto out;
	}
	const char *want = !strcmp(sub, "pause") ? "paused" : !strcmp(sub, "resume") ? "active" : "cancelled";
	bool ok = !strcmp(sub, "pause")	   ? !strcmp(c.state, "active")
		  : !strcmp(sub, "resume") ? !strcmp(c.state, "paused")
					   : strcmp(c.state, "cancelled") && strcmp(c.state, "done");
	if (!ok) {
		fprintf(stderr, "ferry campaign %s: %s is %s\n", sub, c.name, c.state);
		camp_rollback(k.db);
		rc = CLI_USAGE;
		goto out;
	}
	snprintf(c.state, sizeof(c.state), "%s", want);
	if (!strcmp(sub, "cancel"))
		snprintf(c.why, sizeof(c.why), "cancelled by the operator");
	if (camp_save(k.db, &c, &st) || camp_commit(k.db, &st)) {
		cli_error(&st);
		camp_rollback(k.db);
		rc = CLI_USAGE;
		goto out;
	}
	printf("campaign %s: %s\n", c.name, c.state);
out:
	camp_free(&c);
	camp_db_close(k.db);
	return rc;
}

/* retry-failed: the targets that failed, rolled back or refused go back to
 * pending, with a manifest of a higher sequence (a gateway that admitted the
 * first one would refuse it again as stale). */
static int do_retry(int argc, char **argv)
{
	const char *cfgp = NULL, *input = NULL, *keys_file = NULL;
	common k = {0};
	campaign c = {0};
	ferry_manifest m = {0};
	ferry_status st = {0};
	char *jws = NULL;
	json_t *payload = NULL;
	int rc;

	if ((rc = parse_simple(argc, argv, "retry-failed", true, &cfgp, NULL, &input, &keys_file)) ||
	    (rc = open_common(cfgp, &k)))
		goto out;
	if (camp_get(k.db, argv[optind], &c, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	if (!strcmp(c.state, "cancelled")) {
		fprintf(stderr, "ferry campaign retry-failed: %s is cancelled\n", c.name);
		rc = CLI_USAGE;
		goto out;
	}
	if (input) {
		json_decref(c.keys);
		c.keys = json_object();
		if ((rc = cli_load_manifest(input, c.atomic, &k.cfg, &jws, &m, &payload, c.keys)) ||
		    (rc = keys_for(&m, keys_file, &c.keys)))
			goto out;
		if (m.sequence <= c.sequence) {
			fprintf(stderr, "ferry campaign retry-failed: %s has sequence %lld; it must be above %lld\n", input,
				(long long)m.sequence, (long long)c.sequence);
			rc = CLI_USAGE;
			goto out;
		}
		fill_from_manifest(&c, &m);
		json_decref(c.payload);
		c.payload = json_incref(payload);
	} else if (c.payload) {
		json_object_set_new(c.payload, "sequence", json_integer(c.sequence + 1));
		json_object_set_new(c.payload, "created", json_integer(time(NULL)));
		if ((rc = cli_sign_manifest(&k.cfg, c.payload, &jws)))
			goto out;
		c.sequence++;
	} else {
		fprintf(stderr, "ferry campaign retry-failed: %s was made from a signed manifest; give a newer one "
				"with --manifest\n", c.name);
		rc = CLI_USAGE;
		goto out;
	}
	free(c.manifest);
	c.manifest = jws;
	jws = NULL;
	c.attempt++;
	if (!strcmp(c.state, "stopped") || !strcmp(c.state, "done")) {
		snprintf(c.state, sizeof(c.state), "active");
		c.why[0] = 0;
	}
	sqlite3_stmt *s = NULL;
	int changed = 0;
	if (camp_begin(k.db, &st)) {
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	if (camp_save(k.db, &c, &st) ||
	    sqlite3_prepare_v2(camp_db_handle(k.db),
			       "UPDATE targets SET state = 'pending', attempt = ?, reason = '', detail = '', jti = NULL,"
			       " update_id = NULL, command = NULL WHERE campaign = ? AND state IN"
			       " ('failed','rolled_back','refused')",
			       -1, &s, NULL) != SQLITE_OK) {
		if (!st.code)
			ferry_fail(&st, FERRY_E_INTERNAL, "%s", sqlite3_errmsg(camp_db_handle(k.db)));
		sqlite3_finalize(s);
		camp_rollback(k.db);
		cli_error(&st);
		rc = CLI_USAGE;
		goto out;
	}
	sqlite3_bind_int64(s, 1, c.attempt);
	sqlite3_bind_text(s, 2, c.name, -1, SQLITE_STATIC);
	bool stepped = sqlite3_step(s) == SQLITE_DONE;
	changed = sqlite3_changes(camp_db_handle(k.db));
	sqlite3_finalize(s);
	if (!stepped || camp_commit(k.db, &st)) {
		camp_rollback(k.db);
		fprintf(stderr, "ferry campaign retry-failed: %s\n", sqlite3_errmsg(camp_db_handle(k.db)));
		rc = CLI_USAGE;
		goto out;
	}
	printf("campaign %s: %d gateway%s to try again with manifest sequence %lld (attempt %lld)\n", c.name, changed,
	       changed == 1 ? "" : "s", (long long)c.sequence, (long long)c.attempt);
out:
	free(jws);
	json_decref(payload);
	ferry_manifest_free(&m);
	camp_free(&c);
	camp_db_close(k.db);
	return rc;
}

/* ------------------------------------------------------------------ run */

#define MESSAGES_PER_UPDATE_MAX 4096

typedef struct tracked {
	char name[CAMPAIGN_NAME_MAX + 1];
	follow *f;
	char last_note[256]; /* the last hold or progress line printed */
} tracked;

typedef struct runner {
	common k;
	op_mqtt *mq;
	ferry_trust *trust;
	fleet *fl;
	bool fleet_changed, synced;
	EVP_PKEY *key;
	STACK_OF(X509) *certs;
	tracked *camps;
	size_t n_camps;
	json_t *by_jti;   /* jti -> [campaign, gateway, "update"|"cancel"] */
	json_t *by_uid;   /* "gateway update_id" -> campaign */
	json_t *state_of; /* "campaign gateway" -> target state */
	json_t *gws;      /* gateway -> true: one with a target being followed */
	unsigned refused;
} runner;

static tracked *tracked_of(runner *r, const char *name)
{
	for (size_t i = 0; i < r->n_camps; i++)
		if (!strcmp(r->camps[i].name, name))
			return &r->camps[i];
	tracked *t = realloc(r->camps, (r->n_camps + 1) * sizeof(*t));
	if (!t)
		return NULL;
	r->camps = t;
	t = &r->camps[r->n_camps];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	if (!(t->f = follow_new(FOLLOW_QUIET, stdout, r->trust)))
		return NULL;
	r->n_camps++;
	return t;
}

static void key2(char *out, size_t n, const char *a, const char *b)
{
	snprintf(out, n, "%s %s", a, b);
}

/* Starts following a target's command (its jti and update id). */
static bool expect(runner *r, const campaign *c, const char *gw, const char *uid, const char *jti, const char *state)
{
	tracked *t = tracked_of(r, c->name);
	const char *names[FERRY_COMPONENTS_MAX];
	size_t n = 0, i;
	json_t *v;
	char k[200];

	if (!t)
		return false;
	json_array_foreach(c->components, i, v) if (n < FERRY_COMPONENTS_MAX) names[n++] = json_string_value(v);
	if (!follow_expect(t->f, gw, uid, jti, names, n, false))
		return false;
	json_object_set_new(r->by_jti, jti, json_pack("[s,s,s]", c->name, gw, "update"));
	key2(k, sizeof(k), gw, uid);
	json_object_set_new(r->by_uid, k, json_string(c->name));
	key2(k, sizeof(k), c->name, gw);
	json_object_set_new(r->state_of, k, json_string(state));
	json_object_set_new(r->gws, gw, json_true());
	return true;
}

static ferry_err sql_run(runner *r, const char *sql, ferry_status *st, const char *fmt, ...)
{
	sqlite3 *db = camp_db_handle(r->k.db);
	sqlite3_stmt *s = NULL;
	va_list ap;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
		return ferry_fail(st, FERRY_E_INTERNAL, "campaigns.db: %s", sqlite3_errmsg(db));
	va_start(ap, fmt);
	for (int i = 0; fmt[i]; i++) {
		if (fmt[i] == 's') {
			const char *v = va_arg(ap, const char *);
			if (v)
				sqlite3_bind_text(s, i + 1, v, -1, SQLITE_TRANSIENT);
		} else {
			sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
		}
	}
	va_end(ap);
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return ferry_fail(st, FERRY_E_INTERNAL, "campaigns.db: %s", sqlite3_errmsg(db));
	return FERRY_OK;
}

static const char *state_text(follow_state s)
{
	switch (s) {
	case FS_WAITING: return "sent";
	case FS_RUNNING: return "running";
	case FS_ALREADY: return "already_installed";
	case FS_INSTALLED: return "installed";
	case FS_CANCELLED: return "cancelled";
	case FS_ROLLED_BACK: return "rolled_back";
	case FS_FAILED: return "failed";
	case FS_REFUSED: return "refused";
	}
	return "sent";
}

/* A verified reply, report or status answer for a target: stored,
 * followed, and the target's state brought up to date, in one transaction.
 * A status answer also stores each ended step as a `step` row, so the
 * counts per component hold what lost reports would have said. */
static void take(runner *r, const char *camp, const char *gw, const char *uid, const char *kind, json_t *msg)
{
	ferry_status st = {0};
	tracked *t = tracked_of(r, camp);
	char *body = json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS);
	char k[200], reason[33], detail[256];
	bool status = !strcmp(kind, "status");
	const char *stg = json_string_value(json_object_get(msg, "stage"));
	/* what following a target needs again after a restart: replies,
	 * `allowed`, outcomes and status answers; progress reports are not
	 * kept (a restarted runner asks update.status for the rest) */
	bool keep = strcmp(kind, "stage") || (stg && (!strcmp(stg, "allowed") || !strcmp(stg, "installed") ||
						      !strcmp(stg, "already_installed") || !strcmp(stg, "failed") ||
						      !strcmp(stg, "rolled_back") || !strcmp(stg, "cancelled")));

	if (!t || !body) {
		free(body);
		return;
	}
	if (status)
		follow_status(t->f, gw, uid, json_object_get(msg, "status"));
	else
		follow_take(t->f, gw, kind, msg);
	follow_state fs = follow_outcome(t->f, gw, uid, reason, detail);
	const char *now = state_text(fs);
	key2(k, sizeof(k), camp, gw);
	const char *was = json_string_value(json_object_get(r->state_of, k));
	bool change = was && strcmp(was, now) && !camp_final(was);
	ferry_err e = camp_begin(r->k.db, &st);
	/* bounded, whatever a gateway sends: an update of one gateway has at
	 * most a few reports per device to keep */
	if (!e && keep) {
		sqlite3_stmt *q = NULL;
		if (sqlite3_prepare_v2(camp_db_handle(r->k.db), "SELECT count(*) FROM messages WHERE campaign = ? AND"
				       " gateway = ? AND update_id = ?", -1, &q, NULL) == SQLITE_OK) {
			sqlite3_bind_text(q, 1, camp, -1, SQLITE_STATIC);
			sqlite3_bind_text(q, 2, gw, -1, SQLITE_STATIC);
			sqlite3_bind_text(q, 3, uid, -1, SQLITE_STATIC);
			if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) >= MESSAGES_PER_UPDATE_MAX)
				keep = false;
		}
		sqlite3_finalize(q);
	}
	if (!e && keep)
		e = sql_run(r, "INSERT OR IGNORE INTO messages(campaign, gateway, update_id, kind, body, component, device,"
			       " stage, reason, seq) VALUES(?,?,?,?,?,?,?,?,?,?)", &st, "sssssssssi", camp, gw, uid, kind, body,
			    status ? NULL : json_string_value(json_object_get(msg, "component")),
			    status ? NULL : json_string_value(json_object_get(msg, "device")),
			    status ? NULL : json_string_value(json_object_get(msg, "stage")),
			    status ? NULL : json_string_value(json_object_get(msg, "reason")),
			    (int64_t)(strcmp(kind, "stage") ? 0 : json_integer_value(json_object_get(msg, "seq"))));
	size_t i, j;
	json_t *c, *step;
	json_array_foreach(status ? json_object_get(json_object_get(msg, "status"), "components") : NULL, i, c) {
		json_array_foreach(json_object_get(c, "steps"), j, step) {
			const char *stage = json_string_value(json_object_get(step, "stage"));
			if (e || !stage || !json_is_string(json_object_get(c, "name")) ||
			    !json_is_string(json_object_get(step, "device")))
				continue;
			if (!strcmp(stage, "installed") || !strcmp(stage, "already_installed") || !strcmp(stage, "failed") ||
			    !strcmp(stage, "rolled_back") || !strcmp(stage, "cancelled"))
				e = sql_run(r, "INSERT INTO messages(campaign, gateway, update_id, kind, body, component, device,"
					       " stage, reason) VALUES(?,?,?,'step','{}',?,?,?,?)", &st, "sssssss", camp, gw,
					    uid, json_string_value(json_object_get(c, "name")),
					    json_string_value(json_object_get(step, "device")), stage,
					    json_string_value(json_object_get(step, "reason")));
		}
	}
	if (!e && change) {
		/* a late message of an earlier attempt changes nothing */
		e = sql_run(r, "UPDATE targets SET state = ?, reason = ?, detail = ? WHERE campaign = ? AND gateway = ?"
			       " AND update_id = ? AND state NOT IN ('installed','already_installed','failed',"
			       "'rolled_back','refused','cancelled')", &st, "ssssss", now, reason, detail, camp, gw, uid);
		change = !e && sqlite3_changes(camp_db_handle(r->k.db)) == 1;
	}
	if (e || camp_commit(r->k.db, &st)) {
		camp_rollback(r->k.db);
		cli_error(&st);
		free(body);
		return;
	}
	free(body);
	if (change) {
		json_object_set_new(r->state_of, k, json_string(now));
		printf("%s %s %s%s%s%s%s\n", camp, gw, now, reason[0] ? " " : "", reason, detail[0] ? ": " : "", detail);
		fflush(stdout);
	}
}

static void on_msg(void *ctx, const char *topic, const char *payload, size_t len, bool retained)
{
	runner *r = ctx;
	char gw[65], kind[16], k[200];
	json_t *msg = NULL;
	ferry_status st = {0};

	if (strncmp(topic, "ferry/v1/", 9) || sscanf(topic + 9, "%64[A-Za-z0-9._-]/%15[a-z]", gw, kind) != 2 ||
	    strlen(topic) != 9 + strlen(gw) + 1 + strlen(kind))
		return;
	if (!strcmp(kind, "inventory") || !strcmp(kind, "state")) {
		fleet_add(r->fl, topic, payload, len);
		r->fleet_changed = true;
		return;
	}
	if ((strcmp(kind, "reply") && strcmp(kind, "stage")) || retained || !json_object_get(r->gws, gw))
		return; /* not about a target being followed */
	if (ferry_report_open(payload, len, r->trust, gw, time(NULL), &msg, &st)) {
		char clean[sizeof(st.detail)];
		r->refused++;
		clean_text(clean, sizeof(clean), st.detail);
		fprintf(stderr, "ferry: refused a message on %s: %s: %s\n", topic, ferry_err_code(st.code), clean);
		return;
	}
	/* copied: follow_take cleans the message's strings in place */
	char uid_buf[65];
	const char *u = json_string_value(json_object_get(msg, "update_id")), *uid = NULL;
	if (u && strlen(u) < sizeof(uid_buf))
		uid = strcpy(uid_buf, u);
	if (!strcmp(kind, "reply")) {
		const char *jti = json_string_value(json_object_get(msg, "jti"));
		json_t *who = jti ? json_object_get(r->by_jti, jti) : NULL;
		const char *what = who ? json_string_value(json_array_get(who, 2)) : "";
		const char *result = json_string_value(json_object_get(msg, "result"));
		if (who && !strcmp(json_string_value(json_array_get(who, 1)), gw) && uid) {
			if (!strcmp(what, "update"))
				take(r, json_string_value(json_array_get(who, 0)), gw, uid, kind, msg);
			else if (!strcmp(what, "status") && result && !strcmp(result, "accepted")) {
				char camp[CAMPAIGN_NAME_MAX + 1];
				snprintf(camp, sizeof(camp), "%s", json_string_value(json_array_get(who, 0)));
				json_object_del(r->by_jti, jti); /* one answer per question */
				take(r, camp, gw, uid, "status", msg);
			}
		}
	} else if (uid) {
		key2(k, sizeof(k), gw, uid);
		const char *camp = json_string_value(json_object_get(r->by_uid, k));
		if (camp)
			take(r, camp, gw, uid, kind, msg);
	}
	json_decref(msg);
}

/* After a restart: follow again every target that was sent and has not
 * ended, from the replies and reports stored for it. */
static ferry_err rebuild(runner *r, ferry_status *st)
{
	sqlite3 *db = camp_db_handle(r->k.db);
	sqlite3_stmt *s = NULL, *m = NULL;
	ferry_err e = FERRY_OK;

	if (sqlite3_prepare_v2(db, "SELECT campaign, gateway, update_id, jti, state FROM targets WHERE state IN"
				   " ('sending','sent','running') ORDER BY campaign", -1, &s, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "SELECT kind, body FROM messages WHERE campaign = ? AND gateway = ? AND update_id = ?"
				   " AND kind != 'step' ORDER BY n", -1, &m, NULL) != SQLITE_OK) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "campaigns.db: %s", sqlite3_errmsg(db));
		goto out;
	}
	campaign c = {0};
	while (!e && sqlite3_step(s) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(s, 0), *gw = (const char *)sqlite3_column_text(s, 1),
			   *uid = (const char *)sqlite3_column_text(s, 2), *jti = (const char *)sqlite3_column_text(s, 3),
			   *state = (const char *)sqlite3_column_text(s, 4);
		if (!uid || !jti)
			continue;
		if (strcmp(c.name, name)) {
			camp_free(&c);
			if ((e = camp_get(r->k.db, name, &c, st)))
				break;
		}
		if (!expect(r, &c, gw, uid, jti, state)) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
			break;
		}
		tracked *t = tracked_of(r, name);
		sqlite3_reset(m);
		sqlite3_bind_text(m, 1, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(m, 2, gw, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(m, 3, uid, -1, SQLITE_TRANSIENT);
		while (sqlite3_step(m) == SQLITE_ROW) {
			const char *kind = (const char *)sqlite3_column_text(m, 0);
			json_t *msg = json_loads((const char *)sqlite3_column_text(m, 1), 0, NULL);
			if (msg && !strcmp(kind, "status"))
				follow_status(t->f, gw, uid, json_object_get(msg, "status"));
			else if (msg)
				follow_take(t->f, gw, kind, msg);
			json_decref(msg);
		}
	}
	camp_free(&c);
out:
	sqlite3_finalize(s);
	sqlite3_finalize(m);
	return e;
}

/* gateways of a query's first column, copied out (publishing turns the MQTT
 * loop, whose callbacks write to the database) */
static size_t gateways_where(runner *r, const char *sql, const char *camp, int64_t n1, fleet_id **out)
{
	sqlite3_stmt *s = NULL;
	size_t n = 0, cap = 0;

	*out = NULL;
	if (sqlite3_prepare_v2(camp_db_handle(r->k.db), sql, -1, &s, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(s, 1, camp, -1, SQLITE_TRANSIENT);
	if (sqlite3_bind_parameter_count(s) > 1)
		sqlite3_bind_int64(s, 2, n1);
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			fleet_id *p = realloc(*out, cap * sizeof(**out));
			if (!p)
				break;
			*out = p;
		}
		snprintf((*out)[n++], sizeof(fleet_id), "%s", (const char *)sqlite3_column_text(s, 0));
	}
	sqlite3_finalize(s);
	return n;
}

static bool publish_stored(runner *r, const char *camp, const char *gw, const char *col, const char *mark)
{
	ferry_status st = {0};
	sqlite3_stmt *s = NULL;
	char sql[200], topic[128], *cmd = NULL;

	snprintf(sql, sizeof(sql), "SELECT %s FROM targets WHERE campaign = ? AND gateway = ?", col);
	if (sqlite3_prepare_v2(camp_db_handle(r->k.db), sql, -1, &s, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_text(s, 1, camp, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 2, gw, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
		cmd = strdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	if (!cmd)
		return false;
	snprintf(topic, sizeof(topic), "ferry/v1/%s/cmd", gw);
	bool ok = !op_mqtt_publish(r->mq, topic, cmd, &st);
	free(cmd);
	if (!ok) {
		cli_error(&st);
		return false;
	}
	if (sql_run(r, mark, &st, "ss", camp, gw)) {
		cli_error(&st);
		return false;
	}
	return true;
}

/* The campaign's content keys wrapped for gw's key-agreement certificate,
 * from its checked inventory.  A gateway without a usable one is refused
 * here, as a failure of that target, with the reason. */
static bool wrap_keys_for(runner *r, const campaign *c, const char *gw, json_t **out)
{
	const json_t *inv = fleet_inventory(r->fl, gw);
	const char *pem = json_string_value(json_object_get(json_object_get(inv, "gateway"), "decryption_cert"));
	ferry_status st = {0};
	X509 *x = NULL;

	if (!cli_kek_of(r->trust, gw, pem, &x, &st) && !cli_wrap_keys(c->keys, x, out, &st)) {
		X509_free(x);
		return false;
	}
	X509_free(x);
	if (sql_run(r, "UPDATE targets SET state = 'refused', reason = ?, detail = ? WHERE campaign = ? AND gateway = ?"
		       " AND state = 'pending'", &st, "ssss", ferry_err_code(st.code), st.detail, c->name, gw))
		cli_error(&st);
	printf("%s %s refused: %s: %s\n", c->name, gw, ferry_err_code(st.code), st.detail);
	fflush(stdout);
	return true;
}

/* Sign a command for a target, record it, publish it.  Once recorded, the
 * same bytes are what any later publication sends. */
static bool send_update(runner *r, const campaign *c, const char *gw)
{
	ferry_status st = {0};
	char uid[65], jti[33], *jws = NULL;
	json_t *links = json_object();
	const char *name;
	json_t *sha;
	time_t expires = time(NULL) + r->k.cfg.files.link_ttl_s;

	camp_update_id(c, c->attempt, uid);
	json_object_foreach(c->images, name, sha) {
		char url[1400];
		if (!cli_make_link(&r->k.cfg, gw, json_string_value(sha), expires, url, sizeof(url))) {
			json_decref(links);
			fprintf(stderr, "ferry campaign run: a link for %s would be too long\n", gw);
			return false;
		}
		json_object_set_new(links, name, json_string(url));
	}
	json_t *wrapped = NULL;
	if (c->keys && wrap_keys_for(r, c, gw, &wrapped)) {
		json_decref(links);
		return false;
	}
	int rc = cli_command_sign("update.deploy", gw, uid, c->manifest, links, wrapped, c->ttl, r->key, r->certs, jti,
				  &jws);
	json_decref(links);
	json_decref(wrapped);
	if (rc)
		return false;
	/* only as the campaign still is (a retry-failed or a cancel may have
	 * been committed since it was read), and only for a pending target */
	if (camp_begin(r->k.db, &st) ||
	    sql_run(r, "UPDATE targets SET state = 'sending', jti = ?, update_id = ?, command = ?, attempt = ?,"
		       " reason = '', detail = '' WHERE campaign = ? AND gateway = ? AND state = 'pending' AND"
		       " EXISTS (SELECT 1 FROM campaigns WHERE name = ? AND state = 'active' AND attempt = ?)",
		    &st, "sssisssi", jti, uid, jws, c->attempt, c->name, gw, c->name, c->attempt)) {
		camp_rollback(r->k.db);
		cli_error(&st);
		free(jws);
		return false;
	}
	if (sqlite3_changes(camp_db_handle(r->k.db)) != 1) {
		camp_rollback(r->k.db);
		free(jws);
		return false;
	}
	if (sql_run(r, "INSERT INTO commands(jti, campaign, gateway, op, attempt, made) VALUES(?,?,?,'update.deploy',?,?)",
		    &st, "sssii", jti, c->name, gw, c->attempt, (int64_t)time(NULL)) ||
	    camp_commit(r->k.db, &st)) {
		camp_rollback(r->k.db);
		cli_error(&st);
		free(jws);
		return false;
	}
	free(jws);
	if (!expect(r, c, gw, uid, jti, "sending"))
		return false;
	if (!publish_stored(r, c->name, gw, "command",
			    "UPDATE targets SET state = 'sent', command = NULL WHERE campaign = ? AND gateway = ?"
			    " AND state = 'sending'"))
		return false;
	char k[200];
	key2(k, sizeof(k), c->name, gw);
	const char *was = json_string_value(json_object_get(r->state_of, k));
	if (was && !strcmp(was, "sending")) /* (unless its answer came while it went out) */
		json_object_set_new(r->state_of, k, json_string("sent"));
	printf("%s %s sent %s\n", c->name, gw, uid);
	fflush(stdout);
	return true;
}

static bool send_cancel(runner *r, const campaign *c, const char *gw)
{
	ferry_status st = {0};
	sqlite3_stmt *s = NULL;
	char uid[65] = "", jti[33], *jws = NULL;

	if (sqlite3_prepare_v2(camp_db_handle(r->k.db), "SELECT update_id FROM targets WHERE campaign = ? AND gateway = ?",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, gw, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
			snprintf(uid, sizeof(uid), "%s", (const char *)sqlite3_column_text(s, 0));
	}
	sqlite3_finalize(s);
	if (!uid[0] || cli_command_sign("update.cancel", gw, uid, NULL, NULL, NULL, c->ttl, r->key, r->certs, jti, &jws))
		return false;
	if (camp_begin(r->k.db, &st) ||
	    sql_run(r, "INSERT INTO commands(jti, campaign, gateway, op, attempt, made) VALUES(?,?,?,'update.cancel',?,?)",
		    &st, "sssii", jti, c->name, gw, c->attempt, (int64_t)time(NULL)) ||
	    sql_run(r, "UPDATE targets SET cancel_jti = ?, cancel_command = ? WHERE campaign = ? AND gateway = ?"
		       " AND cancel_jti IS NULL", &st, "ssss", jti, jws, c->name, gw) ||
	    camp_commit(r->k.db, &st)) {
		camp_rollback(r->k.db);
		cli_error(&st);
		free(jws);
		return false;
	}
	free(jws);
	json_object_set_new(r->by_jti, jti, json_pack("[s,s,s]", c->name, gw, "cancel"));
	bool ok = publish_stored(r, c->name, gw, "cancel_command",
				 "UPDATE targets SET cancel_sent = 1, cancel_command = NULL WHERE campaign = ? AND gateway = ?");
	if (ok)
		printf("%s %s update.cancel sent\n", c->name, gw);
	return ok;
}

/* After a restart: ask each gateway whose update was being followed where
 * it stands (docs/protocol.md, update.status): what was reported while the
 * last runner died between receiving a report and recording it is in the
 * answer. */
static void ask_status(runner *r)
{
	sqlite3_stmt *s = NULL;
	json_t *todo = json_array();
	size_t i;
	json_t *v;

	if (sqlite3_prepare_v2(camp_db_handle(r->k.db), "SELECT campaign, gateway, update_id FROM targets WHERE state IN"
			       " ('sending','sent','running') AND update_id IS NOT NULL", -1, &s, NULL) == SQLITE_OK)
		while (sqlite3_step(s) == SQLITE_ROW)
			json_array_append_new(todo, json_pack("[s,s,s]", sqlite3_column_text(s, 0), sqlite3_column_text(s, 1),
							      sqlite3_column_text(s, 2)));
	sqlite3_finalize(s);
	json_array_foreach(todo, i, v) {
		ferry_status st = {0};
		campaign c;
		char jti[33], *jws = NULL, topic[128];
		const char *camp = json_string_value(json_array_get(v, 0)), *gw = json_string_value(json_array_get(v, 1)),
			   *uid = json_string_value(json_array_get(v, 2));
		if (interrupted || camp_get(r->k.db, camp, &c, &st))
			continue;
		if (!cli_command_sign("update.status", gw, uid, NULL, NULL, NULL, c.ttl, r->key, r->certs, jti, &jws) &&
		    !sql_run(r, "INSERT INTO commands(jti, campaign, gateway, op, attempt, made) VALUES(?,?,?,'update.status',?,?)",
			     &st, "sssii", jti, camp, gw, c.attempt, (int64_t)time(NULL))) {
			json_object_set_new(r->by_jti, jti, json_pack("[s,s,s]", camp, gw, "status"));
			snprintf(topic, sizeof(topic), "ferry/v1/%s/cmd", gw);
			if (op_mqtt_publish(r->mq, topic, jws, &st))
				cli_error(&st);
		}
		free(jws);
		camp_free(&c);
	}
	json_decref(todo);
}

static int64_t count_where(runner *r, const char *sql, const char *camp, int64_t n1)
{
	sqlite3_stmt *s = NULL;
	int64_t v = -1; /* an error: the caller decides nothing this turn */
	if (sqlite3_prepare_v2(camp_db_handle(r->k.db), sql, -1, &s, NULL) != SQLITE_OK) {
		fprintf(stderr, "ferry campaign run: campaigns.db: %s\n", sqlite3_errmsg(camp_db_handle(r->k.db)));
		return -1;
	}
	sqlite3_bind_text(s, 1, camp, -1, SQLITE_TRANSIENT);
	if (sqlite3_bind_parameter_count(s) > 1)
		sqlite3_bind_int64(s, 2, n1);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

__attribute__((format(printf, 3, 4))) static void note(runner *r, campaign *c, const char *fmt, ...)
{
	tracked *t = tracked_of(r, c->name);
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (t && !strcmp(t->last_note, line))
		return;
	if (t)
		snprintf(t->last_note, sizeof(t->last_note), "%s", line);
	printf("%s %s\n", c->name, line);
	fflush(stdout);
}

/* New targets: a one-shot campaign's at its start, a continuous one's
 * whenever an inventory comes that matches. */
static void add_targets(runner *r, campaign *c)
{
	ferry_status st = {0};
	fleet_filter *f = fleet_filter_new();
	fleet_id *ids = NULL;
	size_t i, n;
	json_t *w;

	if (!f)
		return;
	json_array_foreach(c->where, i, w) if (fleet_filter_add(f, json_string_value(w), &st)) {
		note(r, c, "has a condition that no longer parses: %s", st.detail);
		fleet_filter_free(f);
		return;
	}
	n = fleet_select(r->fl, f, &ids);
	fleet_filter_free(f);
	int64_t have = count_where(r, "SELECT count(*) FROM targets WHERE campaign = ?", c->name, 0), added = 0;
	if (have < 0 || camp_begin(r->k.db, &st)) {
		free(ids);
		return;
	}
	for (i = 0; i < n; i++) {
		int64_t batch = c->batch ? have / c->batch : 0;
		if (sql_run(r, "INSERT OR IGNORE INTO targets(campaign, gateway, batch, attempt, state, added)"
			       " VALUES(?,?,?,?,'pending',?)", &st, "ssiii", c->name, ids[i], batch, c->attempt,
			    (int64_t)time(NULL))) {
			camp_rollback(r->k.db);
			cli_error(&st);
			free(ids);
			return;
		}
		if (sqlite3_changes(camp_db_handle(r->k.db))) {
			have++;
			added++;
		}
	}
	if (!c->targeted) {
		c->targeted = true;
		if (sql_run(r, "UPDATE campaigns SET targeted = 1 WHERE name = ?", &st, "s", c->name)) {
			camp_rollback(r->k.db);
			cli_error(&st);
			free(ids);
			return;
		}
	}
	if (camp_commit(r->k.db, &st)) {
		camp_rollback(r->k.db);
		cli_error(&st);
	} else if (added) {
		printf("%s targets %lld gateway%s more (%lld in all)\n", c->name, (long long)added, added == 1 ? "" : "s",
		       (long long)have);
		fflush(stdout);
	}
	free(ids);
}

/* The runner changes a campaign only as it read it: a pause, cancel or
 * retry-failed committed meanwhile wins, and the next turn sees it. */
static void save_state(runner *r, campaign *c, const char *state, const char *why)
{
	ferry_status st = {0};
	if (sql_run(r, "UPDATE campaigns SET state = ?, why = ? WHERE name = ? AND state = 'active' AND attempt = ?",
		    &st, "sssi", state, why, c->name, c->attempt)) {
		cli_error(&st);
		return;
	}
	if (sqlite3_changes(camp_db_handle(r->k.db)) != 1)
		return;
	snprintf(c->state, sizeof(c->state), "%s", state);
	snprintf(c->why, sizeof(c->why), "%s", why);
	printf("%s %s%s%s\n", c->name, state, why[0] ? ": " : "", why);
	fflush(stdout);
}

/* One campaign, one turn: choose targets, check the failure threshold,
 * advance batches, send what may be sent.  Returns whether it has work
 * left (for --until-idle). */
static bool drive(runner *r, campaign *c, bool fleet_changed)
{
	static const char q_fail[] =
		"SELECT count(*) FROM targets WHERE campaign = ? AND state IN ('failed','rolled_back','refused')";
	static const char q_live[] =
		"SELECT count(*) FROM targets WHERE campaign = ? AND state IN ('sending','sent','running')";
	const char *q_pending = "SELECT count(*) FROM targets WHERE campaign = ? AND state = 'pending'";
	time_t now = time(NULL);
	fleet_id *gws = NULL;
	size_t n;

	/* every publication that may not have happened happens now */
	n = gateways_where(r, "SELECT gateway FROM targets WHERE campaign = ? AND state = 'sending'", c->name, 0, &gws);
	for (size_t i = 0; i < n && !interrupted; i++)
		publish_stored(r, c->name, gws[i], "command",
			       "UPDATE targets SET state = 'sent', command = NULL WHERE campaign = ? AND gateway = ?"
			       " AND state = 'sending'");
	free(gws);
	if (!strcmp(c->state, "cancelled")) {
		sql_run(r, "UPDATE targets SET state = 'cancelled', reason = 'cancelled', detail = 'the campaign was"
			   " cancelled before it was sent' WHERE campaign = ? AND state = 'pending'", &(ferry_status){0},
			"s", c->name);
		n = gateways_where(r, "SELECT gateway FROM targets WHERE campaign = ? AND state IN ('sent','running')"
				      " AND cancel_sent = 0", c->name, 0, &gws);
		for (size_t i = 0; i < n && !interrupted; i++) {
			if (!publish_stored(r, c->name, gws[i], "cancel_command",
					    "UPDATE targets SET cancel_sent = 1, cancel_command = NULL WHERE campaign = ?"
					    " AND gateway = ?"))
				send_cancel(r, c, gws[i]);
		}
		free(gws);
		return count_where(r, q_live, c->name, 0) != 0;
	}
	/* a command no answer came for before it expired (and the gateway's
	 * clock skew) never will be acted on: the gateway refuses it from then */
	n = gateways_where(r, "SELECT t.gateway FROM targets t JOIN commands m ON m.jti = t.jti WHERE t.campaign = ?"
			      " AND t.state = 'sent' AND m.made < ?", c->name, (int64_t)now - c->ttl - 300, &gws);
	for (size_t i = 0; i < n; i++) {
		ferry_status st = {0};
		char k[200];
		if (sql_run(r, "UPDATE targets SET state = 'failed', reason = 'expired', detail = 'no answer from the gateway"
			       " before its command expired' WHERE campaign = ? AND gateway = ? AND state = 'sent'",
			    &st, "ss", c->name, gws[i]) || sqlite3_changes(camp_db_handle(r->k.db)) != 1)
			continue;
		key2(k, sizeof(k), c->name, gws[i]);
		json_object_set_new(r->state_of, k, json_string("failed"));
		printf("%s %s failed expired: no answer from the gateway before its command expired\n", c->name, gws[i]);
		fflush(stdout);
	}
	free(gws);
	if (strcmp(c->state, "active"))
		return count_where(r, q_live, c->name, 0) != 0; /* paused, stopped, done: follow what runs */
	if (c->start_at && now < c->start_at) {
		char when[32];
		struct tm tm;
		time_t t = (time_t)c->start_at;
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		note(r, c, "waits for its start at %s", when);
		return true;
	}
	if (!r->synced)
		return true;
	if (!c->targeted || (c->continuous && fleet_changed))
		add_targets(r, c);
	int64_t targeted = count_where(r, "SELECT count(*) FROM targets WHERE campaign = ?", c->name, 0);
	int64_t failures = count_where(r, q_fail, c->name, 0);
	if (targeted < 0 || failures < 0)
		return true;
	if ((c->stop_n && failures >= c->stop_n) || (c->stop_pct && targeted && failures * 100 >= c->stop_pct * targeted)) {
		char why[200];
		snprintf(why, sizeof(why), "%lld of %lld targets did not install (stop at %lld%s)", (long long)failures,
			 (long long)targeted, (long long)(c->stop_n ? c->stop_n : c->stop_pct), c->stop_n ? "" : "%");
		save_state(r, c, "stopped", why);
		return count_where(r, q_live, c->name, 0) != 0;
	}
	/* the next batch starts when enough of this one installed */
	int64_t last = count_where(r, "SELECT coalesce(max(batch), 0) FROM targets WHERE campaign = ?", c->name, 0);
	while (c->cur_batch < last) {
		int64_t size = count_where(r, "SELECT count(*) FROM targets WHERE campaign = ? AND batch = ?", c->name,
					   c->cur_batch);
		int64_t ok = count_where(r, "SELECT count(*) FROM targets WHERE campaign = ? AND batch = ? AND state IN"
					    " ('installed','already_installed')", c->name, c->cur_batch);
		if (size < 0 || ok < 0 || (size && ok * 100 < c->advance_pct * size))
			break;
		ferry_status st = {0};
		if (sql_run(r, "UPDATE campaigns SET cur_batch = ? WHERE name = ? AND cur_batch = ? AND state = 'active'",
			    &st, "isi", c->cur_batch + 1, c->name, c->cur_batch)) {
			cli_error(&st);
			break;
		}
		if (sqlite3_changes(camp_db_handle(r->k.db)) != 1)
			return true; /* changed meanwhile: the next turn reads it again */
		c->cur_batch++;
		printf("%s batch %lld of %lld starts\n", c->name, (long long)c->cur_batch + 1, (long long)last + 1);
		fflush(stdout);
	}
	struct tm lt;
	localtime_r(&now, &lt);
	if (!camp_in_window(c->win_from, c->win_to, lt.tm_hour * 60 + lt.tm_min)) {
		if (count_where(r, q_pending, c->name, 0))
			note(r, c, "holds its commands until %02lld:%02lld local time", (long long)c->win_from / 60,
			     (long long)c->win_from % 60);
		return true;
	}
	n = gateways_where(r, "SELECT gateway FROM targets WHERE campaign = ? AND state = 'pending' AND batch <= ?"
			      " ORDER BY batch, gateway LIMIT 256", c->name, c->cur_batch, &gws);
	for (size_t i = 0; i < n && !interrupted; i++)
		send_update(r, c, gws[i]);
	free(gws);
	int64_t live = count_where(r, q_live, c->name, 0), pending = count_where(r, q_pending, c->name, 0);
	if (live < 0 || pending < 0)
		return true;
	if (!c->continuous && !live && !pending) {
		char why[200];
		int64_t ok = count_where(r, "SELECT count(*) FROM targets WHERE campaign = ? AND state IN"
					    " ('installed','already_installed')", c->name, 0);
		snprintf(why, sizeof(why), "%lld of %lld targets installed", (long long)ok, (long long)targeted);
		save_state(r, c, "done", why);
		return false;
	}
	return live || pending;
}

static int do_run(int argc, char **argv)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"until-idle", no_argument, NULL, 'u'},
					     {NULL, 0, NULL, 0}};
	runner r = {0};
	const char *cfgp = NULL;
	bool until_idle = false;
	ferry_status st = {0};
	int opt, rc = CLI_USAGE, lock = -1;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'c')
			cfgp = optarg;
		else if (opt == 'u')
			until_idle = true;
		else {
			fputs(help, stderr);
			return CLI_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ferry campaign run: unexpected argument \"%s\"\n", argv[optind]);
		return CLI_USAGE;
	}
	if (open_common(cfgp, &r.k))
		goto out;
	char lockp[1100];
	snprintf(lockp, sizeof(lockp), "%s/campaign-run.lock", r.k.cfg.state_dir);
	lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB)) {
		fprintf(stderr, "ferry campaign run: %s: %s\n", lockp,
			lock < 0 ? strerror(errno) : "another `ferry campaign run` drives these campaigns");
		goto out;
	}
	r.by_jti = json_object();
	r.by_uid = json_object();
	r.state_of = json_object();
	r.gws = json_object();
	r.fl = fleet_new();
	if (!r.fl || ferry_trust_load(r.k.cfg.gateway_ca, &r.trust, &st) || rebuild(&r, &st)) {
		cli_error(&st);
		goto out;
	}
	fleet_set_trust(r.fl, r.trust);
	if (cli_load_signer(r.k.cfg.command_signer.key, r.k.cfg.command_signer.cert, NULL, &r.key, &r.certs))
		goto out;
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* one kept session per state directory: what gateways report while no
	 * runner runs waits on the broker */
	char session[64];
	unsigned char md[32];
	unsigned int mdlen = 0;
	char real[4096];
	const char *dir = realpath(r.k.cfg.state_dir, real) ? real : r.k.cfg.state_dir;
	EVP_Digest(dir, strlen(dir), md, &mdlen, EVP_sha256(), NULL);
	snprintf(session, sizeof(session), "ferry-campaign-%02x%02x%02x%02x%02x%02x", md[0], md[1], md[2], md[3], md[4],
		 md[5]);
	static const char *const topics[] = {"ferry/v1/+/reply", "ferry/v1/+/stage", "ferry/v1/+/inventory",
					     "ferry/v1/+/state"};
	if (op_mqtt_connect_as(&r.k.cfg, session, on_msg, &r, &r.mq, &st)) {
		cli_error(&st);
		goto out;
	}
	for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
		if (op_mqtt_subscribe(r.mq, topics[i], &st)) {
			cli_error(&st);
			goto out;
		}
	if (op_mqtt_sync(r.mq, &st)) { /* the retained inventories are in */
		cli_error(&st);
		goto out;
	}
	r.synced = true;
	ask_status(&r);
	fprintf(stderr, "ferry campaign run: driving the campaigns in %s/campaigns.db (Ctrl-C stops; run again to go on)\n",
		r.k.cfg.state_dir);
	rc = CLI_OK;
	while (!interrupted) {
		char (*names)[CAMPAIGN_NAME_MAX + 1] = NULL;
		size_t n = 0;
		bool busy = false;
		/* inventories that come while this turn publishes count for the next */
		bool fleet_changed = r.fleet_changed;
		r.fleet_changed = false;
		if (camp_names(r.k.db, &names, &n, &st)) {
			cli_error(&st);
			rc = CLI_USAGE;
			break;
		}
		for (size_t i = 0; i < n && !interrupted; i++) {
			campaign c;
			if (camp_get(r.k.db, names[i], &c, &st)) {
				cli_error(&st);
				continue;
			}
			busy = drive(&r, &c, fleet_changed) || busy;
			camp_free(&c);
		}
		free(names);
		if (until_idle && !busy)
			break;
		if (!op_mqtt_loop(r.mq, 200)) {
			rc = CLI_USAGE;
			break;
		}
	}
	if (r.refused)
		fprintf(stderr, "ferry campaign run: %u message%s refused\n", r.refused, r.refused == 1 ? "" : "s");
out:
	op_mqtt_free(r.mq);
	for (size_t i = 0; i < r.n_camps; i++)
		follow_free(r.camps[i].f);
	free(r.camps);
	fleet_free(r.fl);
	ferry_trust_free(r.trust);
	json_decref(r.by_jti);
	json_decref(r.by_uid);
	json_decref(r.state_of);
	json_decref(r.gws);
	EVP_PKEY_free(r.key);
	sk_X509_pop_free(r.certs, X509_free);
	camp_db_close(r.k.db);
	if (lock >= 0)
		close(lock);
	return rc;
}

int cli_campaign(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(help, argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_USAGE : CLI_OK;
	}
	const char *sub = argv[1];
	if (cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return CLI_OK;
	}
	if (!strcmp(sub, "create"))
		return do_create(argc - 1, argv + 1);
	if (!strcmp(sub, "run"))
		return do_run(argc - 1, argv + 1);
	if (!strcmp(sub, "list"))
		return do_list(argc - 1, argv + 1);
	if (!strcmp(sub, "status"))
		return do_status(argc - 1, argv + 1);
	if (!strcmp(sub, "pause") || !strcmp(sub, "resume") || !strcmp(sub, "cancel"))
		return do_steer(argc - 1, argv + 1, sub);
	if (!strcmp(sub, "retry-failed"))
		return do_retry(argc - 1, argv + 1);
	fprintf(stderr, "ferry campaign: unknown command \"%s\"\n%s", sub, help);
	return CLI_USAGE;
}
