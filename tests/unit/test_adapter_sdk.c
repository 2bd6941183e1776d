/* The SDK's config-number helpers, as every adapter reads its numbers: the
 * default when the key is absent, and a config error naming the key for an
 * empty value, one with anything after the digits, or one out of range --
 * never 0 for a value that is not a number. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ferry/adapter.h"

static const char *value;

static const char *config(void *ctx, const char *key)
{
	return strcmp(key, "n") ? NULL : value;
}

static const ferry_host_v1 host = {.size = sizeof(host), .config = config};

static int read_n(const char *v, long *out, char *detail)
{
	value = v;
	*out = -7;
	return ferry_adapter_config_long(&host, "n", 42, 1, 1000, out, detail);
}

static void test_absent_gives_default(void **state)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	long n;
	assert_int_equal(read_n(NULL, &n, detail), 0);
	assert_int_equal(n, 42);
}

static void test_number(void **state)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	long n;
	assert_int_equal(read_n("1000", &n, detail), 0);
	assert_int_equal(n, 1000);
	int i = 0;
	value = "7";
	assert_int_equal(ferry_adapter_config_int(&host, "n", 3, 0, 9, &i, detail), 0);
	assert_int_equal(i, 7);
}

static void test_not_numbers_refused(void **state)
{
	static const char *const bad[] = {"", "abc", "12x", "1 ", " ", "0x10", "99999999999999999999999"};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
		long n;
		assert_int_equal(read_n(bad[k], &n, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
		assert_int_equal(n, -7); /* untouched */
		assert_non_null(strstr(detail, "config n: "));
	}
}

static void test_out_of_range_refused(void **state)
{
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	long n;
	assert_int_equal(read_n("0", &n, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_non_null(strstr(detail, "0 is not in 1..1000"));
	assert_int_equal(read_n("1001", &n, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_int_equal(read_n("-5", &n, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_absent_gives_default),
		cmocka_unit_test(test_number),
		cmocka_unit_test(test_not_numbers_refused),
		cmocka_unit_test(test_out_of_range_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
