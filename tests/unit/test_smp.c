/* The SMP core: CRC, header, serial framing both ways, GATT reassembly, CBOR
 * error forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "smp.h"

static void test_crc(void **state)
{
	assert_int_equal(smp_crc16((const uint8_t *)"123456789", 9, 0), 0x31C3);
	assert_int_equal(smp_crc16((const uint8_t *)"", 0, 0), 0);
}

static void test_header(void **state)
{
	/* write, 235 bytes, group 1, seq 0xDE, upload */
	static const uint8_t want[8] = {0x02, 0x00, 0x00, 0xeb, 0x00, 0x01, 0xde, 0x01};
	smp_hdr h = {.op = SMP_OP_WRITE, .len = 235, .group = 1, .seq = 0xde, .id = 1}, back;
	uint8_t out[8 + 235] = {0};

	smp_hdr_pack(&h, out);
	assert_memory_equal(out, want, 8);
	assert_int_equal(smp_hdr_unpack(out, sizeof(out), &back), 0);
	assert_int_equal(back.seq, 0xde);
	assert_int_equal(back.group, 1);
	assert_int_equal(smp_hdr_unpack(out, 100, &back), -1); /* length disagrees */
	assert_int_equal(smp_hdr_unpack(out, 7, &back), -1);
}

static int feed_all(smp_serial_rx *rx, const uint8_t *p, size_t n, size_t *len, int *bad)
{
	int got = 0;
	for (size_t i = 0; i < n; i++) {
		int r = smp_serial_feed(rx, p[i], len);
		if (r == 1)
			got++;
		if (r < 0)
			(*bad)++;
	}
	return got;
}

static void test_round_trip(void **state)
{
	static uint8_t pkt[SMP_PACKET_MAX], enc[SMP_SERIAL_ENCODED_MAX(SMP_PACKET_MAX)];
	smp_serial_rx *rx = malloc(sizeof(*rx));

	for (size_t n = SMP_HDR_LEN; n <= 2000; n += 37) {
		smp_hdr h = {.op = SMP_OP_WRITE, .len = (uint16_t)(n - SMP_HDR_LEN), .group = 1, .id = 1};
		size_t e, len = 0;
		int bad = 0;
		for (size_t i = 0; i < n; i++)
			pkt[i] = (uint8_t)(i * 7 + n);
		smp_hdr_pack(&h, pkt);
		e = smp_serial_encode(pkt, n, enc, sizeof(enc));
		assert_true(e > 0);
		/* no line longer than 127 bytes including marker and newline */
		for (size_t i = 0, start = 0; i < e; i++)
			if (enc[i] == '\n') {
				assert_true(i - start + 1 <= 127);
				start = i + 1;
			}
		smp_serial_rx_init(rx);
		/* console noise before the frame is skipped */
		assert_int_equal(feed_all(rx, (const uint8_t *)"boot: hello\n", 12, &len, &bad), 0);
		assert_int_equal(feed_all(rx, enc, e, &len, &bad), 1);
		assert_int_equal(bad, 0);
		assert_int_equal(len, n);
		assert_memory_equal(rx->pkt, pkt, n);
	}
	free(rx);
}

/* Old devices send one long line; it must still be accepted. */
static void test_long_line_accepted(void **state)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t raw[300], line[512];
	size_t n = 200, o = 0, len = 0;
	smp_serial_rx *rx = malloc(sizeof(*rx));
	int bad = 0;
	smp_hdr h = {.op = SMP_OP_READ_RSP, .len = (uint16_t)(n - SMP_HDR_LEN)};

	memset(raw, 0x55, sizeof(raw));
	smp_hdr_pack(&h, raw + 2);
	raw[0] = (uint8_t)((n + 2) >> 8);
	raw[1] = (uint8_t)(n + 2);
	uint16_t crc = smp_crc16(raw + 2, n, 0);
	raw[n + 2] = (uint8_t)(crc >> 8);
	raw[n + 3] = (uint8_t)crc;
	line[o++] = 0x06;
	line[o++] = 0x09;
	for (size_t i = 0; i < n + 4; i += 3) {
		uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
		line[o++] = (uint8_t)b64[v >> 18 & 63];
		line[o++] = (uint8_t)b64[v >> 12 & 63];
		line[o++] = i + 1 < n + 4 ? (uint8_t)b64[v >> 6 & 63] : '=';
		line[o++] = i + 2 < n + 4 ? (uint8_t)b64[v & 63] : '=';
	}
	line[o++] = '\n';
	assert_true(o > 127);
	smp_serial_rx_init(rx);
	assert_int_equal(feed_all(rx, line, o, &len, &bad), 1);
	assert_int_equal(len, n);
	free(rx);
}

static void test_damaged_frames_dropped(void **state)
{
	uint8_t pkt[100] = {0}, enc[512];
	smp_hdr h = {.op = SMP_OP_READ, .len = 92};
	smp_serial_rx *rx = malloc(sizeof(*rx));
	size_t e, len = 0;
	int bad = 0;

	smp_hdr_pack(&h, pkt);
	e = smp_serial_encode(pkt, sizeof(pkt), enc, sizeof(enc));
	smp_serial_rx_init(rx);
	enc[10] = enc[10] == 'A' ? 'B' : 'A'; /* flip a base64 digit: CRC fails */
	assert_int_equal(feed_all(rx, enc, e, &len, &bad), 0);
	assert_true(bad >= 1);
	/* a continuation with no start */
	bad = 0;
	assert_int_equal(feed_all(rx, (const uint8_t *)"\x04\x14QUJD\n", 7, &len, &bad), 0);
	assert_int_equal(bad, 1);
	/* bad base64 */
	bad = 0;
	assert_int_equal(feed_all(rx, (const uint8_t *)"\x06\x09Q*JD\n", 7, &len, &bad), 0);
	assert_int_equal(bad, 1);
	/* and a good frame afterwards still gets through */
	e = smp_serial_encode(pkt, sizeof(pkt), enc, sizeof(enc));
	assert_int_equal(feed_all(rx, enc, e, &len, &bad), 1);
	free(rx);
}

static size_t make_pkt(uint8_t *pkt, size_t body)
{
	smp_hdr h = {.op = SMP_OP_READ_RSP, .len = (uint16_t)body, .group = 1, .seq = 7};
	smp_hdr_pack(&h, pkt);
	for (size_t i = 0; i < body; i++)
		pkt[SMP_HDR_LEN + i] = (uint8_t)(i * 13);
	return SMP_HDR_LEN + body;
}

/* Pieces of MTU - 3 bytes, as notifications bring them, make the packet
 * again for every piece size down to one byte; the next packet starts anew. */
static void test_reasm_pieces(void **state)
{
	static uint8_t pkt[600];
	static smp_reasm r;
	size_t n = make_pkt(pkt, 590), len = 0;

	for (size_t piece = 1; piece <= n; piece += (piece < 30 ? 1 : 61)) {
		int got = 0;
		smp_reasm_reset(&r);
		for (int round = 0; round < 2; round++)
			for (size_t off = 0; off < n; off += piece) {
				size_t k = n - off < piece ? n - off : piece;
				int rc = smp_reasm_feed(&r, pkt + off, k, &len);
				assert_true(rc >= 0);
				if (rc == 1) {
					assert_int_equal(off + k, n);
					assert_int_equal(len, n);
					assert_memory_equal(r.buf, pkt, n);
					got++;
				}
			}
		assert_int_equal(got, 2);
	}
}

static void test_reasm_hostile(void **state)
{
	static uint8_t pkt[SMP_PACKET_MAX + 64];
	static smp_reasm r;
	size_t n = make_pkt(pkt, 100), len = 0;

	smp_reasm_reset(&r);
	/* a piece running past the length the header announced: dropped */
	assert_int_equal(smp_reasm_feed(&r, pkt, n + 5, &len), -1);
	/* a header announcing more than SMP_PACKET_MAX: dropped at once */
	smp_hdr big = {.op = SMP_OP_READ_RSP, .len = 0xffff};
	smp_hdr_pack(&big, pkt);
	assert_int_equal(smp_reasm_feed(&r, pkt, SMP_HDR_LEN, &len), -1);
	/* a header split across pieces still works, and a good packet follows */
	n = make_pkt(pkt, 100);
	assert_int_equal(smp_reasm_feed(&r, pkt, 3, &len), 0);
	assert_int_equal(smp_reasm_feed(&r, pkt + 3, n - 3, &len), 1);
	assert_int_equal(len, n);
	/* more pieces than the buffer holds cannot overflow it */
	smp_reasm_reset(&r);
	n = make_pkt(pkt, SMP_PACKET_MAX - SMP_HDR_LEN);
	assert_int_equal(smp_reasm_feed(&r, pkt, n, &len), 1);
	assert_int_equal(smp_reasm_feed(&r, pkt, SMP_HDR_LEN, &len), 0);
	assert_int_equal(smp_reasm_feed(&r, pkt + SMP_HDR_LEN, SMP_PACKET_MAX, &len), -1);
}

/* A body that declares more items than its bytes could hold is refused
 * before libcbor would allocate for them; real bodies pass. */
static void test_body_sane(void **state)
{
	static const uint8_t huge_array[] = {0xa1, 0x61, 'x', 0x9a, 0x40, 0x00, 0x00, 0x00, 0x01};
	static const uint8_t huge_map[] = {0xbb, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00};
	static const uint8_t truncated[] = {0xa1, 0x63, 'o', 'f'};
	/* 8-byte lengths of 2^32 + 2 and 2^32 + 1: on a 32-bit gateway a size_t
	 * would read them as 2 and 1, and the bytes that follow would fit */
	static const uint8_t wrapped_string[] = {0x5b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 'a', 'b'};
	static const uint8_t wrapped_array[] = {0x9b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01};
	static const uint8_t small_long_form[] = {0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01};
	cbor_item_t *m = cbor_new_definite_map(2);
	unsigned char *buf = NULL;
	size_t cap = 0, n;

	smp_map_put(m, "off", smp_uint(4096));
	smp_map_put(m, "data", cbor_build_bytestring((const unsigned char *)"abcdef", 6));
	n = cbor_serialize_alloc(m, &buf, &cap);
	assert_true(smp_body_sane(buf, n));
	assert_false(smp_body_sane(huge_array, sizeof(huge_array)));
	assert_false(smp_body_sane(huge_map, sizeof(huge_map)));
	assert_false(smp_body_sane(truncated, sizeof(truncated)));
	assert_false(smp_body_sane(wrapped_string, sizeof(wrapped_string)));
	assert_false(smp_body_sane(wrapped_array, sizeof(wrapped_array)));
	assert_true(smp_body_sane(small_long_form, sizeof(small_long_form))); /* legal, if wasteful */
	assert_true(smp_body_sane(buf, 0)); /* an empty body */
	free(buf);
	cbor_decref(&m);
}

static void test_error_forms(void **state)
{
	cbor_item_t *v1 = cbor_new_definite_map(1), *v2 = cbor_new_definite_map(1), *err = cbor_new_definite_map(2);
	cbor_item_t *ok = cbor_new_definite_map(1);
	int group;

	smp_map_put(v1, "rc", smp_uint(8));
	smp_map_put(err, "group", smp_uint(1));
	smp_map_put(err, "rc", smp_uint(27));
	smp_map_put(v2, "err", err);
	smp_map_put(ok, "off", smp_uint(512));
	assert_int_equal(smp_body_rc(v1, &group), 8);
	assert_int_equal(group, -1);
	assert_int_equal(smp_body_rc(v2, &group), 27);
	assert_int_equal(group, 1);
	assert_int_equal(smp_body_rc(ok, &group), 0);
	uint64_t off;
	assert_true(smp_map_uint(ok, "off", &off));
	assert_int_equal(off, 512);
	assert_false(smp_map_uint(ok, "len", &off));
	cbor_decref(&v1);
	cbor_decref(&v2);
	cbor_decref(&ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc),
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_long_line_accepted),
		cmocka_unit_test(test_damaged_frames_dropped),
		cmocka_unit_test(test_reasm_pieces),
		cmocka_unit_test(test_reasm_hostile),
		cmocka_unit_test(test_body_sane),
		cmocka_unit_test(test_error_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
