/* Signed manifests (docs/manifest.md). */
#ifndef FERRY_MANIFEST_H
#define FERRY_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ferry/command.h"
#include "ferry/err.h"
#include "ferry/semver.h"
#include "ferry/trust.h"

#define FERRY_COMPONENTS_MAX 32
#define FERRY_FORMAT_MAX 32
/* The largest image we accept: 4 GiB covers a gateway's own A/B bundle. */
#define FERRY_IMAGE_SIZE_MAX ((int64_t)1 << 32)
#define FERRY_MATCH_MAX 8
#define FERRY_LINK_MAX 16

/* Local link security, weakest first: 0 unauthenticated, 1
 * bonded-encrypted, 2 physical; -1 for any other word. */
int ferry_link_rank(const char *level);

typedef enum ferry_ctype { FERRY_CT_FIRMWARE, FERRY_CT_CONFIGURATION, FERRY_CT_APPLICATION } ferry_ctype;
const char *ferry_ctype_name(ferry_ctype t);

typedef enum ferry_format {
	FERRY_FMT_RAW, FERRY_FMT_DFU, FERRY_FMT_DFUSE, FERRY_FMT_MCUBOOT, FERRY_FMT_RAUC, FERRY_FMT_FILE,
} ferry_format;
#define FERRY_FORMAT_COUNT 6
const char *ferry_format_name(ferry_format f);

typedef struct ferry_kv {
	char key[FERRY_ID_MAX + 1];
	char value[FERRY_ID_MAX + 1];
} ferry_kv;

/* A patch from one base image to the component's image (docs/delta.md). */
#define FERRY_DELTAS_MAX 8
typedef struct ferry_delta {
	uint8_t base_sha256[32]; /* the image it applies to */
	uint8_t sha256[32];      /* of the patch itself */
	int64_t size;            /* of the patch */
	char format[FERRY_FORMAT_MAX + 1]; /* "ferry-delta-1" */
} ferry_delta;

typedef struct ferry_component {
	char name[FERRY_ID_MAX + 1];
	ferry_ctype type;
	char adapter[FERRY_ID_MAX + 1];
	char vendor_id[FERRY_ID_MAX + 1];
	char class_id[FERRY_ID_MAX + 1];
	ferry_kv match[FERRY_MATCH_MAX]; /* adapter-specific link-level match */
	size_t n_match;
	ferry_semver version;
	int64_t size;
	uint8_t sha256[32];
	ferry_format format;
	size_t after[FERRY_COMPONENTS_MAX]; /* indexes of components that go first */
	size_t n_after;
	ferry_delta deltas[FERRY_DELTAS_MAX]; /* one per base the operator prepared */
	size_t n_deltas;
	/* the weakest local link it may be pushed over ("" when none): one of
	 * physical, bonded-encrypted, unauthenticated (docs/adapters.md) */
	char min_link[FERRY_LINK_MAX + 1];
	bool encrypted_for_device; /* the image itself is encrypted for the device (an MCUboot encrypted image) */
	/* encrypted (docs/encryption.md): the file host has the ciphertext,
	 * size and sha256 above are the plaintext's */
	bool encrypted;
	struct {
		char format[FERRY_FORMAT_MAX + 1]; /* "ferry-enc-1" */
		int64_t size;                      /* of the ciphertext */
		uint8_t sha256[32];                /* of the ciphertext */
	} enc;
} ferry_component;

typedef struct ferry_manifest {
	int64_t sequence;
	int64_t created;
	int64_t expires; /* 0 when absent */
	bool allow_downgrade;
	bool atomic; /* all or nothing: every device gets the update, or none keeps it */
	ferry_component *c;
	size_t n;
	size_t order[FERRY_COMPONENTS_MAX]; /* install order: listed order, moved by `after` */
} ferry_manifest;

ferry_err ferry_manifest_parse(const json_t *payload, ferry_manifest *out, ferry_status *st) FERRY_WUR;
/* Verify the JWS against the manifest CA, parse, check `expires` at now.
 * payload, when not NULL, receives the verified payload object. */
ferry_err ferry_manifest_verify(const char *compact, size_t len, const ferry_trust *trust, time_t now, long skew,
				ferry_manifest *out, json_t **payload, ferry_status *st) FERRY_WUR;
const ferry_component *ferry_manifest_find(const ferry_manifest *m, const char *name);
void ferry_manifest_free(ferry_manifest *m);

/* 64 lowercase hex chars to 32 bytes; -1 when not exactly that. */
int ferry_hex32(const char *hex, uint8_t out[32]) FERRY_WUR;
void ferry_hex32_fmt(const uint8_t in[32], char out[65]);

#endif
