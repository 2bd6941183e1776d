/* What a USB device says about its DFU side, read from its descriptors:
 * the run-time or DFU-mode interface, the functional descriptor, the
 * alternate settings and their names, the serial number and the port it
 * hangs on.  Descriptors come from the device: every length is checked. */
#ifndef FERRY_DFU_USB_H
#define FERRY_DFU_USB_H

#include <libusb.h>
#include <stdbool.h>
#include <stdint.h>

#define DFU_ALTS_MAX 16
#define DFU_SERIAL_MAX 65
#define DFU_PORT_MAX 32
#define DFU_ALT_NAME_MAX 256

typedef struct dfu_func {
	uint8_t attrs;          /* DFU_ATTR_* */
	uint16_t detach_ms;     /* wDetachTimeOut */
	uint16_t transfer_size; /* wTransferSize */
	uint16_t bcd_dfu;       /* 0x0100, 0x0110, or 0x011A for DfuSe; 0x0100 when a 1.0 descriptor omits it */
} dfu_func;

typedef struct dfu_alt {
	uint8_t alt;
	uint8_t istring;
	char name[DFU_ALT_NAME_MAX]; /* filled by dfu_usb_read_strings */
} dfu_alt;

typedef struct dfu_usb {
	libusb_device *dev; /* holds a reference; dfu_usb_release drops it */
	uint16_t vid, pid, bcd_device;
	uint8_t iserial;
	char serial[DFU_SERIAL_MAX]; /* filled by dfu_usb_read_strings */
	char port[DFU_PORT_MAX];     /* "1-2.3": bus, then the hub ports */
	bool dfu_mode;               /* interface protocol 2: in its bootloader */
	uint8_t intf;                /* the DFU interface (run-time or DFU mode) */
	dfu_func func;
	size_t n_alts;
	dfu_alt alts[DFU_ALTS_MAX];
} dfu_usb;

/* Fill *out from the cached descriptors (no I/O to the device).  0 when the
 * device has a DFU interface; 1 when it has none; a negative libusb code on
 * error. */
int dfu_usb_describe(libusb_device *dev, dfu_usb *out);
/* Read the serial number and the alternate settings' names (string
 * descriptors) through an open handle.  Missing strings stay empty. */
void dfu_usb_read_strings(libusb_device_handle *h, dfu_usb *u);
void dfu_usb_release(dfu_usb *u);

/* The functional descriptor in a run of descriptors (an interface's or a
 * configuration's extra bytes).  true when one was found. */
bool dfu_usb_parse_func(const uint8_t *p, int len, dfu_func *out);

#endif
