/* DFU class requests (DFU 1.1, section 6) and the busy-wait between them. */
#include "dfu_proto.h"

#include <time.h>

#include "ferry/adapter.h"

#define OUT (LIBUSB_ENDPOINT_OUT | LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_INTERFACE)
#define IN (LIBUSB_ENDPOINT_IN | LIBUSB_REQUEST_TYPE_CLASS | LIBUSB_RECIPIENT_INTERFACE)

void dfu_sleep_ms(uint32_t ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts))
		;
}

int dfu_detach(const dfu_link *l, uint16_t timeout_ms)
{
	return libusb_control_transfer(l->h, OUT, DFU_DETACH, timeout_ms, l->intf, NULL, 0, l->timeout_ms);
}

int dfu_dnload(const dfu_link *l, uint16_t block, const uint8_t *data, uint16_t len)
{
	int r =
	    libusb_control_transfer(l->h, OUT, DFU_DNLOAD, block, l->intf, (unsigned char *)data, len, l->timeout_ms);
	return r >= 0 && r != len ? LIBUSB_ERROR_IO : r;
}

int dfu_upload(const dfu_link *l, uint16_t block, uint8_t *data, uint16_t len)
{
	return libusb_control_transfer(l->h, IN, DFU_UPLOAD, block, l->intf, data, len, l->timeout_ms);
}

int dfu_get_status(const dfu_link *l, dfu_status *st)
{
	uint8_t b[6];
	int r = libusb_control_transfer(l->h, IN, DFU_GETSTATUS, 0, l->intf, b, sizeof(b), l->timeout_ms);
	if (r < 0)
		return r;
	if (r != 6)
		return LIBUSB_ERROR_IO; /* a short answer is no answer */
	st->status = b[0];
	st->poll_ms = (uint32_t)b[1] | (uint32_t)b[2] << 8 | (uint32_t)b[3] << 16;
	st->state = b[4];
	st->istring = b[5];
	return 0;
}

int dfu_get_state(const dfu_link *l, uint8_t *state)
{
	int r = libusb_control_transfer(l->h, IN, DFU_GETSTATE, 0, l->intf, state, 1, l->timeout_ms);
	return r < 0 ? r : r == 1 ? 0 : LIBUSB_ERROR_IO;
}

int dfu_clear_status(const dfu_link *l)
{
	return libusb_control_transfer(l->h, OUT, DFU_CLRSTATUS, 0, l->intf, NULL, 0, l->timeout_ms);
}

int dfu_abort(const dfu_link *l)
{
	return libusb_control_transfer(l->h, OUT, DFU_ABORT, 0, l->intf, NULL, 0, l->timeout_ms);
}

static bool busy(uint8_t state, bool manifesting)
{
	return state == DFU_DNBUSY || state == DFU_DNLOAD_SYNC || state == DFU_MANIFEST ||
	       (manifesting && state == DFU_MANIFEST_SYNC);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int dfu_wait(const dfu_link *l, const dfu_poll *p, bool manifesting, dfu_status *st)
{
	/* the budget is wall time, so a device that answers "busy, ask again
	 * in 0 ms" forever still runs out of it */
	uint64_t until = mono_ms() + p->budget_ms;
	int stalls = 0;

	for (;;) {
		uint32_t ms;
		int r = dfu_get_status(l, st);
		if (r == LIBUSB_ERROR_PIPE && stalls < p->stalls) {
			/* some parts stall GETSTATUS while they erase: wait, ask again */
			stalls++;
			ms = p->max_ms < 100 ? p->max_ms : 100;
		} else if (r < 0) {
			return r;
		} else if (st->status != DFU_OK || !busy(st->state, manifesting)) {
			return 0;
		} else {
			ms = st->poll_ms;
		}
		if (ms < p->min_ms)
			ms = p->min_ms;
		if (ms < 1)
			ms = 1;
		if (ms > p->max_ms)
			ms = p->max_ms;
		if (mono_ms() + ms > until)
			return LIBUSB_ERROR_TIMEOUT;
		if (p->cancelled && p->cancelled(p->ctx))
			return LIBUSB_ERROR_INTERRUPTED;
		dfu_sleep_ms(ms);
	}
}

int dfu_dnload_wait(const dfu_link *l, const dfu_poll *p, uint16_t block, const uint8_t *data, uint16_t len,
                    dfu_status *st)
{
	int r = dfu_dnload(l, block, data, len);

	if (r < 0 || (r = dfu_wait(l, p, false, st)) < 0)
		return r;
	if (st->status != DFU_OK)
		return 1;
	return st->state == DFU_DNLOAD_IDLE ? 0 : 1;
}

int dfu_to_idle(const dfu_link *l, const dfu_poll *p, dfu_status *st)
{
	/* a device still busy with a block from before (a crash mid-download)
	 * finishes it first */
	int r = dfu_wait(l, p, false, st);

	if (r < 0)
		return r;
	switch (st->state) {
	case DFU_IDLE: return 0;
	case DFU_ERROR: r = dfu_clear_status(l); break;
	case DFU_DNLOAD_IDLE:
	case DFU_UPLOAD_IDLE: r = dfu_abort(l); break;
	/* only GETSTATUS is valid here and it would manifest what is there:
	 * a bus reset is the way out */
	case DFU_MANIFEST_SYNC:
	case DFU_MANIFEST_WAIT_RESET: return 2;
	default: return 1;
	}
	if (r < 0 || (r = dfu_get_status(l, st)) < 0)
		return r;
	return st->state == DFU_IDLE ? 0 : 1;
}

const char *dfu_state_name(uint8_t state)
{
	static const char *const names[] = {
	    "appIDLE",        "appDETACH",        "dfuIDLE",     "dfuDNLOAD-SYNC",         "dfuDNBUSY",
	    "dfuDNLOAD-IDLE", "dfuMANIFEST-SYNC", "dfuMANIFEST", "dfuMANIFEST-WAIT-RESET", "dfuUPLOAD-IDLE",
	    "dfuERROR",
	};
	return state < sizeof(names) / sizeof(names[0]) ? names[state] : "an unknown state";
}

const char *dfu_status_name(uint8_t status)
{
	switch ((enum dfu_status_code)status) {
	case DFU_OK: return "OK";
	case DFU_ERR_TARGET: return "errTARGET";
	case DFU_ERR_FILE: return "errFILE";
	case DFU_ERR_WRITE: return "errWRITE";
	case DFU_ERR_ERASE: return "errERASE";
	case DFU_ERR_CHECK_ERASED: return "errCHECK_ERASED";
	case DFU_ERR_PROG: return "errPROG";
	case DFU_ERR_VERIFY: return "errVERIFY";
	case DFU_ERR_ADDRESS: return "errADDRESS";
	case DFU_ERR_NOTDONE: return "errNOTDONE";
	case DFU_ERR_FIRMWARE: return "errFIRMWARE";
	case DFU_ERR_VENDOR: return "errVENDOR";
	case DFU_ERR_USBR: return "errUSBR";
	case DFU_ERR_POR: return "errPOR";
	case DFU_ERR_UNKNOWN: return "errUNKNOWN";
	case DFU_ERR_STALLEDPKT: return "errSTALLEDPKT";
	}
	return "an unknown status";
}

const char *dfu_status_text(uint8_t status)
{
	switch ((enum dfu_status_code)status) {
	case DFU_OK: return "no error";
	case DFU_ERR_TARGET: return "the file is not for this device";
	case DFU_ERR_FILE: return "the device's checks of the file failed";
	case DFU_ERR_WRITE: return "the device cannot write its memory";
	case DFU_ERR_ERASE: return "the memory erase failed";
	case DFU_ERR_CHECK_ERASED: return "the memory erase check failed";
	case DFU_ERR_PROG: return "programming the memory failed";
	case DFU_ERR_VERIFY: return "the programmed memory failed verification";
	case DFU_ERR_ADDRESS: return "an address out of range";
	case DFU_ERR_NOTDONE: return "the end of the download came before the device expected it";
	case DFU_ERR_FIRMWARE: return "the device's firmware is corrupt and it cannot return to run-time";
	case DFU_ERR_VENDOR: return "a vendor-specific error";
	case DFU_ERR_USBR: return "the device saw an unexpected USB reset";
	case DFU_ERR_POR: return "the device saw an unexpected power-on reset";
	case DFU_ERR_UNKNOWN: return "an unknown error";
	case DFU_ERR_STALLEDPKT: return "the device stalled an unexpected request";
	}
	return "a status code DFU 1.1 does not define";
}

int dfu_status_reason(uint8_t status)
{
	switch ((enum dfu_status_code)status) {
	case DFU_OK: return FERRY_ADAPTER_OK;
	case DFU_ERR_TARGET:
	case DFU_ERR_FILE:
	case DFU_ERR_WRITE:
	case DFU_ERR_ERASE:
	case DFU_ERR_CHECK_ERASED:
	case DFU_ERR_PROG:
	case DFU_ERR_VERIFY:
	case DFU_ERR_ADDRESS:
	case DFU_ERR_NOTDONE:
	case DFU_ERR_FIRMWARE:
	case DFU_ERR_VENDOR: return FERRY_ADAPTER_E_INSTALL_FAILED;
	case DFU_ERR_USBR:
	case DFU_ERR_POR:
	case DFU_ERR_UNKNOWN:
	case DFU_ERR_STALLEDPKT: return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	return FERRY_ADAPTER_E_ADAPTER_ERROR;
}
