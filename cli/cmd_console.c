/* `ferry console`: a live web page of the fleet, the campaigns and the
 * updates under way, served by libmicrohttpd on a loopback address.
 *
 * The main thread turns the operator's MQTT session: inventories and
 * states feed the fleet table, replies and stage reports feed the update
 * rows (each checked as every tool checks them: signed by the gateway of
 * its topic), and the campaigns come from campaigns.db.  Whenever that
 * picture changes it is made into one JSON snapshot, and every open page
 * gets it as a server-sent event.  The page has no external assets and
 * puts what it shows in as text, never as markup.
 *
 * The console has no login: it listens on loopback addresses only, and
 * answers only requests whose Host names the address it listens on (a page
 * elsewhere cannot reach it through DNS rebinding). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "campaign.h"
#include "cli.h"
#include "console_html.h"
#include "fleet.h"
#include "follow.h"
#include "ferry/trust.h"
#include "opconfig.h"
#include "opmqtt.h"

static const char help[] =
	"usage: ferry console [--listen 127.0.0.1:PORT] [--config F]\n"
	"\n"
	"Serves a live page of the fleet (as `ferry fleet` shows it), every\n"
	"campaign with its progress and counts, and every update gateways report\n"
	"while it runs, one row per gateway, component and device, updated as\n"
	"reports come (server-sent events).  It listens on a loopback address only\n"
	"(default 127.0.0.1:8080): the page has no login.  Ctrl-C stops it.\n";

#define SNAPSHOT_MAX (64u << 20)

typedef struct console {
	pthread_mutex_t mu;
	pthread_cond_t changed;
	char *snapshot; /* JSON, one line */
	size_t snapshot_len;
	unsigned long version;
	bool stopping;
	char host[64]; /* what a request's Host must be */
	char *last;    /* the last snapshot without its time */
} console;

typedef struct stream {
	console *con;
	unsigned long seen;
	char *buf;
	size_t len, off;
} stream;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

/* The event stream: the newest snapshot whenever there is a newer one
 * than the page has, and a comment every 15 s so proxies keep it open. */
static ssize_t read_events(void *cls, uint64_t pos, char *out, size_t max)
{
	stream *s = cls;
	console *con = s->con;

	if (s->off == s->len) {
		free(s->buf);
		s->buf = NULL;
		s->off = s->len = 0;
		pthread_mutex_lock(&con->mu);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 15;
		while (!con->stopping && con->version == s->seen)
			if (pthread_cond_timedwait(&con->changed, &con->mu, &until) == ETIMEDOUT)
				break;
		if (con->stopping) {
			pthread_mutex_unlock(&con->mu);
			return MHD_CONTENT_READER_END_OF_STREAM;
		}
		if (con->version != s->seen && con->snapshot) {
			s->len = con->snapshot_len + 8;
			s->buf = malloc(s->len + 1);
			if (s->buf) {
				memcpy(s->buf, "data: ", 6);
				memcpy(s->buf + 6, con->snapshot, con->snapshot_len);
				memcpy(s->buf + 6 + con->snapshot_len, "\n\n", 2);
				s->seen = con->version;
			}
		} else {
			s->buf = strdup(": ping\n\n");
			s->len = 8;
		}
		pthread_mutex_unlock(&con->mu);
		if (!s->buf)
			return MHD_CONTENT_READER_END_WITH_ERROR;
	}
	size_t n = s->len - s->off < max ? s->len - s->off : max;
	memcpy(out, s->buf + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

static void free_stream(void *cls)
{
	stream *s = cls;
	free(s->buf);
	free(s);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, const void *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "Content-Security-Policy",
				"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'");
	enum MHD_Result ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload, size_t *upload_size, void **req)
{
	console *con = cls;
	const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");

	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return reply(c, 405, "text/plain", "only GET\n", 9);
	if (!host || strcmp(host, con->host))
		return reply(c, 421, "text/plain", "wrong Host\n", 11);
	if (!strcmp(url, "/"))
		return reply(c, 200, "text/html; charset=utf-8", console_html, sizeof(console_html) - 1);
	if (!strcmp(url, "/api/state")) {
		pthread_mutex_lock(&con->mu);
		enum MHD_Result r = con->snapshot ? reply(c, 200, "application/json", con->snapshot, con->snapshot_len)
						  : reply(c, 503, "text/plain", "starting\n", 9);
		pthread_mutex_unlock(&con->mu);
		return r;
	}
	if (!strcmp(url, "/events")) {
		stream *s = calloc(1, sizeof(*s));
		if (!s)
			return MHD_NO;
		s->con = con;
		struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_events, s, free_stream);
		if (!r) {
			free(s);
			return MHD_NO;
		}
		MHD_add_response_header(r, "Content-Type", "text/event-stream");
		MHD_add_response_header(r, "Cache-Control", "no-store");
		enum MHD_Result ret = MHD_queue_response(c, 200, r);
		MHD_destroy_response(r);
		return ret;
	}
	return reply(c, 404, "text/plain", "not found\n", 10);
}

typedef struct feed {
	fleet *fl;
	follow *f;
	bool dirty;
} feed;

static void on_msg(void *ctx, const char *topic, const char *payload, size_t len, bool retained)
{
	feed *fd = ctx;
	size_t tl = strlen(topic);

	if (tl > 10 && (!strcmp(topic + tl - 10, "/inventory") || !strcmp(topic + tl - 6, "/state"))) {
		fleet_add(fd->fl, topic, payload, len);
		fd->dirty = true;
	} else if (!retained) {
		follow_message(fd->f, topic, payload, len, NULL, NULL);
		fd->dirty = true;
	}
}

static json_t *campaigns_json(const op_config *cfg)
{
	json_t *all = json_array();
	camp_db *db = NULL;
	ferry_status st = {0};
	char (*names)[CAMPAIGN_NAME_MAX + 1] = NULL;
	size_t n = 0;

	if (camp_db_open(cfg->state_dir, &db, &st) || camp_names(db, &names, &n, &st)) {
		camp_db_close(db);
		return all;
	}
	for (size_t i = 0; i < n; i++) {
		campaign c;
		json_t *counts = NULL;
		if (camp_get(db, names[i], &c, &st))
			continue;
		if (!camp_counts(db, &c, &counts, &st))
			json_array_append_new(all, json_pack("{s:s,s:s,s:s,s:b,s:o}", "name", c.name, "state", c.state,
							     "why", c.why, "continuous", c.continuous, "counts", counts));
		camp_free(&c);
	}
	free(names);
	camp_db_close(db);
	return all;
}

/* A new snapshot, published when it differs from the last. */
static void publish(console *con, feed *fd, const op_config *cfg)
{
	json_t *o = json_pack("{s:o,s:o,s:o,s:I,s:I}", "fleet", fleet_json(fd->fl), "campaigns", campaigns_json(cfg),
			      "updates", follow_rows_json(fd->f), "refused",
			      (json_int_t)(fleet_refused(fd->fl) + follow_refused(fd->f)), "ts", (json_int_t)time(NULL));
	if (!o)
		return;
	pthread_mutex_lock(&con->mu);
	json_object_set_new(o, "version", json_integer((json_int_t)con->version + 1));
	/* the same picture but for the time is not news */
	json_t *ts = json_incref(json_object_get(o, "ts")), *ver = json_incref(json_object_get(o, "version"));
	json_object_del(o, "ts");
	json_object_del(o, "version");
	char *plain = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_object_set_new(o, "ts", ts);
	json_object_set_new(o, "version", ver);
	if (plain && (!con->last || strcmp(plain, con->last))) {
		char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
		if (text && strlen(text) < SNAPSHOT_MAX) {
			free(con->snapshot);
			con->snapshot = text;
			con->snapshot_len = strlen(text);
			con->version++;
			pthread_cond_broadcast(&con->changed);
			free(con->last);
			con->last = plain;
			plain = NULL;
		} else {
			free(text);
		}
	}
	pthread_mutex_unlock(&con->mu);
	free(plain);
	json_decref(o);
}

/* "127.0.0.1:8080", "[::1]:8080" or "localhost:8080": loopback only */
static bool parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sl, char *host, size_t hn)
{
	char addr[64];
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (!colon || colon == s || (size_t)(colon - s) >= sizeof(addr))
		return false;
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return false;
	snprintf(addr, sizeof(addr), "%.*s", (int)(colon - s), s);
	memset(ss, 0, sizeof(*ss));
	if (!strcmp(addr, "localhost") || !strcmp(addr, "127.0.0.1") ||
	    (addr[0] != '[' && inet_pton(AF_INET, addr, &((struct sockaddr_in *)ss)->sin_addr) == 1)) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		if (!strcmp(addr, "localhost"))
			inet_pton(AF_INET, "127.0.0.1", &in->sin_addr);
		else
			inet_pton(AF_INET, addr, &in->sin_addr);
		if ((ntohl(in->sin_addr.s_addr) >> 24) != 127)
			return false;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*sl = sizeof(*in);
	} else if (!strcmp(addr, "[::1]")) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		in6->sin6_port = htons((uint16_t)port);
		*sl = sizeof(*in6);
	} else {
		return false;
	}
	snprintf(host, hn, "%s", s);
	return true;
}

int cli_console(int argc, char **argv)
{
	static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
					     {"config", required_argument, NULL, 'c'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	const char *cfgp = NULL, *listen = "127.0.0.1:8080";
	console con = {.mu = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
	feed fd = {0};
	op_config cfg;
	op_mqtt *mq = NULL;
	ferry_trust *trust = NULL;
	struct MHD_Daemon *d = NULL;
	ferry_status st = {0};
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	int c, rc = CLI_USAGE;

	if (cli_wants_help(argc, argv)) {
		fputs(help, stdout);
		return CLI_OK;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 'c': cfgp = optarg; break;
		default: fputs(help, stderr); return CLI_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ferry console: unexpected argument \"%s\"\n", argv[optind]);
		return CLI_USAGE;
	}
	if (!parse_listen(listen, &ss, &sl, con.host, sizeof(con.host))) {
		fprintf(stderr, "ferry console: --listen \"%s\" is not a loopback ADDRESS:PORT (127.0.0.1:8080, [::1]:8080, "
				"localhost:8080); the console has no login, so it serves this machine only\n", listen);
		return CLI_USAGE;
	}
	if (op_config_load(cfgp, &cfg, &st) || ferry_trust_load(cfg.gateway_ca, &trust, &st)) {
		cli_error(&st);
		return CLI_USAGE;
	}
	fd.fl = fleet_new();
	fd.f = follow_new(FOLLOW_QUIET, stdout, trust);
	if (!fd.fl || !fd.f)
		goto out;
	fleet_set_trust(fd.fl, trust);
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	static const char *const topics[] = {"ferry/v1/+/inventory", "ferry/v1/+/state", "ferry/v1/+/reply",
					     "ferry/v1/+/stage"};
	if (op_mqtt_connect(&cfg, on_msg, &fd, &mq, &st)) {
		cli_error(&st);
		goto out;
	}
	for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
		if (op_mqtt_subscribe(mq, topics[i], &st)) {
			cli_error(&st);
			goto out;
		}
	if (op_mqtt_sync(mq, &st)) {
		cli_error(&st);
		goto out;
	}
	publish(&con, &fd, &cfg);
	d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
				     (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
			     0, NULL, NULL, handle, &con, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
			     MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 0u, MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "ferry console: cannot listen on %s: %s\n", listen, strerror(errno));
		goto out;
	}
	fprintf(stderr, "ferry console: http://%s/ (Ctrl-C stops)\n", con.host);
	rc = CLI_OK;
	struct timespec last = {0};
	while (!interrupted) {
		if (!op_mqtt_loop(mq, 200)) {
			rc = CLI_USAGE;
			break;
		}
		/* at most four pictures a second; the campaigns' file is read
		 * again each second as well (the runner writes it) */
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long ms = (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000;
		if ((fd.dirty && ms >= 250) || ms >= 1000) {
			fd.dirty = false;
			last = now;
			publish(&con, &fd, &cfg);
		}
	}
out:
	pthread_mutex_lock(&con.mu);
	con.stopping = true;
	pthread_cond_broadcast(&con.changed);
	pthread_mutex_unlock(&con.mu);
	if (d)
		MHD_stop_daemon(d);
	op_mqtt_free(mq);
	fleet_free(fd.fl);
	follow_free(fd.f);
	ferry_trust_free(trust);
	free(con.snapshot);
	free(con.last);
	return rc;
}
