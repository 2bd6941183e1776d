/* ferryd: the gateway daemon.  Reads its config, opens the journal, store and
 * adapters, connects to the cloud and runs the engine until SIGTERM.
 * Exit codes: 0 clean stop, 1 could not start, 2 bad config or arguments. */
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "adapter_host.h"
#include "cloud.h"
#include "config.h"
#include "download.h"
#include "engine.h"
#include "log.h"
#include "notify.h"
#include "state.h"

static volatile sig_atomic_t stop;

/* SIGTERM and SIGINT are blocked in every thread and taken here, so the
 * engine sleeps without a timer and is woken for the stop. */
static void *wait_signal(void *arg)
{
	sigset_t set;
	int sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigwait(&set, &sig);
	stop = 1;
	ferry_engine_wake(arg);
	return NULL;
}

static const char usage[] = "usage: ferryd --config FILE [--check | --reset-journal] [--verbose]\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"verbose", no_argument, NULL, 'v'},
					     {"help", no_argument, NULL, 'h'},
					     {"version", no_argument, NULL, 'V'},
					     {"check", no_argument, NULL, 'k'},
					     {"reset-journal", no_argument, NULL, 'r'},
					     {NULL, 0, NULL, 0}};
	const char *path = NULL;
	int check_only = 0, reset = 0;
	ferry_config cfg;
	ferry_status st = {0};
	ferry_engine *engine = NULL;
	ferry_cloud *cloud = NULL;
	sigset_t sigs;
	pthread_t sig_thread;
	int c;

	/* What ferryd holds at rest (bench/idle.sh): one malloc arena for
	 * every thread, since ferryd allocates little and seldom and an arena
	 * per thread kept its own scraps (about 190 KiB); and SQLite's page
	 * cache takes pages as the journal is read, without its bulk
	 * allocation of 20 at the first statement.  Before SQLite starts. */
	mallopt(M_ARENA_MAX, 1);
	sqlite3_config(SQLITE_CONFIG_PAGECACHE, NULL, 0, 0);
	while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'v': ferry_log_init(LOG_DEBUG); break;
		case 'V': printf("ferryd %s\n", FERRY_VERSION); return 0;
		case 'k': check_only = 1; break;
		case 'r': reset = 1; break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (!path || optind != argc) {
		fputs(usage, stderr);
		return 2;
	}
	if (ferry_config_load(path, &cfg, &st) || (!reset && ferry_config_check_files(&cfg, &st))) {
		fprintf(stderr, "ferryd: %s\n", st.detail);
		if (cfg.lines)
			ferry_config_free(&cfg);
		return 2;
	}
	if (check_only) {
		/* every adapter loads and its section holds only keys it takes */
		ferry_adapters *ads = NULL;
		if (ferry_adapters_load(&cfg, &ads, &st)) {
			fprintf(stderr, "ferryd: %s\n", st.detail);
			ferry_config_free(&cfg);
			return 2;
		}
		ferry_adapters_free(ads);
		printf("%s: configuration is valid\n", path);
		ferry_config_free(&cfg);
		return 0;
	}
	if (reset) {
		/* stop ferryd first: the journal must not be in use */
		int rc = ferry_state_reset(cfg.state_dir, stdout, &st) ? 1 : 0;
		if (rc)
			fprintf(stderr, "ferryd: %s\n", st.detail);
		ferry_config_free(&cfg);
		return rc;
	}
	/* before any thread starts: they all inherit the mask */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	umask(077); /* the journal, the store and temp files are ferryd's alone */
	if (ferry_engine_new(&cfg, &engine, &st)) {
		ferry_log(LOG_ERR, "cannot start: %s: %s", ferry_err_code(st.code), st.detail);
		ferry_config_free(&cfg);
		return 1;
	}
	ferry_cloud_events ev = ferry_engine_cloud_events(engine);
	if (ferry_cloud_start(&cfg, &ev, &cloud, &st)) {
		ferry_log(LOG_ERR, "cannot start the cloud session: %s", st.detail);
		ferry_engine_free(engine);
		ferry_config_free(&cfg);
		return 1;
	}
	ferry_engine_attach_cloud(engine, cloud);
	if (pthread_create(&sig_thread, NULL, wait_signal, engine)) {
		ferry_log(LOG_ERR, "cannot start the signal thread");
		ferry_cloud_stop(cloud);
		ferry_engine_free(engine);
		ferry_config_free(&cfg);
		return 1;
	}
	ferry_log(LOG_INFO, "gateway %s running, topics under %s/", cfg.gateway_id, cfg.topic_prefix);
	ferry_notify("READY=1");
	ferry_engine_run(engine, &stop);
	if (!stop)
		pthread_kill(sig_thread, SIGTERM); /* the engine ended by itself: release the waiter */
	pthread_join(sig_thread, NULL);
	ferry_notify("STOPPING=1");
	ferry_log(LOG_INFO, "stopping");
	ferry_cloud_stop(cloud);
	ferry_engine_free(engine);
	ferry_config_free(&cfg);
	return 0;
}
