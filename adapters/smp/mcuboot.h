/* What an SMP client needs to know about an MCUboot image before sending it:
 * the version in its header and the SHA256 TLV by which `image state` names
 * it for test and confirm (not the same as the upload `sha`, which covers the
 * whole file). */
#ifndef FERRY_MCUBOOT_H
#define FERRY_MCUBOOT_H

#include <stddef.h>
#include <stdint.h>

#define MCUBOOT_MAGIC 0x96f3b83du

typedef struct mcuboot_info {
	char version[40]; /* "major.minor.revision" */
	uint8_t hash[32]; /* the SHA256 TLV */
} mcuboot_info;

/* Parse an image held in memory.  0, or -1 with *why naming what is wrong
 * (a static sentence): no magic, sizes that do not fit, no SHA256 TLV. */
int mcuboot_parse(const uint8_t *buf, size_t len, mcuboot_info *out, const char **why);

/* Whether a manifest's semantic version names this header version: equal,
 * or equal followed by a pre-release or build part ("1.2.3-rc.1" matches
 * header 1.2.3, since MCUboot's version has no such part). */
int mcuboot_version_matches(const char *header_version, const char *manifest_version);

#endif
