/* One update as the runner runs it (jobs.c), the scheduler that runs its
 * device steps in parallel and in order (sched.c), and what one step does
 * on its device (steps.c). */
#ifndef FERRY_RUN_H
#define FERRY_RUN_H

#include <stdatomic.h>

#include "engine_int.h"

typedef struct eng_run {
	ferry_engine *e;
	ferry_job *job;
	ferry_jupdate u;
	ferry_manifest m;
	ferry_jcomponent *cs;
	size_t n_cs;
	ferry_jstep *steps;
	size_t n_steps;
	/* a step failed where the others must stop: downloads of one update,
	 * checks, an all-or-nothing install before it commits */
	atomic_bool abandon;
	/* committing or reverting: only a stop of ferryd interrupts a session,
	 * never a cancel (there is no way back from a commit, and a revert is
	 * what a cancel asks for) */
	atomic_bool finishing;
	/* the manifest no longer verifies now (it expired): finish what is on
	 * the devices, push nothing new */
	bool no_new_pushes;
	int64_t dl_started; /* when this run's downloads began (download.deadline) */
	/* why an all-or-nothing update is going back: the reason code and a
	 * sentence for every device it reverts */
	char why_reason[32];
	char why[FERRY_DETAIL_MAX];
	pthread_mutex_t why_lock;
} eng_run;

/* Cancelled by command (now, or before a restart). */
bool run_cancelled(eng_run *r);
/* Stopped by a cancel, a stop of ferryd or an abandon, as sessions see it. */
bool run_interrupted(eng_run *r);

/* Commit a step's transition and publish it; false (logged) when the
 * journal refused it. */
bool run_step_report(eng_run *r, ferry_jstep *s, ferry_stage stage, const char *reason, const char *detail,
		     const char *version, int64_t done, int64_t total);
/* The same, never waiting for room in a full journal (the scheduler calls
 * it under its lock): a report the journal cannot take is not recorded,
 * and the step's outcome comes when the update ends. */
bool run_step_report_now(eng_run *r, ferry_jstep *s, ferry_stage stage, const char *reason, const char *detail);
/* All or nothing: the device that cannot revert is about to be activated.
 * Moves the update to its last phase (no cancel is taken from there on);
 * false when a cancel was recorded first: then it must not be activated. */
bool run_last(eng_run *r);
/* Remember the first failure of an all-or-nothing update, for the devices
 * it reverts. */
void run_note_failure(eng_run *r, const ferry_jstep *s, const ferry_status *why);

/* What one step's work came to. */
typedef enum step_result {
	STEP_OK,      /* done, or nothing to do */
	STEP_FAILED,  /* it has its outcome (failed, rolled_back, cancelled) */
	STEP_ABSENT,  /* its device is not attached: wait for it */
	STEP_STOPPED, /* interrupted: left where it stands (ferryd stops, or a cancel) */
} step_result;

typedef step_result (*step_fn)(eng_run *r, ferry_jstep *s);

typedef struct sched_opts {
	/* which steps take part */
	bool (*eligible)(eng_run *r, const ferry_jstep *s);
	/* which function each one runs */
	step_fn (*fn_for)(eng_run *r, const ferry_jstep *s);
	/* keep the install order: on one device, components in the order
	 * listed; across devices, `after` */
	bool ordered;
	/* all or nothing: the one step whose adapter cannot revert runs after
	 * every other step succeeded, and a failure stops the rest */
	bool atomic;
	/* an absent device is reported `waiting` and waited for (until the
	 * update expires); otherwise its step is passed over */
	bool wait_absent;
	/* start steps whatever discovery says: the step looks for its device
	 * itself (commit, revert) */
	bool run_absent;
} sched_opts;

typedef struct sched_result {
	size_t ok, failed, skipped, left; /* left: never started (interrupted) */
} sched_result;

/* Run the eligible steps: up to install.parallel at once, at most each
 * adapter's max_sessions of one adapter, never two on one device.  A step
 * whose predecessor failed is reported cancelled.  Returns when every
 * eligible step has ended or, once interrupted, when the running ones have
 * stopped. */
sched_result sched_run(eng_run *r, const sched_opts *o);

/* steps.c: the device side of each phase. */
step_result step_check(eng_run *r, ferry_jstep *s);   /* the adapter's check, in a session */
step_result step_install(eng_run *r, ferry_jstep *s); /* push, activate, read back, commit */
step_result step_trial(eng_run *r, ferry_jstep *s);   /* push, activate on trial, read back */
step_result step_commit(eng_run *r, ferry_jstep *s);  /* make a trial permanent */
step_result step_revert(eng_run *r, ferry_jstep *s);  /* put the old image back */

const ferry_component *run_component(eng_run *r, const char *name);

#endif
