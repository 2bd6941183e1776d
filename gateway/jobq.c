/* The job queue.  One mutex covers the queue, the running job and every
 * flag, so a cancel can never fall between "popped" and "running". */
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
	ferry_job *next;
};

struct ferry_jobq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	ferry_job *head, *tail;
	ferry_job *running;
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
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return true;
}

ferry_job *ferry_jobq_pop(ferry_jobq *q)
{
	ferry_job *j = NULL;

	pthread_mutex_lock(&q->lock);
	while (!q->head && !q->stopped)
		pthread_cond_wait(&q->cond, &q->lock);
	if (!q->stopped) {
		j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		j->next = NULL;
		q->running = j;
	}
	pthread_mutex_unlock(&q->lock);
	return j;
}

bool ferry_jobq_finish(ferry_jobq *q, ferry_job *j)
{
	bool cancelled;

	pthread_mutex_lock(&q->lock);
	if (q->running == j)
		q->running = NULL;
	cancelled = atomic_load(&j->cancel);
	pthread_mutex_unlock(&q->lock);
	return cancelled;
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
	if (q->running && !strcmp(q->running->update_id, update_id)) {
		atomic_store(&q->running->cancel, true);
		where = FERRY_JOBQ_RUNNING;
	}
	pthread_mutex_unlock(&q->lock);
	return where;
}

void ferry_jobq_stop(ferry_jobq *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopped = true;
	if (q->running)
		atomic_store(&q->running->stopping, true);
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}
