/* The cloud session: MQTT 5 over TLS with the gateway's client certificate.
 * This is the one file that talks to libmosquitto. */
#ifndef FERRY_CLOUD_H
#define FERRY_CLOUD_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "ferry/err.h"

typedef struct ferry_cloud ferry_cloud;

typedef struct ferry_cloud_events {
	void *ctx;
	/* A message on P/cmd.  One larger than FERRY_JWS_MAX comes without its
	 * bytes: payload NULL, len its size.  Called on the session's thread:
	 * copy and hand over, do not block. */
	void (*command)(void *ctx, const char *payload, size_t len);
	/* Connected (again): subscriptions are in place, state is online. */
	void (*connected)(void *ctx);
	/* The broker has a QoS 1 message we published (PUBACK). */
	void (*published)(void *ctx, int mid);
} ferry_cloud_events;

/* Start the session thread; it connects, and reconnects after any loss with
 * capped exponential backoff and jitter.  Returns once the thread runs, not
 * once connected. */
ferry_err ferry_cloud_start(const ferry_config *cfg, const ferry_cloud_events *ev, ferry_cloud **out,
			    ferry_status *st) FERRY_WUR;
/* Publish on P/<suffix> at QoS 1.  *mid (may be NULL) identifies it for the
 * `published` event.  Fails (internal) when not connected; the caller keeps
 * what must not be lost in its outbox and publishes it again on connect. */
ferry_err ferry_cloud_publish(ferry_cloud *c, const char *suffix, const char *payload, bool retain, int *mid,
			      ferry_status *st) FERRY_WUR;
bool ferry_cloud_connected(ferry_cloud *c);
/* Publish state offline (retained), disconnect cleanly, join the thread. */
void ferry_cloud_stop(ferry_cloud *c);

#endif
