/* The engine's core: the event loop on the main thread, the runner threads
 * and stage reports.
 *
 * Threads: the cloud session's thread only queues events; the main thread
 * handles commands (quick: verify, check, journal, reply); each of the
 * updates.parallel runners takes an update's next job from the job queue
 * (never two jobs of one update at once) and runs its long phases
 * (download, check, install), which start threads of their own for
 * downloads and device sessions in parallel.  What runners share (sessions,
 * devices, images being fetched) is claimed in claims.c.  Reports follow one rule
 * everywhere: commit the transition, then publish.  A report the broker has
 * not acknowledged stays in the journal's outbox and is sent again on the
 * next connection, so the cloud sees every report at least once and
 * de-duplicates by (update_id, seq).
 */
#include "engine_int.h"

#include <malloc.h>
#include <openssl/buffer.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/jwe.h"
#include "log.h"
#include "state.h"

int64_t eng_now(void)
{
	return (int64_t)time(NULL);
}

int64_t eng_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t eng_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void push_event(ferry_engine *e, event *ev)
{
	pthread_mutex_lock(&e->ev_lock);
	if (e->ev_tail)
		e->ev_tail->next = ev;
	else
		e->ev_head = ev;
	e->ev_tail = ev;
	pthread_cond_signal(&e->ev_cond);
	pthread_mutex_unlock(&e->ev_lock);
}

static void on_command(void *ctx, const char *payload, size_t len)
{
	event *ev = calloc(1, sizeof(*ev));
	if (!ev || (payload && !(ev->payload = malloc(len + 1)))) {
		free(ev);
		ferry_log(LOG_ERR, "out of memory: a command was dropped");
		return;
	}
	if (payload) { /* NULL: over the size limit, answered without its bytes */
		memcpy(ev->payload, payload, len);
		ev->payload[len] = '\0';
	}
	ev->len = len;
	ev->kind = EV_COMMAND;
	push_event(ctx, ev);
}

static void on_simple(ferry_engine *e, event_kind kind, int mid)
{
	event *ev = calloc(1, sizeof(*ev));
	if (!ev)
		return;
	ev->kind = kind;
	ev->mid = mid;
	push_event(e, ev);
}

static void on_connected(void *ctx)
{
	on_simple(ctx, EV_CONNECTED, 0);
}

static void on_published(void *ctx, int mid)
{
	on_simple(ctx, EV_PUBLISHED, mid);
}

ferry_cloud_events ferry_engine_cloud_events(ferry_engine *e)
{
	return (ferry_cloud_events){.ctx = e, .command = on_command, .connected = on_connected,
				    .published = on_published};
}

void ferry_engine_attach_cloud(ferry_engine *e, ferry_cloud *c)
{
	e->cloud = c;
}

/* Under pub_lock. */
static void remember_mid(ferry_engine *e, int mid, const char *update_id, int64_t seq)
{
	if (e->n_mids == MIDS_MAX) /* forget the oldest: it goes out again on reconnect */
		memmove(e->mids, e->mids + 1, sizeof(e->mids[0]) * --e->n_mids);
	e->mids[e->n_mids].mid = mid;
	snprintf(e->mids[e->n_mids].update_id, sizeof(e->mids[0].update_id), "%s", update_id);
	e->mids[e->n_mids].seq = seq;
	e->n_mids++;
}

static void acked(ferry_engine *e, int mid)
{
	char id[FERRY_ID_MAX + 1] = "";
	int64_t seq = 0;

	pthread_mutex_lock(&e->pub_lock);
	for (size_t i = 0; i < e->n_mids; i++)
		if (e->mids[i].mid == mid) {
			snprintf(id, sizeof(id), "%s", e->mids[i].update_id);
			seq = e->mids[i].seq;
			memmove(e->mids + i, e->mids + i + 1, sizeof(e->mids[0]) * (e->n_mids - i - 1));
			e->n_mids--;
			break;
		}
	pthread_mutex_unlock(&e->pub_lock);
	if (id[0]) {
		ferry_status st = {0};
		if (ferry_journal_outbox_done(e->journal, id, seq, &st))
			ferry_log(LOG_WARNING, "outbox: %s", st.detail);
	}
}

/* The publish and its message id are recorded under one lock, so the
 * broker's acknowledgement (handled on the main thread) always finds it. */
static void publish_report(ferry_engine *e, const char *update_id, int64_t seq, const char *body)
{
	ferry_status st = {0};
	int mid = 0;

	if (!e->cloud)
		return;
	pthread_mutex_lock(&e->pub_lock);
	if (ferry_cloud_connected(e->cloud) && ferry_cloud_publish(e->cloud, "stage", body, false, &mid, &st) == FERRY_OK)
		remember_mid(e, mid, update_id, seq);
	/* else it stays in the outbox */
	pthread_mutex_unlock(&e->pub_lock);
}

ferry_err eng_report(ferry_engine *e, const ferry_transition *t, ferry_status *st)
{
	char *body = NULL;
	int64_t seq = 0;
	pthread_mutex_lock(&e->report_lock);
	ferry_err err = ferry_journal_transition(e->journal, t, &body, &seq, st);

	if (err) {
		pthread_mutex_unlock(&e->report_lock);
		if (err != FERRY_E_INSUFFICIENT_SPACE) /* the runner waits for room and says so once */
			ferry_log(LOG_ERR, "journal: %s", st->detail);
		return err;
	}
	ferry_log(LOG_INFO, "%s/%s%s%s: %s%s%s", t->update_id, t->component, t->device ? " on " : "",
		  t->device ? t->device : "", ferry_stage_name(t->stage), t->reason ? " " : "",
		  t->reason ? t->reason : "");
	publish_report(e, t->update_id, seq, body);
	pthread_mutex_unlock(&e->report_lock);
	free(body);
	return FERRY_OK;
}

void eng_publish_outbox(ferry_engine *e)
{
	ferry_status st = {0};
	json_t *reports = NULL, *r;
	size_t i;

	if (ferry_journal_outbox(e->journal, &reports, &st)) {
		ferry_log(LOG_ERR, "outbox: %s", st.detail);
		return;
	}
	json_array_foreach(reports, i, r)
		publish_report(e, json_string_value(json_object_get(r, "update_id")),
			       json_integer_value(json_object_get(r, "seq")),
			       json_string_value(json_object_get(r, "body")));
	json_decref(reports);
}

void eng_discover(ferry_engine *e, const ferry_adapter *ad)
{
	ferry_status st = {0};
	json_t *seen;

	if (ad)
		ferry_adapters_discover_one(e->adapters, ad);
	else
		ferry_adapters_discover(e->adapters);
	seen = ferry_adapters_inventory(e->adapters);
	if (ferry_journal_devices_seen(e->journal, seen, eng_now(), &st))
		ferry_log(LOG_WARNING, "devices not remembered: %s", st.detail);
	json_decref(seen);
}

void eng_publish_inventory(ferry_engine *e)
{
	ferry_status st = {0};
	char *inv;

	eng_discover(e, NULL);
	inv = eng_inventory_json(e);
	if (inv && e->cloud) {
		pthread_mutex_lock(&e->pub_lock);
		if (ferry_cloud_publish(e->cloud, "inventory", inv, true, NULL, &st))
			ferry_log(LOG_WARNING, "inventory not published: %s", st.detail);
		pthread_mutex_unlock(&e->pub_lock);
	}
	free(inv);
}

bool eng_enqueue(ferry_engine *e, ferry_job_kind kind, const char *update_id)
{
	if (ferry_jobq_push(e->jobs, kind, update_id))
		return true;
	ferry_log(LOG_ERR, "out of memory: update %s not queued", update_id);
	return false;
}

static ferry_err open_parts(ferry_engine *e, const ferry_config *cfg, ferry_status *st)
{
	ferry_err err;

	if ((err = ferry_state_open(cfg->state_dir, &e->journal, st)) ||
	    (err = ferry_store_open(cfg->store.dir, cfg->store.cap_bytes, &e->store, st)) ||
	    (err = ferry_trust_load(cfg->trust.command_ca, &e->cmd_trust, st)) ||
	    (err = ferry_trust_load(cfg->trust.manifest_ca, &e->manifest_trust, st)) ||
	    (err = ferry_adapters_load(cfg, &e->adapters, st)))
		return err;
	if (!cfg->decryption.key[0])
		return FERRY_OK;
	if ((err = ferry_jwe_load_key(cfg->decryption.key, &e->kek, st)))
		return err;
	FILE *f = fopen(cfg->decryption.cert, "re");
	X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	BIO *b = BIO_new(BIO_s_mem());
	BUF_MEM *m = NULL;
	if (f)
		fclose(f);
	if (x && b && PEM_write_bio_X509(b, x) && BIO_get_mem_ptr(b, &m) > 0 && m)
		e->kek_cert = strndup(m->data, m->length);
	X509_free(x);
	BIO_free(b);
	return e->kek_cert ? FERRY_OK : ferry_fail(st, FERRY_E_MALFORMED, "%s: cannot read the certificate",
						   cfg->decryption.cert);
}

ferry_err eng_link_check(ferry_engine *e, const ferry_component *c, const ferry_device_v1 *d, ferry_status *st)
{
	const char *cfg_min = json_string_value(json_object_get(e->cfg->min_link, c->name));
	const char *need = c->min_link[0] ? c->min_link : NULL, *have = ferry_device_link(d);

	if (cfg_min && ferry_link_rank(cfg_min) > ferry_link_rank(need))
		need = cfg_min;
	if (!need || c->encrypted_for_device)
		return FERRY_OK;
	if (ferry_link_rank(have ? have : FERRY_LINK_UNAUTHENTICATED) >= ferry_link_rank(need))
		return FERRY_OK;
	return ferry_fail(st, FERRY_E_LINK_INSECURE, "%s: the link to %s is %s; the component needs at least %s (%s)",
			  c->name, d->id, have ? have : "undeclared (taken as unauthenticated)", need,
			  need == cfg_min ? "the gateway's min_link" : "the manifest's min_link");
}

ferry_err ferry_engine_new(const ferry_config *cfg, ferry_engine **out, ferry_status *st)
{
	ferry_engine *e = calloc(1, sizeof(*e));
	ferry_err err;

	if (!e)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	e->cfg = cfg;
	pthread_mutex_init(&e->ev_lock, NULL);
	pthread_cond_init(&e->ev_cond, NULL);
	pthread_mutex_init(&e->pub_lock, NULL);
	pthread_mutex_init(&e->report_lock, NULL);
	pthread_mutex_init(&e->store_lock, NULL);
	if (!(e->jobs = ferry_jobq_new()) || !(e->claims = eng_claims_new())) {
		ferry_jobq_free(e->jobs);
		free(e);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	if ((err = open_parts(e, cfg, st))) {
		ferry_engine_free(e);
		return err;
	}
	*out = e;
	return FERRY_OK;
}

static bool has_event(ferry_engine *e)
{
	pthread_mutex_lock(&e->ev_lock);
	bool any = e->ev_head != NULL;
	pthread_mutex_unlock(&e->ev_lock);
	return any;
}

static event *pop_event(ferry_engine *e, volatile sig_atomic_t *stop)
{
	event *ev;

	pthread_mutex_lock(&e->ev_lock);
	while (!e->ev_head && !*stop)
		pthread_cond_wait(&e->ev_cond, &e->ev_lock); /* no timer: idle is silent */
	ev = e->ev_head;
	if (ev) {
		e->ev_head = ev->next;
		if (!e->ev_head)
			e->ev_tail = NULL;
	}
	pthread_mutex_unlock(&e->ev_lock);
	return ev;
}

void ferry_engine_wake(ferry_engine *e)
{
	pthread_mutex_lock(&e->ev_lock);
	pthread_cond_broadcast(&e->ev_cond);
	pthread_mutex_unlock(&e->ev_lock);
}

void ferry_engine_run(ferry_engine *e, volatile sig_atomic_t *stop)
{
	event *ev;

	for (int i = 0; i < e->cfg->updates.parallel && i < FERRY_RUNNERS_MAX; i++) {
		if (pthread_create(&e->runners[e->n_runners], NULL, eng_runner, e)) {
			ferry_log(LOG_ERR, "cannot start a runner thread");
			break;
		}
		e->n_runners++;
	}
	if (!e->n_runners) {
		ferry_log(LOG_ERR, "no runner thread: no update can run");
		return;
	}
	eng_prune_store(e); /* what earlier runs left */
	eng_resume(e);
	bool trimmed = false;
	while (!*stop) {
		/* Going idle (no event waits, no job queued or running): the
		 * journal's unused cached pages and the heap's free pages go
		 * back, once per busy spell; what a deploy or the start freed
		 * would stay resident otherwise. */
		if (!trimmed && !has_event(e) && ferry_jobq_idle(e->jobs)) {
			ferry_journal_release_memory(e->journal);
			malloc_trim(0);
			trimmed = true;
		}
		if (!(ev = pop_event(e, stop)))
			continue;
		trimmed = false;
		switch (ev->kind) {
		case EV_COMMAND:
			pthread_mutex_lock(&e->store_lock); /* admission reads the store */
			eng_handle_command(e, ev->payload, ev->len);
			pthread_mutex_unlock(&e->store_lock);
			break;
		case EV_CONNECTED:
			eng_publish_inventory(e);
			eng_publish_outbox(e);
			break;
		case EV_PUBLISHED:
			acked(e, ev->mid);
			break;
		}
		free(ev->payload);
		free(ev);
	}
	ferry_jobq_stop(e->jobs);
	eng_claims_wake(e->claims);
	for (size_t i = 0; i < e->n_runners; i++)
		pthread_join(e->runners[i], NULL);
	e->n_runners = 0;
}

ferry_adapters *ferry_engine_adapters(ferry_engine *e)
{
	return e->adapters;
}

void ferry_engine_free(ferry_engine *e)
{
	if (!e)
		return;
	while (e->ev_head) {
		event *ev = e->ev_head;
		e->ev_head = ev->next;
		free(ev->payload);
		free(ev);
	}
	ferry_jobq_free(e->jobs);
	eng_claims_free(e->claims);
	ferry_adapters_free(e->adapters);
	ferry_trust_free(e->cmd_trust);
	ferry_trust_free(e->manifest_trust);
	json_decref(e->kek);
	free(e->kek_cert);
	ferry_store_close(e->store);
	ferry_journal_close(e->journal);
	pthread_mutex_destroy(&e->pub_lock);
	pthread_mutex_destroy(&e->report_lock);
	pthread_mutex_destroy(&e->store_lock);
	pthread_mutex_destroy(&e->ev_lock);
	pthread_cond_destroy(&e->ev_cond);
	free(e);
}
