/* The job queue: the jobs waiting for a runner, the ones running, and
 * cancel requests, all under one lock.  The main thread pushes and cancels;
 * each runner pops one job at a time and says when it is done with it.
 * Two jobs of one update never run at once. */
#ifndef FERRY_JOBQ_H
#define FERRY_JOBQ_H

#include <stdbool.h>

typedef enum ferry_job_kind { FERRY_JOB_DOWNLOAD, FERRY_JOB_CHECK, FERRY_JOB_INSTALL } ferry_job_kind;

typedef struct ferry_jobq ferry_jobq;
typedef struct ferry_job ferry_job;

ferry_jobq *ferry_jobq_new(void);
void ferry_jobq_free(ferry_jobq *q);

/* Queue a job; false when out of memory. */
bool ferry_jobq_push(ferry_jobq *q, ferry_job_kind kind, const char *update_id);
/* Wait for the next job whose update no other runner is running; NULL once
 * the queue is stopped.  The job is running until ferry_jobq_finish. */
ferry_job *ferry_jobq_pop(ferry_jobq *q);
/* The runner is done with the job.  true, once, when the job was
 * cancelled (read under the lock, so a cancel that came after the runner
 * last looked is seen here): the job stays running, the runner ends the
 * update and calls this again.  false: the job no longer runs, and a cancel
 * for its update finds no job.  Free the job with ferry_job_free. */
bool ferry_jobq_finish(ferry_jobq *q, ferry_job *j);
void ferry_job_free(ferry_job *j);

ferry_job_kind ferry_job_kind_of(const ferry_job *j);
const char *ferry_job_update(const ferry_job *j);
/* Cancelled by command: the runner ends the update at its next safe point. */
bool ferry_job_cancelled(const ferry_job *j);
/* ferryd is stopping: the runner leaves the update where it stands, to be
 * resumed at the next start. */
bool ferry_job_stopping(const ferry_job *j);
/* Either: what a session's cancel flag reads. */
bool ferry_job_interrupted(const ferry_job *j);

typedef enum ferry_jobq_where {
	FERRY_JOBQ_IDLE,    /* no job for it: the caller cancels it itself */
	FERRY_JOBQ_QUEUED,  /* a queued job was flagged: the runner will end it */
	FERRY_JOBQ_RUNNING, /* the running job was flagged */
} ferry_jobq_where;
/* Flag every job of the update (queued or running) as cancelled. */
ferry_jobq_where ferry_jobq_cancel(ferry_jobq *q, const char *update_id);
/* No job queued and none running. */
bool ferry_jobq_idle(ferry_jobq *q);
/* Wake the runners and flag the running jobs as stopping. */
void ferry_jobq_stop(ferry_jobq *q);

#endif
