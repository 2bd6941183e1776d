/* Reason codes and their messages.  Both switches have no default on purpose:
 * a code added to the enum without a text is a compiler warning (an error in CI). */
#include "ferry/err.h"

#include <stdio.h>
#include <string.h>

const char *ferry_err_code(ferry_err e)
{
	switch (e) {
	case FERRY_OK: return "ok";
	case FERRY_E_MALFORMED: return "malformed";
	case FERRY_E_BAD_SIGNATURE: return "bad_signature";
	case FERRY_E_UNTRUSTED_SIGNER: return "untrusted_signer";
	case FERRY_E_WRONG_GATEWAY: return "wrong_gateway";
	case FERRY_E_NOT_YET_VALID: return "not_yet_valid";
	case FERRY_E_EXPIRED: return "expired";
	case FERRY_E_REPLAYED: return "replayed";
	case FERRY_E_CLOCK_UNSYNCED: return "clock_unsynced";
	case FERRY_E_UNSUPPORTED: return "unsupported";
	case FERRY_E_UNKNOWN_UPDATE: return "unknown_update";
	case FERRY_E_WRONG_STAGE: return "wrong_stage";
	case FERRY_E_STALE_SEQUENCE: return "stale_sequence";
	case FERRY_E_DOWNGRADE: return "downgrade";
	case FERRY_E_NO_MATCHING_DEVICE: return "no_matching_device";
	case FERRY_E_DEVICE_BUSY: return "device_busy";
	case FERRY_E_INSUFFICIENT_SPACE: return "insufficient_space";
	case FERRY_E_SIZE_MISMATCH: return "size_mismatch";
	case FERRY_E_DIGEST_MISMATCH: return "digest_mismatch";
	case FERRY_E_DOWNLOAD_FAILED: return "download_failed";
	case FERRY_E_ADAPTER_ERROR: return "adapter_error";
	case FERRY_E_INSTALL_FAILED: return "install_failed";
	case FERRY_E_VERSION_MISMATCH: return "version_mismatch";
	case FERRY_E_CANCELLED: return "cancelled";
	case FERRY_E_INTERNAL: return "internal";
	case FERRY_E_BASE_MISSING: return "base_missing";
	case FERRY_E_DECRYPT_FAILED: return "decrypt_failed";
	case FERRY_E_LINK_INSECURE: return "link_insecure";
	}
	return NULL;
}

const char *ferry_strerror(ferry_err e)
{
	switch (e) {
	case FERRY_OK: return "no error";
	case FERRY_E_MALFORMED: return "the input cannot be parsed or breaks the format";
	case FERRY_E_BAD_SIGNATURE: return "the signature does not verify";
	case FERRY_E_UNTRUSTED_SIGNER: return "the signer's certificate does not chain to a trusted CA";
	case FERRY_E_WRONG_GATEWAY: return "the command is addressed to another gateway";
	case FERRY_E_NOT_YET_VALID: return "not valid yet";
	case FERRY_E_EXPIRED: return "expired";
	case FERRY_E_REPLAYED: return "this command was seen before";
	case FERRY_E_CLOCK_UNSYNCED: return "the gateway's clock is not trustworthy";
	case FERRY_E_UNSUPPORTED: return "a field or value this gateway cannot honour";
	case FERRY_E_UNKNOWN_UPDATE: return "no such update";
	case FERRY_E_WRONG_STAGE: return "the update is not at the stage this operation needs";
	case FERRY_E_STALE_SEQUENCE: return "the manifest sequence number is not newer than the last accepted";
	case FERRY_E_DOWNGRADE: return "the new version is older than the installed one";
	case FERRY_E_NO_MATCHING_DEVICE: return "no attached subdevice matches the component's target";
	case FERRY_E_DEVICE_BUSY: return "the subdevice is busy or in a state that forbids updating";
	case FERRY_E_INSUFFICIENT_SPACE: return "not enough free space";
	case FERRY_E_SIZE_MISMATCH: return "the image size differs from the manifest";
	case FERRY_E_DIGEST_MISMATCH: return "the image digest differs from the manifest";
	case FERRY_E_DOWNLOAD_FAILED: return "the download failed";
	case FERRY_E_ADAPTER_ERROR: return "the adapter or its link failed";
	case FERRY_E_INSTALL_FAILED: return "the subdevice did not accept the image";
	case FERRY_E_VERSION_MISMATCH: return "the subdevice does not report the new version after activation";
	case FERRY_E_CANCELLED: return "cancelled";
	case FERRY_E_INTERNAL: return "internal error";
	case FERRY_E_BASE_MISSING: return "the gateway holds no base for the component's deltas, and no full image was linked";
	case FERRY_E_DECRYPT_FAILED: return "the content key does not unwrap with this gateway's key, or the image does not decrypt";
	case FERRY_E_LINK_INSECURE: return "the local link to the device is weaker than the component requires";
	}
	return "unknown error code";
}

int ferry_err_parse(const char *code, ferry_err *out)
{
	for (int i = 0; i < FERRY_ERR_COUNT; i++) {
		const char *c = ferry_err_code((ferry_err)i);
		if (c && code && strcmp(c, code) == 0) {
			*out = (ferry_err)i;
			return 0;
		}
	}
	return -1;
}

ferry_err ferry_fail(ferry_status *st, ferry_err code, const char *fmt, ...)
{
	if (st) {
		va_list ap;
		va_start(ap, fmt);
		st->code = code;
		vsnprintf(st->detail, sizeof(st->detail), fmt, ap);
		va_end(ap);
	}
	return code;
}

void ferry_status_prefix(ferry_status *st, const char *fmt, ...)
{
	char pre[FERRY_DETAIL_MAX], both[2 * FERRY_DETAIL_MAX];
	size_t n;
	va_list ap;

	if (!st)
		return;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	snprintf(both, sizeof(both), "%s%s", pre, st->detail);
	n = strnlen(both, sizeof(st->detail) - 1);
	memcpy(st->detail, both, n);
	st->detail[n] = '\0';
}
