/* One error vocabulary for all of ferry.
 *
 * The codes are the reason codes of the cloud protocol (docs/protocol.md), in
 * the order the protocol lists them.  Values are part of the on-disk journal
 * and must never be renumbered: add new codes at the end only.
 */
#ifndef FERRY_ERR_H
#define FERRY_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define FERRY_WUR __attribute__((warn_unused_result))
#define FERRY_PRINTF(a, b) __attribute__((format(printf, a, b)))

typedef enum ferry_err {
	FERRY_OK = 0,
	FERRY_E_MALFORMED = 1,
	FERRY_E_BAD_SIGNATURE = 2,
	FERRY_E_UNTRUSTED_SIGNER = 3,
	FERRY_E_WRONG_GATEWAY = 4,
	FERRY_E_NOT_YET_VALID = 5,
	FERRY_E_EXPIRED = 6,
	FERRY_E_REPLAYED = 7,
	FERRY_E_CLOCK_UNSYNCED = 8,
	FERRY_E_UNSUPPORTED = 9,
	FERRY_E_UNKNOWN_UPDATE = 10,
	FERRY_E_WRONG_STAGE = 11,
	FERRY_E_STALE_SEQUENCE = 12,
	FERRY_E_DOWNGRADE = 13,
	FERRY_E_NO_MATCHING_DEVICE = 14,
	FERRY_E_DEVICE_BUSY = 15,
	FERRY_E_INSUFFICIENT_SPACE = 16,
	FERRY_E_SIZE_MISMATCH = 17,
	FERRY_E_DIGEST_MISMATCH = 18,
	FERRY_E_DOWNLOAD_FAILED = 19,
	FERRY_E_ADAPTER_ERROR = 20,
	FERRY_E_INSTALL_FAILED = 21,
	FERRY_E_VERSION_MISMATCH = 22,
	FERRY_E_CANCELLED = 23,
	FERRY_E_INTERNAL = 24,
	FERRY_E_BASE_MISSING = 25,
	FERRY_E_DECRYPT_FAILED = 26,
	FERRY_E_LINK_INSECURE = 27,
} ferry_err;

/* One past the last code; loops over every code use it. */
#define FERRY_ERR_COUNT 28

/* Detail that travels with an error: which field, file or component. */
#define FERRY_DETAIL_MAX 256
typedef struct ferry_status {
	ferry_err code;
	char detail[FERRY_DETAIL_MAX];
} ferry_status;

/* The protocol's reason code ("bad_signature"); NULL for a value outside the enum. */
const char *ferry_err_code(ferry_err e);
/* A sentence for humans ("the signature does not verify"). */
const char *ferry_strerror(ferry_err e);
/* Reason code text back to the enum; FERRY_OK and -1 when unknown. */
int ferry_err_parse(const char *code, ferry_err *out) FERRY_WUR;

/* Record code and a formatted detail in st (st may be NULL); returns code so
 * callers can write `return ferry_fail(st, FERRY_E_MALFORMED, "...")`. */
ferry_err ferry_fail(ferry_status *st, ferry_err code, const char *fmt, ...) FERRY_PRINTF(3, 4);
/* Put context in front of the detail already in st: "manifest: " + detail. */
void ferry_status_prefix(ferry_status *st, const char *fmt, ...) FERRY_PRINTF(2, 3);

#endif
