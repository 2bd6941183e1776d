/* DfuSe memory layout strings as devices send them, and hostile ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dfu_file.h"
#include "dfu_layout.h"

static void test_stm32f4(void **state)
{
	dfu_layout l;
	char detail[DFU_DETAIL_MAX];
	uint32_t ps, size;
	uint8_t type;

	assert_int_equal(dfu_layout_parse("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", &l, detail), 0);
	assert_string_equal(l.name, "Internal Flash");
	assert_int_equal(l.n, 3);
	assert_int_equal(l.seg[0].start, 0x08000000);
	assert_int_equal(l.seg[0].page_size, 16 * 1024);
	assert_int_equal(l.seg[0].pages, 4);
	assert_int_equal(l.seg[1].start, 0x08010000);
	assert_int_equal(l.seg[2].start, 0x08020000);
	assert_int_equal(l.seg[2].type, DFU_MEM_READABLE | DFU_MEM_ERASABLE | DFU_MEM_WRITABLE);
	/* 1 MiB in all: the byte after it is outside */
	assert_true(dfu_layout_page(&l, 0x080FFFFF, &ps, &size, &type));
	assert_int_equal(ps, 0x080E0000);
	assert_int_equal(size, 128 * 1024);
	assert_false(dfu_layout_page(&l, 0x08100000, &ps, &size, &type));
	assert_true(dfu_layout_page(&l, 0x08012345, &ps, &size, &type));
	assert_int_equal(ps, 0x08010000);
	assert_int_equal(size, 64 * 1024);
	assert_int_equal(dfu_layout_check(&l, 0x08000000, 1024 * 1024, DFU_MEM_WRITABLE, detail), 0);
	assert_int_equal(dfu_layout_check(&l, 0x08000000, 1024 * 1024 + 1, DFU_MEM_WRITABLE, detail), -1);
	assert_non_null(strstr(detail, "0x08100000"));
	assert_int_equal(dfu_layout_check(&l, 0x07FFFFFF, 2, DFU_MEM_WRITABLE, detail), -1);
}

static void test_units_regions_types(void **state)
{
	dfu_layout l;
	char detail[DFU_DETAIL_MAX];

	/* option bytes: a unit of ' ' (bytes), type e (readable, writable) */
	assert_int_equal(dfu_layout_parse("@Option Bytes  /0x1FFFC000/01*016 e", &l, detail), 0);
	assert_int_equal(l.seg[0].page_size, 16);
	assert_int_equal(l.seg[0].type, DFU_MEM_READABLE | DFU_MEM_WRITABLE);
	assert_int_equal(dfu_layout_check(&l, 0x1FFFC000, 16, DFU_MEM_WRITABLE, detail), 0);
	assert_int_equal(dfu_layout_check(&l, 0x1FFFC000, 16, DFU_MEM_ERASABLE, detail), -1);
	assert_non_null(strstr(detail, "erasable"));
	/* two regions, M unit, read-only pages */
	assert_int_equal(dfu_layout_parse("@SPI Flash/0x90000000/2*1Mg/0x00000000/1*4Ka", &l, detail), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.seg[0].page_size, 1024 * 1024);
	assert_int_equal(l.seg[1].start, 0);
	assert_int_equal(l.seg[1].type, DFU_MEM_READABLE);
	assert_int_equal(dfu_layout_check(&l, 0x100, 4, DFU_MEM_WRITABLE, detail), -1);
	assert_non_null(strstr(detail, "not writable"));
}

static void test_hostile(void **state)
{
	static const char *const bad[] = {
		"Internal Flash/0x08000000/04*016Kg",      /* no @ */
		"@Internal Flash",                         /* no region */
		"@F/08000000/04*016Kg",                    /* no 0x */
		"@F/0x08000000/04016Kg",                   /* no * */
		"@F/0x08000000/04*016Xg",                  /* unit */
		"@F/0x08000000/04*016Kz",                  /* type */
		"@F/0x08000000/00*016Kg",                  /* no pages */
		"@F/0x08000000/04*000Kg",                  /* empty pages */
		"@F/0xFFFF8000/04*016Kg",                  /* runs past 4 GiB */
		"@F/0x1FFFFFFFF/01*016Kg",                 /* address beyond 32 bits */
		"@F/0x08000000/99999999999*016Kg",         /* count beyond 32 bits */
		"@F/0x08000000/04*016Kg,",                 /* trailing comma */
		"@F/0x08000000/04*016Kg trailing",         /* trailing text */
		"@F/0x08000000/",                          /* no segments */
		"",
	};
	dfu_layout l;
	char detail[DFU_DETAIL_MAX];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		detail[0] = '\0';
		assert_int_equal(dfu_layout_parse(bad[i], &l, detail), -1);
		assert_true(strlen(detail) > 0);
	}
	/* more segments than we keep */
	char many[4096] = "@F/0x00000000/";
	for (int i = 0; i < 40; i++)
		strcat(many, i ? ",1*1Kg" : "1*1Kg");
	assert_int_equal(dfu_layout_parse(many, &l, detail), -1);
	assert_non_null(strstr(detail, "too many"));
	/* a name longer than we keep */
	char name[200] = "@";
	memset(name + 1, 'n', 100);
	strcpy(name + 101, "/0x0/1*1Kg");
	assert_int_equal(dfu_layout_parse(name, &l, detail), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_stm32f4), cmocka_unit_test(test_units_regions_types),
					   cmocka_unit_test(test_hostile)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
