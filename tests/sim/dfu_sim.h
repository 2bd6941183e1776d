/* The simulated DFU device: a model of an MCU with a DFU bootloader (plain
 * DFU 1.1 or ST's DfuSe), and the USB plumbing that puts it behind the real
 * libusb through umockdev (dfu_device.c).  The model (dfu_sim_model.c)
 * knows nothing of umockdev: it answers control requests and resets, and
 * tells the plumbing when the device leaves the bus and how it comes back.
 *
 * What the device does, per the DFU 1.1 spec and ST's AN3156:
 *  - In run-time mode it shows a vendor interface and a DFU run-time
 *    interface.  DETACH puts it in appDETACH; a USB reset within the
 *    detach timeout (or, with WillDetach, nothing) brings it back in DFU
 *    mode under the DFU-mode PID, same serial number, same port.
 *  - Plain DFU: blocks go to a staging area; the device is busy for
 *    bwPollTimeout after each block and counts a GETSTATUS that comes
 *    earlier as a protocol violation.  Manifestation checks the staged image
 *    (its CRC) and only then makes it the firmware: a download that fails
 *    or is aborted leaves the old firmware running.
 *  - DfuSe: flash memory with the STM32F4 page layout; commands (set
 *    address, page erase, mass erase) and data blocks from wValue 2.
 *    Programming a byte that was not erased is errPROG.  Leave starts the
 *    image at the address pointer if it is valid, else the device stays in
 *    DFU mode.
 *
 * Firmware images (--make-image) carry a small header the device reads to
 * know its version and the PID its firmware enumerates with. */
#ifndef FERRY_DFU_SIM_H
#define FERRY_DFU_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_IMG_MAGIC "FSIM"
#define SIM_IMG_HDR 16
#define SIM_STAGING_MAX (2u * 1024 * 1024)
#define SIM_FLASH_BASE 0x08000000u
#define SIM_FLASH_SIZE (1024u * 1024)
#define SIM_LAYOUT "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg"
#define SIM_OPTION_LAYOUT "@Option Bytes  /0x1FFFC000/01*016 e"
#define SIM_OPTION_BASE 0x1FFFC000u
#define SIM_OPTION_SIZE 16u

/* What the plumbing must do after a request. */
typedef enum sim_action {
	SIM_STAY = 0,
	SIM_TO_DFU,     /* leave the bus, come back in DFU mode */
	SIM_TO_RUNTIME, /* leave the bus, come back running the firmware (or in DFU mode if none is valid) */
	SIM_UNPLUG,     /* leave the bus; come back later in run-time mode */
} sim_action;

typedef struct sim_fw {
	uint8_t *data;
	size_t len;
	char version[16];
	uint16_t pid; /* 0: the configured run-time PID */
	bool valid;
} sim_fw;

typedef struct dfu_sim {
	/* configuration */
	bool dfuse;
	uint16_t vid, pid, dfu_pid;
	char serial[64];
	uint16_t transfer_size;
	uint32_t poll_ms, manifest_ms, erase_ms, detach_timeout_ms;
	bool tolerant, will_detach;
	/* faults */
	long error_block; /* -1, or the block whose status is error_status */
	uint8_t error_status;
	long stall_block;  /* -1, or the block whose DNLOAD stalls (once) */
	long unplug_block; /* -1, or the block at which the device leaves the bus (once) */
	bool verify_fails, detach_never, manifest_reset;
	bool silent_manifest; /* intolerant and silent: no answer once manifesting */
	uint32_t bogus_poll;  /* 0, or the bwPollTimeout reported instead of the real one */
	int erase_stalls;     /* GETSTATUS stalls after each erase command */

	/* run-time state */
	bool dfu_mode;
	uint8_t state, status;
	int64_t busy_until;   /* when the current operation is done */
	uint32_t poll_report; /* what GETSTATUS reports for it */
	int64_t detach_deadline;
	uint32_t next_block;
	uint8_t alt;
	bool fault_done_stall, fault_done_unplug;
	/* plain DFU */
	sim_fw fw; /* running firmware */
	uint8_t *staging;
	size_t staged;
	bool committed; /* manifestation made the staged image the firmware */
	/* pending request, applied when the busy time is over */
	enum { PEND_NONE, PEND_BLOCK, PEND_SET_ADDRESS, PEND_ERASE, PEND_MASS_ERASE, PEND_LEAVE } pend;
	uint32_t pend_addr;
	uint16_t pend_len;
	uint8_t pend_data[4096];
	int stalls_left;
	/* DfuSe */
	uint8_t *flash;
	uint8_t *written; /* one flag per flash byte: programmed since erase */
	uint32_t pointer;
	uint8_t option[SIM_OPTION_SIZE]; /* alternate setting 1 */

	/* counters, published in the stats file */
	unsigned long dnloads, data_bytes, early_polls, violations, detaches, resets, enumerations, erases, errors;
	unsigned long option_bytes;
} dfu_sim;

/* Write a firmware image; returns its length, 0 if it does not fit. */
size_t sim_make_image(const char *version, uint16_t pid, size_t size, uint8_t *out, size_t cap);
/* Read an image's header and check its CRC. */
bool sim_parse_image(const uint8_t *p, size_t len, sim_fw *out);

/* Set up the device running `version`. 0 or -1. */
int sim_init(dfu_sim *d, const char *version);
/* The version the device runs now ("" in DFU mode without a valid image). */
const char *sim_running(const dfu_sim *d);
/* The PID the device shows now. */
uint16_t sim_current_pid(const dfu_sim *d);
/* bcdDevice of the running firmware (JJMN), or the bootloader's 0x0200. */
uint16_t sim_bcd_device(const dfu_sim *d);

/* A control request on EP0: setup packet and data stage.  For IN requests
 * `data` receives up to wLength bytes.  Returns the data stage length, or
 * -1 to stall.  *act says what happens to the device afterwards. */
int sim_control(dfu_sim *d, const uint8_t setup[8], uint8_t *data, sim_action *act);
/* USBDEVFS_RESET.  *act as above. */
void sim_reset(dfu_sim *d, sim_action *act);
/* The device comes back on the bus: `to_dfu` or booting its firmware. */
void sim_enumerated(dfu_sim *d, bool to_dfu);

/* String descriptor text for index i (1 manufacturer, 2 product, 3 serial,
 * 4 version, 5.. alternate settings), NULL when there is none. */
const char *sim_string(const dfu_sim *d, uint8_t i);

int64_t sim_now_ms(void);

#endif
