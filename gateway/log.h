/* ferryd's log: one line per event to stderr (journald under systemd), with
 * a syslog priority prefix that journald understands.  Download links and
 * key material never go through here. */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <syslog.h>

#include "ferry/err.h"

void ferry_log_init(int max_level);
void ferry_log(int level, const char *fmt, ...) FERRY_PRINTF(2, 3);

#endif
