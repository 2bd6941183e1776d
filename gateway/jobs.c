/* The worker: downloads, checks and installs, one update at a time.
 *
 * Each job reads the update back from the journal and the manifest from its
 * signed text, so a job after a restart runs exactly like the first time.
 * Components already past the job's stage are skipped, which is what makes
 * a restarted job safe: nothing is downloaded, pushed or reported installed
 * twice.  When ferryd is stopping, a job leaves the update where it stands
 * so the next start resumes it; only a cancel command cancels.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "download.h"
#include "engine_int.h"
#include "log.h"

#define PROGRESS_EVERY_MS 250

typedef struct jctx {
	ferry_engine *e;
	const char *update_id;
	const char *component;
	const char *stage;     /* "downloading" or "installing" */
	int64_t last_ms;
	int64_t durable;       /* last offset written to the journal */
} jctx;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is(const ferry_jcomponent *c, const char *stage)
{
	return !strcmp(c->stage, stage);
}

static ferry_err report(ferry_engine *e, const char *uid, const char *comp, const char *stage, int64_t done,
			int64_t total)
{
	ferry_status st = {0};
	ferry_transition t = {.update_id = uid, .component = comp, .stage = stage, .done = done, .total = total,
			      .ts = eng_now()};
	return eng_report(e, &t, &st);
}

static void report_failure(ferry_engine *e, const char *uid, const char *comp, const char *stage,
			   const ferry_status *why)
{
	ferry_status st = {0};
	ferry_transition t = {.update_id = uid, .component = comp, .stage = stage,
			      .reason = ferry_err_code(why->code), .detail = why->detail, .total = -1,
			      .ts = eng_now()};
	if (eng_report(e, &t, &st))
		ferry_log(LOG_ERR, "%s/%s: cannot record %s: %s", uid, comp, stage, st.detail);
}

/* The progress stage, at most every PROGRESS_EVERY_MS, first and last always. */
static void progress(jctx *j, int64_t done, int64_t total)
{
	int64_t now = mono_ms();

	if (j->last_ms && done != total && now - j->last_ms < PROGRESS_EVERY_MS)
		return;
	j->last_ms = now;
	if (report(j->e, j->update_id, j->component, j->stage, done, total))
		ferry_log(LOG_WARNING, "%s/%s: progress not recorded", j->update_id, j->component);
}

static void set_state(ferry_engine *e, const char *uid, ferry_ustate s)
{
	ferry_status st = {0};
	if (ferry_journal_update_state(e->journal, uid, s, &st))
		ferry_log(LOG_ERR, "journal: %s", st.detail);
}

static void forget_links(ferry_engine *e, const char *uid, const ferry_jcomponent *cs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (cs[i].link && ferry_journal_set_link(e->journal, uid, cs[i].name, NULL, NULL))
			ferry_log(LOG_ERR, "journal: cannot forget the link of %s/%s", uid, cs[i].name);
}

/* Stop where we are: cancelled by command, or just stopping (resume later).
 * Returns true when the job must end. */
static bool interrupted(ferry_engine *e, const char *uid, const ferry_jcomponent *cs, size_t n)
{
	if (!atomic_load(&e->cancel))
		return false;
	if (atomic_load(&e->stopping))
		return true;
	for (size_t i = 0; i < n; i++) {
		ferry_status why = {.code = FERRY_E_CANCELLED};
		snprintf(why.detail, sizeof(why.detail), "cancelled by command");
		if (!is(&cs[i], "installed") && !is(&cs[i], "already_installed") && !is(&cs[i], "cancelled"))
			report_failure(e, uid, cs[i].name, "cancelled", &why);
	}
	forget_links(e, uid, cs, n);
	set_state(e, uid, FERRY_U_CANCELLED);
	return true;
}

static void fail_update(ferry_engine *e, const char *uid, const char *comp, const char *stage,
			const ferry_status *why, const ferry_jcomponent *cs, size_t n)
{
	report_failure(e, uid, comp, stage, why);
	forget_links(e, uid, cs, n);
	set_state(e, uid, FERRY_U_FAILED);
}

static void dl_durable(void *ctx, int64_t off)
{
	jctx *j = ctx;
	if (ferry_journal_set_dl_offset(j->e->journal, j->update_id, j->component, off, NULL) == FERRY_OK)
		j->durable = off;
}

static bool dl_progress(void *ctx, int64_t done, int64_t total)
{
	jctx *j = ctx;
	progress(j, done, total);
	return !atomic_load(&j->e->cancel);
}

static ferry_err download_one(ferry_engine *e, const char *uid, ferry_jcomponent *c, const ferry_component *mc,
			      ferry_status *st)
{
	const ferry_config *cfg = e->cfg;
	char part[FERRY_PATH_MAX], done_path[FERRY_PATH_MAX];
	jctx j = {.e = e, .update_id = uid, .component = c->name, .stage = "downloading", .durable = c->dl_offset};
	ferry_err err;

	if (!ferry_store_has(e->store, mc->sha256, done_path)) {
		if (!c->link)
			return ferry_fail(st, FERRY_E_DOWNLOAD_FAILED, "%s: no download link; send update.download",
					  c->name);
		ferry_store_partial(e->store, mc->sha256, part);
		/* Bytes past the last durable offset may be garbage after a power cut. */
		if (truncate(part, c->dl_offset) && c->dl_offset > 0)
			ferry_log(LOG_WARNING, "%s/%s: partial file missing; starting over", uid, c->name);
		ferry_dl_req req = {
			.url = c->link, .ca_file = cfg->download.ca, .part_path = part, .size = mc->size,
			.limits = {.connect_timeout_s = cfg->download.connect_timeout_s,
				   .low_speed_bytes = cfg->download.low_speed_bytes,
				   .low_speed_time_s = cfg->download.low_speed_time_s,
				   .retries = cfg->download.retries, .retry_delay_ms = cfg->download.retry_delay_ms},
			.durable = dl_durable, .progress = dl_progress, .ctx = &j};
		memcpy(req.sha256, mc->sha256, 32);
		progress(&j, c->dl_offset, mc->size);
		if ((err = ferry_download(&req, st)) || (err = ferry_store_commit(e->store, mc->sha256, st)))
			return err;
	}
	if (ferry_journal_set_link(e->journal, uid, c->name, NULL, st))
		return st->code;
	return report(e, uid, c->name, "downloaded", mc->size, mc->size);
}

static void job_download(ferry_engine *e, const ferry_jupdate *u, const ferry_manifest *m, ferry_jcomponent *cs,
			 size_t n)
{
	ferry_status st = {0};

	for (size_t i = 0; i < n; i++) {
		if (!is(&cs[i], "allowed") && !is(&cs[i], "downloading"))
			continue;
		if (download_one(e, u->id, &cs[i], ferry_manifest_find(m, cs[i].name), &st)) {
			if (st.code == FERRY_E_CANCELLED && interrupted(e, u->id, cs, n))
				return;
			fail_update(e, u->id, cs[i].name, "failed", &st, cs, n);
			return;
		}
	}
	set_state(e, u->id, FERRY_U_DOWNLOADED);
	if (u->deploy) {
		set_state(e, u->id, FERRY_U_VERIFYING);
		eng_enqueue(e, JOB_CHECK, u->id);
	}
}

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

static ferry_image_v1 image_of(const ferry_component *mc, const char *path)
{
	ferry_image_v1 img = {.size = sizeof(img), .component = mc->name, .path = path, .length = (uint64_t)mc->size,
			      .format = ferry_format_name(mc->format), .version = mc->version.text};
	memcpy(img.sha256, mc->sha256, 32);
	return img;
}

typedef struct sess_ctx {
	jctx j;
} sess_ctx;

static void sh_progress(void *ctx, uint64_t done, uint64_t total)
{
	jctx *j = ctx;
	progress(j, (int64_t)done, (int64_t)total);
	if ((int64_t)done - j->durable >= 64 * 1024 || done == total) {
		if (ferry_journal_set_push_offset(j->e->journal, j->update_id, j->component, (int64_t)done, NULL) ==
		    FERRY_OK)
			j->durable = (int64_t)done;
	}
}

static bool sh_cancelled(void *ctx)
{
	return atomic_load(&((jctx *)ctx)->e->cancel);
}

/* Open a session on the component's device: the identity is checked again
 * right before use. */
static ferry_err open_session(ferry_engine *e, const ferry_component *mc, const ferry_session_host_v1 *sh,
			      ferry_adapter **ad, void **sess, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	const ferry_device_v1 *dev;
	ferry_device_v1 copy;
	int rc;

	pthread_mutex_lock(&e->adapters_lock);
	ferry_adapters_discover(e->adapters);
	*ad = ferry_adapters_find(e->adapters, mc->adapter);
	dev = *ad ? ferry_adapters_match(e->adapters, *ad, mc) : NULL;
	if (dev)
		copy = *dev;
	pthread_mutex_unlock(&e->adapters_lock);
	if (!dev)
		return ferry_fail(st, FERRY_E_NO_MATCHING_DEVICE, "%s: its device is not attached", mc->name);
	if ((rc = (*ad)->ops->open((*ad)->state, &copy, sh, sess, detail)))
		return ferry_fail(st, (ferry_err)rc, "%s: %s", mc->name, detail);
	return FERRY_OK;
}

static ferry_err check_one(ferry_engine *e, const char *uid, const ferry_component *mc, ferry_status *st)
{
	char path[FERRY_PATH_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	uint8_t dig[32];
	int64_t size;
	jctx j = {.e = e, .update_id = uid, .component = mc->name, .stage = "verifying"};
	ferry_session_host_v1 sh = {.size = sizeof(sh), .ctx = &j, .progress = sh_progress, .cancelled = sh_cancelled};
	ferry_adapter *ad;
	void *sess;
	ferry_err err;
	int rc;

	if ((err = report(e, uid, mc->name, "verifying", 0, -1)))
		return ferry_fail(st, err, "journal");
	if (!ferry_store_has(e->store, mc->sha256, path))
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "%s: image is not in the store", mc->name);
	if ((err = hash_file(path, &size, dig, st)))
		return err;
	if (size != mc->size)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "%s: %lld bytes, manifest says %lld", mc->name,
				  (long long)size, (long long)mc->size);
	if (memcmp(dig, mc->sha256, 32))
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "%s: SHA-256 differs from the manifest", mc->name);
	if ((err = open_session(e, mc, &sh, &ad, &sess, st)))
		return err;
	ferry_image_v1 img = image_of(mc, path);
	rc = ad->ops->check(sess, &img, detail);
	ad->ops->close(sess);
	if (rc)
		return ferry_fail(st, (ferry_err)rc, "%s: %s", mc->name, detail);
	return report(e, uid, mc->name, "verified", -1, -1) ? ferry_fail(st, FERRY_E_INTERNAL, "journal") : FERRY_OK;
}

static void job_check(ferry_engine *e, const ferry_jupdate *u, const ferry_manifest *m, ferry_jcomponent *cs,
		      size_t n)
{
	ferry_status st = {0};

	for (size_t i = 0; i < n; i++) {
		if (!is(&cs[i], "downloaded") && !is(&cs[i], "verifying"))
			continue;
		if (interrupted(e, u->id, cs, n))
			return;
		if (check_one(e, u->id, ferry_manifest_find(m, cs[i].name), &st)) {
			fail_update(e, u->id, cs[i].name, "failed", &st, cs, n);
			return;
		}
	}
	set_state(e, u->id, FERRY_U_VERIFIED);
	if (u->deploy) {
		set_state(e, u->id, FERRY_U_INSTALLING);
		eng_enqueue(e, JOB_INSTALL, u->id);
	}
}

/* Push, activate, confirm.  `*stage_out` says which stage a failure
 * belongs to: after activation a device that can roll back has done so. */
static ferry_err push(ferry_engine *e, ferry_adapter *ad, void *sess, const char *uid, ferry_jcomponent *c,
		      const ferry_image_v1 *img, char *version, bool *activated, ferry_status *st)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	uint64_t off = (ad->ops->caps & FERRY_ADAPTER_CAP_RESUME) ? (uint64_t)c->push_offset : 0;
	int rc;

	*activated = false;
	if (is(c, "activating")) {
		/* We stopped while the device applied it: ask before pushing again. */
		if (ad->ops->confirm(sess, img, version, detail) == 0)
			return FERRY_OK;
		off = 0;
	}
	if ((rc = ad->ops->check(sess, img, detail)))
		return ferry_fail(st, (ferry_err)rc, "%s", detail);
	if ((rc = ad->ops->write(sess, img, &off, detail)))
		return ferry_fail(st, (ferry_err)rc, "%s", detail);
	if (atomic_load(&e->cancel))
		return ferry_fail(st, FERRY_E_CANCELLED, "cancelled before activation");
	if (report(e, uid, c->name, "activating", -1, -1))
		return ferry_fail(st, FERRY_E_INTERNAL, "journal");
	*activated = true;
	if ((rc = ad->ops->activate(sess, img, detail)) || (rc = ad->ops->confirm(sess, img, version, detail)))
		return ferry_fail(st, (ferry_err)rc, "%s", detail);
	return FERRY_OK;
}

static ferry_err install_one(ferry_engine *e, const char *uid, ferry_jcomponent *c, const ferry_component *mc,
			     const char **stage, ferry_status *st)
{
	char path[FERRY_PATH_MAX], version[FERRY_ADAPTER_STR_MAX] = "", detail[FERRY_ADAPTER_DETAIL_MAX];
	jctx j = {.e = e, .update_id = uid, .component = c->name, .stage = "installing", .durable = c->push_offset};
	ferry_session_host_v1 sh = {.size = sizeof(sh), .ctx = &j, .progress = sh_progress, .cancelled = sh_cancelled};
	ferry_adapter *ad;
	void *sess;
	bool activated;
	ferry_err err;

	*stage = "failed";
	if (!ferry_store_has(e->store, mc->sha256, path))
		return ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "%s: image is not in the store", c->name);
	if ((err = open_session(e, mc, &sh, &ad, &sess, st)))
		return err;
	ferry_image_v1 img = image_of(mc, path);
	if (!is(c, "activating"))
		progress(&j, 0, mc->size);
	err = push(e, ad, sess, uid, c, &img, version, &activated, st);
	if (err) {
		/* `rolled_back` is a claim about the device: make it only when
		 * the adapter reached the device afterwards and left it on its
		 * old image.  A device that cannot be reached after activation
		 * may run either image, and the report says so. */
		detail[0] = '\0';
		int arc = ad->ops->abort(sess, detail);
		if (activated && arc) {
			char was[FERRY_DETAIL_MAX];
			snprintf(was, sizeof(was), "%s", st->detail);
			ferry_fail(st, err, "%s; the device could not be checked afterwards, so which image it runs is "
					    "unknown: %s", was, detail[0] ? detail : "no detail");
			ferry_log(LOG_WARNING, "%s/%s: %s", uid, c->name, st->detail);
		} else if (activated && (ad->ops->caps & FERRY_ADAPTER_CAP_ROLLBACK)) {
			*stage = "rolled_back";
		}
	}
	ad->ops->close(sess);
	if (err)
		return err;
	if ((err = ferry_journal_set_installed(e->journal, c->name, version, "", eng_now(), st)))
		return err;
	ferry_transition t = {.update_id = uid, .component = c->name, .stage = "installed", .version = version,
			      .total = -1, .ts = eng_now()};
	return eng_report(e, &t, st);
}

static bool device_present(ferry_engine *e, const ferry_component *mc)
{
	ferry_adapter *ad;
	bool found;

	pthread_mutex_lock(&e->adapters_lock);
	ad = ferry_adapters_find(e->adapters, mc->adapter);
	if (ad)
		ferry_adapters_discover_one(e->adapters, ad);
	found = ad && ferry_adapters_match(e->adapters, ad, mc);
	pthread_mutex_unlock(&e->adapters_lock);
	return found;
}

/* A subdevice that is not attached now is waited for: the component is
 * reported `waiting` once, and the install goes on by itself when the device
 * is back, until the update expires.  Returns 0 when the device is there,
 * else the reason the wait ended. */
static ferry_err wait_for_device(ferry_engine *e, const ferry_jupdate *u, ferry_jcomponent *c,
				 const ferry_component *mc, ferry_status *st)
{
	if (device_present(e, mc))
		return FERRY_OK;
	if (!is(c, "waiting")) {
		if (report(e, u->id, c->name, "waiting", -1, -1))
			return ferry_fail(st, FERRY_E_INTERNAL, "journal");
		snprintf(c->stage, sizeof(c->stage), "waiting");
	}
	ferry_log(LOG_INFO, "%s/%s: waiting for its %s device", u->id, c->name, mc->adapter);
	for (;;) {
		for (int i = 0; i < 20 && !atomic_load(&e->cancel); i++) {
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (atomic_load(&e->cancel))
			return ferry_fail(st, FERRY_E_CANCELLED, "cancelled while waiting for the device");
		if (u->expires && eng_now() >= u->expires)
			return ferry_fail(st, FERRY_E_EXPIRED, "%s: its device did not come back before the update expired",
					  c->name);
		if (device_present(e, mc))
			return FERRY_OK;
	}
}

static void job_install(ferry_engine *e, const ferry_jupdate *u, const ferry_manifest *m, ferry_jcomponent *cs,
			size_t n)
{
	ferry_status st = {0};
	const char *stage;

	for (size_t i = 0; i < n; i++) {
		if (!is(&cs[i], "verified") && !is(&cs[i], "installing") && !is(&cs[i], "activating") &&
		    !is(&cs[i], "waiting"))
			continue;
		if (interrupted(e, u->id, cs, n))
			return;
		if (wait_for_device(e, u, &cs[i], ferry_manifest_find(m, cs[i].name), &st)) {
			if (st.code == FERRY_E_CANCELLED && interrupted(e, u->id, cs, n))
				return;
			fail_update(e, u->id, cs[i].name, "failed", &st, cs, n);
			return;
		}
		if (install_one(e, u->id, &cs[i], ferry_manifest_find(m, cs[i].name), &stage, &st)) {
			if (st.code == FERRY_E_CANCELLED && interrupted(e, u->id, cs, n))
				return;
			fail_update(e, u->id, cs[i].name, stage, &st, cs, n);
			eng_publish_inventory(e);
			return;
		}
		snprintf(cs[i].stage, sizeof(cs[i].stage), "installed");
	}
	set_state(e, u->id, FERRY_U_DONE);
	eng_publish_inventory(e);
}

static void run_job(ferry_engine *e, const job *jb)
{
	ferry_status st = {0};
	ferry_jupdate u;
	ferry_manifest m;
	ferry_jcomponent *cs = NULL;
	size_t n = 0;

	if (ferry_journal_update_get(e->journal, jb->update_id, &u, &st))
		return;
	if (ferry_ustate_final(u.state)) {
		ferry_jupdate_free(&u);
		return;
	}
	if (eng_load_manifest(e, &u, &m, &st)) {
		/* expired or no longer trusted: end it, with the reason */
		if (ferry_journal_components(e->journal, u.id, &cs, &n, NULL) == FERRY_OK && n)
			fail_update(e, u.id, cs[0].name, "failed", &st, cs, n);
		ferry_jcomponents_free(cs, n);
		ferry_jupdate_free(&u);
		return;
	}
	if (ferry_journal_components(e->journal, u.id, &cs, &n, &st) == FERRY_OK) {
		switch (jb->kind) {
		case JOB_DOWNLOAD: job_download(e, &u, &m, cs, n); break;
		case JOB_CHECK: job_check(e, &u, &m, cs, n); break;
		case JOB_INSTALL: job_install(e, &u, &m, cs, n); break;
		}
		ferry_jcomponents_free(cs, n);
	}
	ferry_manifest_free(&m);
	ferry_jupdate_free(&u);
}

void *eng_worker(void *arg)
{
	ferry_engine *e = arg;

	for (;;) {
		job *jb;
		pthread_mutex_lock(&e->job_lock);
		while (!e->job_head && !atomic_load(&e->stopping))
			pthread_cond_wait(&e->job_cond, &e->job_lock);
		if (atomic_load(&e->stopping)) {
			pthread_mutex_unlock(&e->job_lock);
			break;
		}
		jb = e->job_head;
		e->job_head = jb->next;
		if (!e->job_head)
			e->job_tail = NULL;
		snprintf(e->running, sizeof(e->running), "%s", jb->update_id);
		atomic_store(&e->cancel, false);
		pthread_mutex_unlock(&e->job_lock);

		run_job(e, jb);

		pthread_mutex_lock(&e->job_lock);
		e->running[0] = '\0';
		pthread_mutex_unlock(&e->job_lock);
		free(jb);
	}
	return NULL;
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
		switch (u.state) {
		case FERRY_U_DOWNLOADING: eng_enqueue(e, JOB_DOWNLOAD, u.id); break;
		case FERRY_U_VERIFYING: eng_enqueue(e, JOB_CHECK, u.id); break;
		case FERRY_U_INSTALLING: eng_enqueue(e, JOB_INSTALL, u.id); break;
		default: break; /* waiting for the cloud's next command */
		}
		ferry_jupdate_free(&u);
	}
	json_decref(ids);
}
