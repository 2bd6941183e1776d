/* The cloud session over libmosquitto.
 *
 * One thread owns the connection: it runs the network loop and, after any
 * loss, waits min(max, min * 2^n) scaled by a random factor in [0.5, 1) before
 * reconnecting, so a fleet that lost its broker does not come back in
 * lock-step.
 *
 * The loop is silent while nothing happens: it sleeps in poll() on the
 * broker's socket and an eventfd, and its only timer is the keepalive (the
 * next PINGREQ is due a keepalive after the last packet either way).  Other
 * threads queue packets with libmosquitto (threaded mode: it never writes
 * from them) and write the eventfd, so the loop asks for POLLOUT.  The session is persistent (clean start off, a session expiry
 * interval), so QoS 1 commands sent while the gateway was away are delivered
 * when it returns.  The will is the retained state "offline".
 */
#include "cloud.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ferry/jws.h"
#include "log.h"

/* A week: commands queued for a gateway that is off for a weekend survive. */
#define SESSION_EXPIRY_S (7 * 24 * 3600)

struct ferry_cloud {
	struct mosquitto *mosq;
	ferry_cloud_events ev;
	char prefix[256];
	char host[256];
	int port, keepalive;
	int backoff_min_ms, backoff_max_ms;
	pthread_t thread;
	atomic_bool stop, connected;
	int wake; /* eventfd: a packet was queued, or stop */
	/* reports.sign: the broker identity signs what the gateway says */
	EVP_PKEY *sign_key;
	STACK_OF(X509) *sign_chain;
};

static void topic(const ferry_cloud *c, const char *suffix, char *out, size_t n)
{
	snprintf(out, n, "%s/%s", c->prefix, suffix);
}

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags, const mosquitto_property *props)
{
	ferry_cloud *c = obj;
	char t[300];
	static const char online[] = "{\"state\":\"online\"}";

	if (rc) {
		ferry_log(LOG_WARNING, "broker refused the connection: %s", mosquitto_reason_string(rc));
		return;
	}
	topic(c, "cmd", t, sizeof(t));
	if (mosquitto_subscribe_v5(m, NULL, t, 1, 0, NULL) != MOSQ_ERR_SUCCESS)
		ferry_log(LOG_ERR, "cannot subscribe to %s", t);
	topic(c, "state", t, sizeof(t));
	mosquitto_publish_v5(m, NULL, t, (int)strlen(online), online, 1, true, NULL);
	atomic_store(&c->connected, true);
	ferry_log(LOG_INFO, "connected to %s:%d", c->host, c->port);
	if (c->ev.connected)
		c->ev.connected(c->ev.ctx);
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc, const mosquitto_property *props)
{
	ferry_cloud *c = obj;

	atomic_store(&c->connected, false);
	if (!atomic_load(&c->stop))
		ferry_log(LOG_WARNING, "disconnected from the broker: %s",
			  rc ? mosquitto_reason_string(rc) : "by request");
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
		       const mosquitto_property *props)
{
	ferry_cloud *c = obj;

	if (msg->payloadlen < 0 || msg->payloadlen > FERRY_JWS_MAX) {
		/* too big to look at: the engine answers it without its bytes */
		ferry_log(LOG_WARNING, "a command of %d bytes is over the limit of %d", msg->payloadlen, FERRY_JWS_MAX);
		if (c->ev.command)
			c->ev.command(c->ev.ctx, NULL, msg->payloadlen < 0 ? 0 : (size_t)msg->payloadlen);
		return;
	}
	if (c->ev.command)
		c->ev.command(c->ev.ctx, msg->payload ? msg->payload : "", (size_t)msg->payloadlen);
}

static void on_publish(struct mosquitto *m, void *obj, int mid, int reason, const mosquitto_property *props)
{
	ferry_cloud *c = obj;

	if (reason >= 0x80) {
		ferry_log(LOG_WARNING, "broker refused message %d: %s", mid, mosquitto_reason_string(reason));
		return;
	}
	if (c->ev.published)
		c->ev.published(c->ev.ctx, mid);
}

static int connect_once(ferry_cloud *c)
{
	mosquitto_property *props = NULL;
	int rc;

	mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, SESSION_EXPIRY_S);
	rc = mosquitto_connect_bind_v5(c->mosq, c->host, c->port, c->keepalive, NULL, props);
	mosquitto_property_free_all(&props);
	return rc;
}

static long jittered(long base_ms)
{
	unsigned short r = 0;
	RAND_bytes((unsigned char *)&r, sizeof(r));
	return base_ms / 2 + (long)((base_ms / 2) * (r / 65536.0));
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wake(ferry_cloud *c)
{
	uint64_t one = 1;
	if (write(c->wake, &one, sizeof(one)) < 0) {
		/* the counter is full: the loop is awake anyway */
	}
}

static void drain(ferry_cloud *c)
{
	uint64_t n;
	if (read(c->wake, &n, sizeof(n)) < 0) {
		/* nothing to take: EAGAIN */
	}
}

/* Wait up to ms, or until stop. */
static void nap(ferry_cloud *c, long ms)
{
	int64_t end = mono_ms() + ms;
	while (!atomic_load(&c->stop)) {
		int64_t left = end - mono_ms();
		if (left <= 0)
			break;
		struct pollfd pf = {.fd = c->wake, .events = POLLIN};
		if (poll(&pf, 1, (int)left) > 0)
			drain(c);
	}
}

/* One turn of the connected loop: wait for the socket, a queued packet or
 * the keepalive, then let libmosquitto read, write and keep time.  last_in
 * and last_out are when this loop last read and wrote (ms): libmosquitto
 * sends its PINGREQ once a keepalive has passed since either, and checks
 * only when called, so the wait ends a second after the earlier is due
 * (its clock counts whole seconds).  When that wait ends, libmosquitto has
 * sent its PINGREQ (and counts from it, as this loop then does) or found
 * an unanswered one and given up on the connection.
 *
 * TLS keeps a record it has decrypted but not handed out where poll()
 * cannot see it: while OpenSSL holds bytes, the loop reads without
 * waiting.  The socket is read on any readiness, writable included, which
 * is also what takes a TLS handshake that wanted to write further. */
static int turn(ferry_cloud *c, int64_t *last_in, int64_t *last_out)
{
	int sock = mosquitto_socket(c->mosq);
	SSL *ssl = mosquitto_ssl_get(c->mosq);
	int rc;

	if (sock < 0)
		return MOSQ_ERR_NO_CONN;
	struct pollfd pf[2] = {{.fd = sock, .events = POLLIN}, {.fd = c->wake, .events = POLLIN}};
	if (mosquitto_want_write(c->mosq))
		pf[0].events |= POLLOUT;
	bool held = ssl && SSL_pending(ssl) > 0;
	int64_t due = (*last_in < *last_out ? *last_in : *last_out) + (int64_t)c->keepalive * 1000 + 1000;
	int64_t left = held ? 0 : due - mono_ms();
	int n = poll(pf, 2, left < 0 ? 0 : left > 3600000 ? 3600000 : (int)left);
	if (n < 0)
		pf[0].revents = pf[1].revents = 0; /* EINTR: look again */
	if (pf[1].revents & POLLIN)
		drain(c);
	if (held || (pf[0].revents & (POLLIN | POLLOUT | POLLERR | POLLHUP))) {
		if (held || (pf[0].revents & (POLLIN | POLLERR | POLLHUP)))
			*last_in = mono_ms();
		if ((rc = mosquitto_loop_read(c->mosq, 1)))
			return rc;
	}
	if ((rc = mosquitto_loop_misc(c->mosq)))
		return rc;
	if (n == 0 && !held) /* the keepalive's turn: a PINGREQ went out, or nothing was due */
		*last_in = *last_out = mono_ms();
	/* what the read or the keepalive queued goes out in this turn */
	if (mosquitto_want_write(c->mosq)) {
		*last_out = mono_ms();
		if ((rc = mosquitto_loop_write(c->mosq, 1)))
			return rc;
	}
	return MOSQ_ERR_SUCCESS;
}

static void *run(void *arg)
{
	ferry_cloud *c = arg;
	long delay = c->backoff_min_ms;
	bool up = false;
	int64_t last_in = 0, last_out = 0;

	while (!atomic_load(&c->stop)) {
		int rc;
		if (up) {
			rc = turn(c, &last_in, &last_out);
		} else {
			rc = connect_once(c);
			last_in = last_out = mono_ms();
		}
		if (rc == MOSQ_ERR_SUCCESS) {
			up = true;
			/* Only a session the broker accepted resets the backoff:
			 * a TCP connect that ends in a refused CONNACK does not. */
			if (atomic_load(&c->connected))
				delay = c->backoff_min_ms;
			continue;
		}
		if (atomic_load(&c->stop))
			break;
		atomic_store(&c->connected, false);
		ferry_log(LOG_WARNING, "broker %s:%d: %s; retrying in about %ld ms", c->host, c->port,
			  mosquitto_strerror(rc), delay);
		mosquitto_disconnect(c->mosq);
		up = false;
		nap(c, jittered(delay));
		delay = delay * 2 > c->backoff_max_ms ? c->backoff_max_ms : delay * 2;
	}
	return NULL;
}

/* The gateway's client key and certificate chain (leaf first), for
 * signing replies, stage reports and the inventory. */
static ferry_err load_signer(ferry_cloud *c, const ferry_config *cfg, ferry_status *st)
{
	FILE *f = fopen(cfg->broker.key, "r");
	X509 *x;

	if (!f || !(c->sign_key = PEM_read_PrivateKey(f, NULL, NULL, NULL))) {
		if (f)
			fclose(f);
		return ferry_fail(st, FERRY_E_MALFORMED, "broker.key %s: no private key to sign reports with",
				  cfg->broker.key);
	}
	fclose(f);
	if (!(f = fopen(cfg->broker.cert, "r")) || !(c->sign_chain = sk_X509_new_null())) {
		if (f)
			fclose(f);
		return ferry_fail(st, FERRY_E_MALFORMED, "broker.cert %s: unreadable", cfg->broker.cert);
	}
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)))
		sk_X509_push(c->sign_chain, x);
	ERR_clear_error(); /* the end of the file */
	fclose(f);
	if (sk_X509_num(c->sign_chain) < 1 || X509_check_private_key(sk_X509_value(c->sign_chain, 0), c->sign_key) != 1)
		return ferry_fail(st, FERRY_E_MALFORMED, "broker.cert %s does not hold the certificate of broker.key",
				  cfg->broker.cert);
	return FERRY_OK;
}

static void free_signer(ferry_cloud *c)
{
	EVP_PKEY_free(c->sign_key);
	sk_X509_pop_free(c->sign_chain, X509_free);
	c->sign_key = NULL;
	c->sign_chain = NULL;
}

static ferry_err setup(ferry_cloud *c, const ferry_config *cfg, ferry_status *st)
{
	char t[300];
	static const char offline[] = "{\"state\":\"offline\"}";
	int rc;

	c->mosq = mosquitto_new(cfg->gateway_id, false, c);
	if (!c->mosq)
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot create the MQTT client");
	if (cfg->reports.sign && (rc = load_signer(c, cfg, st)))
		return (ferry_err)rc;
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_threaded_set(c->mosq, true);
	if ((rc = mosquitto_tls_set(c->mosq, cfg->broker.ca, NULL, cfg->broker.cert, cfg->broker.key, NULL)) ||
	    (rc = mosquitto_tls_opts_set(c->mosq, 1, "tlsv1.2", NULL)))
		return ferry_fail(st, FERRY_E_MALFORMED, "broker TLS files (ca, cert, key): %s", mosquitto_strerror(rc));
	topic(c, "state", t, sizeof(t));
	if ((rc = mosquitto_will_set_v5(c->mosq, t, (int)strlen(offline), offline, 1, true, NULL)))
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot set the will: %s", mosquitto_strerror(rc));
	mosquitto_connect_v5_callback_set(c->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
	mosquitto_message_v5_callback_set(c->mosq, on_message);
	mosquitto_publish_v5_callback_set(c->mosq, on_publish);
	return FERRY_OK;
}

ferry_err ferry_cloud_start(const ferry_config *cfg, const ferry_cloud_events *ev, ferry_cloud **out,
			    ferry_status *st)
{
	ferry_cloud *c = calloc(1, sizeof(*c));
	ferry_err e;

	if (!c)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	if ((c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		free(c);
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot make the MQTT loop's eventfd");
	}
	mosquitto_lib_init();
	c->ev = *ev;
	snprintf(c->prefix, sizeof(c->prefix), "%s", cfg->topic_prefix);
	snprintf(c->host, sizeof(c->host), "%s", cfg->broker.host);
	c->port = cfg->broker.port;
	c->keepalive = cfg->broker.keepalive_s;
	c->backoff_min_ms = cfg->broker.reconnect_min_ms;
	c->backoff_max_ms = cfg->broker.reconnect_max_ms;
	if ((e = setup(c, cfg, st))) {
		mosquitto_destroy(c->mosq);
		free_signer(c);
		close(c->wake);
		free(c);
		return e;
	}
	if (pthread_create(&c->thread, NULL, run, c)) {
		mosquitto_destroy(c->mosq);
		free_signer(c);
		close(c->wake);
		free(c);
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot start the MQTT thread");
	}
	*out = c;
	return FERRY_OK;
}

ferry_err ferry_cloud_publish(ferry_cloud *c, const char *suffix, const char *payload, bool retain, int *mid,
			      ferry_status *st)
{
	char t[300];
	int rc;

	if (!atomic_load(&c->connected))
		return ferry_fail(st, FERRY_E_INTERNAL, "not connected to the broker");
	topic(c, suffix, t, sizeof(t));
	char *jws = NULL;
	if (c->sign_key && strcmp(suffix, "state")) {
		/* a compact JWS whose x5c is this gateway's certificate: whoever can
		 * publish on these topics cannot speak for the gateway */
		ferry_err e = ferry_jws_sign(payload, strlen(payload), c->sign_key, c->sign_chain, "ferry-report", &jws, st);
		if (e)
			return e;
		payload = jws;
	}
	rc = mosquitto_publish_v5(c->mosq, mid, t, (int)strlen(payload), payload, 1, retain, NULL);
	free(jws);
	wake(c); /* the loop writes it */
	if (rc)
		return ferry_fail(st, FERRY_E_INTERNAL, "publish on %s: %s", t, mosquitto_strerror(rc));
	return FERRY_OK;
}

bool ferry_cloud_connected(ferry_cloud *c)
{
	return atomic_load(&c->connected);
}

void ferry_cloud_stop(ferry_cloud *c)
{
	char t[300];
	static const char offline[] = "{\"state\":\"offline\"}";

	if (!c)
		return;
	if (atomic_load(&c->connected)) {
		topic(c, "state", t, sizeof(t));
		mosquitto_publish_v5(c->mosq, NULL, t, (int)strlen(offline), offline, 1, true, NULL);
		wake(c);
		/* Give the loop a moment to flush it before the clean disconnect. */
		struct timespec ts = {0, 200 * 1000000L};
		nanosleep(&ts, NULL);
	}
	atomic_store(&c->stop, true);
	wake(c);
	pthread_join(c->thread, NULL);
	mosquitto_disconnect(c->mosq);
	mosquitto_destroy(c->mosq);
	mosquitto_lib_cleanup();
	free_signer(c);
	close(c->wake);
	free(c);
}
