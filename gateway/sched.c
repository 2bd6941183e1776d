/* The step scheduler: runs the device steps of one update, each in a
 * thread of its own, as many at once as the limits allow.
 *
 * Limits: at most install.parallel sessions in all, at most an adapter's
 * max_sessions of that adapter, never two sessions on one device -- counted
 * over every update that runs, through the engine's claims (claims.c).
 *
 * Order (when asked for): on one device, components go in the install order
 * of the manifest; across devices, a component waits only for the
 * components its `after` names (and theirs).  A step whose predecessor did
 * not install is not started: it is reported cancelled, naming why.  In an
 * all-or-nothing update the one step whose adapter cannot revert waits for
 * every other step, and the first failure stops the rest.
 *
 * A device that is not attached is reported `waiting` once and looked for
 * again every WAIT_POLL_MS, by rediscovering only its adapter, until it is
 * back or the update expires.  Other steps go on meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "run.h"

#define WAIT_POLL_MS 2000
#define ADAPTERS_SEEN_MAX 32

enum tstate { T_PENDING, T_RUNNING, T_OK, T_FAILED, T_SKIPPED, T_STOPPED };

struct sched;

typedef struct task {
	ferry_jstep *s;
	ferry_adapter *ad;
	size_t pos;    /* its component's place in the install order */
	bool in;       /* eligible: it takes part */
	bool last;     /* all or nothing: the step that cannot be reverted */
	bool waiting;  /* its device is absent and it waits */
	bool need_look; /* its session found the device gone: look again before retrying */
	enum tstate st;
	bool has_thread;
	pthread_t th;
	step_fn fn;
	struct sched *sc;
} task;

typedef struct sched {
	eng_run *r;
	const sched_opts *o;
	task *t;
	size_t n;
	bool after[FERRY_COMPONENTS_MAX][FERRY_COMPONENTS_MAX]; /* [a][b]: a comes after b, directly or not */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t running;
} sched;

static size_t comp_index(const ferry_manifest *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->c[i].name, name))
			return i;
	return m->n;
}

/* `after`, closed over: a after b when a names b, or names one that is. */
static void close_after(sched *sc)
{
	const ferry_manifest *m = &sc->r->m;

	for (size_t a = 0; a < m->n; a++)
		for (size_t k = 0; k < m->c[a].n_after; k++)
			sc->after[a][m->c[a].after[k]] = true;
	for (size_t k = 0; k < m->n; k++)
		for (size_t a = 0; a < m->n; a++)
			for (size_t b = 0; b < m->n && sc->after[a][k]; b++)
				if (sc->after[k][b])
					sc->after[a][b] = true;
}

static bool same_device(const task *a, const task *b)
{
	return a->ad == b->ad && !strcmp(a->s->device, b->s->device);
}

/* Does task i wait for task j? */
static bool depends(const sched *sc, size_t i, size_t j)
{
	const task *a = &sc->t[i], *b = &sc->t[j];
	const ferry_manifest *m = &sc->r->m;

	if (i == j)
		return false;
	if (sc->o->atomic && a->last && b->in && !b->last)
		return true;
	if (!sc->o->ordered || b->pos >= a->pos)
		return false;
	return same_device(a, b) ||
	       sc->after[comp_index(m, a->s->component)][comp_index(m, b->s->component)];
}

static bool stop_now(eng_run *r)
{
	return atomic_load(&r->finishing) ? ferry_job_stopping(r->job) : run_interrupted(r);
}

static void *task_main(void *arg)
{
	task *t = arg;
	sched *sc = t->sc;
	step_result res = t->fn(sc->r, t->s);

	pthread_mutex_lock(&sc->lock);
	switch (res) {
	case STEP_OK: t->st = T_OK; break;
	case STEP_FAILED: t->st = T_FAILED; break;
	case STEP_ABSENT: /* gone between the look and the session: wait for it */
		t->st = T_PENDING;
		t->need_look = true;
		break;
	case STEP_STOPPED: t->st = T_STOPPED; break;
	}
	sc->running--;
	eng_session_end(sc->r->e->claims, t->ad, t->s->device);
	if (res == STEP_FAILED && sc->o->atomic)
		atomic_store(&sc->r->abandon, true);
	pthread_cond_broadcast(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
	return NULL;
}

/* Which step a task waits for did not install: end it as cancelled. */
static void skip(sched *sc, task *t, const task *because)
{
	char detail[FERRY_DETAIL_MAX];

	snprintf(detail, sizeof(detail), "not started: %s on %s, which it comes after, did not install",
		 because->s->component, because->s->device);
	run_step_report_now(sc->r, t->s, FERRY_S_CANCELLED, "cancelled", detail);
	t->st = T_SKIPPED;
}

/* 1: ready, 0: not yet, -1: skipped (a predecessor failed). */
static int ready(sched *sc, size_t i)
{
	for (size_t j = 0; j < sc->n; j++) {
		if (!depends(sc, i, j))
			continue;
		switch (sc->t[j].st) {
		case T_OK:
			break;
		case T_FAILED:
		case T_SKIPPED:
			skip(sc, &sc->t[i], &sc->t[j]);
			return -1;
		default:
			return 0;
		}
	}
	return 1;
}

/* Start what can start now; how many wait for their device to be
 * attached (*waiting) or for a session to be free (*blocked). */
static void start_ready(sched *sc, size_t *waiting, size_t *blocked)
{
	eng_run *r = sc->r;
	unsigned parallel = (unsigned)r->e->cfg->install.parallel;

	*waiting = *blocked = 0;
	for (size_t i = 0; i < sc->n; i++) {
		task *t = &sc->t[i];
		if (t->st != T_PENDING || ready(sc, i) != 1)
			continue;
		if (!sc->o->run_absent &&
		    (t->need_look || !ferry_adapters_present(r->e->adapters, t->ad, t->s->device, NULL))) {
			if (!sc->o->wait_absent) {
				t->st = T_OK; /* passed over: checked again right before its push */
				continue;
			}
			if (!t->waiting && t->s->stage == FERRY_S_NONE) {
				ferry_log(LOG_INFO, "%s/%s: waiting for %s", r->u.id, t->s->component, t->s->device);
				run_step_report_now(r, t->s, FERRY_S_WAITING, NULL, NULL);
			}
			t->waiting = true;
			(*waiting)++;
			continue;
		}
		if (eng_session_try(r->e->claims, t->ad, t->s->device, parallel) != ENG_SESSION_TAKEN) {
			(*blocked)++;
			continue;
		}
		if (t->has_thread)
			pthread_join(t->th, NULL);
		t->has_thread = false;
		t->waiting = false;
		t->st = T_RUNNING;
		sc->running++;
		if (pthread_create(&t->th, NULL, task_main, t)) {
			ferry_log(LOG_ERR, "%s: cannot start a thread for %s on %s", r->u.id, t->s->component, t->s->device);
			t->st = T_PENDING;
			sc->running--;
			eng_session_end(r->e->claims, t->ad, t->s->device);
			(*blocked)++;
			break;
		}
		t->has_thread = true;
	}
}

/* The devices waited for: look again (their adapters only), and give up on
 * those still away once the update has expired.  Called unlocked. */
static void look_again(sched *sc)
{
	const ferry_adapter *seen[ADAPTERS_SEEN_MAX];
	size_t n_seen = 0;

	pthread_mutex_lock(&sc->lock);
	for (size_t i = 0; i < sc->n; i++) {
		bool dup = false;
		if (sc->t[i].st != T_PENDING || !sc->t[i].waiting)
			continue;
		for (size_t k = 0; k < n_seen && !dup; k++)
			dup = seen[k] == sc->t[i].ad;
		if (!dup && n_seen < ADAPTERS_SEEN_MAX)
			seen[n_seen++] = sc->t[i].ad;
	}
	pthread_mutex_unlock(&sc->lock);
	for (size_t k = 0; k < n_seen; k++) {
		ferry_log(LOG_DEBUG, "%s: looking again for the devices of %s it waits for", sc->r->u.id,
			  ferry_adapter_name(seen[k]));
		eng_discover(sc->r->e, seen[k]);
	}
	pthread_mutex_lock(&sc->lock);
	for (size_t i = 0; i < sc->n; i++)
		sc->t[i].need_look = false;
	if (!sc->r->u.expires || eng_now() < sc->r->u.expires) {
		pthread_mutex_unlock(&sc->lock);
		return;
	}
	for (size_t i = 0; i < sc->n; i++) {
		task *t = &sc->t[i];
		/* still waiting once the update has expired: whether discovery
		 * lists the device or not, it did not become usable in time */
		if (t->st != T_PENDING || !(t->waiting || t->need_look))
			continue;
		ferry_status why = {.code = FERRY_E_EXPIRED};
		snprintf(why.detail, sizeof(why.detail), "%s did not come back before the update expired",
			 t->s->device);
		run_step_report_now(sc->r, t->s, FERRY_S_FAILED, "expired", why.detail);
		t->st = T_FAILED;
		if (sc->o->atomic) {
			run_note_failure(sc->r, t->s, &why);
			atomic_store(&sc->r->abandon, true);
		}
	}
	pthread_cond_broadcast(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
}

static void build(sched *sc)
{
	eng_run *r = sc->r;

	close_after(sc);
	for (size_t i = 0; i < r->n_steps; i++) {
		task *t = &sc->t[i];
		ferry_jstep *s = &r->steps[i];
		size_t ci = comp_index(&r->m, s->component);
		t->s = s;
		t->sc = sc;
		t->ad = ferry_adapters_find(r->e->adapters, s->adapter);
		for (size_t k = 0; k < r->m.n; k++)
			if (r->m.order[k] == ci)
				t->pos = k;
		t->in = ci < r->m.n && sc->o->eligible(r, s);
		if (t->in && !t->ad) {
			/* its adapter did not load (a plugin gone, an init that failed) */
			char why[FERRY_DETAIL_MAX];
			snprintf(why, sizeof(why), "no adapter %s is loaded on this gateway", s->adapter);
			run_step_report(r, s, FERRY_S_FAILED, "unsupported", why, NULL, -1, -1);
			t->st = T_FAILED;
			if (sc->o->atomic)
				atomic_store(&r->abandon, true);
			continue;
		}
		if (t->in) {
			t->st = T_PENDING;
			t->fn = sc->o->fn_for(r, s);
			t->last = sc->o->atomic && !ferry_adapter_revertible(t->ad);
		} else {
			/* for those that wait on it: did it install? */
			t->st = s->stage == FERRY_S_INSTALLED || s->stage == FERRY_S_ALREADY_INSTALLED ||
					s->stage == FERRY_S_TRIAL
				    ? T_OK
				    : T_FAILED;
		}
	}
}

sched_result sched_run(eng_run *r, const sched_opts *o)
{
	sched *sc = calloc(1, sizeof(*sc));
	sched_result res = {0};
	int64_t last_look = eng_mono_ms();

	if (!sc || !(sc->t = calloc(r->n_steps ? r->n_steps : 1, sizeof(*sc->t)))) {
		ferry_log(LOG_ERR, "%s: out of memory: no steps run", r->u.id);
		free(sc);
		res.left = r->n_steps;
		return res;
	}
	sc->r = r;
	sc->o = o;
	sc->n = r->n_steps;
	pthread_mutex_init(&sc->lock, NULL);
	pthread_cond_init(&sc->cond, NULL);
	build(sc);
	eng_claims_watch(r->e->claims, &sc->cond); /* woken when another update's session ends */

	pthread_mutex_lock(&sc->lock);
	for (;;) {
		size_t waiting = 0, blocked = 0, pending = 0;
		bool stop = stop_now(r);
		if (!stop)
			start_ready(sc, &waiting, &blocked);
		for (size_t i = 0; i < sc->n; i++)
			pending += sc->t[i].st == T_PENDING;
		if (sc->running == 0 && (pending == 0 || stop))
			break;
		if (sc->running == 0 && waiting == 0 && blocked == 0) {
			/* pending steps that can never start: cannot happen, but
			 * never spin */
			ferry_log(LOG_ERR, "%s: %zu steps cannot start", r->u.id, pending);
			break;
		}
		if (waiting > 0 && !stop) {
			struct timespec until;
			int64_t left = last_look + WAIT_POLL_MS - eng_mono_ms();
			if (left > 0) {
				eng_deadline_in(&until, (long)left);
				pthread_cond_timedwait(&sc->cond, &sc->lock, &until);
			}
			if (eng_mono_ms() - last_look >= WAIT_POLL_MS) {
				pthread_mutex_unlock(&sc->lock);
				look_again(sc);
				pthread_mutex_lock(&sc->lock);
				last_look = eng_mono_ms();
			}
		} else {
			/* a stop is seen at the latest when a running step ends;
			 * sessions see it through their cancel flag; a session
			 * another update held wakes this when it ends */
			struct timespec until;
			eng_deadline_in(&until, 1000);
			pthread_cond_timedwait(&sc->cond, &sc->lock, &until);
		}
	}
	pthread_mutex_unlock(&sc->lock);
	eng_claims_unwatch(r->e->claims, &sc->cond);

	for (size_t i = 0; i < sc->n; i++) {
		task *t = &sc->t[i];
		if (t->has_thread)
			pthread_join(t->th, NULL);
		if (!t->in)
			continue;
		switch (t->st) {
		case T_OK: res.ok++; break;
		case T_FAILED: res.failed++; break;
		case T_SKIPPED: res.skipped++; break;
		default: res.left++; break;
		}
	}
	pthread_mutex_destroy(&sc->lock);
	pthread_cond_destroy(&sc->cond);
	free(sc->t);
	free(sc);
	return res;
}
