/* DFU files: the 16-byte DFU suffix (DFU 1.1 appendix B) and ST's DfuSe
 * container (prefix, targets, elements, UM0391).  Parsed strictly before a
 * device is touched: a wrong CRC, a file for another VID/PID, or a container
 * whose sizes do not add up is refused. */
#ifndef FERRY_DFU_FILE_H
#define FERRY_DFU_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DFU_SUFFIX_LEN 16
#define DFUSE_TARGETS_MAX 8
#define DFUSE_ELEMENTS_MAX 64
#define DFU_DETAIL_MAX 256

typedef struct dfu_suffix {
	uint16_t bcd_device, id_product, id_vendor, bcd_dfu;
	uint32_t crc;
} dfu_suffix;

typedef struct dfuse_element {
	uint32_t address;
	uint32_t size;
	size_t offset; /* of its data in the file */
} dfuse_element;

typedef struct dfuse_target {
	uint8_t alt;
	bool named;
	char name[256];
	size_t n_elements;
	dfuse_element elements[DFUSE_ELEMENTS_MAX];
} dfuse_target;

/* A prefix that dfu-prefix writes for bootloaders that read it themselves:
 * it is part of what is sent to the device, never stripped. */
typedef enum dfu_prefix {
	DFU_PREFIX_NONE = 0,
	DFU_PREFIX_LMDFU, /* TI Stellaris: 8 bytes, flash address and payload length */
	DFU_PREFIX_LPC,   /* NXP LPC, unencrypted: 16 bytes, length in 512-byte blocks */
} dfu_prefix;

typedef struct dfu_file {
	dfu_suffix suffix;
	size_t payload_len; /* bytes before the suffix: what a plain DFU download sends */
	dfu_prefix prefix;
	uint32_t prefix_address; /* LMDFU: where the bootloader writes the payload */
	bool dfuse;         /* bcdDFU 0x011A with a DfuSe prefix */
	size_t n_targets;
	dfuse_target targets[DFUSE_TARGETS_MAX];
} dfu_file;

/* CRC-32 as the DFU suffix uses it: reflected 0xEDB88320, init 0xFFFFFFFF,
 * no final XOR ("123456789" -> 0x340BC6D9). */
uint32_t dfu_crc32(const uint8_t *p, size_t n, uint32_t crc);

/* 0, or -1 with detail naming what was wrong. */
int dfu_file_parse(const uint8_t *buf, size_t len, dfu_file *out, char *detail);
/* The suffix's VID/PID must be the device's (0xFFFF matches any). */
int dfu_file_for_device(const dfu_file *f, uint16_t vid, uint16_t pid, char *detail);

#endif
