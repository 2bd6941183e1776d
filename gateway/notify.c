/* sd_notify, loaded for the moment of the call (see notify.h). */
#include "notify.h"

#include <dlfcn.h>
#include <stdlib.h>

#include "log.h"

bool ferry_notify(const char *state)
{
	if (!getenv("NOTIFY_SOCKET"))
		return true; /* not started by systemd, or not as Type=notify */
	void *h = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
	int (*notify)(int, const char *) = NULL;
	int rc = -1;

	if (!h) {
		ferry_log(LOG_ERR, "cannot tell systemd %s: %s", state, dlerror());
		return false;
	}
	*(void **)&notify = dlsym(h, "sd_notify");
	if (notify)
		rc = notify(0, state);
	if (rc <= 0)
		ferry_log(LOG_ERR, "cannot tell systemd %s (sd_notify: %d)", state, rc);
	dlclose(h);
	return rc > 0;
}
