/* The operator's MQTT session: MQTT 5 over TLS with the operator's client
 * certificate, on the broker's operator listener.  Single-threaded: the
 * caller turns the loop, and messages arrive through a callback from it. */
#ifndef FERRY_CLI_OPMQTT_H
#define FERRY_CLI_OPMQTT_H

#include <stdbool.h>
#include <stddef.h>

#include "ferry/err.h"
#include "opconfig.h"

typedef struct op_mqtt op_mqtt;
typedef void (*op_msg_fn)(void *ctx, const char *topic, const char *payload, size_t len, bool retained);

/* Connects (waiting up to 30 s for the broker's answer). */
ferry_err op_mqtt_connect(const op_config *c, op_msg_fn fn, void *ctx, op_mqtt **out, ferry_status *st) FERRY_WUR;
/* The same with a kept session named `session` (the client id): the
 * broker keeps its subscriptions and queues what comes for it while it is
 * away (ferry campaign run). */
ferry_err op_mqtt_connect_as(const op_config *c, const char *session, op_msg_fn fn, void *ctx, op_mqtt **out,
			     ferry_status *st) FERRY_WUR;
/* Subscribes at QoS 1 and waits for the broker's acknowledgement; after a
 * lost connection the loop subscribes again. */
ferry_err op_mqtt_subscribe(op_mqtt *m, const char *topic, ferry_status *st) FERRY_WUR;
/* Publishes at QoS 1 (not retained) and waits until the broker has it. */
ferry_err op_mqtt_publish(op_mqtt *m, const char *topic, const char *payload, ferry_status *st) FERRY_WUR;
/* Waits until every message the broker queued for this session before the
 * call has arrived (retained ones included): a marker message to itself. */
ferry_err op_mqtt_sync(op_mqtt *m, ferry_status *st) FERRY_WUR;
/* Runs the loop for up to timeout_ms, reconnecting after a loss.  False once
 * the broker has refused this client for good (the reason is printed). */
bool op_mqtt_loop(op_mqtt *m, int timeout_ms);
void op_mqtt_free(op_mqtt *m);

#endif
