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
/* Called when the store's disk is full (st says so): true once it is worth
 * writing again, false to give up with st. */
typedef bool (*eng_room_fn)(void *ctx, ferry_status *st);
/* Rebuild c's image from the base at base_path and the patch in patch_fd
 * into the store: committed only with the manifest's size and SHA-256.  A
 * full disk is waited out through room (NULL: it fails the rebuild). */
ferry_err eng_rebuild(ferry_engine *e, const ferry_component *c, const char *base_path, int patch_fd,
		      eng_room_fn room, void *room_ctx, ferry_status *st) FERRY_WUR;

/* Decrypt c's image (ferry-enc-1) from cipher_fd with the content key into
 * the store: committed only with the manifest's size and SHA-256.  A full
 * disk is waited out through room. */
ferry_err eng_decrypt(ferry_engine *e, const ferry_component *c, int cipher_fd, const uint8_t key[32],
		      eng_room_fn room, void *room_ctx, ferry_status *st) FERRY_WUR;

#endif
