/* What updates that run at once share: device sessions, the devices an
 * install holds, and images being downloaded (claims.c). */
#ifndef FERRY_CLAIMS_H
#define FERRY_CLAIMS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapter_host.h"
#include "ferry/command.h"

typedef struct eng_claims eng_claims;

eng_claims *eng_claims_new(void);
void eng_claims_free(eng_claims *c);
/* Wake every wait (a cancel, a stop). */
void eng_claims_wake(eng_claims *c);
/* A scheduler's condition, broadcast whenever a claim ends. */
void eng_claims_watch(eng_claims *c, pthread_cond_t *cond);
void eng_claims_unwatch(eng_claims *c, pthread_cond_t *cond);

typedef enum eng_session_claim {
	ENG_SESSION_TAKEN,       /* the session may open */
	ENG_SESSION_DEVICE_BUSY, /* a session is open on that device */
	ENG_SESSION_FULL,        /* install.parallel, or the adapter's max_sessions, is reached */
} eng_session_claim;
/* Never blocks. */
eng_session_claim eng_session_try(eng_claims *c, const ferry_adapter *ad, const char *device, unsigned parallel);
void eng_session_end(eng_claims *c, const ferry_adapter *ad, const char *device);

typedef struct eng_device_ref {
	const char *adapter, *device;
} eng_device_ref;
/* Hold every one of devs for update_id, all at once, waiting while another
 * update holds any of them.  false when interrupted(ctx) says to stop
 * waiting (nothing is held then). */
bool eng_devices_hold(eng_claims *c, const char *update_id, const eng_device_ref *devs, size_t n,
		      bool (*interrupted)(void *), void *ctx);
void eng_devices_release(eng_claims *c, const char *update_id);

/* One download of an image at a time; false when interrupted. */
bool eng_image_hold(eng_claims *c, const uint8_t sha256[32], bool (*interrupted)(void *), void *ctx);
void eng_image_release(eng_claims *c, const uint8_t sha256[32]);

/* ts = ms from now on CLOCK_REALTIME, as pthread_cond_timedwait wants it. */
struct timespec;
void eng_deadline_in(struct timespec *ts, long ms);

#endif
