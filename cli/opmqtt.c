/* The operator's MQTT session over libmosquitto.  The client id is the
 * certificate's CN plus a random suffix, so several tools of one operator
 * run at once (the operator listener lets a client choose its id; see
 * config/mosquitto-ferry.conf).  The session is clean: a tool subscribes
 * before it publishes the command it waits on. */
#include "opmqtt.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOPICS_MAX 16
#define WAIT_MS 30000

struct op_mqtt {
	struct mosquitto *mosq;
	op_msg_fn fn;
	void *ctx;
	char id[64];
	char topics[TOPICS_MAX][256];
	size_t n_topics;
	bool connected, refused, resubscribe;
	int connect_rc;
	struct {
		int mid, reason; /* a PUBACK's or SUBACK's reason code (>= 0x80: refused) */
	} acks[64];
	unsigned n_acks;
	int sync_seen;
	char sync_topic[160], sync_payload[32];
};

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
	op_mqtt *m = obj;
	m->connect_rc = rc;
	if (rc) {
		/* a refusal for good: bad certificate, not authorised */
		if (rc == MQTT_RC_NOT_AUTHORIZED || rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD || rc == MQTT_RC_BANNED)
			m->refused = true;
		fprintf(stderr, "ferry: the broker refused the connection: %s\n", mosquitto_reason_string(rc));
		return;
	}
	m->connected = true;
	m->resubscribe = m->n_topics > 0;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	op_mqtt *m = obj;
	if (m->connected && rc)
		fprintf(stderr, "ferry: lost the broker (%s); reconnecting\n", mosquitto_reason_string(rc));
	m->connected = false;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	op_mqtt *m = obj;
	if (!strcmp(msg->topic, m->sync_topic)) {
		/* a persistent session may bring an earlier run's marker */
		if (msg->payloadlen == (int)strlen(m->sync_payload) &&
		    !memcmp(msg->payload, m->sync_payload, (size_t)msg->payloadlen))
			m->sync_seen++;
		return;
	}
	if (m->fn)
		m->fn(m->ctx, msg->topic, msg->payload ? msg->payload : "", (size_t)msg->payloadlen, msg->retain);
}

static void note_ack(op_mqtt *m, int mid, int reason)
{
	m->acks[m->n_acks % 64].mid = mid;
	m->acks[m->n_acks % 64].reason = reason;
	m->n_acks++;
}

static void on_ack(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
	note_ack(obj, mid, reason);
}

static void on_suback(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted,
		      const mosquitto_property *props)
{
	int worst = 0;
	for (int i = 0; i < n; i++)
		worst = granted[i] > worst ? granted[i] : worst;
	note_ack(obj, mid, worst);
}

/* the reason code acknowledged for mid, or -1 while none came */
static int ack_of(const op_mqtt *m, int mid)
{
	unsigned n = m->n_acks < 64 ? m->n_acks : 64;
	for (unsigned i = 0; i < n; i++)
		if (m->acks[i].mid == mid)
			return m->acks[i].reason;
	return -1;
}

/* loop until *flag, *val == want, or an acknowledgement of mid (>= 0)
 * comes, or the deadline passes */
static bool wait_for(op_mqtt *m, const int *val, int want, const bool *flag, int mid)
{
	long long end = now_ms() + WAIT_MS;
	for (;;) {
		if ((flag && *flag) || (val && *val == want) || (mid >= 0 && ack_of(m, mid) >= 0))
			return true;
		if (now_ms() >= end || m->refused)
			return false;
		int rc = mosquitto_loop(m->mosq, 200, 1);
		if (rc != MOSQ_ERR_SUCCESS && !flag)
			return false; /* the connection went: what was asked is lost with it */
		if (rc != MOSQ_ERR_SUCCESS) {
			struct timespec pause = {0, 200 * 1000000L};
			nanosleep(&pause, NULL);
			mosquitto_reconnect(m->mosq);
		}
	}
}

ferry_err op_mqtt_connect(const op_config *c, op_msg_fn fn, void *ctx, op_mqtt **out, ferry_status *st)
{
	return op_mqtt_connect_as(c, NULL, fn, ctx, out, st);
}

ferry_err op_mqtt_connect_as(const op_config *c, const char *session, op_msg_fn fn, void *ctx, op_mqtt **out,
			     ferry_status *st)
{
	op_mqtt *m = calloc(1, sizeof(*m));
	unsigned char r[6];
	mosquitto_property *props = NULL;
	int rc;

	if (!m)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	mosquitto_lib_init();
	if (RAND_bytes(r, sizeof(r)) != 1) {
		free(m);
		return ferry_fail(st, FERRY_E_INTERNAL, "no random bytes for the client id");
	}
	snprintf(m->id, sizeof(m->id), "ferry-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5]);
	snprintf(m->sync_payload, sizeof(m->sync_payload), "sync-%s", m->id + 6);
	if (session)
		snprintf(m->id, sizeof(m->id), "%s", session);
	snprintf(m->sync_topic, sizeof(m->sync_topic), "ferry/v1/_operator/sync/%s", m->id);
	m->fn = fn;
	m->ctx = ctx;
	m->mosq = mosquitto_new(m->id, !session, m);
	if (!m->mosq) {
		free(m);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	if ((rc = mosquitto_tls_set(m->mosq, c->broker.ca, NULL, c->broker.cert, c->broker.key, NULL)) ||
	    (rc = mosquitto_tls_opts_set(m->mosq, 1, "tlsv1.2", NULL))) {
		op_mqtt_free(m);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: broker TLS files (ca, cert, key): %s", c->file,
				  mosquitto_strerror(rc));
	}
	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_message_v5_callback_set(m->mosq, on_message);
	mosquitto_publish_v5_callback_set(m->mosq, on_ack);
	mosquitto_subscribe_v5_callback_set(m->mosq, on_suback);
	m->connect_rc = -1;
	/* a kept session outlives the client for a week: what gateways report
	 * meanwhile waits for it on the broker */
	if (session && mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 7 * 86400)) {
		op_mqtt_free(m);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	rc = mosquitto_connect_bind_v5(m->mosq, c->broker.host, c->broker.port, c->broker.keepalive_s, NULL, props);
	mosquitto_property_free_all(&props);
	if (rc != MOSQ_ERR_SUCCESS || !wait_for(m, NULL, 0, &m->connected, -1)) {
		ferry_err e = ferry_fail(st, FERRY_E_INTERNAL, "cannot connect to the broker %s:%d: %s", c->broker.host,
					 c->broker.port,
					 rc ? mosquitto_strerror(rc)
					    : m->connect_rc > 0 ? mosquitto_reason_string(m->connect_rc) : "no answer");
		op_mqtt_free(m);
		return e;
	}
	m->resubscribe = false;
	int mid;
	if (mosquitto_subscribe_v5(m->mosq, &mid, m->sync_topic, 1, 0, NULL) != MOSQ_ERR_SUCCESS ||
	    !wait_for(m, NULL, 0, NULL, mid) || ack_of(m, mid) >= 0x80) {
		op_mqtt_free(m);
		return ferry_fail(st, FERRY_E_INTERNAL, "the broker did not acknowledge a subscription");
	}
	*out = m;
	return FERRY_OK;
}

ferry_err op_mqtt_subscribe(op_mqtt *m, const char *topic, ferry_status *st)
{
	int mid;

	if (m->n_topics == TOPICS_MAX)
		return ferry_fail(st, FERRY_E_INTERNAL, "too many subscriptions");
	snprintf(m->topics[m->n_topics++], sizeof(m->topics[0]), "%s", topic);
	if (mosquitto_subscribe_v5(m->mosq, &mid, topic, 1, 0, NULL) != MOSQ_ERR_SUCCESS ||
	    !wait_for(m, NULL, 0, NULL, mid))
		return ferry_fail(st, FERRY_E_INTERNAL, "the broker did not acknowledge the subscription to %s", topic);
	if (ack_of(m, mid) >= 0x80)
		return ferry_fail(st, FERRY_E_INTERNAL, "the broker refused the subscription to %s: %s", topic,
				  mosquitto_reason_string(ack_of(m, mid)));
	return FERRY_OK;
}

ferry_err op_mqtt_publish(op_mqtt *m, const char *topic, const char *payload, ferry_status *st)
{
	int mid, rc = mosquitto_publish_v5(m->mosq, &mid, topic, (int)strlen(payload), payload, 1, false, NULL);

	if (rc != MOSQ_ERR_SUCCESS || !wait_for(m, NULL, 0, NULL, mid))
		return ferry_fail(st, FERRY_E_INTERNAL, "publish on %s: %s", topic,
				  rc ? mosquitto_strerror(rc) : "the broker did not acknowledge it");
	/* 0x10, no matching subscribers, is success: a gateway away has a session */
	if (ack_of(m, mid) >= 0x80)
		return ferry_fail(st, FERRY_E_INTERNAL, "the broker refused the message on %s: %s", topic,
				  mosquitto_reason_string(ack_of(m, mid)));
	return FERRY_OK;
}

ferry_err op_mqtt_sync(op_mqtt *m, ferry_status *st)
{
	int want = m->sync_seen + 1; /* the marker may come back before the PUBACK */
	ferry_err e = op_mqtt_publish(m, m->sync_topic, m->sync_payload, st);

	if (e)
		return e;
	if (!wait_for(m, &m->sync_seen, want, NULL, -1))
		return ferry_fail(st, FERRY_E_INTERNAL, "the broker did not return the marker message");
	return FERRY_OK;
}

bool op_mqtt_loop(op_mqtt *m, int timeout_ms)
{
	if (m->refused)
		return false;
	int rc = mosquitto_loop(m->mosq, timeout_ms, 1);
	if (rc != MOSQ_ERR_SUCCESS) {
		struct timespec pause = {1, 0};
		nanosleep(&pause, NULL);
		mosquitto_reconnect(m->mosq);
		return !m->refused;
	}
	if (m->resubscribe) {
		m->resubscribe = false;
		mosquitto_subscribe_v5(m->mosq, NULL, m->sync_topic, 1, 0, NULL);
		for (size_t i = 0; i < m->n_topics; i++)
			mosquitto_subscribe_v5(m->mosq, NULL, m->topics[i], 1, 0, NULL);
	}
	return !m->refused;
}

void op_mqtt_free(op_mqtt *m)
{
	if (!m)
		return;
	if (m->connected)
		mosquitto_disconnect(m->mosq);
	mosquitto_destroy(m->mosq);
	free(m);
	mosquitto_lib_cleanup();
}
