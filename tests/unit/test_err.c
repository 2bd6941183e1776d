/* One error vocabulary: every code has a distinct name and a message, names
 * parse back, and docs/protocol.md lists every reason code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/err.h"

static void test_names(void **state)
{
	for (int i = 0; i < FERRY_ERR_COUNT; i++) {
		const char *c = ferry_err_code((ferry_err)i);
		ferry_err back;
		assert_non_null(c);
		assert_non_null(ferry_strerror((ferry_err)i));
		assert_int_equal(ferry_err_parse(c, &back), 0);
		assert_int_equal(back, i);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(c, ferry_err_code((ferry_err)j));
	}
	assert_null(ferry_err_code((ferry_err)FERRY_ERR_COUNT));
	ferry_err e;
	assert_int_equal(ferry_err_parse("no_such_code", &e), -1);
}

static void test_docs_list_every_code(void **state)
{
	FILE *f = fopen(FERRY_DOCS_DIR "/protocol.md", "r");
	char *doc;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	doc = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(doc, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	for (int i = 1; i < FERRY_ERR_COUNT; i++) {
		char needle[64];
		snprintf(needle, sizeof(needle), "`%s`", ferry_err_code((ferry_err)i));
		if (!strstr(doc, needle))
			fail_msg("docs/protocol.md does not list %s", needle);
	}
	free(doc);
}

static void test_fail_and_prefix(void **state)
{
	ferry_status st = {0};
	char longtext[400];

	assert_int_equal(ferry_fail(&st, FERRY_E_DOWNGRADE, "mcu: %s", "1.0.0 < 1.1.0"), FERRY_E_DOWNGRADE);
	assert_string_equal(st.detail, "mcu: 1.0.0 < 1.1.0");
	ferry_status_prefix(&st, "manifest: ");
	assert_string_equal(st.detail, "manifest: mcu: 1.0.0 < 1.1.0");
	memset(longtext, 'x', sizeof(longtext) - 1);
	longtext[sizeof(longtext) - 1] = '\0';
	ferry_fail(&st, FERRY_E_MALFORMED, "%s", longtext);
	ferry_status_prefix(&st, "p: ");
	assert_int_equal(strlen(st.detail), FERRY_DETAIL_MAX - 1);
	assert_int_equal(ferry_fail(NULL, FERRY_E_INTERNAL, "ignored"), FERRY_E_INTERNAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_docs_list_every_code),
		cmocka_unit_test(test_fail_and_prefix),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
