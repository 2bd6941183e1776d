/* DFU status codes and their reasons, and functional descriptors in
 * descriptor runs that a device controls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dfu_proto.h"
#include "dfu_usb.h"
#include "ferry/adapter.h"

static void test_every_status_has_words_and_a_reason(void **state)
{
	for (int s = 0; s < DFU_STATUS_COUNT; s++) {
		assert_string_not_equal(dfu_status_name((uint8_t)s), "an unknown status");
		assert_true(strlen(dfu_status_text((uint8_t)s)) > 5);
		int r = dfu_status_reason((uint8_t)s);
		if (s == DFU_OK)
			assert_int_equal(r, FERRY_ADAPTER_OK);
		else
			assert_true(r == FERRY_ADAPTER_E_INSTALL_FAILED || r == FERRY_ADAPTER_E_ADAPTER_ERROR);
	}
	/* the device refusing or failing to take the image */
	assert_int_equal(dfu_status_reason(DFU_ERR_WRITE), FERRY_ADAPTER_E_INSTALL_FAILED);
	assert_int_equal(dfu_status_reason(DFU_ERR_VERIFY), FERRY_ADAPTER_E_INSTALL_FAILED);
	assert_int_equal(dfu_status_reason(DFU_ERR_TARGET), FERRY_ADAPTER_E_INSTALL_FAILED);
	/* the link or the device misbehaving */
	assert_int_equal(dfu_status_reason(DFU_ERR_STALLEDPKT), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_int_equal(dfu_status_reason(DFU_ERR_POR), FERRY_ADAPTER_E_ADAPTER_ERROR);
	/* codes DFU 1.1 does not define */
	assert_string_equal(dfu_status_name(16), "an unknown status");
	assert_int_equal(dfu_status_reason(200), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_string_equal(dfu_state_name(DFU_DNBUSY), "dfuDNBUSY");
	assert_string_equal(dfu_state_name(DFU_ERROR), "dfuERROR");
	assert_string_equal(dfu_state_name(11), "an unknown state");
}

static void test_functional_descriptor(void **state)
{
	/* an endpoint-less run: a vendor descriptor, then DFU 1.1 functional */
	const uint8_t run[] = {4, 0x24, 1, 2, 9, 0x21, 0x0B, 0xFF, 0x00, 0x00, 0x08, 0x1A, 0x01};
	dfu_func f;

	assert_true(dfu_usb_parse_func(run, sizeof(run), &f));
	assert_int_equal(f.attrs, 0x0B);
	assert_int_equal(f.detach_ms, 255);
	assert_int_equal(f.transfer_size, 2048);
	assert_int_equal(f.bcd_dfu, 0x011A);
	/* DFU 1.0: 7 bytes, no version */
	const uint8_t v10[] = {7, 0x21, 0x01, 0x10, 0x27, 0x40, 0x00};
	assert_true(dfu_usb_parse_func(v10, sizeof(v10), &f));
	assert_int_equal(f.transfer_size, 64);
	assert_int_equal(f.bcd_dfu, 0x0100);
}

static void test_hostile_descriptor_runs(void **state)
{
	dfu_func f;
	/* a zero length would loop forever */
	const uint8_t zero[] = {0, 0x21, 0, 0, 0, 0, 0, 0, 0};
	assert_false(dfu_usb_parse_func(zero, sizeof(zero), &f));
	/* a length past the end of the run */
	const uint8_t past[] = {9, 0x21, 0x0B, 0xFF};
	assert_false(dfu_usb_parse_func(past, sizeof(past), &f));
	/* a functional descriptor too short to hold its fields */
	const uint8_t shortd[] = {5, 0x21, 0x0B, 0xFF, 0x00};
	assert_false(dfu_usb_parse_func(shortd, sizeof(shortd), &f));
	/* a broken descriptor hides what comes after it */
	const uint8_t broken[] = {1, 0x24, 9, 0x21, 0x0B, 0xFF, 0x00, 0x00, 0x08, 0x1A, 0x01};
	assert_false(dfu_usb_parse_func(broken, sizeof(broken), &f));
	assert_false(dfu_usb_parse_func(NULL, 0, &f));
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_every_status_has_words_and_a_reason),
					   cmocka_unit_test(test_functional_descriptor),
					   cmocka_unit_test(test_hostile_descriptor_runs)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
