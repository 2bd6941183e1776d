/* The SMP client flow that the serial and BLE adapters share: requests with
 * bounded retries matched by sequence number, image state, os params, the
 * upload with its resume rules, test boot, reset, confirm and abort.
 *
 * A transport moves whole SMP packets and knows its link; the client knows
 * SMP and MCUboot.  The adapters are a transport plus their config. */
#ifndef FERRY_SMP_CLIENT_H
#define FERRY_SMP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/adapter.h"
#include "smp.h"

typedef struct smp_transport_ops {
	/* Send one SMP packet.  0, or -1 when the link is down (the client
	 * then reconnects). */
	int (*send)(void *t, const uint8_t *pkt, size_t len);
	/* Wait until deadline_ms (monotonic) for one packet from the device,
	 * into buf (SMP_PACKET_MAX bytes).  1: a packet of *len bytes; 0: the
	 * deadline passed; -1: the link is down. */
	int (*recv)(void *t, uint8_t *buf, size_t *len, int64_t deadline_ms);
	/* Bring the link back by deadline_ms.  after_reset: the device was told
	 * to reset, so its link is expected to drop first.  0, or an adapter
	 * error code with detail filled in. */
	int (*reconnect)(void *t, bool after_reset, int64_t deadline_ms, char *detail);
	/* The largest SMP packet to send, given the device's buffer size from
	 * `os params` (0 when it did not say); 0 when the transport does not
	 * know either. */
	size_t (*max_packet)(void *t, size_t dev_buf);
	/* Requests the link carries at once, answers matched by sequence
	 * number (0 or 1: one at a time).  An upload sends up to this many,
	 * within what the device's buffers hold. */
	unsigned max_in_flight;
} smp_transport_ops;

typedef struct smp_client_cfg {
	long timeout_ms;       /* wait for an answer */
	long first_timeout_ms; /* wait for the first upload answer (the device erases) */
	long reset_wait_ms;    /* wait for the device after a reset or a lost link */
	long chunk;            /* upper bound on data bytes per upload request; 0: none */
	int retries;           /* resends of one request, reconnects, restarts */
} smp_client_cfg;

/* Room an upload request needs besides its data, at most: header, keys,
 * len, off, sha, image, CBOR heads (a first request needs 74-79 bytes, the
 * rest 20-31; each request's size is measured as it is built).  Bounds the
 * `chunk` setting. */
#define SMP_UPLOAD_OVERHEAD 96
/* Fewer data bytes per request than this: the link is too small. */
#define SMP_UPLOAD_MIN_CHUNK 32
/* The most upload requests in flight, whatever the device says. */
#define SMP_WINDOW_MAX 8

typedef struct smp_client {
	const smp_transport_ops *ops;
	void *t;
	const char *name; /* the device in messages: a tty path, a BLE address */
	smp_client_cfg cfg;
	const ferry_host_v1 *host;       /* logging */
	const ferry_session_host_v1 *sh; /* progress and cancel; NULL outside a session */
	uint8_t seq;
	size_t dev_buf;       /* from os params; 0 until read or when not said */
	unsigned dev_bufs;    /* buf_count from os params; 0 when not said */
	unsigned relinks;     /* links brought back in this session */
	uint8_t new_hash[32]; /* MCUboot SHA256 TLV of the image being installed */
	bool have_hash;
	/* a test mark may have been written (even if its answer was lost):
	 * abort asks the device and resets until nothing of the new image is
	 * pending or on trial */
	bool tested;
} smp_client;

void smp_client_init(smp_client *c, const smp_transport_ops *ops, void *t, const char *name, const smp_client_cfg *cfg,
		     const ferry_host_v1 *host, const ferry_session_host_v1 *sh);

/* One request and its answer (same sequence number, group, command), sent
 * again with the same content when no answer comes, at most cfg.retries
 * times; the first attempt waits first_ms.  A lost link is brought back and
 * counts as an attempt.  *resp is a CBOR map the caller frees. */
int smp_client_request(smp_client *c, uint8_t op, uint16_t group, uint8_t id, const cbor_item_t *body, long first_ms,
		       cbor_item_t **resp, char *detail);

/* The active slot of image 0: its version and MCUboot hash. */
int smp_client_read_state(smp_client *c, char version[FERRY_ADAPTER_STR_MAX], uint8_t hash[32], char *detail);

/* The image against the device: an MCUboot image whose header version is
 * the manifest's, and a device that answers `image state`. */
int smp_client_check(smp_client *c, const ferry_image_v1 *img, char *detail);

/* Upload into the secondary slot; *resume_from follows the acknowledged
 * offset. */
int smp_client_upload(smp_client *c, const ferry_image_v1 *img, uint64_t *resume_from, char *detail);

/* Mark the new image for a test boot, reset, and wait until the device has
 * really booted: image state no longer lists the new image as pending in
 * the secondary slot.  A reset that did not happen is sent again. */
int smp_client_activate(smp_client *c, char *detail);

/* Read back: the new image must be active (on trial, or confirmed
 * already); its version goes to `version`.  A new image still pending means
 * the device has not booted it yet (a reset on its way, or ferryd stopped
 * before it sent one): wait for that, resetting it if need be, within
 * reset_wait_ms.  Nothing is made permanent here.  In a fresh session the
 * hash to look for comes from img. */
int smp_client_confirm(smp_client *c, const ferry_image_v1 *img, char version[FERRY_ADAPTER_STR_MAX], char *detail);

/* Make the new image that runs on trial permanent (`image state` write
 * {confirm: true}).  0 also when it was confirmed already.  The outcome is
 * what the device lists: a confirm whose answer was lost succeeded when the
 * new image shows as active and confirmed. */
int smp_client_commit(smp_client *c, const ferry_image_v1 *img, char *detail);

/* Put the device back on its old image: reset so that MCUboot reverts, as
 * often as the device's state asks for (a pending image first boots on
 * trial, then reverts).  0 when the device runs its old image and nothing of
 * the new one is pending or on trial; an error when it cannot be reached or
 * runs the new image for good.  Works in a fresh session: the hash to look
 * for comes from img. */
int smp_client_abort(smp_client *c, const ferry_image_v1 *img, char *detail);

/* Shared by the adapters for their own messages. */
#define smp_fail ferry_adapter_fail
void smp_log(const ferry_host_v1 *host, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int64_t smp_now_ms(void);

#endif
