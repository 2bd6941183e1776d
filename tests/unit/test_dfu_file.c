/* DFU suffix CRC and hostile DfuSe containers, byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dfu_file.h"

static size_t add_suffix(uint8_t *buf, size_t len, uint16_t vid, uint16_t pid, uint16_t bcd)
{
	uint8_t *s = buf + len;
	s[0] = 0, s[1] = 0, s[2] = (uint8_t)pid, s[3] = (uint8_t)(pid >> 8), s[4] = (uint8_t)vid, s[5] = (uint8_t)(vid >> 8);
	s[6] = (uint8_t)bcd, s[7] = (uint8_t)(bcd >> 8), s[8] = 'U', s[9] = 'F', s[10] = 'D', s[11] = 16;
	uint32_t crc = dfu_crc32(buf, len + 12, 0xFFFFFFFFu);
	s[12] = (uint8_t)crc, s[13] = (uint8_t)(crc >> 8), s[14] = (uint8_t)(crc >> 16), s[15] = (uint8_t)(crc >> 24);
	return len + 16;
}

static void test_crc_check_value(void **state)
{
	assert_int_equal(dfu_crc32((const uint8_t *)"123456789", 9, 0xFFFFFFFFu), 0x340BC6D9u);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

/* One target, one element of n bytes; element size field set to esize. */
static size_t dfuse(uint8_t *b, uint32_t n, uint32_t esize, uint32_t targets_field)
{
	size_t o = 0;
	memcpy(b, "DfuSe\x01", 6);
	b[10] = (uint8_t)targets_field;
	o = 11;
	memcpy(b + o, "Target", 6);
	memset(b + o + 6, 0, 268);
	put32(b + o + 266, 8 + n);
	put32(b + o + 270, 1);
	o += 274;
	put32(b + o, 0x08000000);
	put32(b + o + 4, esize);
	memset(b + o + 8, 0xab, n);
	o += 8 + n;
	put32(b + 6, (uint32_t)o + 16); /* the whole file, suffix included */
	return o;
}

static void test_hostile_containers(void **state)
{
	static uint8_t b[4096];
	char detail[DFU_DETAIL_MAX];
	dfu_file f;
	size_t n;

	n = add_suffix(b, dfuse(b, 100, 100, 1), 0x0483, 0xdf11, 0x011A);
	assert_int_equal(dfu_file_parse(b, n, &f, detail), 0);
	assert_int_equal(f.targets[0].elements[0].size, 100);

	n = add_suffix(b, dfuse(b, 100, 5000, 1), 0x0483, 0xdf11, 0x011A); /* element larger than the file */
	assert_int_equal(dfu_file_parse(b, n, &f, detail), -1);
	assert_non_null(strstr(detail, "past the target"));

	n = add_suffix(b, dfuse(b, 100, 90, 1), 0x0483, 0xdf11, 0x011A); /* element smaller: stray bytes */
	assert_int_equal(dfu_file_parse(b, n, &f, detail), -1);

	n = add_suffix(b, dfuse(b, 100, 100, 0), 0x0483, 0xdf11, 0x011A); /* zero targets */
	assert_int_equal(dfu_file_parse(b, n, &f, detail), -1);

	n = add_suffix(b, dfuse(b, 100, 100, 200), 0x0483, 0xdf11, 0x011A); /* 200 targets */
	assert_int_equal(dfu_file_parse(b, n, &f, detail), -1);

	n = add_suffix(b, 0, 0x0483, 0xdf11, 0x0100); /* a suffix and nothing else */
	assert_int_equal(dfu_file_parse(b, n, &f, detail), -1);

	memset(b, 1, 50);
	n = add_suffix(b, 50, 0x0483, 0xdf11, 0x0200); /* unknown bcdDFU */
	assert_int_equal(dfu_file_parse(b, n, &f, detail), -1);

	assert_int_equal(dfu_file_parse(b, 10, &f, detail), -1); /* shorter than a suffix */
}

/* Prefixes as dfu-prefix writes them are recognised only when their own
 * fields agree with the file; they stay in the payload. */
static void test_prefixes(void **state)
{
	static uint8_t b[4096];
	char detail[DFU_DETAIL_MAX];
	dfu_file f;
	size_t n;

	/* TI Stellaris: 01 00, address / 1024, payload length */
	memset(b, 0x5a, 1008);
	b[0] = 0x01, b[1] = 0x00, b[2] = 0x08, b[3] = 0x00;
	put32(b + 4, 1000);
	n = add_suffix(b, 1008, 0x1cbe, 0x00ff, 0x0100);
	assert_int_equal(dfu_file_parse(b, n, &f, detail), 0);
	assert_int_equal(f.prefix, DFU_PREFIX_LMDFU);
	assert_int_equal(f.prefix_address, 8 * 1024);
	assert_int_equal(f.payload_len, 1008);
	/* the same bytes with a length that does not agree: plain firmware */
	put32(b + 4, 999);
	n = add_suffix(b, 1008, 0x1cbe, 0x00ff, 0x0100);
	assert_int_equal(dfu_file_parse(b, n, &f, detail), 0);
	assert_int_equal(f.prefix, DFU_PREFIX_NONE);
	/* NXP LPC, unencrypted: 1a 3f, 512-byte blocks, zeros, ff ff ff ff */
	memset(b, 0x5a, 1016);
	memset(b, 0, 16);
	b[0] = 0x1a, b[1] = 0x3f, b[2] = 2;
	memset(b + 12, 0xff, 4);
	n = add_suffix(b, 1016, 0xffff, 0xffff, 0x0100);
	assert_int_equal(dfu_file_parse(b, n, &f, detail), 0);
	assert_int_equal(f.prefix, DFU_PREFIX_LPC);
	b[2] = 1; /* too few blocks for the payload */
	n = add_suffix(b, 1016, 0xffff, 0xffff, 0x0100);
	assert_int_equal(dfu_file_parse(b, n, &f, detail), 0);
	assert_int_equal(f.prefix, DFU_PREFIX_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_crc_check_value),
					   cmocka_unit_test(test_hostile_containers), cmocka_unit_test(test_prefixes)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
