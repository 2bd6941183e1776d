/* Logging.  Lines go to stderr with the "<N>" prefix of sd-daemon(3), so that
 * journald records the priority; outside systemd they are still readable.
 * One mutex keeps lines from different threads whole. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static int max_level = LOG_INFO;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void ferry_log_init(int level)
{
	max_level = level;
}

void ferry_log(int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&lock);
	fprintf(stderr, "<%d>ferryd: %s\n", level, line);
	fflush(stderr);
	pthread_mutex_unlock(&lock);
}
