/* Semantic versions: semver.org's precedence examples, and strings that only
 * look like versions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ferry/semver.h"

static int cmp(const char *a, const char *b)
{
	ferry_semver x, y;
	assert_int_equal(ferry_semver_parse(a, &x, NULL), FERRY_OK);
	assert_int_equal(ferry_semver_parse(b, &y, NULL), FERRY_OK);
	return ferry_semver_cmp(&x, &y);
}

static void test_precedence(void **state)
{
	static const char *const rising[] = {
		"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0", "1.11.0", "2.0.0", "2.1.0", "2.1.1",
	};
	size_t n = sizeof(rising) / sizeof(rising[0]);

	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++) {
			int c = cmp(rising[i], rising[j]);
			if ((i < j && c >= 0) || (i > j && c <= 0) || (i == j && c != 0))
				fail_msg("%s vs %s gave %d", rising[i], rising[j], c);
		}
	assert_int_equal(cmp("1.0.0+build.1", "1.0.0+build.2"), 0);
	assert_true(cmp("1.0.0-rc.1+b", "1.0.0") < 0);
	assert_true(cmp("9007199254740992.0.0", "9007199254740991.0.0") > 0);
}

static void test_invalid(void **state)
{
	static const char *const bad[] = {
		"", "1", "1.0", "1.0.0.0", "01.0.0", "1.01.0", "1.0.01", "v1.0.0", "1.0.0-", "1.0.0-01",
		"1.0.0-a..b", "1.0.0-a.", "1.0.0+", "1.0.0+a..b", "1..0", "1.0.0 ", " 1.0.0", "1.0.0-a_b",
		"-1.0.0", "1.-1.0", "1.0.x", "99999999999999999999.0.0",
		"1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ferry_semver v;
		ferry_status st = {0};
		if (ferry_semver_parse(bad[i], &v, &st) != FERRY_E_MALFORMED)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_true(st.detail[0] != '\0');
	}
	assert_true(ferry_semver_valid("0.0.0"));
	assert_true(ferry_semver_valid("1.0.0-0.3.7"));
	assert_true(ferry_semver_valid("1.0.0-x-y-z.--+001"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_precedence), cmocka_unit_test(test_invalid)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
