/* Fills a broker with N gateways' retained inventories, each signed as a
 * gateway signs it: a client certificate per gateway (CN gw-NNNNN) issued
 * by the given CA, an ES256 JWS with that certificate in x5c.  Published as
 * the operator (who may write on ferry/v1/#) on the operator listener.
 * For bench/fleet_scale.sh.
 *
 *   fleet_fill N CA.pem CA.key HOST PORT BROKER-CA.pem OP.pem OP.key
 */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/jws.h"
#include "pki.h"

static atomic_int acked; /* PUBACKs, counted on the network thread */

static void on_publish(struct mosquitto *m, void *obj, int mid, int rc, const mosquitto_property *p)
{
	acked++;
}

int main(int argc, char **argv)
{
	ferry_status st = {0};
	STACK_OF(X509) *cas = NULL;
	EVP_PKEY *ca_key = NULL;

	if (argc != 9) {
		fprintf(stderr, "usage: fleet_fill N CA.pem CA.key HOST PORT BROKER-CA.pem OP.pem OP.key\n");
		return 2;
	}
	int n = atoi(argv[1]);
	if (ferry_pki_load_certs(argv[2], &cas, &st) || ferry_pki_load_key(argv[3], &ca_key, &st)) {
		fprintf(stderr, "fleet_fill: %s\n", st.detail);
		return 2;
	}
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new("fleet-fill", true, NULL);
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_publish_v5_callback_set(m, on_publish);
	if (mosquitto_tls_set(m, argv[6], NULL, argv[7], argv[8], NULL) ||
	    mosquitto_connect(m, argv[4], atoi(argv[5]), 60) || mosquitto_loop_start(m)) {
		fprintf(stderr, "fleet_fill: cannot connect to %s:%s\n", argv[4], argv[5]);
		return 2;
	}
	time_t now = time(NULL);
	static const char *const sites[] = {"hall-1", "hall-2", "hall-3", "yard"};
	for (int i = 0; i < n; i++) {
		char cn[32], topic[64], inv[1024], *jws = NULL;
		X509 *cert = NULL;
		EVP_PKEY *key = NULL;
		snprintf(cn, sizeof(cn), "gw-%05d", i);
		ferry_pki_req req = {.kind = FERRY_PKI_CLIENT, .keytype = FERRY_PKI_P256, .cn = cn,
				     .not_before = now - 3600, .not_after = now + 86400,
				     .issuer_key = ca_key, .issuer_cert = sk_X509_value(cas, 0)};
		if (ferry_pki_issue(&req, &cert, &key, &st)) {
			fprintf(stderr, "fleet_fill: %s\n", st.detail);
			return 1;
		}
		STACK_OF(X509) *chain = sk_X509_new_null();
		sk_X509_push(chain, cert);
		snprintf(inv, sizeof(inv),
			 "{\"gateway\":{\"id\":\"%s\",\"ferryd\":\"0.1.0\",\"attributes\":{\"arch\":\"aarch64\",\"site\":\"%s\"}},"
			 "\"devices\":[{\"id\":\"self\",\"adapter\":\"self\",\"components\":[{\"name\":\"app-config\","
			 "\"version\":\"1.%d.0\"}],\"present\":true},{\"id\":\"serial-ttyS0\",\"adapter\":\"serial-smp\","
			 "\"components\":[{\"name\":\"sensor-fw\",\"version\":\"2.%d.0\"}],\"present\":true}],\"ts\":%lld}",
			 cn, sites[i % 4], i % 3, i % 5, (long long)now);
		if (ferry_jws_sign(inv, strlen(inv), key, chain, "ferry-report", &jws, &st)) {
			fprintf(stderr, "fleet_fill: %s\n", st.detail);
			return 1;
		}
		snprintf(topic, sizeof(topic), "ferry/v1/%s/inventory", cn);
		while (mosquitto_publish_v5(m, NULL, topic, (int)strlen(jws), jws, 1, true, NULL) == MOSQ_ERR_NOMEM) {
			struct timespec ts = {0, 10000000};
			nanosleep(&ts, NULL);
		}
		free(jws);
		sk_X509_pop_free(chain, X509_free);
		EVP_PKEY_free(key);
	}
	while (acked < n) {
		struct timespec ts = {0, 20000000};
		nanosleep(&ts, NULL);
	}
	mosquitto_disconnect(m);
	mosquitto_loop_stop(m, false);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	printf("%d signed inventories retained\n", n);
	return 0;
}
