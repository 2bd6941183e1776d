/* A runner: one update's job at a time, through its phases.  Several
 * runners (updates.parallel) run side by side; the devices an install
 * holds, the sessions open and the images being fetched are claimed
 * through claims.c, so two updates never push to one device at once.
 *
 *   download  each image once, however many components and devices take it,
 *             up to download.parallel at once, resuming partial files;
 *   check     each image hashed again against the manifest, then each
 *             device's adapter asked whether the image is right for it;
 *   install   the device steps, through the scheduler (sched.c): in order,
 *             in parallel where the order allows.  An all-or-nothing update
 *             activates every device on trial, commits them all only when
 *             all came up, and otherwise reverts every one.
 *
 * Each phase reads the update back from the journal and the manifest from
 * its signed text, so a phase after a restart runs exactly like the first
 * time: components and steps past the phase's stage are skipped, so nothing
 * is downloaded, pushed or reported installed twice.  When ferryd is
 * stopping, a phase leaves the update where it stands for the next start;
 * only a cancel command cancels.  A failure of a download or a check ends
 * the update before any device is touched: its other steps are reported
 * cancelled, naming what stopped it.
 */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bases.h"
#include "download.h"
#include "ferry/jwe.h"
#include "log.h"
#include "run.h"

#define PROGRESS_EVERY_MS 250

bool run_cancelled(eng_run *r)
{
	return ferry_job_cancelled(r->job) || r->u.cancel_requested;
}

bool run_interrupted(eng_run *r)
{
	return ferry_job_interrupted(r->job) || r->u.cancel_requested || atomic_load(&r->abandon);
}

const ferry_component *run_component(eng_run *r, const char *name)
{
	return ferry_manifest_find(&r->m, name);
}

static bool stopping(eng_run *r);

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* The journal could not take a write because the disk or the database is
 * full (insufficient_space).  What it was to record stays in memory (the
 * caller's) and is tried again with a growing pause, without a restart,
 * until it goes in or ferryd stops (then the next start redoes it from what
 * the journal holds).  true: try again now. */
static bool wait_for_room(eng_run *r, const char *what, const ferry_status *st, int *tries)
{
	long pause = 100L << (*tries < 6 ? *tries : 6); /* 0.1 s, doubling, at most 6.4 s */

	if (st->code != FERRY_E_INSUFFICIENT_SPACE || stopping(r))
		return false;
	if ((*tries)++ == 0)
		ferry_log(LOG_WARNING, "%s: %s kept in memory until the journal has room (%s)", r->u.id, what,
			  st->detail);
	nap_ms(pause);
	return true;
}

static void room_again(eng_run *r, const char *what, int tries)
{
	if (tries)
		ferry_log(LOG_INFO, "%s: %s recorded after %d tries: the journal has room again", r->u.id, what,
			  tries + 1);
}

/* A report that only repeats its stage with new progress: when the journal
 * is full it is dropped, not waited for (the next one says more). */
static bool progress_only(ferry_stage now, ferry_stage stage, int64_t done)
{
	return done >= 0 && now == stage;
}

/* Commit a transition, waiting for room in the journal when it is full;
 * progress reports are not waited for. */
static ferry_err report(eng_run *r, const ferry_transition *t, ferry_stage now, bool wait, ferry_status *st)
{
	char what[FERRY_DETAIL_MAX];
	ferry_err err;
	int tries = 0;

	snprintf(what, sizeof(what), "%s%s%s %s", t->component, t->device ? " on " : "", t->device ? t->device : "",
		 ferry_stage_name(t->stage));
	while ((err = eng_report(r->e, t, st)) && wait && !progress_only(now, t->stage, t->done) &&
	       wait_for_room(r, what, st, &tries))
		;
	if (!err)
		room_again(r, what, tries);
	return err;
}

static bool step_report(eng_run *r, ferry_jstep *s, ferry_stage stage, const char *reason, const char *detail,
			const char *version, int64_t done, int64_t total, bool wait)
{
	ferry_status st = {0};
	ferry_transition t = {.update_id = r->u.id, .component = s->component, .device = s->device, .stage = stage,
			      .reason = reason, .detail = detail, .version = version, .done = done, .total = total,
			      .ts_ms = eng_now_ms()};
	/* the image the device runs now: its base for a later delta */
	char image[65];
	const ferry_component *mc = stage == FERRY_S_INSTALLED ? run_component(r, s->component) : NULL;
	if (mc) {
		ferry_hex32_fmt(mc->sha256, image);
		t.image = image;
	}

	if (report(r, &t, s->stage, wait, &st)) {
		if (st.code == FERRY_E_INSUFFICIENT_SPACE && progress_only(s->stage, stage, done))
			return true; /* a progress report dropped: the step goes on */
		ferry_log(LOG_ERR, "%s/%s on %s: %s not recorded: %s", r->u.id, s->component, s->device,
			  ferry_stage_name(stage), st.detail);
		return false;
	}
	s->stage = stage;
	if (version)
		snprintf(s->version, sizeof(s->version), "%s", version);
	return true;
}

bool run_step_report(eng_run *r, ferry_jstep *s, ferry_stage stage, const char *reason, const char *detail,
		     const char *version, int64_t done, int64_t total)
{
	return step_report(r, s, stage, reason, detail, version, done, total, true);
}

bool run_step_report_now(eng_run *r, ferry_jstep *s, ferry_stage stage, const char *reason, const char *detail)
{
	return step_report(r, s, stage, reason, detail, NULL, -1, -1, false);
}

void run_note_failure(eng_run *r, const ferry_jstep *s, const ferry_status *why)
{
	pthread_mutex_lock(&r->why_lock);
	if (!r->why[0]) {
		snprintf(r->why_reason, sizeof(r->why_reason), "%s", ferry_err_code(why->code));
		snprintf(r->why, sizeof(r->why), "all or nothing: %s on %s failed (%s: %.150s)", s->component, s->device,
			 ferry_err_code(why->code), why->detail);
	}
	pthread_mutex_unlock(&r->why_lock);
}

/* A component's report; with `to` other than the current state, the update
 * moves there in the same transaction. */
static bool comp_report_moving(eng_run *r, ferry_jcomponent *c, ferry_stage stage, const ferry_status *why,
			       int64_t done, int64_t total, ferry_ustate to)
{
	ferry_status st = {0};
	ferry_transition t = {.update_id = r->u.id, .component = c->name, .stage = stage,
			      .reason = why ? ferry_err_code(why->code) : NULL, .detail = why ? why->detail : NULL,
			      .done = done, .total = total, .ts_ms = eng_now_ms(), .moves = to != r->u.state,
			      .from = r->u.state, .to = to};

	if (report(r, &t, c->stage, true, &st)) {
		ferry_log(LOG_ERR, "%s/%s: %s not recorded: %s", r->u.id, c->name, ferry_stage_name(stage), st.detail);
		return false;
	}
	c->stage = stage;
	r->u.state = to;
	return true;
}

/* A component's report that moves nothing (download threads call it at
 * once: it touches no shared field but the component's own). */
static bool comp_report(eng_run *r, ferry_jcomponent *c, ferry_stage stage, const ferry_status *why, int64_t done,
			int64_t total)
{
	ferry_status st = {0};
	ferry_transition t = {.update_id = r->u.id, .component = c->name, .stage = stage,
			      .reason = why ? ferry_err_code(why->code) : NULL, .detail = why ? why->detail : NULL,
			      .done = done, .total = total, .ts_ms = eng_now_ms()};

	if (report(r, &t, c->stage, true, &st)) {
		if (st.code == FERRY_E_INSUFFICIENT_SPACE && progress_only(c->stage, stage, done))
			return true;
		ferry_log(LOG_ERR, "%s/%s: %s not recorded: %s", r->u.id, c->name, ferry_stage_name(stage), st.detail);
		return false;
	}
	c->stage = stage;
	return true;
}

static void forget_links(eng_run *r)
{
	for (size_t i = 0; i < r->n_cs; i++) {
		if (r->cs[i].link && ferry_journal_set_link(r->e->journal, r->u.id, r->cs[i].name, NULL, NULL))
			ferry_log(LOG_ERR, "journal: cannot forget the link of %s/%s", r->u.id, r->cs[i].name);
		if (ferry_journal_set_delta_link(r->e->journal, r->u.id, r->cs[i].name, NULL, NULL, NULL))
			ferry_log(LOG_ERR, "journal: cannot forget the delta links of %s/%s", r->u.id, r->cs[i].name);
		if (ferry_journal_set_key(r->e->journal, r->u.id, r->cs[i].name, NULL, NULL))
			ferry_log(LOG_ERR, "journal: cannot forget the key of %s/%s", r->u.id, r->cs[i].name);
	}
}

static bool move(eng_run *r, ferry_ustate to)
{
	ferry_status st = {0};
	ferry_jupdate now;

	if (ferry_journal_update_get(r->e->journal, r->u.id, &now, &st)) {
		ferry_log(LOG_ERR, "journal: %s", st.detail);
		return false;
	}
	ferry_jupdate_free(&now);
	if (now.state == to)
		return true;
	int tries = 0;
	while (ferry_journal_update_move(r->e->journal, r->u.id, now.state, to, &st)) {
		if (!wait_for_room(r, ferry_ustate_name(to), &st, &tries)) {
			ferry_log(LOG_ERR, "journal: %s", st.detail);
			return false;
		}
	}
	room_again(r, ferry_ustate_name(to), tries);
	r->u.state = to;
	return true;
}

/* End the update: every step without an outcome gets one (cancelled,
 * saying why; failed for one left mid-activation, whose image is unknown),
 * links are forgotten, the update takes its final state. */
static void end_update(eng_run *r, ferry_ustate final, const char *why)
{
	for (size_t i = 0; i < r->n_steps; i++) {
		ferry_jstep *s = &r->steps[i];
		if (ferry_stage_final(s->stage))
			continue;
		if (s->stage == FERRY_S_ACTIVATING || s->stage == FERRY_S_TRIAL)
			run_step_report(r, s, FERRY_S_FAILED, "internal",
					"the update ended while this device was being activated: which image it runs is "
					"unknown", NULL, -1, -1);
		else
			run_step_report(r, s, FERRY_S_CANCELLED, "cancelled", why, NULL, -1, -1);
	}
	forget_links(r);
	move(r, final);
}

static bool stopping(eng_run *r)
{
	return ferry_job_stopping(r->job);
}

/* ---- download ---- */

typedef struct dl_task {
	eng_run *r;
	size_t first;       /* index in r->cs of the component whose link is used */
	size_t members[FERRY_COMPONENTS_MAX]; /* components with this image */
	size_t n_members;
	int64_t last_ms, durable;
	ferry_status st;
	ferry_err err;
	pthread_t th;
} dl_task;

typedef struct dl_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned running;
} dl_pool;

static void dl_durable(void *ctx, int64_t off)
{
	dl_task *d = ctx;
	bool ok = true;
	for (size_t k = 0; k < d->n_members; k++)
		ok &= ferry_journal_set_dl_offset(d->r->e->journal, d->r->u.id, d->r->cs[d->members[k]].name, off, NULL) ==
		      FERRY_OK;
	if (ok)
		d->durable = off;
}

static bool dl_progress(void *ctx, int64_t done, int64_t total)
{
	dl_task *d = ctx;
	int64_t now = eng_mono_ms();

	if (!d->last_ms || done == total || now - d->last_ms >= PROGRESS_EVERY_MS) {
		d->last_ms = now;
		for (size_t k = 0; k < d->n_members; k++)
			comp_report(d->r, &d->r->cs[d->members[k]], FERRY_S_DOWNLOADING, NULL, done, total);
	}
	return !run_interrupted(d->r);
}

/* The component's link in the journal now, when it differs from `used`. */
static char *fresh_link(eng_run *r, const char *component, const char *used)
{
	ferry_jcomponent *cs;
	size_t n;
	char *out = NULL;

	if (ferry_journal_components(r->e->journal, r->u.id, &cs, &n, NULL))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(cs[i].name, component) && cs[i].link && strcmp(cs[i].link, used))
			out = strdup(cs[i].link);
	ferry_jcomponents_free(cs, n);
	return out;
}

/* What every download of the update shares: the file host's CA, the
 * gateway's identity, the limits and the deadline. */
static void dl_setup(dl_task *d, ferry_dl_req *req)
{
	eng_run *r = d->r;
	const ferry_config *cfg = r->e->cfg;

	*req = (ferry_dl_req){
		.ca_file = cfg->download.ca,
		/* the gateway's MQTT identity is also who it is to the file host */
		.cert_file = cfg->broker.cert, .key_file = cfg->broker.key,
		.limits = {.connect_timeout_s = cfg->download.connect_timeout_s,
			   .low_speed_bytes = cfg->download.low_speed_bytes,
			   .low_speed_time_s = cfg->download.low_speed_time_s, .retries = cfg->download.retries,
			   .retry_delay_ms = cfg->download.retry_delay_ms},
		.progress = dl_progress, .ctx = d};
	/* whichever comes first: the update's expiry, the configured deadline */
	int64_t by = cfg->download.deadline_s ? r->dl_started + cfg->download.deadline_s : 0;
	if (r->u.expires && (!by || r->u.expires <= by)) {
		req->deadline = r->u.expires;
		req->deadline_code = FERRY_E_EXPIRED;
		req->deadline_what = "the update expired before the download ended";
	} else if (by) {
		req->deadline = by;
		req->deadline_code = FERRY_E_DOWNLOAD_FAILED;
		req->deadline_what = "the downloads took longer than download.deadline allows";
	}
}

/* The disk is full while an image is rebuilt from a delta or decrypted:
 * like a download, it waits for room (pauses from 0.25 s, doubling, at
 * most 5 s) until the update's deadline or an interruption. */
typedef struct room_wait {
	dl_task *d;
	ferry_jcomponent *c;
	const char *doing; /* "decrypting", "rebuilding" */
	long pause;
} room_wait;

static bool store_room(void *ctx, ferry_status *st)
{
	room_wait *w = ctx;
	ferry_dl_req req;

	dl_setup(w->d, &req);
	if (run_interrupted(w->d->r)) {
		ferry_fail(st, FERRY_E_CANCELLED, "interrupted while %s, waiting for room", w->doing);
		return false;
	}
	if (req.deadline && eng_now() >= req.deadline) {
		ferry_fail(st, req.deadline_code, "%s (%s, waiting for room)", req.deadline_what, w->doing);
		return false;
	}
	if (!w->pause)
		ferry_log(LOG_WARNING, "%s/%s: %s: %s; waiting for room", w->d->r->u.id, w->c->name, w->doing, st->detail);
	w->pause = w->pause ? (w->pause * 2 > 5000 ? 5000 : w->pause * 2) : 250;
	nap_ms(w->pause);
	return true;
}

/* The image from one of the component's deltas whose base the gateway
 * holds: the patch is fetched into the store (from its first byte: patches
 * are small), the image rebuilt beside it and checked, the patch dropped.
 * base_missing when no linked delta has a base here. */
static ferry_err image_from_delta(dl_task *d, ferry_jcomponent *c, const ferry_component *mc, ferry_status *st)
{
	eng_run *r = d->r;
	char(*bases)[65] = NULL, **urls = NULL;
	size_t n = 0;
	ferry_err err;

	if ((err = ferry_journal_delta_links(r->e->journal, r->u.id, c->name, &bases, &urls, &n, st)))
		return err;
	err = ferry_fail(st, FERRY_E_BASE_MISSING, "%s: the gateway holds none of the bases of its %zu delta link%s",
			 c->name, n, n == 1 ? "" : "s");
	for (size_t i = 0; i < n && err != FERRY_E_CANCELLED; i++) {
		const ferry_delta *dl = eng_delta_of(mc, bases[i]);
		char base[FERRY_PATH_MAX];
		ferry_dl_req req;
		int part;
		if (!dl || !eng_delta_base(r->e, mc, dl->base_sha256, base))
			continue;
		if ((part = ferry_store_partial_open(r->e->store, dl->sha256, 0, st)) < 0) {
			err = st->code;
			continue;
		}
		dl_setup(d, &req);
		req.url = urls[i];
		req.part_fd = part;
		req.size = dl->size;
		memcpy(req.sha256, dl->sha256, 32);
		if (ftruncate(part, 0))
			err = ferry_fail(st, FERRY_E_INTERNAL, "store: %s", strerror(errno));
		else
			err = ferry_download(&req, st);
		/* applied from where it was fetched: a partial file is never
		 * pruned, and the patch never becomes an image of the store */
		room_wait w = {.d = d, .c = c, .doing = "rebuilding"};
		if (!err)
			err = eng_rebuild(r->e, mc, base, part, store_room, &w, st);
		close(part);
		ferry_store_remove_partial(r->e->store, dl->sha256);
		if (!err) {
			ferry_log(LOG_INFO, "%s/%s: rebuilt from a %lld-byte delta (the image is %lld bytes)", r->u.id,
				  c->name, (long long)dl->size, (long long)mc->size);
			break;
		}
		ferry_log(LOG_WARNING, "%s/%s: delta from base %.12s: %s", r->u.id, c->name, bases[i], st->detail);
	}
	ferry_jdelta_urls_free(bases, urls, n);
	return err;
}

/* The wrapped key the journal holds for the component now (the latest
 * update.download may have brought it). */
static char *journal_key(eng_run *r, const char *component)
{
	ferry_jcomponent *cs;
	size_t n;
	char *out = NULL;

	if (ferry_journal_components(r->e->journal, r->u.id, &cs, &n, NULL))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(cs[i].name, component) && cs[i].key)
			out = strdup(cs[i].key);
	ferry_jcomponents_free(cs, n);
	return out;
}

/* The fetched ciphertext in part, decrypted into the store with the key
 * unwrapped now: the plain content key lives only for this call. */
static ferry_err decrypt_image(dl_task *dt, ferry_jcomponent *c, const ferry_component *mc, int part,
			       ferry_status *st)
{
	eng_run *r = dt->r;
	room_wait w = {.d = dt, .c = c, .doing = "decrypting"};
	char *jwe = journal_key(r, c->name);
	uint8_t key[32];
	ferry_err err;

	if (!jwe)
		return ferry_fail(st, FERRY_E_DECRYPT_FAILED, "%s: no wrapped key for its encrypted image; send "
				  "update.download with keys", c->name);
	if (!r->e->kek)
		err = ferry_fail(st, FERRY_E_UNSUPPORTED, "%s: this gateway has no decryption.key", c->name);
	else if (!(err = ferry_jwe_unwrap(jwe, r->e->kek, key, st)))
		err = eng_decrypt(r->e, mc, part, key, store_room, &w, st);
	OPENSSL_cleanse(key, sizeof(key));
	free(jwe);
	if (!err)
		ferry_log(LOG_INFO, "%s/%s: decrypted %lld bytes into the store", r->u.id, c->name, (long long)mc->size);
	return err;
}

static ferry_err download_image(dl_task *d, ferry_status *st)
{
	eng_run *r = d->r;
	ferry_jcomponent *c = &r->cs[d->first];
	const ferry_component *mc = run_component(r, c->name);
	char have[FERRY_PATH_MAX];
	ferry_err err;
	int part;

	if (ferry_store_has(r->e->store, mc->sha256, have))
		return FERRY_OK;
	/* a delta first: only its bytes cross the network */
	if (mc->n_deltas) {
		ferry_status dst = {0};
		if (!(err = image_from_delta(d, c, mc, &dst)))
			return FERRY_OK;
		if (err == FERRY_E_CANCELLED || !c->link) {
			*st = dst;
			return err;
		}
		if (err != FERRY_E_BASE_MISSING)
			ferry_log(LOG_WARNING, "%s/%s: the delta did not give the image (%s); fetching the whole image",
				  r->u.id, c->name, dst.detail);
	}
	if (!c->link)
		return ferry_fail(st, FERRY_E_DOWNLOAD_FAILED, "%s: no download link; send update.download", c->name);
	/* an encrypted image: the ciphertext is fetched (resumably) into the
	 * store's partial file, then decrypted beside it */
	const uint8_t *sha = mc->encrypted ? mc->enc.sha256 : mc->sha256;
	int64_t size = mc->encrypted ? mc->enc.size : mc->size;
	if ((part = ferry_store_partial_open(r->e->store, sha, c->dl_offset, st)) < 0)
		return st->code;
	ferry_dl_req req;
	dl_setup(d, &req);
	req.url = c->link;
	req.part_fd = part;
	req.size = size;
	req.durable = dl_durable;
	bool unsure = false;
	req.unsure = &unsure;
	memcpy(req.sha256, sha, 32);
	dl_progress(d, c->dl_offset, size);
	for (int fresh = 0;; fresh++) {
		char *newer = NULL;
		if (!(err = ferry_download(&req, st)))
			break;
		/* a link that stopped working may have been replaced meanwhile
		 * (update.download with fresh links): go on with the new one */
		if (err == FERRY_E_CANCELLED || fresh == 3 || !(newer = fresh_link(r, c->name, req.url))) {
			close(part);
			return err;
		}
		ferry_log(LOG_INFO, "%s/%s: %s; trying the fresh link", r->u.id, c->name, st->detail);
		free(c->link);
		c->link = newer;
		req.url = c->link;
	}
	if (mc->encrypted) {
		err = decrypt_image(d, c, mc, part, st);
		close(part);
		/* the ciphertext goes once its plaintext is in (or will never be) */
		if (err != FERRY_E_INTERNAL && err != FERRY_E_INSUFFICIENT_SPACE && err != FERRY_E_CANCELLED)
			ferry_store_remove_partial(r->e->store, sha);
		return err;
	}
	close(part);
	/* every byte went through the digest on its way to the file (those a
	 * restart found on disk first): the check need not read it again,
	 * unless the disk once failed to make bytes durable */
	return ferry_store_commit(r->e->store, mc->sha256, !unsure, st);
}

typedef struct dl_arg {
	dl_task *d;
	dl_pool *pool;
} dl_arg;

static bool dl_wait_interrupted(void *ctx)
{
	return run_interrupted(ctx);
}

static void *dl_main(void *arg)
{
	dl_arg *a = arg;
	dl_task *d = a->d;
	const uint8_t *sha = run_component(d->r, d->r->cs[d->first].name)->sha256;

	/* another update fetching the same image: wait, then find it stored */
	if (!eng_image_hold(d->r->e->claims, sha, dl_wait_interrupted, d->r)) {
		d->err = ferry_fail(&d->st, FERRY_E_CANCELLED, "interrupted while another update fetched the image");
	} else {
		d->err = download_image(d, &d->st);
		eng_image_release(d->r->e->claims, sha);
	}
	if (d->err && d->err != FERRY_E_CANCELLED)
		atomic_store(&d->r->abandon, true); /* the others stop: the update fails */
	pthread_mutex_lock(&a->pool->lock);
	a->pool->running--;
	pthread_cond_broadcast(&a->pool->cond);
	pthread_mutex_unlock(&a->pool->lock);
	free(a);
	return NULL;
}

/* Components still to fetch, grouped by image. */
static size_t plan_downloads(eng_run *r, dl_task *tasks)
{
	size_t n = 0;

	for (size_t i = 0; i < r->n_cs; i++) {
		const ferry_component *mc = run_component(r, r->cs[i].name);
		size_t k;
		if ((r->cs[i].stage != FERRY_S_ALLOWED && r->cs[i].stage != FERRY_S_DOWNLOADING) || !mc)
			continue;
		for (k = 0; k < n; k++)
			if (!memcmp(run_component(r, r->cs[tasks[k].first].name)->sha256, mc->sha256, 32))
				break;
		if (k == n) {
			memset(&tasks[n], 0, sizeof(tasks[n]));
			tasks[n].r = r;
			tasks[n].first = i;
			tasks[n].durable = r->cs[i].dl_offset;
			n++;
		} else if (!r->cs[tasks[k].first].link && r->cs[i].link) {
			tasks[k].first = i; /* use a member that has a link */
		}
		tasks[k].members[tasks[k].n_members++] = i;
	}
	return n;
}

static bool phase_check(eng_run *r);

static bool phase_download(eng_run *r)
{
	dl_task *tasks = calloc(FERRY_COMPONENTS_MAX, sizeof(*tasks));
	dl_pool pool = {.running = 0};
	unsigned limit = (unsigned)r->e->cfg->download.parallel;
	size_t n, started = 0;
	const dl_task *failed = NULL;

	if (!tasks) {
		ferry_log(LOG_ERR, "%s: out of memory", r->u.id);
		return false;
	}
	pthread_mutex_init(&pool.lock, NULL);
	pthread_cond_init(&pool.cond, NULL);
	r->dl_started = eng_now();
	n = plan_downloads(r, tasks);
	pthread_mutex_lock(&pool.lock);
	for (size_t i = 0; i < n; i++) {
		dl_arg *a;
		while (pool.running >= limit)
			pthread_cond_wait(&pool.cond, &pool.lock);
		if (run_interrupted(r))
			break;
		if (!(a = malloc(sizeof(*a)))) {
			tasks[i].err = ferry_fail(&tasks[i].st, FERRY_E_INTERNAL, "out of memory");
			atomic_store(&r->abandon, true);
			break;
		}
		*a = (dl_arg){.d = &tasks[i], .pool = &pool};
		if (pthread_create(&tasks[i].th, NULL, dl_main, a)) {
			free(a);
			tasks[i].err = ferry_fail(&tasks[i].st, FERRY_E_INTERNAL, "cannot start a download thread");
			atomic_store(&r->abandon, true);
			break;
		}
		pool.running++;
		started++;
	}
	pthread_mutex_unlock(&pool.lock);
	for (size_t i = 0; i < started; i++)
		pthread_join(tasks[i].th, NULL);
	pthread_mutex_destroy(&pool.lock);
	pthread_cond_destroy(&pool.cond);

	for (size_t i = 0; i < n && !failed; i++)
		if (tasks[i].err && tasks[i].err != FERRY_E_CANCELLED)
			failed = &tasks[i];
	if (!failed && stopping(r)) {
		free(tasks);
		return false;
	}
	if (!failed && run_cancelled(r)) {
		end_update(r, FERRY_U_CANCELLED, "cancelled by command");
		free(tasks);
		return false;
	}
	if (failed) {
		char why[FERRY_DETAIL_MAX];
		for (size_t k = 0; k < failed->n_members; k++)
			comp_report(r, &r->cs[failed->members[k]], FERRY_S_FAILED, &failed->st, -1, -1);
		snprintf(why, sizeof(why), "not installed: the download of %s failed (%s)", r->cs[failed->first].name,
			 ferry_err_code(failed->err));
		end_update(r, FERRY_U_FAILED, why);
		free(tasks);
		return false;
	}
	/* each image is in the store: every component that takes it is
	 * downloaded, and with the last report the update is (so that a
	 * cloud that answers it with update.check finds it there) */
	size_t left = 0;
	for (size_t i = 0; i < n; i++)
		left += tasks[i].n_members;
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < tasks[i].n_members; k++) {
			ferry_jcomponent *c = &r->cs[tasks[i].members[k]];
			const ferry_component *mc = run_component(r, c->name);
			if (ferry_journal_set_link(r->e->journal, r->u.id, c->name, NULL, NULL) ||
			    ferry_journal_set_delta_link(r->e->journal, r->u.id, c->name, NULL, NULL, NULL) ||
			    ferry_journal_set_key(r->e->journal, r->u.id, c->name, NULL, NULL))
				ferry_log(LOG_ERR, "journal: cannot forget the links of %s/%s", r->u.id, c->name);
			free(c->link);
			c->link = NULL;
			if (!comp_report_moving(r, c, FERRY_S_DOWNLOADED, NULL, mc->size, mc->size,
						--left ? r->u.state : FERRY_U_DOWNLOADED)) {
				free(tasks);
				return false;
			}
		}
	free(tasks);
	if (!move(r, FERRY_U_DOWNLOADED))
		return false;
	if (!r->u.deploy)
		return true;
	return move(r, FERRY_U_VERIFYING) && phase_check(r);
}

/* ---- check ---- */

static ferry_err hash_file(const char *path, int64_t *size, uint8_t dig[32], ferry_status *st)
{
	unsigned char buf[65536];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	*size = 0;
	if (fd < 0 || !md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		if (fd >= 0)
			close(fd);
		EVP_MD_CTX_free(md);
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "image is missing from the store");
	}
	while ((r = read(fd, buf, sizeof(buf))) > 0) {
		EVP_DigestUpdate(md, buf, (size_t)r);
		*size += r;
	}
	close(fd);
	EVP_DigestFinal_ex(md, dig, NULL);
	EVP_MD_CTX_free(md);
	return r < 0 ? ferry_fail(st, FERRY_E_INTERNAL, "read error in the store") : FERRY_OK;
}

static ferry_err check_image(eng_run *r, const ferry_jcomponent *c, ferry_status *st)
{
	const ferry_component *mc = run_component(r, c->name);
	char path[FERRY_PATH_MAX];
	uint8_t dig[32];
	int64_t size;
	ferry_err err;

	if (!ferry_store_has(r->e->store, mc->sha256, path))
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "%s: image is not in the store", c->name);
	/* hashed as it arrived, and still that file: one hash is enough;
	 * otherwise (a restart since, or an image an earlier run fetched) the
	 * whole file is hashed here */
	if (ferry_store_streamed(r->e->store, mc->sha256, &size)) {
		ferry_log(LOG_INFO, "%s/%s: image hashed as it arrived: not read again", r->u.id, c->name);
		if (size != mc->size)
			return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "%s: %lld bytes, manifest says %lld", c->name,
					  (long long)size, (long long)mc->size);
		return FERRY_OK;
	}
	ferry_log(LOG_INFO, "%s/%s: hashing the image in the store", r->u.id, c->name);
	if ((err = hash_file(path, &size, dig, st)))
		return err;
	if (size != mc->size)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "%s: %lld bytes, manifest says %lld", c->name,
				  (long long)size, (long long)mc->size);
	if (memcmp(dig, mc->sha256, 32))
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "%s: SHA-256 differs from the manifest", c->name);
	return FERRY_OK;
}

static bool verifying(const ferry_jcomponent *c)
{
	return c->stage == FERRY_S_DOWNLOADED || c->stage == FERRY_S_VERIFYING;
}

static bool check_eligible(eng_run *r, const ferry_jstep *s)
{
	for (size_t i = 0; i < r->n_cs; i++)
		if (!strcmp(r->cs[i].name, s->component))
			return verifying(&r->cs[i]) && !ferry_stage_final(s->stage);
	return false;
}

static step_fn check_fn(eng_run *r, const ferry_jstep *s)
{
	return step_check;
}

static bool phase_install(eng_run *r);

static bool phase_check(eng_run *r)
{
	ferry_status st = {0};
	sched_opts o = {.eligible = check_eligible, .fn_for = check_fn};
	sched_result res;

	for (size_t i = 0; i < r->n_cs; i++) {
		ferry_jcomponent *c = &r->cs[i];
		if (!verifying(c))
			continue;
		if (run_interrupted(r))
			break;
		if (c->stage == FERRY_S_DOWNLOADED && !comp_report(r, c, FERRY_S_VERIFYING, NULL, 0, -1))
			return false;
		if (check_image(r, c, &st)) {
			char why[FERRY_DETAIL_MAX];
			comp_report(r, c, FERRY_S_FAILED, &st, -1, -1);
			snprintf(why, sizeof(why), "not installed: the check of %s failed (%s)", c->name,
				 ferry_err_code(st.code));
			end_update(r, FERRY_U_FAILED, why);
			return false;
		}
	}
	if (!run_interrupted(r)) {
		/* the devices' own checks, in parallel; a device that is away now
		 * is checked right before its push */
		eng_discover(r->e, NULL);
		o.atomic = false;
		res = sched_run(r, &o);
		if (res.failed && !run_cancelled(r) && !stopping(r)) {
			end_update(r, FERRY_U_FAILED, "not installed: a device's check failed");
			return false;
		}
	}
	if (stopping(r))
		return false;
	if (run_cancelled(r)) {
		end_update(r, FERRY_U_CANCELLED, "cancelled by command");
		return false;
	}
	size_t last = r->n_cs;
	for (size_t i = 0; i < r->n_cs; i++)
		if (verifying(&r->cs[i]))
			last = i;
	for (size_t i = 0; i < r->n_cs; i++)
		if (verifying(&r->cs[i]) && !comp_report_moving(r, &r->cs[i], FERRY_S_VERIFIED, NULL, -1, -1,
								i == last ? FERRY_U_VERIFIED : r->u.state))
			return false;
	if (!move(r, FERRY_U_VERIFIED))
		return false;
	if (!r->u.deploy)
		return true;
	return move(r, FERRY_U_INSTALLING) && phase_install(r);
}

/* ---- install ---- */

static bool not_final(eng_run *r, const ferry_jstep *s)
{
	return !ferry_stage_final(s->stage);
}

static bool on_trial(eng_run *r, const ferry_jstep *s)
{
	return s->stage == FERRY_S_TRIAL;
}

static step_fn install_fn(eng_run *r, const ferry_jstep *s)
{
	return step_install;
}

static step_fn atomic_fn(eng_run *r, const ferry_jstep *s)
{
	return ferry_adapter_revertible(ferry_adapters_find(r->e->adapters, s->adapter)) ? step_trial : step_install;
}

static step_fn commit_fn(eng_run *r, const ferry_jstep *s)
{
	return step_commit;
}

static step_fn revert_fn(eng_run *r, const ferry_jstep *s)
{
	return step_revert;
}

static bool up(const ferry_jstep *s)
{
	return s->stage == FERRY_S_INSTALLED || s->stage == FERRY_S_ALREADY_INSTALLED;
}

/* DONE when every step installed (or had it already), else FAILED, every
 * step without an outcome getting one. */
static void settle(eng_run *r)
{
	bool all = true;
	for (size_t i = 0; i < r->n_steps; i++)
		all &= up(&r->steps[i]);
	if (all)
		move(r, FERRY_U_DONE);
	else
		end_update(r, FERRY_U_FAILED, "not installed: the update failed before this step ran");
}

static void revert_all(eng_run *r)
{
	sched_opts o = {.eligible = not_final, .fn_for = revert_fn, .run_absent = true};

	atomic_store(&r->finishing, true);
	sched_run(r, &o);
	if (stopping(r))
		return;
	atomic_store(&r->finishing, false);
	end_update(r, run_cancelled(r) ? FERRY_U_CANCELLED : FERRY_U_FAILED, "not installed");
}

static void commit_all(eng_run *r)
{
	sched_opts o = {.eligible = on_trial, .fn_for = commit_fn, .run_absent = true};

	atomic_store(&r->finishing, true);
	sched_run(r, &o);
	if (stopping(r))
		return;
	settle(r);
}

/* Is every step on the new version (on trial, or installed, or had it)? */
static bool all_up(eng_run *r)
{
	for (size_t i = 0; i < r->n_steps; i++)
		if (!up(&r->steps[i]) && r->steps[i].stage != FERRY_S_TRIAL)
			return false;
	return true;
}

/* Has a step ended without the new version (failed, rolled back,
 * cancelled)?  Then the update goes back, whatever else happens. */
static bool any_lost(eng_run *r)
{
	for (size_t i = 0; i < r->n_steps; i++)
		if (ferry_stage_final(r->steps[i].stage) && !up(&r->steps[i]))
			return true;
	return false;
}

static bool set_phase(eng_run *r, ferry_phase to)
{
	ferry_status st = {0};

	ferry_err err;
	int tries = 0;
	while ((err = ferry_journal_phase_move(r->e->journal, r->u.id, r->u.phase, to, &st)) &&
	       wait_for_room(r, "the phase", &st, &tries))
		;
	if (err) {
		if (st.code != FERRY_E_CANCELLED || to == FERRY_P_REVERTING) {
			ferry_log(LOG_ERR, "journal: %s", st.detail);
			return false;
		}
		/* a cancel got in first: go back instead */
		r->u.cancel_requested = true;
		if (!r->why[0])
			snprintf(r->why, sizeof(r->why), "cancelled by command");
		return set_phase(r, FERRY_P_REVERTING);
	}
	r->u.phase = to;
	return true;
}

bool run_last(eng_run *r)
{
	return r->u.phase == FERRY_P_LAST || set_phase(r, FERRY_P_LAST);
}

/* All or nothing.  Forward (and last, while the device that cannot revert
 * is activated) until every device runs the new version; then commit, or
 * go back.  The decision is the journal's: a step that failed before a
 * restart sends the update back even if every other device came up. */
static bool phase_install_atomic(eng_run *r)
{
	if (r->u.phase == FERRY_P_FORWARD || r->u.phase == FERRY_P_LAST) {
		if (!any_lost(r)) {
			sched_opts o = {.eligible = not_final, .fn_for = atomic_fn, .ordered = true, .atomic = true,
					.wait_absent = true};
			sched_run(r, &o);
			if (stopping(r))
				return false;
		}
		/* once the device that cannot revert is being activated, a cancel
		 * is refused; before, it sends every device back */
		bool back = !all_up(r) || (r->u.phase == FERRY_P_FORWARD && run_cancelled(r));
		if (back && !r->why[0] && run_cancelled(r))
			snprintf(r->why, sizeof(r->why), "cancelled by command");
		if (!set_phase(r, back ? FERRY_P_REVERTING : FERRY_P_COMMITTING))
			return false;
		ferry_log(LOG_INFO, "%s: every device %s", r->u.id,
			  r->u.phase == FERRY_P_REVERTING ? "goes back to its old image"
							  : "came up on the new version: committing");
	}
	if (r->u.phase == FERRY_P_COMMITTING)
		commit_all(r);
	else
		revert_all(r);
	return true;
}

static bool phase_install_held(eng_run *r)
{
	if (r->u.state == FERRY_U_VERIFIED && !move(r, FERRY_U_INSTALLING))
		return false;
	eng_discover(r->e, NULL);
	if (r->u.atomic) {
		phase_install_atomic(r);
	} else {
		sched_opts o = {.eligible = not_final, .fn_for = install_fn, .ordered = true, .wait_absent = true};
		sched_run(r, &o);
		if (stopping(r))
			return false;
		if (run_cancelled(r))
			end_update(r, FERRY_U_CANCELLED, "cancelled by command");
		else
			settle(r);
	}
	eng_publish_inventory(r->e);
	return true;
}

static bool hold_wait_cancel(void *ctx)
{
	return run_interrupted(ctx);
}

static bool hold_wait_stop(void *ctx)
{
	return stopping(ctx);
}

/* Hold the devices of every unfinished step, so that no other update
 * pushes to them until this one is done with them.  A cancel ends the wait
 * only when `cancellable` (a revert must wait for its devices). */
static bool hold_devices(eng_run *r, bool cancellable)
{
	eng_device_ref *refs = calloc(r->n_steps + 1, sizeof(*refs));
	size_t n = 0;
	bool ok;

	if (!refs) {
		ferry_log(LOG_ERR, "%s: out of memory", r->u.id);
		return false;
	}
	for (size_t i = 0; i < r->n_steps; i++) {
		bool dup = false;
		if (ferry_stage_final(r->steps[i].stage))
			continue;
		for (size_t k = 0; k < n && !dup; k++)
			dup = !strcmp(refs[k].adapter, r->steps[i].adapter) && !strcmp(refs[k].device, r->steps[i].device);
		if (!dup)
			refs[n++] = (eng_device_ref){.adapter = r->steps[i].adapter, .device = r->steps[i].device};
	}
	ok = eng_devices_hold(r->e->claims, r->u.id, refs, n, cancellable ? hold_wait_cancel : hold_wait_stop, r);
	free(refs);
	return ok;
}

/* Install, holding the update's devices throughout.  Without them (a
 * cancel or a stop came while another update held one), nothing is done:
 * the runner hands a cancel back to run_job, which ends the update. */
static bool phase_install(eng_run *r)
{
	bool ok;

	if (!hold_devices(r, true))
		return false;
	ok = phase_install_held(r);
	eng_devices_release(r->e->claims, r->u.id);
	return ok;
}

/* ---- the runner ---- */

static bool load(eng_run *r, ferry_status *st)
{
	ferry_err err;

	if ((err = ferry_journal_components(r->e->journal, r->u.id, &r->cs, &r->n_cs, st)) ||
	    (err = ferry_journal_steps(r->e->journal, r->u.id, &r->steps, &r->n_steps, st)))
		return false;
	return true;
}

/* The manifest does not verify now (it expired, or its signer is no longer
 * trusted).  Devices already activated are finished as the journal says
 * (under the manifest as it verified when the update was accepted); nothing
 * new is pushed; every other step fails with the reason. */
static void manifest_gone(eng_run *r, const ferry_status *why)
{
	ferry_status st = {0};
	bool touched = r->u.atomic && r->u.phase != FERRY_P_FORWARD;

	for (size_t i = 0; i < r->n_steps; i++)
		touched |= r->steps[i].stage == FERRY_S_ACTIVATING || r->steps[i].stage == FERRY_S_TRIAL;
	if (touched && r->u.state == FERRY_U_INSTALLING &&
	    eng_load_manifest(r->e, &r->u, r->u.created, &r->m, &st) == FERRY_OK) {
		r->no_new_pushes = true;
		snprintf(r->why, sizeof(r->why), "%s", why->detail);
		/* devices on trial are finished whatever comes: a cancel does
		 * not end the wait for them */
		if (hold_devices(r, false)) {
			phase_install_held(r);
			eng_devices_release(r->e->claims, r->u.id);
		}
		ferry_manifest_free(&r->m);
		return;
	}
	for (size_t i = 0; i < r->n_steps; i++)
		if (!ferry_stage_final(r->steps[i].stage) && r->steps[i].stage != FERRY_S_ACTIVATING &&
		    r->steps[i].stage != FERRY_S_TRIAL)
			run_step_report(r, &r->steps[i], FERRY_S_FAILED, ferry_err_code(why->code), why->detail, NULL, -1,
					-1);
	end_update(r, FERRY_U_FAILED, why->detail);
}

/* A cancel for an update that is not in the middle of a phase: devices
 * activated earlier go back (an all-or-nothing update past its point of no
 * return finishes instead), the rest end cancelled. */
static void cancel_now(eng_run *r)
{
	bool activated = false;

	for (size_t i = 0; i < r->n_steps; i++)
		activated |= r->steps[i].stage == FERRY_S_ACTIVATING || r->steps[i].stage == FERRY_S_TRIAL;
	if (!activated && !(r->u.atomic && r->u.phase != FERRY_P_FORWARD)) {
		end_update(r, FERRY_U_CANCELLED, "cancelled by command");
		return;
	}
	if (!hold_devices(r, false))
		return; /* ferryd stops: the next start finishes it */
	if (r->u.atomic && r->u.phase != FERRY_P_FORWARD) {
		phase_install_atomic(r);
	} else if (!r->u.atomic || set_phase(r, FERRY_P_REVERTING)) {
		snprintf(r->why, sizeof(r->why), "cancelled by command");
		revert_all(r);
	}
	eng_devices_release(r->e->claims, r->u.id);
}

/* The job's phase, when the update is at it: a job left over (a second
 * update.download, say) finds the update past it and does nothing. */
static void run_phase(eng_run *r)
{
	ferry_ustate s = r->u.state;

	switch (ferry_job_kind_of(r->job)) {
	case FERRY_JOB_DOWNLOAD:
		if (s == FERRY_U_DOWNLOADING)
			phase_download(r);
		break;
	case FERRY_JOB_CHECK:
		if (s == FERRY_U_DOWNLOADED && !move(r, FERRY_U_VERIFYING))
			break;
		if (r->u.state == FERRY_U_VERIFYING)
			phase_check(r);
		break;
	case FERRY_JOB_INSTALL:
		if (s == FERRY_U_VERIFIED || s == FERRY_U_INSTALLING)
			phase_install(r);
		break;
	}
}

static void run_job(ferry_engine *e, ferry_job *job)
{
	ferry_status st = {0};
	eng_run *r = calloc(1, sizeof(*r));

	if (!r) {
		ferry_log(LOG_ERR, "out of memory: update %s not run", ferry_job_update(job));
		return;
	}
	r->e = e;
	r->job = job;
	pthread_mutex_init(&r->why_lock, NULL);
	if (ferry_journal_update_get(e->journal, ferry_job_update(job), &r->u, &st) || ferry_ustate_final(r->u.state) ||
	    !load(r, &st))
		goto out;
	if (eng_load_manifest(e, &r->u, eng_now(), &r->m, &st)) {
		manifest_gone(r, &st);
		goto out;
	}
	if (run_cancelled(r) && !ferry_job_stopping(job))
		cancel_now(r);
	else
		run_phase(r);
	ferry_manifest_free(&r->m);
out:
	ferry_jcomponents_free(r->cs, r->n_cs);
	free(r->steps);
	ferry_jupdate_free(&r->u);
	pthread_mutex_destroy(&r->why_lock);
	free(r);
}

/* The sha256 of every image an update's manifest names (at most
 * FERRY_COMPONENTS_MAX), read as it verified when it was accepted. */
static ferry_err images_of(ferry_engine *e, const char *id, uint8_t (*out)[32], size_t *n, ferry_status *st)
{
	ferry_jupdate u;
	ferry_manifest m;
	ferry_err err;

	*n = 0;
	if ((err = ferry_journal_update_get(e->journal, id, &u, st)))
		return err;
	if (!(err = eng_load_manifest(e, &u, u.created, &m, st))) {
		for (size_t k = 0; k < m.n && k < FERRY_COMPONENTS_MAX; k++)
			memcpy(out[(*n)++], m.c[k].sha256, 32);
		ferry_manifest_free(&m);
	}
	ferry_jupdate_free(&u);
	return err;
}

/* The store lets go of the images (complete or partial) of updates that have
 * ended, unless an unfinished update needs them too.  Files no update names
 * are left alone.  When an unfinished update's manifest cannot be read,
 * nothing is removed. */
void eng_prune_store(ferry_engine *e)
{
	ferry_status st = {0};
	json_t *open_ids = NULL, *ended = NULL, *pinned = NULL, *unpinned = NULL, *id;
	uint8_t(*keep)[32] = NULL, imgs[FERRY_COMPONENTS_MAX][32];
	size_t n_keep = 0, n, i;

	pthread_mutex_lock(&e->store_lock);
	if (ferry_journal_unfinished(e->journal, &open_ids, &st) || ferry_journal_ended_unpruned(e->journal, &ended, &st))
		goto out;
	if (!json_array_size(ended))
		goto out;
	/* images a device was last given stay: bases for deltas */
	if (ferry_journal_installed_images(e->journal, &pinned, &st))
		goto out;
	if (!(keep = calloc(json_array_size(open_ids) * FERRY_COMPONENTS_MAX + json_array_size(pinned) + 1,
			    sizeof(*keep)))) {
		ferry_fail(&st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	json_array_foreach(pinned, i, id)
		if (!ferry_hex32(json_string_value(id), keep[n_keep]))
			n_keep++;
	json_array_foreach(open_ids, i, id) {
		if (images_of(e, json_string_value(id), imgs, &n, &st))
			goto out;
		memcpy(keep + n_keep, imgs, n * sizeof(imgs[0]));
		n_keep += n;
	}
	json_array_foreach(ended, i, id) {
		if (images_of(e, json_string_value(id), imgs, &n, &st) && st.code == FERRY_E_INTERNAL)
			goto out;
		for (size_t k = 0; k < n; k++) {
			bool needed = false;
			for (size_t q = 0; q < n_keep && !needed; q++)
				needed = !memcmp(keep[q], imgs[k], 32);
			if (!needed)
				ferry_store_remove(e->store, imgs[k]);
			else /* kept whole (a base, or another update's): no partial copy stays */
				ferry_store_remove_partial(e->store, imgs[k]);
		}
		if (ferry_journal_set_pruned(e->journal, json_string_value(id), &st))
			goto out;
	}
	/* an image a device was given before its newest one is no base now */
	if (ferry_journal_unpinned(e->journal, &unpinned, &st))
		goto out;
	json_array_foreach(unpinned, i, id) {
		uint8_t sha[32];
		bool needed = false;
		if (!ferry_hex32(json_string_value(id), sha)) {
			for (size_t q = 0; q < n_keep && !needed; q++)
				needed = !memcmp(keep[q], sha, 32);
			if (!needed)
				ferry_store_remove(e->store, sha);
		}
		if (ferry_journal_unpinned_done(e->journal, json_string_value(id), &st))
			goto out;
	}
	st.code = FERRY_OK;
out:
	pthread_mutex_unlock(&e->store_lock);
	if (st.code)
		ferry_log(LOG_WARNING, "store not pruned: %s", st.detail);
	free(keep);
	json_decref(open_ids);
	json_decref(ended);
	json_decref(pinned);
	json_decref(unpinned);
}

int64_t eng_bases_spare(ferry_engine *e, const ferry_manifest *m, bool drop)
{
	ferry_status st = {0};
	json_t *open_ids = NULL, *pinned = NULL, *id;
	uint8_t(*keep)[32] = NULL, imgs[FERRY_COMPONENTS_MAX][32];
	size_t n_keep = 0, n, i;
	int64_t bytes = 0;

	if (ferry_journal_unfinished(e->journal, &open_ids, &st) ||
	    ferry_journal_installed_images(e->journal, &pinned, &st) ||
	    !(keep = calloc(json_array_size(open_ids) * FERRY_COMPONENTS_MAX + m->n * (1 + FERRY_DELTAS_MAX) + 1,
			    sizeof(*keep))))
		goto out;
	json_array_foreach(open_ids, i, id) {
		if (images_of(e, json_string_value(id), imgs, &n, &st))
			goto out;
		memcpy(keep + n_keep, imgs, n * sizeof(imgs[0]));
		n_keep += n;
	}
	/* what the new update takes from the store: its images, its bases */
	for (size_t c = 0; c < m->n; c++) {
		memcpy(keep[n_keep++], m->c[c].sha256, 32);
		for (size_t k = 0; k < m->c[c].n_deltas; k++)
			memcpy(keep[n_keep++], m->c[c].deltas[k].base_sha256, 32);
	}
	json_array_foreach(pinned, i, id) {
		uint8_t sha[32];
		char path[FERRY_PATH_MAX];
		struct stat sb;
		bool needed = false;
		if (ferry_hex32(json_string_value(id), sha))
			continue;
		for (size_t q = 0; q < n_keep && !needed; q++)
			needed = !memcmp(keep[q], sha, 32);
		if (needed || !ferry_store_has(e->store, sha, path) || stat(path, &sb))
			continue;
		bytes += sb.st_size;
		if (drop)
			ferry_store_remove(e->store, sha);
	}
	if (drop && bytes)
		ferry_log(LOG_INFO, "store: %lld bytes of kept bases let go of to make room", (long long)bytes);
out:
	free(keep);
	json_decref(open_ids);
	json_decref(pinned);
	return bytes;
}

void *eng_runner(void *arg)
{
	ferry_engine *e = arg;
	ferry_job *job;

	while ((job = ferry_jobq_pop(e->jobs))) {
		run_job(e, job);
		/* a cancel that came after the job last looked: end the update now
		 * (run_job does nothing to one that has ended) */
		while (ferry_jobq_finish(e->jobs, job))
			if (!ferry_job_stopping(job))
				run_job(e, job);
		ferry_job_free(job);
		eng_prune_store(e);
	}
	return NULL;
}

/* A deploy stopped after it was allowed, before its download began: once
 * every component that is to be fetched has its link in the journal, it
 * goes on as the deploy would have; otherwise it waits for update.download
 * (which the protocol takes at `allowed`). */
static void resume_deploy(ferry_engine *e, const char *id)
{
	ferry_status st = {0};
	ferry_jcomponent *cs;
	size_t n;
	bool linked = true;

	if (ferry_journal_components(e->journal, id, &cs, &n, &st)) {
		ferry_log(LOG_ERR, "journal: %s", st.detail);
		return;
	}
	for (size_t i = 0; i < n; i++)
		linked &= cs[i].stage != FERRY_S_ALLOWED || cs[i].link != NULL;
	ferry_jcomponents_free(cs, n);
	if (!linked) {
		ferry_log(LOG_WARNING, "%s: a deploy stopped before its links were kept: waiting for update.download", id);
		return;
	}
	if (ferry_journal_update_move(e->journal, id, FERRY_U_ALLOWED, FERRY_U_DOWNLOADING, &st)) {
		ferry_log(LOG_ERR, "journal: %s", st.detail);
		return;
	}
	eng_enqueue(e, FERRY_JOB_DOWNLOAD, id);
}

void eng_resume(ferry_engine *e)
{
	ferry_status st = {0};
	json_t *ids = NULL, *id;
	size_t i;

	if (ferry_journal_unfinished(e->journal, &ids, &st)) {
		ferry_log(LOG_ERR, "journal: %s", st.detail);
		return;
	}
	json_array_foreach(ids, i, id) {
		ferry_jupdate u;
		if (ferry_journal_update_get(e->journal, json_string_value(id), &u, NULL))
			continue;
		ferry_log(LOG_INFO, "resuming update %s (%s)", u.id, ferry_ustate_name(u.state));
		if (u.cancel_requested) {
			/* accepted before the restart: the runner ends it */
			if (eng_enqueue(e, FERRY_JOB_INSTALL, u.id))
				ferry_jobq_cancel(e->jobs, u.id);
			ferry_jupdate_free(&u);
			continue;
		}
		switch (u.state) {
		case FERRY_U_DOWNLOADING: eng_enqueue(e, FERRY_JOB_DOWNLOAD, u.id); break;
		case FERRY_U_VERIFYING: eng_enqueue(e, FERRY_JOB_CHECK, u.id); break;
		case FERRY_U_INSTALLING: eng_enqueue(e, FERRY_JOB_INSTALL, u.id); break;
		/* a deploy stopped between two phases goes on by itself */
		case FERRY_U_ALLOWED:
			if (u.deploy)
				resume_deploy(e, u.id);
			break;
		case FERRY_U_DOWNLOADED:
			if (u.deploy)
				eng_enqueue(e, FERRY_JOB_CHECK, u.id);
			break;
		case FERRY_U_VERIFIED:
			if (u.deploy)
				eng_enqueue(e, FERRY_JOB_INSTALL, u.id);
			break;
		default: break; /* waiting for the cloud's next command */
		}
		ferry_jupdate_free(&u);
	}
	json_decref(ids);
}
