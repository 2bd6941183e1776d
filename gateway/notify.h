/* systemd's readiness protocol (Type=notify in the unit). */
#ifndef FERRY_NOTIFY_H
#define FERRY_NOTIFY_H

#include <stdbool.h>

/* Send `state` ("READY=1", "STOPPING=1") with libsystemd's sd_notify when
 * systemd asked for it ($NOTIFY_SOCKET).  libsystemd, and the compression
 * and crypto libraries it brings, are loaded for the call and let go after
 * it: a gateway at rest maps none of them.  False when systemd asked and
 * the message could not be sent (the log says why). */
bool ferry_notify(const char *state);

#endif
