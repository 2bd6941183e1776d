/* MCUboot image parsing: version and SHA256 TLV found, with and without a
 * protected TLV block; every malformed image refused with its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mcuboot.h"

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

/* header (hdr bytes) + payload + [protected block] + unprotected block with
 * a KEYHASH TLV, then the SHA256 TLV (0x10, 32 bytes of 0xAB). */
static size_t make(uint8_t *b, unsigned hdr, uint32_t payload, int protected_block)
{
	size_t t;
	memset(b, 0, hdr + payload + 128);
	put32(b, MCUBOOT_MAGIC);
	put16(b + 8, hdr);
	put32(b + 12, payload);
	b[20] = 1, b[21] = 2;
	put16(b + 22, 300);
	t = hdr + payload;
	if (protected_block) {
		put16(b + t, 0x6908);
		put16(b + t + 2, 12);
		put16(b + t + 4, 0x50); /* security counter */
		put16(b + t + 6, 4);
		t += 12;
	}
	put16(b + t, 0x6907);
	put16(b + t + 2, 4 + 8 + 36);
	put16(b + t + 4, 0x01); /* KEYHASH, 4 bytes */
	put16(b + t + 6, 4);
	put16(b + t + 12, 0x10);
	put16(b + t + 14, 32);
	memset(b + t + 16, 0xab, 32);
	return t + 48;
}

static void test_good(void **state)
{
	static uint8_t b[4096];
	mcuboot_info info;
	const char *why = NULL;
	uint8_t want[32];

	memset(want, 0xab, 32);
	for (int prot = 0; prot < 2; prot++) {
		size_t n = make(b, 0x200, 1000, prot);
		assert_int_equal(mcuboot_parse(b, n, &info, &why), 0);
		assert_string_equal(info.version, "1.2.300");
		assert_memory_equal(info.hash, want, 32);
	}
}

static void test_refused(void **state)
{
	static uint8_t b[4096];
	mcuboot_info info;
	const char *why = NULL;
	size_t n = make(b, 32, 100, 0);

	/* cut short: the TLV area is missing */
	assert_int_equal(mcuboot_parse(b, 32 + 100 + 2, &info, &why), -1);
	assert_string_equal(why, "MCUboot header sizes do not fit");
	assert_int_equal(mcuboot_parse(b, 20, &info, &why), -1);
	assert_string_equal(why, "is not an MCUboot image (no magic)");
	/* an img_size running past the end */
	put32(b + 12, 0xfffffff0u);
	assert_int_equal(mcuboot_parse(b, n, &info, &why), -1);
	assert_string_equal(why, "MCUboot header sizes do not fit");
	put32(b + 12, 100);
	/* a header smaller than 32 bytes */
	put16(b + 8, 8);
	assert_int_equal(mcuboot_parse(b, n, &info, &why), -1);
	put16(b + 8, 32);
	/* a TLV whose length runs past its block: no SHA256 found */
	put16(b + 132 + 6, 0x4000);
	assert_int_equal(mcuboot_parse(b, n, &info, &why), -1);
	assert_string_equal(why, "no SHA256 TLV");
	put16(b + 132 + 6, 4);
	/* a block length past the file's end */
	put16(b + 132 + 2, 0xffff);
	assert_int_equal(mcuboot_parse(b, n, &info, &why), -1);
	put16(b + 132 + 2, 48);
	assert_int_equal(mcuboot_parse(b, n, &info, &why), 0);
	b[0] ^= 1;
	assert_int_equal(mcuboot_parse(b, n, &info, &why), -1);
}

static void test_version_matches(void **state)
{
	assert_true(mcuboot_version_matches("1.2.3", "1.2.3"));
	assert_true(mcuboot_version_matches("1.2.3", "1.2.3-rc.1"));
	assert_true(mcuboot_version_matches("1.2.3", "1.2.3+build7"));
	assert_false(mcuboot_version_matches("1.2.3", "1.2.30"));
	assert_false(mcuboot_version_matches("1.2.3", "1.2"));
	assert_false(mcuboot_version_matches("1.2.3", "2.2.3"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_version_matches),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
