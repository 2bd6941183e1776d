/* Bases for delta images, and rebuilding an image from a base and a patch
 * (bases.c says which images count as a base). */
#ifndef FERRY_BASES_H
#define FERRY_BASES_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "ferry/manifest.h"
#include "store.h"

/* Does the gateway hold the image with SHA-256 base as component c's base
 * for a delta?  Its path, when it does. */
bool eng_delta_base(ferry_engine *e, const ferry_component *c, const uint8_t base[32], char path[FERRY_PATH_MAX]);
/* The manifest's delta of c from the base with this hex SHA-256, or NULL. */
const ferry_delta *eng_delta_of(const ferry_component *c, const char *base_hex);
/* Rebuild c's image from the base at base_path and the patch in patch_fd
 * into the store: committed only with the manifest's size and SHA-256. */
ferry_err eng_rebuild(ferry_engine *e, const ferry_component *c, const char *base_path, int patch_fd,
		      ferry_status *st) FERRY_WUR;

#endif
