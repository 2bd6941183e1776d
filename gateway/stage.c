/* Stage names and the allowed moves between stages. */
#include "stage.h"

#include <string.h>

static const char *const names[FERRY_STAGE_COUNT] = {
	[FERRY_S_NONE] = "",
	[FERRY_S_ALLOWED] = "allowed",
	[FERRY_S_DOWNLOADING] = "downloading",
	[FERRY_S_DOWNLOADED] = "downloaded",
	[FERRY_S_VERIFYING] = "verifying",
	[FERRY_S_VERIFIED] = "verified",
	[FERRY_S_WAITING] = "waiting",
	[FERRY_S_INSTALLING] = "installing",
	[FERRY_S_ACTIVATING] = "activating",
	[FERRY_S_TRIAL] = "trial",
	[FERRY_S_INSTALLED] = "installed",
	[FERRY_S_ALREADY_INSTALLED] = "already_installed",
	[FERRY_S_FAILED] = "failed",
	[FERRY_S_ROLLED_BACK] = "rolled_back",
	[FERRY_S_CANCELLED] = "cancelled",
};

const char *ferry_stage_name(ferry_stage s)
{
	return (unsigned)s < FERRY_STAGE_COUNT ? names[s] : NULL;
}

int ferry_stage_parse(const char *name, ferry_stage *out)
{
	for (int i = 0; i < FERRY_STAGE_COUNT; i++)
		if (!strcmp(names[i], name)) {
			*out = (ferry_stage)i;
			return 0;
		}
	return -1;
}

bool ferry_stage_final(ferry_stage s)
{
	return s == FERRY_S_INSTALLED || s == FERRY_S_ALREADY_INSTALLED || s == FERRY_S_FAILED ||
	       s == FERRY_S_ROLLED_BACK || s == FERRY_S_CANCELLED;
}

#define BIT(s) (1u << (s))

/* For each stage, the stages it may move to. */
static const unsigned component_moves[FERRY_STAGE_COUNT] = {
	[FERRY_S_NONE] = BIT(FERRY_S_ALLOWED) | BIT(FERRY_S_FAILED),
	[FERRY_S_ALLOWED] = BIT(FERRY_S_DOWNLOADING) | BIT(FERRY_S_DOWNLOADED) | BIT(FERRY_S_FAILED),
	[FERRY_S_DOWNLOADING] = BIT(FERRY_S_DOWNLOADING) | BIT(FERRY_S_DOWNLOADED) | BIT(FERRY_S_FAILED),
	[FERRY_S_DOWNLOADED] = BIT(FERRY_S_VERIFYING) | BIT(FERRY_S_FAILED),
	[FERRY_S_VERIFYING] = BIT(FERRY_S_VERIFIED) | BIT(FERRY_S_FAILED),
};

static const unsigned step_moves[FERRY_STAGE_COUNT] = {
	[FERRY_S_NONE] = BIT(FERRY_S_WAITING) | BIT(FERRY_S_INSTALLING) | BIT(FERRY_S_ALREADY_INSTALLED) |
			 BIT(FERRY_S_FAILED) | BIT(FERRY_S_CANCELLED),
	[FERRY_S_WAITING] = BIT(FERRY_S_INSTALLING) | BIT(FERRY_S_FAILED) | BIT(FERRY_S_CANCELLED),
	[FERRY_S_INSTALLING] = BIT(FERRY_S_INSTALLING) | BIT(FERRY_S_ACTIVATING) | BIT(FERRY_S_FAILED) |
			       BIT(FERRY_S_CANCELLED),
	/* back to installing: after a restart the device did not run the new
	 * image, so it is pushed again */
	[FERRY_S_ACTIVATING] = BIT(FERRY_S_INSTALLING) | BIT(FERRY_S_TRIAL) | BIT(FERRY_S_INSTALLED) |
			       BIT(FERRY_S_FAILED) | BIT(FERRY_S_ROLLED_BACK),
	[FERRY_S_TRIAL] = BIT(FERRY_S_INSTALLED) | BIT(FERRY_S_FAILED) | BIT(FERRY_S_ROLLED_BACK),
};

bool ferry_stage_component_move(ferry_stage from, ferry_stage to)
{
	return (unsigned)from < FERRY_STAGE_COUNT && (unsigned)to < FERRY_STAGE_COUNT &&
	       (component_moves[from] & BIT(to));
}

bool ferry_stage_step_move(ferry_stage from, ferry_stage to)
{
	return (unsigned)from < FERRY_STAGE_COUNT && (unsigned)to < FERRY_STAGE_COUNT && (step_moves[from] & BIT(to));
}
