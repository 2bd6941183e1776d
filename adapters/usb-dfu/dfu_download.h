/* The two download dialects over an open DFU-mode interface: plain DFU 1.1
 * (numbered blocks, then a zero-length block and manifestation) and ST's
 * DfuSe (erase, address pointer, blocks from wValue 2, then leave). */
#ifndef FERRY_DFU_DOWNLOAD_H
#define FERRY_DFU_DOWNLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "dfu_file.h"
#include "dfu_layout.h"
#include "dfu_proto.h"

/* Why a download stopped: it tells the adapter whether starting over can help. */
typedef enum dfu_failure {
	DFU_FAIL_NONE = 0,
	DFU_FAIL_DEVICE,    /* the device answered with an error status: it will not take this image */
	DFU_FAIL_STALL,     /* a request stalled: clear the status and start again */
	DFU_FAIL_GONE,      /* the device left the bus: find it again and start again */
	DFU_FAIL_TIMEOUT,   /* no answer, or busy beyond the budget */
	DFU_FAIL_CANCELLED, /* ferryd asked us to stop */
} dfu_failure;

typedef struct dfu_xfer {
	dfu_link link;
	dfu_poll poll;       /* waits after data blocks and at manifestation */
	dfu_poll erase_poll; /* waits after DfuSe erase commands */
	uint16_t transfer_size;
	uint64_t done, total; /* progress, in firmware bytes */
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	void *ctx;
	/* out */
	dfu_failure failure;
	uint8_t dev_status; /* the device's bStatus when failure is DFU_FAIL_DEVICE */
	char detail[256];
} dfu_xfer;

/* Each returns 0 or a ferry reason code (FERRY_ADAPTER_E_*), with
 * x->failure and x->detail saying why. */

/* Plain DFU: blocks 0, 1, 2 ... (the 16-bit number wraps), each at most
 * transfer_size bytes.  Does not send the zero-length end. */
int dfu_download_plain(dfu_xfer *x, const uint8_t *data, size_t len);
/* The zero-length DNLOAD and manifestation.  A device that leaves the bus
 * while manifesting is not an error here: the caller judges by what the
 * device reports when it comes back. */
int dfu_manifest_plain(dfu_xfer *x, uint16_t block, bool *went_away);

/* DfuSe: the elements of one target of a parsed file into the memory
 * described by `layout` (already checked): every touched erasable page is
 * erased once, then the data goes in from the address pointer. */
int dfuse_download_target(dfu_xfer *x, const dfu_layout *layout, const uint8_t *file, const dfuse_target *t);
/* Set the address pointer to `addr` and leave DFU mode: the device starts
 * the firmware there.  It may vanish without answering; *went_away says so. */
int dfuse_leave(dfu_xfer *x, uint32_t addr, bool *went_away);

/* The words for a failed libusb request, for details. */
const char *dfu_usb_error_text(int libusb_code);

#endif
