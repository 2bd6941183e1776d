/* Semantic versions (semver.org 2.0.0): parsing and precedence. */
#ifndef FERRY_SEMVER_H
#define FERRY_SEMVER_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/err.h"

#define FERRY_SEMVER_MAX 64

typedef struct ferry_semver {
	uint64_t major, minor, patch;
	/* The whole text, kept so that pre-release identifiers can be compared
	 * and the version can be printed exactly as the signer wrote it. */
	char text[FERRY_SEMVER_MAX + 1];
	/* Offsets into text of the pre-release part (after '-') or 0 if none. */
	uint8_t pre_off, pre_len;
} ferry_semver;

/* Strict parse: no leading zeros, no empty identifiers, at most 64 chars.
 * The detail names what was wrong. */
ferry_err ferry_semver_parse(const char *s, ferry_semver *out, ferry_status *st) FERRY_WUR;
bool ferry_semver_valid(const char *s);

/* <0, 0, >0 by precedence; build metadata is ignored (1.0.0+a == 1.0.0+b). */
int ferry_semver_cmp(const ferry_semver *a, const ferry_semver *b);

#endif
