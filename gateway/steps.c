/* What one step does on its device, in a session of its own, on a thread of
 * its own (sched.c starts it).
 *
 *   check    the adapter's check of the image against the device;
 *   install  push (resuming at the device's offset), activate, read the
 *            version back (it must be the manifest's), commit;
 *   trial    push, activate on trial, read back, and stop there: an
 *            all-or-nothing update commits every device only once all of
 *            them came up;
 *   commit   make a device that runs on trial permanent, retried;
 *   revert   put a device that was activated back on its old image.
 *
 * After a restart a step picks up where its stage says: a step that was
 * activating is asked what it runs before anything is pushed again, one
 * that was on trial is asked whether it still is.
 *
 * `rolled_back` is a claim about the device: it is made only when the
 * adapter reached the device afterwards and put it back on its old image.
 * A device that cannot be reached after activation may run either image,
 * and the report says so.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "run.h"

#define PROGRESS_EVERY_MS 250
#define DURABLE_EVERY (64 * 1024)
#define COMMIT_TRIES 3

typedef struct sctx {
	eng_run *r;
	ferry_jstep *s;
	int64_t last_ms;
	int64_t durable; /* last push offset written to the journal */
} sctx;

/* The progress stage, at most every PROGRESS_EVERY_MS, first and last
 * always; the device's offset goes to the journal every DURABLE_EVERY. */
static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	sctx *x = ctx;
	int64_t now = eng_mono_ms();

	if (!x->last_ms || done == total || now - x->last_ms >= PROGRESS_EVERY_MS) {
		x->last_ms = now;
		run_step_report(x->r, x->s, FERRY_S_INSTALLING, NULL, NULL, NULL, (int64_t)done, (int64_t)total);
	}
	if ((int64_t)done - x->durable >= DURABLE_EVERY || (done == total && (int64_t)done != x->durable)) {
		if (ferry_journal_set_push_offset(x->r->e->journal, x->r->u.id, x->s->component, x->s->device,
						  (int64_t)done, NULL) == FERRY_OK)
			x->durable = (int64_t)done;
	}
}

static bool on_cancelled(void *ctx)
{
	eng_run *r = ((sctx *)ctx)->r;
	return atomic_load(&r->finishing) ? ferry_job_stopping(r->job) : run_interrupted(r);
}

static ferry_image_v1 image_of(const ferry_component *mc, const char *path)
{
	ferry_image_v1 img = {.size = sizeof(img), .component = mc->name, .path = path, .length = (uint64_t)mc->size,
			      .format = ferry_format_name(mc->format), .version = mc->version.text};
	memcpy(img.sha256, mc->sha256, 32);
	return img;
}

/* The step's image, from the store. */
static ferry_err image_for(eng_run *r, const ferry_jstep *s, char path[FERRY_PATH_MAX], ferry_image_v1 *img,
			   ferry_status *st)
{
	const ferry_component *mc = run_component(r, s->component);

	if (!mc)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s is not in the manifest", s->component);
	if (!ferry_store_has(r->e->store, mc->sha256, path))
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "%s: its image is not in the store", s->component);
	*img = image_of(mc, path);
	return FERRY_OK;
}

/* A session on the step's device, as discovery saw it last.  STEP_ABSENT
 * when it is not attached (now, or by the time the session opens). */
static step_result open_on(eng_run *r, ferry_jstep *s, sctx *x, ferry_session **sess, ferry_status *st)
{
	ferry_adapter *ad = ferry_adapters_find(r->e->adapters, s->adapter);
	ferry_session_cb cb = {.ctx = x, .progress = on_progress, .cancelled = on_cancelled};
	ferry_device_v1 dev;
	ferry_err err;

	*sess = NULL;
	if (!ad) {
		ferry_fail(st, FERRY_E_UNSUPPORTED, "no adapter %s on this gateway", s->adapter);
		return STEP_FAILED;
	}
	if (!ferry_adapters_present(r->e->adapters, ad, s->device, &dev)) {
		ferry_fail(st, FERRY_E_NO_MATCHING_DEVICE, "%s is not attached", s->device);
		return STEP_ABSENT;
	}
	if (!(err = ferry_session_open(ad, &dev, &cb, sess, st)))
		return STEP_OK;
	if (err == FERRY_E_NO_MATCHING_DEVICE) {
		ferry_log(LOG_INFO, "%s/%s: %s is gone: %s", r->u.id, s->component, s->device, st->detail);
		return STEP_ABSENT;
	}
	return STEP_FAILED;
}

/* The device's link, as discovery saw it last, still good enough for the
 * step's component?  (An absent device is open_on's business.) */
static ferry_err link_weaker(eng_run *r, ferry_jstep *s, ferry_status *st)
{
	ferry_adapter *ad = ferry_adapters_find(r->e->adapters, s->adapter);
	const ferry_component *c = run_component(r, s->component);
	ferry_device_v1 dev;

	if (!ad || !c || !ferry_adapters_present(r->e->adapters, ad, s->device, &dev))
		return FERRY_OK;
	return eng_link_check(r->e, c, &dev, st);
}

static const char *interruption(eng_run *r, char *buf, size_t cap)
{
	if (ferry_job_cancelled(r->job))
		return "cancelled by command";
	pthread_mutex_lock(&r->why_lock);
	snprintf(buf, cap, "not installed: %s", r->why[0] ? r->why : "another step of this update failed");
	pthread_mutex_unlock(&r->why_lock);
	return buf;
}

/* The step stopped with err (in st): undo what can be undone and give it
 * its outcome.  `activated`: the device may run the new image. */
static step_result fail_step(eng_run *r, ferry_jstep *s, ferry_session *sess, const ferry_image_v1 *img,
			     bool activated, const ferry_status *st)
{
	ferry_adapter *ad = ferry_adapters_find(r->e->adapters, s->adapter);
	ferry_status ab = {0};
	char buf[FERRY_DETAIL_MAX + 64];
	bool undone;

	if (st->code == FERRY_E_CANCELLED && ferry_job_stopping(r->job)) {
		/* ferryd stops: leave the device as it is; the next start asks it */
		ferry_log(LOG_INFO, "%s/%s on %s: left for the next start", r->u.id, s->component, s->device);
		return STEP_STOPPED;
	}
	if (r->u.atomic && !(st->code == FERRY_E_CANCELLED && run_interrupted(r)))
		run_note_failure(r, s, st);
	undone = sess && ferry_session_abort(sess, img, &ab) == FERRY_OK;
	if (!activated && st->code == FERRY_E_CANCELLED && run_interrupted(r)) {
		run_step_report(r, s, FERRY_S_CANCELLED, "cancelled", interruption(r, buf, sizeof(buf)), NULL, -1, -1);
		return STEP_FAILED;
	}
	if (activated && ferry_adapter_rolls_back(ad) && undone) {
		run_step_report(r, s, FERRY_S_ROLLED_BACK, ferry_err_code(st->code), st->detail, NULL, -1, -1);
	} else if (activated && ferry_adapter_rolls_back(ad)) {
		snprintf(buf, sizeof(buf), "%s; the device could not be checked afterwards, so which image it runs is "
					   "unknown: %s", st->detail, ab.detail[0] ? ab.detail : "no detail");
		ferry_log(LOG_WARNING, "%s/%s on %s: %s", r->u.id, s->component, s->device, buf);
		run_step_report(r, s, FERRY_S_FAILED, ferry_err_code(st->code), buf, NULL, -1, -1);
	} else {
		run_step_report(r, s, FERRY_S_FAILED, ferry_err_code(st->code), st->detail, NULL, -1, -1);
	}
	return STEP_FAILED;
}

static step_result failed_early(eng_run *r, ferry_jstep *s, step_result why, const ferry_status *st)
{
	if (why == STEP_ABSENT)
		return STEP_ABSENT;
	return fail_step(r, s, NULL, NULL, false, st);
}

/* Commit, retried: a device may refuse once and take it the next time. */
static ferry_err commit_tries(eng_run *r, ferry_jstep *s, ferry_session *sess, const ferry_image_v1 *img,
			      ferry_status *st)
{
	ferry_err err = FERRY_OK;

	for (int i = 0; i < COMMIT_TRIES; i++) {
		if (!(err = ferry_session_commit(sess, img, st)))
			return FERRY_OK;
		if (err == FERRY_E_CANCELLED)
			break;
		ferry_log(LOG_WARNING, "%s/%s on %s: commit %d of %d failed: %s", r->u.id, s->component, s->device, i + 1,
			  COMMIT_TRIES, st->detail);
	}
	return err;
}

/* The device runs the new image; was that recorded?  A report the journal
 * could not take before ferryd stopped is not a failure: the next start
 * reads the device again. */
static step_result recorded(eng_run *r, bool ok)
{
	return ok ? STEP_OK : ferry_job_stopping(r->job) ? STEP_STOPPED : STEP_FAILED;
}

step_result step_check(eng_run *r, ferry_jstep *s)
{
	char path[FERRY_PATH_MAX];
	sctx x = {.r = r, .s = s};
	ferry_image_v1 img;
	ferry_session *sess;
	ferry_status st = {0};
	step_result res;

	if (image_for(r, s, path, &img, &st) || link_weaker(r, s, &st))
		return fail_step(r, s, NULL, NULL, false, &st);
	if ((res = open_on(r, s, &x, &sess, &st)) != STEP_OK)
		return res == STEP_ABSENT ? STEP_OK /* checked again before its push */ : failed_early(r, s, res, &st);
	ferry_err err = ferry_session_check(sess, &img, &st);
	ferry_session_close(sess);
	if (err)
		return fail_step(r, s, NULL, NULL, false, &st);
	return STEP_OK;
}

/* Push and activate: the common part of install and trial.  On success the
 * device runs the new image (on trial when it can) and `version` holds
 * what it reports.  *activated tells a failure's caller how far it got. */
static ferry_err push_and_activate(eng_run *r, ferry_jstep *s, ferry_session *sess, const ferry_image_v1 *img,
				   char *version, bool *activated, ferry_status *st)
{
	ferry_adapter *ad = ferry_adapters_find(r->e->adapters, s->adapter);
	uint64_t off = ferry_adapter_resumes(ad) ? (uint64_t)s->push_offset : 0;
	ferry_err err;

	*activated = false;
	if (s->stage == FERRY_S_ACTIVATING || s->stage == FERRY_S_TRIAL) {
		/* we stopped while the device applied it: ask before pushing again,
		 * and push again only when the device answered that it does not run
		 * the new image (a device that cannot be reached may run it) */
		*activated = true;
		if (!(err = ferry_session_confirm(sess, img, version, st)))
			return FERRY_OK;
		if (r->no_new_pushes || s->stage == FERRY_S_TRIAL || ferry_adapter_restarts_gateway(ad) ||
		    (err != FERRY_E_VERSION_MISMATCH && err != FERRY_E_INSTALL_FAILED))
			return err;
		ferry_log(LOG_INFO, "%s/%s on %s: it does not run the new image (%s); pushing again", r->u.id,
			  s->component, s->device, st->detail);
		*activated = false;
		off = 0;
	}
	if (r->no_new_pushes)
		return ferry_fail(st, FERRY_E_EXPIRED, "the update's manifest no longer verifies: nothing new is pushed");
	run_step_report(r, s, FERRY_S_INSTALLING, NULL, NULL, NULL, (int64_t)off, (int64_t)img->length);
	if ((err = ferry_session_check(sess, img, st)) || (err = ferry_session_write(sess, img, &off, st)))
		return err;
	if (run_interrupted(r))
		return ferry_fail(st, FERRY_E_CANCELLED, "cancelled before activation");
	/* all or nothing: the device that cannot revert is the point of no
	 * return; a cancel recorded before it sends every device back */
	if (r->u.atomic && !ferry_adapter_revertible(ad) && !run_last(r))
		return ferry_fail(st, FERRY_E_CANCELLED, "cancelled before %s, which cannot revert, was activated",
				  s->device);
	if (!run_step_report(r, s, FERRY_S_ACTIVATING, NULL, NULL, NULL, -1, -1))
		return ferry_job_stopping(r->job) /* it waited for room in the journal until the stop */
			       ? ferry_fail(st, FERRY_E_CANCELLED, "ferryd stops before the device was activated")
			       : ferry_fail(st, FERRY_E_INTERNAL, "the journal refused the activating stage");
	*activated = true;
	if ((err = ferry_session_activate(sess, img, st)) || (err = ferry_session_confirm(sess, img, version, st)))
		return err;
	return FERRY_OK;
}

static step_result push_step(eng_run *r, ferry_jstep *s, bool trial)
{
	char path[FERRY_PATH_MAX], version[FERRY_ADAPTER_STR_MAX] = "";
	sctx x = {.r = r, .s = s, .durable = s->push_offset};
	ferry_image_v1 img;
	ferry_session *sess;
	ferry_status st = {0};
	bool activated;
	step_result res;

	if (image_for(r, s, path, &img, &st))
		return fail_step(r, s, NULL, NULL, false, &st);
	/* since admission (a bond lost, say), and before anything was activated */
	if (s->stage != FERRY_S_TRIAL && s->stage != FERRY_S_ACTIVATING && link_weaker(r, s, &st))
		return fail_step(r, s, NULL, NULL, false, &st);
	if ((res = open_on(r, s, &x, &sess, &st)) != STEP_OK)
		return failed_early(r, s, res, &st);
	bool was_trial = s->stage == FERRY_S_TRIAL;
	if (push_and_activate(r, s, sess, &img, version, &activated, &st) ||
	    (!trial && commit_tries(r, s, sess, &img, &st))) {
		res = fail_step(r, s, sess, &img, activated, &st);
		ferry_session_close(sess);
		return res;
	}
	ferry_session_close(sess);
	if (trial) {
		/* still on trial after a restart: nothing new to say */
		if (!was_trial)
			run_step_report(r, s, FERRY_S_TRIAL, NULL, NULL, version, -1, -1);
		return STEP_OK;
	}
	return recorded(r, run_step_report(r, s, FERRY_S_INSTALLED, NULL, NULL, version, -1, -1));
}

step_result step_install(eng_run *r, ferry_jstep *s)
{
	return push_step(r, s, false);
}

step_result step_trial(eng_run *r, ferry_jstep *s)
{
	return push_step(r, s, true);
}

/* A session for a step that must reach its device (commit, revert): the
 * device may be away for a moment after its activation, so look again a
 * few times before giving up. */
static step_result reach(eng_run *r, ferry_jstep *s, sctx *x, ferry_session **sess, ferry_status *st)
{
	step_result res = STEP_ABSENT;

	for (int i = 0; i < 3 && res == STEP_ABSENT; i++) {
		if (i) {
			struct timespec pause = {1, 0}; /* a device rebooting into its new image */
			nanosleep(&pause, NULL);
			eng_discover(r->e, ferry_adapters_find(r->e->adapters, s->adapter));
		}
		res = open_on(r, s, x, sess, st);
	}
	return res;
}

step_result step_commit(eng_run *r, ferry_jstep *s)
{
	char path[FERRY_PATH_MAX], version[FERRY_ADAPTER_STR_MAX] = "", buf[FERRY_DETAIL_MAX + 200];
	sctx x = {.r = r, .s = s};
	ferry_image_v1 img;
	ferry_session *sess = NULL;
	ferry_status st = {0}, vs = {0};
	ferry_err err;

	if (!(err = image_for(r, s, path, &img, &st)) && reach(r, s, &x, &sess, &st) == STEP_OK) {
		err = commit_tries(r, s, sess, &img, &st);
		if (!err && ferry_session_confirm(sess, &img, version, &vs))
			snprintf(version, sizeof(version), "%s", s->version);
	} else if (!err) {
		err = st.code ? st.code : FERRY_E_ADAPTER_ERROR;
	}
	if (err == FERRY_E_CANCELLED && ferry_job_stopping(r->job)) {
		ferry_session_close(sess);
		return STEP_STOPPED;
	}
	ferry_session_close(sess);
	if (!err)
		return recorded(r, run_step_report(r, s, FERRY_S_INSTALLED, NULL, NULL, version, -1, -1));
	/* the one window where all or nothing cannot hold: say who runs what */
	snprintf(buf, sizeof(buf),
		 "%s could not be made permanent (%s): it runs %s on trial and goes back to its old image at its next "
		 "reset, while the other devices of this update that were committed run their new versions for good",
		 s->device, st.detail, s->version[0] ? s->version : img.version);
	ferry_log(LOG_ERR, "%s/%s: %s", r->u.id, s->component, buf);
	run_step_report(r, s, FERRY_S_FAILED, ferry_err_code(err), buf, NULL, -1, -1);
	return STEP_FAILED;
}

step_result step_revert(eng_run *r, ferry_jstep *s)
{
	char path[FERRY_PATH_MAX], why[FERRY_DETAIL_MAX + 32], buf[2 * FERRY_DETAIL_MAX + 100];
	sctx x = {.r = r, .s = s};
	ferry_image_v1 img;
	ferry_session *sess = NULL;
	ferry_status st = {0};
	ferry_adapter *ad = ferry_adapters_find(r->e->adapters, s->adapter);
	bool activated = s->stage == FERRY_S_ACTIVATING || s->stage == FERRY_S_TRIAL;
	step_result res;

	interruption(r, why, sizeof(why));
	if (image_for(r, s, path, &img, &st)) {
		run_step_report(r, s, activated ? FERRY_S_FAILED : FERRY_S_CANCELLED, activated ? "internal" : "cancelled",
				activated ? st.detail : why, NULL, -1, -1);
		return STEP_FAILED;
	}
	if (!activated) {
		/* a partial push harms nothing, but drop it where the device is here */
		if (s->stage == FERRY_S_INSTALLING && open_on(r, s, &x, &sess, &st) == STEP_OK) {
			if (ferry_session_abort(sess, &img, &st))
				ferry_log(LOG_WARNING, "%s/%s on %s: %s", r->u.id, s->component, s->device, st.detail);
			ferry_session_close(sess);
		}
		run_step_report(r, s, FERRY_S_CANCELLED, "cancelled", why, NULL, -1, -1);
		return STEP_OK;
	}
	if ((res = reach(r, s, &x, &sess, &st)) == STEP_OK) {
		ferry_err err = ad && ferry_adapter_rolls_back(ad) ? ferry_session_abort(sess, &img, &st)
								   : ferry_fail(&st, FERRY_E_INSTALL_FAILED,
										"its adapter cannot revert an image");
		ferry_session_close(sess);
		if (err == FERRY_E_CANCELLED && ferry_job_stopping(r->job))
			return STEP_STOPPED;
		if (!err) {
			snprintf(buf, sizeof(buf), "put back on its old image: %s", why);
			run_step_report(r, s, FERRY_S_ROLLED_BACK, "cancelled", buf, NULL, -1, -1);
			return STEP_OK;
		}
	}
	snprintf(buf, sizeof(buf), "%s; its old image could not be put back, so which image it runs is unknown: %s",
		 why, st.detail[0] ? st.detail : "not reached");
	ferry_log(LOG_ERR, "%s/%s on %s: %s", r->u.id, s->component, s->device, buf);
	run_step_report(r, s, FERRY_S_FAILED, st.code ? ferry_err_code(st.code) : "adapter_error", buf, NULL, -1, -1);
	return STEP_FAILED;
}
