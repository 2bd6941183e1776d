/* SMP core: header, CRC, CBOR helpers, serial framing and GATT reassembly,
 * shared by the serial and BLE adapters and by the simulated devices in
 * tests/sim.
 *
 * Everything a device sends is hostile until checked: lengths are bounded
 * before anything is copied, base64 is decoded strictly, and a frame with a
 * bad CRC is dropped whole (the caller times out and resends the same
 * offset, which SMP makes idempotent). */
#include "smp.h"

#include <stdlib.h>
#include <string.h>

void smp_hdr_pack(const smp_hdr *h, uint8_t out[SMP_HDR_LEN])
{
	out[0] = (uint8_t)(((h->version & 3) << 3) | (h->op & 7));
	out[1] = h->flags;
	out[2] = (uint8_t)(h->len >> 8);
	out[3] = (uint8_t)h->len;
	out[4] = (uint8_t)(h->group >> 8);
	out[5] = (uint8_t)h->group;
	out[6] = h->seq;
	out[7] = h->id;
}

int smp_hdr_unpack(const uint8_t *p, size_t len, smp_hdr *h)
{
	if (len < SMP_HDR_LEN)
		return -1;
	h->op = p[0] & 7;
	h->version = (p[0] >> 3) & 3;
	h->flags = p[1];
	h->len = (uint16_t)(p[2] << 8 | p[3]);
	h->group = (uint16_t)(p[4] << 8 | p[5]);
	h->seq = p[6];
	h->id = p[7];
	return (size_t)h->len + SMP_HDR_LEN == len ? 0 : -1;
}

uint16_t smp_crc16(const uint8_t *p, size_t n, uint16_t crc)
{
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)(p[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

size_t smp_packet(const smp_hdr *h, const cbor_item_t *body, uint8_t *out, size_t cap)
{
	unsigned char *buf = NULL;
	size_t bufsz = 0, n = body ? cbor_serialize_alloc(body, &buf, &bufsz) : 0;
	smp_hdr hh = *h;

	if ((body && n == 0) || n + SMP_HDR_LEN > cap || n > 0xffff) {
		free(buf);
		return 0;
	}
	hh.len = (uint16_t)n;
	smp_hdr_pack(&hh, out);
	if (n)
		memcpy(out + SMP_HDR_LEN, buf, n);
	free(buf);
	return n + SMP_HDR_LEN;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, uint8_t *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? in[i + 2] : 0);
		out[o++] = (uint8_t)b64[v >> 18 & 63];
		out[o++] = (uint8_t)b64[v >> 12 & 63];
		out[o++] = i + 1 < n ? (uint8_t)b64[v >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? (uint8_t)b64[v & 63] : '=';
	}
	return o;
}

static int b64_val(uint8_t c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

/* Strict: length a multiple of 4, '=' only at the end. -1 on error. */
static long b64_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 0;
	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad || (v[k] = b64_val(in[i + k])) < 0) {
				return -1;
			}
		}
		uint32_t w = (uint32_t)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
		if (o + 3 - (size_t)pad > cap)
			return -1;
		out[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)w;
	}
	return (long)o;
}

size_t smp_serial_encode(const uint8_t *pkt, size_t len, uint8_t *out, size_t cap)
{
	uint8_t raw[SMP_PACKET_MAX + 4];
	size_t total = len + 4, o = 0;
	uint16_t crc = smp_crc16(pkt, len, 0);

	if (len > SMP_PACKET_MAX || cap < SMP_SERIAL_ENCODED_MAX(len))
		return 0;
	raw[0] = (uint8_t)((len + 2) >> 8);
	raw[1] = (uint8_t)(len + 2);
	memcpy(raw + 2, pkt, len);
	raw[len + 2] = (uint8_t)(crc >> 8);
	raw[len + 3] = (uint8_t)crc;
	for (size_t off = 0; off < total; off += 93) {
		size_t chunk = total - off < 93 ? total - off : 93;
		out[o++] = off ? 0x04 : 0x06;
		out[o++] = off ? 0x14 : 0x09;
		o += b64_encode(raw + off, chunk, out + o);
		out[o++] = '\n';
	}
	return o;
}

void smp_serial_rx_init(smp_serial_rx *rx)
{
	memset(rx, 0, sizeof(*rx));
}

/* A complete line: a first frame starts a packet, a continuation adds to it. */
static int take_line(smp_serial_rx *rx, size_t *len)
{
	bool first, cont;
	long n;

	if (rx->line_overflow || rx->line_len < 2)
		return 0;
	first = rx->line[0] == 0x06 && rx->line[1] == 0x09;
	cont = rx->line[0] == 0x04 && rx->line[1] == 0x14;
	if (!first && !cont)
		return 0; /* console output or noise */
	if (first) {
		rx->have = 0;
		rx->want = 0;
	} else if (rx->want == 0) {
		return -1; /* a continuation without a start */
	}
	n = b64_decode(rx->line + 2, rx->line_len - 2, rx->buf + rx->have, sizeof(rx->buf) - rx->have);
	if (n < 0) {
		rx->want = 0;
		return -1;
	}
	rx->have += (size_t)n;
	if (first) {
		size_t l;
		if (rx->have < 2)
			return -1;
		l = (size_t)(rx->buf[0] << 8 | rx->buf[1]);
		if (l < 2 + SMP_HDR_LEN || l > SMP_PACKET_MAX + 2) {
			rx->want = 0;
			return -1;
		}
		rx->want = l + 2;
	}
	if (rx->have < rx->want)
		return 0;
	if (rx->have > rx->want) {
		rx->want = 0;
		return -1;
	}
	size_t plen = rx->want - 4;
	uint16_t crc = (uint16_t)(rx->buf[rx->want - 2] << 8 | rx->buf[rx->want - 1]);
	rx->want = 0;
	if (smp_crc16(rx->buf + 2, plen, 0) != crc)
		return -1;
	memcpy(rx->pkt, rx->buf + 2, plen);
	*len = plen;
	return 1;
}

int smp_serial_feed(smp_serial_rx *rx, uint8_t byte, size_t *len)
{
	int r;

	if (byte != '\n') {
		if (rx->line_len < sizeof(rx->line))
			rx->line[rx->line_len++] = byte;
		else
			rx->line_overflow = true;
		return 0;
	}
	r = take_line(rx, len);
	rx->line_len = 0;
	rx->line_overflow = false;
	return r;
}

void smp_reasm_reset(smp_reasm *r)
{
	r->have = 0;
	r->done = false;
}

int smp_reasm_feed(smp_reasm *r, const uint8_t *piece, size_t n, size_t *len)
{
	size_t want = 0;

	if (r->done)
		smp_reasm_reset(r);
	if (n > sizeof(r->buf) - r->have) {
		smp_reasm_reset(r);
		return -1;
	}
	memcpy(r->buf + r->have, piece, n);
	r->have += n;
	if (r->have < SMP_HDR_LEN)
		return 0;
	want = SMP_HDR_LEN + (size_t)(r->buf[2] << 8 | r->buf[3]);
	if (want > SMP_PACKET_MAX || r->have > want) {
		smp_reasm_reset(r);
		return -1;
	}
	if (r->have < want)
		return 0;
	r->done = true;
	*len = want;
	return 1;
}

typedef struct sane_ctx {
	size_t left; /* bytes from the current item's head to the end */
	bool bad;
} sane_ctx;

static void sane_array(void *ctx, size_t n)
{
	sane_ctx *c = ctx;
	if (n > c->left)
		c->bad = true;
}

static void sane_map(void *ctx, size_t n)
{
	sane_ctx *c = ctx;
	if (n > c->left / 2)
		c->bad = true;
}

bool smp_body_sane(const uint8_t *p, size_t n)
{
	struct cbor_callbacks cb = cbor_empty_callbacks;
	size_t off = 0;

	cb.array_start = sane_array;
	cb.map_start = sane_map;
	while (off < n) {
		sane_ctx c = {.left = n - off};
		/* Each decode below starts at one item's head.  libcbor hands
		 * lengths on as size_t, so on a 32-bit gateway an 8-byte length
		 * would be cut short (2^32 + 2 read as 2): such a length of a
		 * string, array or map is checked here, whole. */
		unsigned major = p[off] >> 5;
		if ((p[off] & 0x1f) == 27 && major >= 2 && major <= 5) {
			uint64_t len = 0;
			if (n - off < 9)
				return false;
			for (size_t i = 1; i <= 8; i++)
				len = len << 8 | p[off + i];
			if (len > n - off)
				return false;
		}
		struct cbor_decoder_result r = cbor_stream_decode(p + off, n - off, &cb, &c);
		if (r.status != CBOR_DECODER_FINISHED || r.read == 0 || c.bad)
			return false;
		off += r.read;
	}
	return true;
}

cbor_item_t *smp_map_get(const cbor_item_t *map, const char *key)
{
	size_t kl = strlen(key);

	if (!map || !cbor_isa_map(map))
		return NULL;
	struct cbor_pair *pairs = cbor_map_handle(map);
	for (size_t i = 0; i < cbor_map_size(map); i++) {
		cbor_item_t *k = pairs[i].key;
		if (cbor_isa_string(k) && cbor_string_is_definite(k) && cbor_string_length(k) == kl &&
		    !memcmp(cbor_string_handle(k), key, kl))
			return pairs[i].value;
	}
	return NULL;
}

bool smp_map_uint(const cbor_item_t *map, const char *key, uint64_t *out)
{
	cbor_item_t *v = smp_map_get(map, key);
	if (!v || !cbor_isa_uint(v))
		return false;
	*out = cbor_get_int(v);
	return true;
}

bool smp_map_bool(const cbor_item_t *map, const char *key, bool *out)
{
	cbor_item_t *v = smp_map_get(map, key);
	if (!v || !cbor_is_bool(v))
		return false;
	*out = cbor_get_bool(v);
	return true;
}

bool smp_map_bytes(const cbor_item_t *map, const char *key, const uint8_t **p, size_t *n)
{
	cbor_item_t *v = smp_map_get(map, key);
	if (v && cbor_isa_bytestring(v) && cbor_bytestring_is_definite(v)) {
		*p = cbor_bytestring_handle(v);
		*n = cbor_bytestring_length(v);
		return true;
	}
	if (v && cbor_isa_string(v) && cbor_string_is_definite(v)) {
		*p = cbor_string_handle(v);
		*n = cbor_string_length(v);
		return true;
	}
	return false;
}

void smp_map_put(cbor_item_t *map, const char *key, cbor_item_t *value)
{
	cbor_map_add(map, (struct cbor_pair){.key = cbor_move(cbor_build_string(key)), .value = cbor_move(value)});
}

cbor_item_t *smp_uint(uint64_t v)
{
	return v <= 0xffffffffu ? cbor_build_uint32((uint32_t)v) : cbor_build_uint64(v);
}

int smp_body_rc(const cbor_item_t *body, int *group)
{
	uint64_t rc = 0, g = 0;
	cbor_item_t *err = smp_map_get(body, "err");

	*group = -1;
	if (err && smp_map_uint(err, "rc", &rc)) {
		if (smp_map_uint(err, "group", &g))
			*group = (int)(g & 0xffff);
		return rc > 0xffff ? 0xffff : (int)rc;
	}
	if (smp_map_uint(body, "rc", &rc))
		return rc > 0xffff ? 0xffff : (int)rc;
	return 0;
}
