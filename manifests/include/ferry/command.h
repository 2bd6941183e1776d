/* Signed commands from the cloud (docs/protocol.md, "Commands"). */
#ifndef FERRY_COMMAND_H
#define FERRY_COMMAND_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "ferry/err.h"
#include "ferry/trust.h"

#define FERRY_ID_MAX 64
#define FERRY_JTI_MAX 128
#define FERRY_ISS_MAX 256
#define FERRY_URL_MAX 2048
#define FERRY_LINKS_MAX 64

typedef enum ferry_op {
	FERRY_OP_UPDATE_REQUEST,
	FERRY_OP_UPDATE_DOWNLOAD,
	FERRY_OP_UPDATE_CHECK,
	FERRY_OP_UPDATE_INSTALL,
	FERRY_OP_UPDATE_DEPLOY,
	FERRY_OP_UPDATE_CANCEL,
	FERRY_OP_INVENTORY_REFRESH,
	FERRY_OP_UPDATE_STATUS,
} ferry_op;
#define FERRY_OP_COUNT 8

const char *ferry_op_name(ferry_op op);
int ferry_op_parse(const char *s, ferry_op *out) FERRY_WUR;

/* A link to a component's whole image (key "NAME"), or to one of its
 * deltas (key "NAME@BASE": BASE the delta's base_sha256, lowercase hex). */
typedef struct ferry_link {
	char component[FERRY_ID_MAX + 1];
	bool delta;
	char base_hex[65]; /* when delta */
	char *url;         /* https:// only */
} ferry_link;

/* An encrypted component's content key, wrapped for this gateway (a
 * compact JWE, docs/encryption.md). */
typedef struct ferry_ckey {
	char component[FERRY_ID_MAX + 1];
	char *jwe;
} ferry_ckey;

typedef struct ferry_command {
	char iss[FERRY_ISS_MAX + 1];
	char sub[FERRY_ID_MAX + 1];
	char jti[FERRY_JTI_MAX + 1];
	int64_t iat, nbf, exp;
	ferry_op op;
	char update_id[FERRY_ID_MAX + 1];
	char *manifest; /* compact JWS, NULL unless the op carries one */
	ferry_link *links;
	size_t n_links;
	ferry_ckey *keys; /* with the links: optional */
	size_t n_keys;
} ferry_command;

/* Parse a command payload (already verified or not) field by field. */
ferry_err ferry_command_parse(const json_t *payload, ferry_command *out, ferry_status *st) FERRY_WUR;

/* The checks a gateway makes before acting, given its id, clock and skew:
 * sub, nbf, exp.  The caller checks jti against its replay store. */
ferry_err ferry_command_check(const ferry_command *c, const char *gateway_id, time_t now, long skew,
			      ferry_status *st) FERRY_WUR;

/* Verify the JWS against the command CA, parse, and check.  When payload is
 * not NULL it receives the verified payload object (the caller's reference). */
ferry_err ferry_command_verify(const char *compact, size_t len, const ferry_trust *trust, const char *gateway_id,
			       time_t now, long skew, ferry_command *out, json_t **payload, ferry_status *st) FERRY_WUR;

void ferry_command_free(ferry_command *c);

#endif
