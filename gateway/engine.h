/* The update engine: turns verified commands into updates, updates into
 * per-component jobs, and every transition into a journal entry and then a
 * stage report. */
#ifndef FERRY_ENGINE_H
#define FERRY_ENGINE_H

#include <signal.h>
#include <stddef.h>

#include "cloud.h"
#include "config.h"
#include "ferry/err.h"

typedef struct ferry_engine ferry_engine;

/* Open the journal, store, trust anchors and adapters named by cfg. */
ferry_err ferry_engine_new(const ferry_config *cfg, ferry_engine **out, ferry_status *st) FERRY_WUR;
/* Events for the cloud session to deliver (safe from its thread). */
ferry_cloud_events ferry_engine_cloud_events(ferry_engine *e);
void ferry_engine_attach_cloud(ferry_engine *e, ferry_cloud *c);
/* Resume unfinished updates, then handle events until *stop is set.  It
 * sleeps until an event comes: whoever sets *stop calls ferry_engine_wake. */
void ferry_engine_run(ferry_engine *e, volatile sig_atomic_t *stop);
/* Wake ferry_engine_run to look at *stop (any thread; not a signal handler). */
void ferry_engine_wake(ferry_engine *e);
void ferry_engine_free(ferry_engine *e);

/* The adapter host, for a test that registers a scripted adapter. */
struct ferry_adapters;
struct ferry_adapters *ferry_engine_adapters(ferry_engine *e);

#endif
