/* USB DFU 1.1 class requests on an open libusb handle, the states and
 * status codes the device answers with, and the poll loop that waits out a
 * busy device.  One file talks DFU's control requests; the adapter composes
 * them into a download. */
#ifndef FERRY_DFU_PROTO_H
#define FERRY_DFU_PROTO_H

#include <libusb.h>
#include <stdbool.h>
#include <stdint.h>

enum dfu_request {
	DFU_DETACH = 0,
	DFU_DNLOAD = 1,
	DFU_UPLOAD = 2,
	DFU_GETSTATUS = 3,
	DFU_CLRSTATUS = 4,
	DFU_GETSTATE = 5,
	DFU_ABORT = 6,
};

enum dfu_state {
	DFU_APP_IDLE = 0,
	DFU_APP_DETACH = 1,
	DFU_IDLE = 2,
	DFU_DNLOAD_SYNC = 3,
	DFU_DNBUSY = 4,
	DFU_DNLOAD_IDLE = 5,
	DFU_MANIFEST_SYNC = 6,
	DFU_MANIFEST = 7,
	DFU_MANIFEST_WAIT_RESET = 8,
	DFU_UPLOAD_IDLE = 9,
	DFU_ERROR = 10,
};

enum dfu_status_code {
	DFU_OK = 0,
	DFU_ERR_TARGET = 1,
	DFU_ERR_FILE = 2,
	DFU_ERR_WRITE = 3,
	DFU_ERR_ERASE = 4,
	DFU_ERR_CHECK_ERASED = 5,
	DFU_ERR_PROG = 6,
	DFU_ERR_VERIFY = 7,
	DFU_ERR_ADDRESS = 8,
	DFU_ERR_NOTDONE = 9,
	DFU_ERR_FIRMWARE = 10,
	DFU_ERR_VENDOR = 11,
	DFU_ERR_USBR = 12,
	DFU_ERR_POR = 13,
	DFU_ERR_UNKNOWN = 14,
	DFU_ERR_STALLEDPKT = 15,
};
#define DFU_STATUS_COUNT 16

/* The functional descriptor's bmAttributes. */
enum {
	DFU_ATTR_CAN_DNLOAD = 1,
	DFU_ATTR_CAN_UPLOAD = 2,
	DFU_ATTR_MANIFEST_TOLERANT = 4,
	DFU_ATTR_WILL_DETACH = 8,
};

/* The GETSTATUS answer. */
typedef struct dfu_status {
	uint8_t status;   /* enum dfu_status_code */
	uint32_t poll_ms; /* bwPollTimeout: the least wait before the next GETSTATUS */
	uint8_t state;    /* enum dfu_state */
	uint8_t istring;
} dfu_status;

/* One interface of one open device. */
typedef struct dfu_link {
	libusb_device_handle *h;
	uint16_t intf;
	unsigned timeout_ms; /* each control transfer */
} dfu_link;

/* How long to wait on a busy device: each sleep is the device's
 * bwPollTimeout, at least min_ms and at most max_ms (a device that reports
 * hours is not believed); the whole wait ends after budget_ms.  A GETSTATUS
 * that stalls is retried up to `stalls` times (STM32L4 stalls during erase). */
typedef struct dfu_poll {
	uint32_t min_ms, max_ms, budget_ms;
	int stalls;
	bool (*cancelled)(void *ctx);
	void *ctx;
} dfu_poll;

/* Each returns 0 (or the bytes moved) or a negative libusb error code. */
int dfu_detach(const dfu_link *l, uint16_t timeout_ms);
int dfu_dnload(const dfu_link *l, uint16_t block, const uint8_t *data, uint16_t len);
int dfu_upload(const dfu_link *l, uint16_t block, uint8_t *data, uint16_t len);
int dfu_get_status(const dfu_link *l, dfu_status *st);
int dfu_get_state(const dfu_link *l, uint8_t *state);
int dfu_clear_status(const dfu_link *l);
int dfu_abort(const dfu_link *l);

/* GETSTATUS until the device is no longer busy (dfuDNBUSY, dfuDNLOAD-SYNC,
 * dfuMANIFEST-SYNC while manifesting, dfuMANIFEST), sleeping as `p` says
 * between polls.  0 with the last answer in *st -- whose status may be an
 * error the caller must judge -- or a negative libusb code; LIBUSB_ERROR_
 * TIMEOUT also when the budget ran out, LIBUSB_ERROR_INTERRUPTED when
 * cancelled. */
int dfu_wait(const dfu_link *l, const dfu_poll *p, bool manifesting, dfu_status *st);

/* DNLOAD one block, then wait out the device's busy time.  0 when it is
 * ready for the next (dfuDNLOAD-IDLE, status OK); 1 when the device
 * answered with an error status, in *st; a negative libusb code when the
 * request or the status read failed. */
int dfu_dnload_wait(const dfu_link *l, const dfu_poll *p, uint16_t block, const uint8_t *data, uint16_t len,
                    dfu_status *st);

/* Put a device in DFU mode back to dfuIDLE, as dfu-util does on entry:
 * wait out a busy state (as `p` says), then dfuERROR -> CLRSTATUS;
 * dfuDNLOAD-IDLE, dfuUPLOAD-IDLE -> ABORT.  0 when it ends in dfuIDLE; 2
 * when only a bus reset gets it out (dfuMANIFEST-SYNC, -WAIT-RESET); else a
 * negative libusb code, or 1 with the state it stays in. */
int dfu_to_idle(const dfu_link *l, const dfu_poll *p, dfu_status *st);

const char *dfu_state_name(uint8_t state);   /* "dfuDNBUSY" */
const char *dfu_status_name(uint8_t status); /* "errWRITE" */
const char *dfu_status_text(uint8_t status); /* what it means, in words */
/* The ferry reason code (FERRY_ADAPTER_E_*) for a DFU error status: the
 * device refusing or failing to take the image is install_failed; resets,
 * stalls and unknown codes are adapter_error. */
int dfu_status_reason(uint8_t status);

void dfu_sleep_ms(uint32_t ms);

#endif
