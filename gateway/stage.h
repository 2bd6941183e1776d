/* Stages: what a stage report says about one component (its image) or one
 * device step (the component on one device), as an enum with one name
 * table, and which transitions are allowed.  The journal refuses any other
 * transition, so a stage can never move backwards or leave an outcome. */
#ifndef FERRY_STAGE_H
#define FERRY_STAGE_H

#include <stdbool.h>

typedef enum ferry_stage {
	FERRY_S_NONE, /* nothing reported yet */
	FERRY_S_ALLOWED,
	FERRY_S_DOWNLOADING,
	FERRY_S_DOWNLOADED,
	FERRY_S_VERIFYING,
	FERRY_S_VERIFIED,
	FERRY_S_WAITING,
	FERRY_S_INSTALLING,
	FERRY_S_ACTIVATING,
	FERRY_S_TRIAL,
	FERRY_S_INSTALLED,
	FERRY_S_ALREADY_INSTALLED,
	FERRY_S_FAILED,
	FERRY_S_ROLLED_BACK,
	FERRY_S_CANCELLED,
} ferry_stage;
#define FERRY_STAGE_COUNT 15

/* "installed"; "" for FERRY_S_NONE; NULL outside the enum. */
const char *ferry_stage_name(ferry_stage s);
/* Name back to the enum; -1 when it is none. */
int ferry_stage_parse(const char *name, ferry_stage *out);
/* installed, already_installed, failed, rolled_back, cancelled. */
bool ferry_stage_final(ferry_stage s);

/* A component's own stages (download and check of its image, reported
 * without a device): allowed ... verified, or failed. */
bool ferry_stage_component_move(ferry_stage from, ferry_stage to);
/* A device step's stages: waiting, installing, activating, trial and the
 * outcomes. */
bool ferry_stage_step_move(ferry_stage from, ferry_stage to);

#endif
