/* The job queue.  One mutex covers the queue, the running jobs and every
 * flag, so a cancel can never fall between "popped" and "running".  Jobs
 * of one update run one at a time, in the order they came: a runner passes
 * over the jobs of an update another runner is running. */
#include "jobq.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ferry_job {
	ferry_job_kind kind;
	char update_id[65];
	atomic_bool cancel, stopping;
	bool rerun; /* the cancel was handed back once (ferry_jobq_finish) */
	ferry_job *next;
};

struct ferry_jobq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	ferry_job *head, *tail;
	ferry_job *running; /* a list, through next */
	bool stopped;
};

ferry_jobq *ferry_jobq_new(void)
{
	ferry_jobq *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	return q;
}

void ferry_jobq_free(ferry_jobq *q)
{
	if (!q)
		return;
	while (q->head) {
		ferry_job *j = q->head;
		q->head = j->next;
		free(j);
	}
	pthread_mutex_destroy(&q->lock);
	pthread_cond_destroy(&q->cond);
	free(q);
}

bool ferry_jobq_idle(ferry_jobq *q)
{
	pthread_mutex_lock(&q->lock);
	bool idle = !q->head && !q->running;
	pthread_mutex_unlock(&q->lock);
	return idle;
}

bool ferry_jobq_push(ferry_jobq *q, ferry_job_kind kind, const char *update_id)
{
	ferry_job *j = calloc(1, sizeof(*j));

	if (!j)
		return false;
	j->kind = kind;
	snprintf(j->update_id, sizeof(j->update_id), "%s", update_id);
	pthread_mutex_lock(&q->lock);
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return true;
}

static bool update_running(const ferry_jobq *q, const char *update_id)
{
	for (const ferry_job *r = q->running; r; r = r->next)
		if (!strcmp(r->update_id, update_id))
			return true;
	return false;
}

/* Under the lock: take the first job whose update is not running. */
static ferry_job *take(ferry_jobq *q)
{
	ferry_job *prev = NULL;

	for (ferry_job *j = q->head; j; prev = j, j = j->next) {
		if (update_running(q, j->update_id))
			continue;
		if (prev)
			prev->next = j->next;
		else
			q->head = j->next;
		if (q->tail == j)
			q->tail = prev;
		j->next = q->running;
		q->running = j;
		return j;
	}
	return NULL;
}

ferry_job *ferry_jobq_pop(ferry_jobq *q)
{
	ferry_job *j = NULL;

	pthread_mutex_lock(&q->lock);
	while (!q->stopped && !(j = take(q)))
		pthread_cond_wait(&q->cond, &q->lock);
	pthread_mutex_unlock(&q->lock);
	return j;
}

bool ferry_jobq_finish(ferry_jobq *q, ferry_job *j)
{
	pthread_mutex_lock(&q->lock);
	if (atomic_load(&j->cancel) && !j->rerun) {
		/* a cancel that came after the runner last looked: it stays the
		 * running job while the runner ends the update */
		j->rerun = true;
		pthread_mutex_unlock(&q->lock);
		return true;
	}
	for (ferry_job **p = &q->running; *p; p = &(*p)->next)
		if (*p == j) {
			*p = j->next;
			break;
		}
	j->next = NULL;
	pthread_cond_broadcast(&q->cond); /* its update's next job may go */
	pthread_mutex_unlock(&q->lock);
	return false;
}

void ferry_job_free(ferry_job *j)
{
	free(j);
}

ferry_job_kind ferry_job_kind_of(const ferry_job *j)
{
	return j->kind;
}

const char *ferry_job_update(const ferry_job *j)
{
	return j->update_id;
}

bool ferry_job_cancelled(const ferry_job *j)
{
	return atomic_load(&j->cancel);
}

bool ferry_job_stopping(const ferry_job *j)
{
	return atomic_load(&j->stopping);
}

bool ferry_job_interrupted(const ferry_job *j)
{
	return atomic_load(&j->cancel) || atomic_load(&j->stopping);
}

ferry_jobq_where ferry_jobq_cancel(ferry_jobq *q, const char *update_id)
{
	ferry_jobq_where where = FERRY_JOBQ_IDLE;

	pthread_mutex_lock(&q->lock);
	for (ferry_job *j = q->head; j; j = j->next)
		if (!strcmp(j->update_id, update_id)) {
			atomic_store(&j->cancel, true);
			where = FERRY_JOBQ_QUEUED;
		}
	for (ferry_job *r = q->running; r; r = r->next)
		if (!strcmp(r->update_id, update_id)) {
			atomic_store(&r->cancel, true);
			where = FERRY_JOBQ_RUNNING;
		}
	pthread_mutex_unlock(&q->lock);
	return where;
}

void ferry_jobq_stop(ferry_jobq *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopped = true;
	for (ferry_job *r = q->running; r; r = r->next)
		atomic_store(&r->stopping, true);
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}
