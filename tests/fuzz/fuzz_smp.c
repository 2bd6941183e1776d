/* libFuzzer target over what an SMP device and BlueZ hand the adapters.
 *
 * The first input byte picks a path:
 *   0: bytes from a UART, through the serial frame decoder, and each packet
 *      that comes out through the header and CBOR answer checks;
 *   1: notification pieces (each prefixed by a length byte) through the GATT
 *      reassembler, then the same checks;
 *   2: bytes as an MCUboot image (header, TLVs). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcuboot.h"
#include "smp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the client reads from an answer. */
static void answer(const uint8_t *pkt, size_t len)
{
	struct cbor_load_result res;
	smp_hdr h;
	cbor_item_t *b;
	uint64_t u;
	bool flag;
	const uint8_t *p;
	size_t n;
	int group;

	if (smp_hdr_unpack(pkt, len, &h) || !smp_body_sane(pkt + SMP_HDR_LEN, h.len))
		return;
	if (!(b = cbor_load(pkt + SMP_HDR_LEN, h.len, &res)))
		return;
	smp_body_rc(b, &group);
	smp_map_uint(b, "off", &u);
	smp_map_bool(b, "match", &flag);
	cbor_item_t *imgs = smp_map_get(b, "images");
	for (size_t i = 0; imgs && cbor_isa_array(imgs) && i < cbor_array_size(imgs); i++) {
		cbor_item_t *e = cbor_array_get(imgs, i);
		smp_map_bytes(e, "version", &p, &n);
		smp_map_bytes(e, "hash", &p, &n);
		smp_map_bool(e, "active", &flag);
		cbor_decref(&e);
	}
	cbor_decref(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static smp_serial_rx rx;
	static smp_reasm r;
	size_t len;

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		smp_serial_rx_init(&rx);
		for (size_t i = 1; i < size; i++)
			if (smp_serial_feed(&rx, data[i], &len) == 1)
				answer(rx.pkt, len);
		break;
	case 1:
		smp_reasm_reset(&r);
		for (size_t i = 1; i < size;) {
			size_t n = data[i++];
			if (n > size - i)
				n = size - i;
			if (smp_reasm_feed(&r, data + i, n, &len) == 1)
				answer(r.buf, len);
			i += n;
		}
		break;
	default: {
		mcuboot_info info;
		const char *why;
		uint8_t *copy = malloc(size - 1 ? size - 1 : 1); /* exact size, so ASan sees any overread */
		if (!copy)
			return 0;
		memcpy(copy, data + 1, size - 1);
		if (mcuboot_parse(copy, size - 1, &info, &why) == 0)
			mcuboot_version_matches(info.version, "1.2.3");
		free(copy);
	}
	}
	return 0;
}
