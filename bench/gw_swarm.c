/* A swarm of lightweight gateways for bench/campaign_scale.sh.
 *
 * Each is one MQTT client with a certificate of its own (CN = its id,
 * issued here by the org CA), on the gateways' listener as ferryd is.  It
 * publishes a signed, retained inventory with one device running
 * `app-config`, and answers every command as ferryd answers an
 * update.deploy whose image is already in and installs at once: a reply
 * `accepted`, `allowed` to its device, `installed` with the manifest's
 * version, a new inventory; update.status with where its updates stand.
 * Everything it publishes is signed as ferryd signs it (ES256, its own
 * certificate in x5c), so the tools open each message as they would a real
 * gateway's.
 *
 * It leaves out: checking the command's signature, downloading the image,
 * pushing it to a device, and the journal.
 *
 *   gw_swarm N PREFIX SITE CA.pem CA.key HOST PORT DIR [FIRST]
 *
 * makes gateways PREFIX + FIRST ... PREFIX + FIRST+N-1 (four digits).
 * libmosquitto waits on its sockets with select(), so one process holds at
 * most about 300 clients (three descriptors each, below 1024): the
 * benchmark runs one swarm per 250 gateways.
 *
 * Prints "ready" once every gateway's inventory is on the broker, then runs
 * until it is killed. */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ferry/jws.h"
#include "pki.h"

typedef struct gw {
	char id[64], site[64];
	EVP_PKEY *key;
	STACK_OF(X509) *chain;
	struct mosquitto *m;
	pthread_mutex_t mu;
	char version[65];
	json_t *updates; /* update id -> {"version", "seq"} */
	bool inventory_sent;
} gw;

static atomic_int ready;

/* the payload of a compact JWS (not checked: see above) */
static json_t *payload_of(const char *jws, size_t len)
{
	const char *a = memchr(jws, '.', len), *b = a ? memchr(a + 1, '.', len - (size_t)(a + 1 - jws)) : NULL;
	if (!a || !b)
		return NULL;
	size_t n = (size_t)(b - a - 1);
	if (!n)
		return NULL;
	char *s = calloc(1, n + 4);
	unsigned char *out = malloc(n + 4);
	if (!s || !out) {
		free(s);
		free(out);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		s[i] = a[1 + i] == '-' ? '+' : a[1 + i] == '_' ? '/' : a[1 + i];
	while (n % 4)
		s[n++] = '=';
	int len_out = EVP_DecodeBlock(out, (unsigned char *)s, (int)n);
	while (len_out > 0 && n && s[n - 1] == '=') {
		len_out--;
		n--;
	}
	json_t *j = len_out > 0 ? json_loadb((char *)out, (size_t)len_out, 0, NULL) : NULL;
	free(s);
	free(out);
	return j;
}

static void say(gw *g, const char *kind, json_t *body, bool retain)
{
	ferry_status st = {0};
	char topic[128], *jws = NULL, *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text || ferry_jws_sign(text, strlen(text), g->key, g->chain, "ferry-report", &jws, &st)) {
		fprintf(stderr, "gw_swarm: %s: %s\n", g->id, st.detail);
		free(text);
		return;
	}
	snprintf(topic, sizeof(topic), "ferry/v1/%s/%s", g->id, kind);
	mosquitto_publish_v5(g->m, NULL, topic, (int)strlen(jws), jws, 1, retain, NULL);
	free(text);
	free(jws);
}

static void inventory(gw *g)
{
	json_t *ver = g->version[0] ? json_string(g->version) : json_null();
	say(g, "inventory",
	    json_pack("{s:{s:s,s:s,s:{s:s,s:s}},s:[{s:s,s:s,s:{s:s,s:s},s:{},s:[{s:s,s:o}],s:{},s:b}],s:I}", "gateway",
		      "id", g->id, "ferryd", "swarm", "attributes", "arch", "aarch64", "site", g->site, "devices", "id",
		      "self", "adapter", "self", "identity", "vendor_id", "acme", "class_id", "gateway", "match",
		      "components", "name", "app-config", "version", ver, "attributes", "present", 1, "ts",
		      (json_int_t)time(NULL)),
	    true);
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	gw *g = obj;
	json_t *cmd = payload_of(msg->payload, (size_t)msg->payloadlen);
	const char *op = json_string_value(json_object_get(cmd, "op"));
	const char *jti = json_string_value(json_object_get(cmd, "jti"));
	const char *uid = json_string_value(json_object_get(cmd, "update_id"));
	time_t now = time(NULL);

	if (!op || !jti || !uid) {
		json_decref(cmd);
		return;
	}
	pthread_mutex_lock(&g->mu);
	if (!strcmp(op, "update.deploy")) {
		json_t *man = payload_of(json_string_value(json_object_get(cmd, "manifest")),
					 json_string_length(json_object_get(cmd, "manifest")));
		json_t *c = json_array_get(json_object_get(man, "components"), 0);
		const char *name = json_string_value(json_object_get(c, "name")), *ver = json_string_value(json_object_get(c, "version"));
		if (!name || !ver || json_object_get(g->updates, uid)) {
			say(g, "reply", json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "jti", jti, "op", op, "update_id", uid,
						  "result", "refused", "reason", "wrong_stage", "detail", "exists or no component",
						  "ts", (json_int_t)now), false);
		} else {
			say(g, "reply", json_pack("{s:s,s:s,s:s,s:s,s:I}", "jti", jti, "op", op, "update_id", uid, "result",
						  "accepted", "ts", (json_int_t)now), false);
			say(g, "stage", json_pack("{s:s,s:s,s:s,s:[s],s:i,s:I}", "update_id", uid, "component", name,
						  "stage", "allowed", "devices", "self", "seq", 1, "ts", (json_int_t)now), false);
			say(g, "stage", json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:I}", "update_id", uid, "component", name,
						  "stage", "installed", "device", "self", "version", ver, "seq", 2, "ts",
						  (json_int_t)now), false);
			snprintf(g->version, sizeof(g->version), "%s", ver);
			json_object_set_new(g->updates, uid, json_pack("{s:s,s:s}", "name", name, "version", ver));
			inventory(g);
		}
		json_decref(man);
	} else if (!strcmp(op, "update.status")) {
		json_t *u = json_object_get(g->updates, uid);
		if (!u)
			say(g, "reply", json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "jti", jti, "op", op, "update_id", uid,
						  "result", "refused", "reason", "unknown_update", "detail", "no such update",
						  "ts", (json_int_t)now), false);
		else
			say(g, "reply", json_pack("{s:s,s:s,s:s,s:s,s:I,s:{s:s,s:[{s:O,s:s,s:[{s:s,s:s,s:O}]}]}}", "jti",
						  jti, "op", op, "update_id", uid, "result", "accepted", "ts", (json_int_t)now,
						  "status", "state", "done", "components", "name", json_object_get(u, "name"),
						  "stage", "verified", "steps", "device", "self", "stage", "installed",
						  "version", json_object_get(u, "version")), false);
	} else {
		say(g, "reply", json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "jti", jti, "op", op, "update_id", uid, "result",
					  "refused", "reason", "unsupported", "detail", "the swarm only deploys", "ts",
					  (json_int_t)now), false);
	}
	pthread_mutex_unlock(&g->mu);
	json_decref(cmd);
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags, const mosquitto_property *props)
{
	gw *g = obj;
	char topic[128];
	if (rc)
		return;
	snprintf(topic, sizeof(topic), "ferry/v1/%s/cmd", g->id);
	mosquitto_subscribe_v5(m, NULL, topic, 1, 0, NULL);
	pthread_mutex_lock(&g->mu);
	inventory(g);
	pthread_mutex_unlock(&g->mu);
}

static void on_publish(struct mosquitto *m, void *obj, int mid, int rc, const mosquitto_property *props)
{
	gw *g = obj;
	if (!g->inventory_sent) {
		g->inventory_sent = true; /* the first acknowledgement is the first inventory's */
		ready++;
	}
}

int main(int argc, char **argv)
{
	ferry_status st = {0};
	STACK_OF(X509) *cas = NULL;
	EVP_PKEY *ca_key = NULL;

	if (argc != 9 && argc != 10) {
		fprintf(stderr, "usage: gw_swarm N PREFIX SITE CA.pem CA.key HOST PORT DIR [FIRST]\n");
		return 2;
	}
	int n = atoi(argv[1]), first = argc == 10 ? atoi(argv[9]) : 0;
	if (n > 300) {
		fprintf(stderr, "gw_swarm: at most 300 gateways per process (select() in libmosquitto)\n");
		return 2;
	}
	if (n < 1 || ferry_pki_load_certs(argv[4], &cas, &st) || ferry_pki_load_key(argv[5], &ca_key, &st)) {
		fprintf(stderr, "gw_swarm: %s\n", st.detail);
		return 2;
	}
	mosquitto_lib_init();
	gw *gws = calloc((size_t)n, sizeof(*gws));
	time_t now = time(NULL);
	for (int i = 0; i < n; i++) {
		gw *g = &gws[i];
		X509 *cert = NULL;
		/* at most 32 handshakes at once: a storm of them on a small
		 * machine runs past the broker's connect timeout */
		while (i - ready > 32) {
			struct timespec ts = {0, 5000000};
			nanosleep(&ts, NULL);
		}
		char cp[1100], kp[1100];
		snprintf(g->id, sizeof(g->id), "%s%04d", argv[2], first + i);
		snprintf(g->site, sizeof(g->site), "%s", argv[3]);
		pthread_mutex_init(&g->mu, NULL);
		g->updates = json_object();
		ferry_pki_req req = {.kind = FERRY_PKI_CLIENT, .keytype = FERRY_PKI_P256, .cn = g->id,
				     .not_before = now - 3600, .not_after = now + 86400,
				     .issuer_key = ca_key, .issuer_cert = sk_X509_value(cas, 0)};
		if (ferry_pki_issue(&req, &cert, &g->key, &st) || ferry_pki_write(argv[8], g->id, cert, g->key, &st)) {
			fprintf(stderr, "gw_swarm: %s\n", st.detail);
			return 1;
		}
		g->chain = sk_X509_new_null();
		sk_X509_push(g->chain, cert);
		snprintf(cp, sizeof(cp), "%s/%s.pem", argv[8], g->id);
		snprintf(kp, sizeof(kp), "%s/%s.key", argv[8], g->id);
		g->m = mosquitto_new(g->id, true, g);
		mosquitto_int_option(g->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
		mosquitto_connect_v5_callback_set(g->m, on_connect);
		mosquitto_message_v5_callback_set(g->m, on_message);
		mosquitto_publish_v5_callback_set(g->m, on_publish);
		if (mosquitto_tls_set(g->m, argv[4], NULL, cp, kp, NULL) ||
		    mosquitto_connect_async(g->m, argv[6], atoi(argv[7]), 60) || mosquitto_loop_start(g->m)) {
			fprintf(stderr, "gw_swarm: %s cannot connect to %s:%s\n", g->id, argv[6], argv[7]);
			return 1;
		}
	}
	while (ready < n) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause(); /* the clients' threads answer; SIGTERM ends it */
}
