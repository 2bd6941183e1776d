/* The DfuSe memory layout: the string an ST-style bootloader puts in each
 * alternate setting's interface string descriptor to say which memory that
 * setting writes, where it lies, how it is paged and what may be done to
 * each page.
 *
 *   @Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg
 *   ^name            ^start      ^count*size unit type, ...
 *
 * A string may hold several regions, each "/0xADDR/segments".  The unit is
 * ' ' or 'B' (bytes), 'K' or 'M'; the type is a letter 'a'..'g' whose value
 * minus 'a' plus one is a mask: 1 readable, 2 erasable, 4 writable.
 *
 * The string comes from the device, so it is parsed as hostile input:
 * bounded counts, sizes that do not overflow, regions that do not wrap. */
#ifndef FERRY_DFU_LAYOUT_H
#define FERRY_DFU_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DFU_LAYOUT_SEGMENTS_MAX 32
#define DFU_LAYOUT_NAME_MAX 64

enum { DFU_MEM_READABLE = 1, DFU_MEM_ERASABLE = 2, DFU_MEM_WRITABLE = 4 };

/* `pages` pages of `page_size` bytes from `start`. */
typedef struct dfu_segment {
	uint32_t start;
	uint32_t page_size;
	uint32_t pages;
	uint8_t type; /* DFU_MEM_* */
} dfu_segment;

typedef struct dfu_layout {
	char name[DFU_LAYOUT_NAME_MAX]; /* trailing blanks removed */
	size_t n;
	dfu_segment seg[DFU_LAYOUT_SEGMENTS_MAX];
} dfu_layout;

/* 0, or -1 with detail (DFU_DETAIL_MAX bytes) naming what is wrong. */
int dfu_layout_parse(const char *s, dfu_layout *out, char *detail);

/* The page that holds addr: its start, size and type.  false when addr is
 * in no segment. */
bool dfu_layout_page(const dfu_layout *l, uint32_t addr, uint32_t *page_start, uint32_t *page_size, uint8_t *type);

/* [addr, addr + len) lies wholly in pages that have every bit of `need`.
 * 0, or -1 with detail naming the first address that does not. */
int dfu_layout_check(const dfu_layout *l, uint32_t addr, uint32_t len, uint8_t need, char *detail);

#endif
