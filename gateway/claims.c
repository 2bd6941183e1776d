/* What updates running side by side must share, under one lock (claims.h).
 *
 * Three kinds of claim:
 *   sessions  every open device session, whichever update opened it: at
 *             most install.parallel in all, at most an adapter's
 *             max_sessions of that adapter, never two on one device;
 *   devices   the devices an update's install holds from its first push to
 *             its last commit or revert, so that no other update pushes to
 *             a device in the middle of an all-or-nothing trial, or between
 *             two components that go in order;
 *   images    an image being downloaded into the store: a second update
 *             that needs the same image waits, then finds it there.
 * A claim that has to wait waits on the claims' condition; whoever lets go
 * of a claim wakes it and every scheduler that watches (their waits are
 * also bounded, so a wake-up lost between a check and a wait costs at most
 * one poll). */
#include "claims.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define SESSIONS_MAX 64
#define WATCHERS_MAX 64
#define IMAGES_MAX 256
#define KEY_MAX (FERRY_ADAPTER_STR_MAX * 2 + 2)

typedef struct held {
	char update_id[FERRY_ID_MAX + 1];
	char key[KEY_MAX];
} held;

struct eng_claims {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct {
		const ferry_adapter *ad;
		char device[FERRY_ADAPTER_STR_MAX];
	} sessions[SESSIONS_MAX];
	size_t n_sessions;
	pthread_cond_t *watchers[WATCHERS_MAX];
	size_t n_watchers;
	held *devices;
	size_t n_devices, cap_devices;
	uint8_t images[IMAGES_MAX][32];
	size_t n_images;
};

eng_claims *eng_claims_new(void)
{
	eng_claims *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	return c;
}

void eng_claims_free(eng_claims *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c->devices);
	free(c);
}

/* Under the lock: wake whoever may now go on. */
static void wake_locked(eng_claims *c)
{
	pthread_cond_broadcast(&c->cond);
	for (size_t i = 0; i < c->n_watchers; i++)
		pthread_cond_broadcast(c->watchers[i]);
}

void eng_claims_wake(eng_claims *c)
{
	pthread_mutex_lock(&c->lock);
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
}

void eng_claims_watch(eng_claims *c, pthread_cond_t *cond)
{
	pthread_mutex_lock(&c->lock);
	if (c->n_watchers < WATCHERS_MAX)
		c->watchers[c->n_watchers++] = cond;
	pthread_mutex_unlock(&c->lock);
}

void eng_claims_unwatch(eng_claims *c, pthread_cond_t *cond)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_watchers; i++)
		if (c->watchers[i] == cond) {
			c->watchers[i] = c->watchers[--c->n_watchers];
			break;
		}
	pthread_mutex_unlock(&c->lock);
}

/* ---- sessions ---- */

eng_session_claim eng_session_try(eng_claims *c, const ferry_adapter *ad, const char *device, unsigned parallel)
{
	unsigned of_ad = 0;
	eng_session_claim res = ENG_SESSION_TAKEN;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_sessions; i++) {
		if (c->sessions[i].ad != ad)
			continue;
		of_ad++;
		if (!strcmp(c->sessions[i].device, device))
			res = ENG_SESSION_DEVICE_BUSY;
	}
	if (res == ENG_SESSION_TAKEN &&
	    (c->n_sessions >= parallel || c->n_sessions >= SESSIONS_MAX || of_ad >= ferry_adapter_max_sessions(ad)))
		res = ENG_SESSION_FULL;
	if (res == ENG_SESSION_TAKEN) {
		c->sessions[c->n_sessions].ad = ad;
		snprintf(c->sessions[c->n_sessions].device, sizeof(c->sessions[0].device), "%s", device);
		c->n_sessions++;
	}
	pthread_mutex_unlock(&c->lock);
	return res;
}

void eng_session_end(eng_claims *c, const ferry_adapter *ad, const char *device)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_sessions; i++)
		if (c->sessions[i].ad == ad && !strcmp(c->sessions[i].device, device)) {
			c->sessions[i] = c->sessions[--c->n_sessions];
			break;
		}
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
}

/* ---- devices held by an update's install ---- */

static void key_of(char key[KEY_MAX], const char *adapter, const char *device)
{
	snprintf(key, KEY_MAX, "%s/%s", adapter, device);
}

/* Under the lock: the update holding key, other than update_id; NULL: none. */
static const char *holder(const eng_claims *c, const char *key, const char *update_id)
{
	for (size_t i = 0; i < c->n_devices; i++)
		if (!strcmp(c->devices[i].key, key) && strcmp(c->devices[i].update_id, update_id))
			return c->devices[i].update_id;
	return NULL;
}

void eng_deadline_in(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

bool eng_devices_hold(eng_claims *c, const char *update_id, const eng_device_ref *devs, size_t n,
		      bool (*interrupted)(void *), void *ctx)
{
	char key[KEY_MAX], told[FERRY_ID_MAX + 1] = "";

	pthread_mutex_lock(&c->lock);
	for (;;) {
		const char *by = NULL;
		for (size_t i = 0; i < n && !by; i++) {
			key_of(key, devs[i].adapter, devs[i].device);
			by = holder(c, key, update_id);
		}
		if (!by)
			break;
		if (strcmp(told, by)) {
			ferry_log(LOG_INFO, "%s: waiting for update %s, which holds %s", update_id, by, key);
			snprintf(told, sizeof(told), "%s", by);
		}
		if (interrupted(ctx)) {
			pthread_mutex_unlock(&c->lock);
			return false;
		}
		/* woken when a hold ends; the bound only lets a cancel in */
		struct timespec until;
		eng_deadline_in(&until, 1000);
		pthread_cond_timedwait(&c->cond, &c->lock, &until);
	}
	if (c->n_devices + n > c->cap_devices) {
		size_t cap = (c->n_devices + n) * 2;
		held *d = realloc(c->devices, cap * sizeof(*d));
		if (!d) {
			pthread_mutex_unlock(&c->lock);
			ferry_log(LOG_ERR, "%s: out of memory holding its devices", update_id);
			return false;
		}
		c->devices = d;
		c->cap_devices = cap;
	}
	for (size_t i = 0; i < n; i++) {
		held *h = &c->devices[c->n_devices++];
		snprintf(h->update_id, sizeof(h->update_id), "%s", update_id);
		key_of(h->key, devs[i].adapter, devs[i].device);
	}
	pthread_mutex_unlock(&c->lock);
	return true;
}

void eng_devices_release(eng_claims *c, const char *update_id)
{
	size_t k = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_devices; i++)
		if (strcmp(c->devices[i].update_id, update_id))
			c->devices[k++] = c->devices[i];
	c->n_devices = k;
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
}

/* ---- images being downloaded ---- */

bool eng_image_hold(eng_claims *c, const uint8_t sha256[32], bool (*interrupted)(void *), void *ctx)
{
	pthread_mutex_lock(&c->lock);
	for (;;) {
		bool busy = false;
		for (size_t i = 0; i < c->n_images && !busy; i++)
			busy = !memcmp(c->images[i], sha256, 32);
		if (!busy && c->n_images < IMAGES_MAX)
			break;
		if (interrupted(ctx)) {
			pthread_mutex_unlock(&c->lock);
			return false;
		}
		struct timespec until;
		eng_deadline_in(&until, 1000);
		pthread_cond_timedwait(&c->cond, &c->lock, &until);
	}
	memcpy(c->images[c->n_images++], sha256, 32);
	pthread_mutex_unlock(&c->lock);
	return true;
}

void eng_image_release(eng_claims *c, const uint8_t sha256[32])
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n_images; i++)
		if (!memcmp(c->images[i], sha256, 32)) {
			memcpy(c->images[i], c->images[--c->n_images], 32);
			break;
		}
	wake_locked(c);
	pthread_mutex_unlock(&c->lock);
}
