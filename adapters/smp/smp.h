/* The mcumgr Simple Management Protocol (SMP): what the serial and BLE
 * adapters share -- the 8-byte header, CBOR bodies, the serial framing and
 * the reassembly of GATT fragments.  No transport here: the adapters move
 * the packets (see smp_client.h for the flow they share). */
#ifndef FERRY_SMP_H
#define FERRY_SMP_H

#include <cbor.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMP_HDR_LEN 8
/* Largest packet we build or accept: header + body.  Zephyr's default
 * reassembly buffer is 384 bytes, MCUboot's serial recovery 1024; 4096
 * covers devices configured larger and bounds what a hostile peer can make
 * us hold. */
#define SMP_PACKET_MAX 4096

enum { SMP_OP_READ = 0, SMP_OP_READ_RSP = 1, SMP_OP_WRITE = 2, SMP_OP_WRITE_RSP = 3 };
enum { SMP_GROUP_OS = 0, SMP_GROUP_IMAGE = 1 };
enum { SMP_OS_ECHO = 0, SMP_OS_RESET = 5, SMP_OS_PARAMS = 6 };
enum { SMP_IMG_STATE = 0, SMP_IMG_UPLOAD = 1 };

typedef struct smp_hdr {
	uint8_t op;      /* SMP_OP_* */
	uint8_t version; /* 0 = v1, 1 = v2 */
	uint8_t flags;
	uint16_t len;    /* body bytes */
	uint16_t group;
	uint8_t seq;
	uint8_t id;
} smp_hdr;

void smp_hdr_pack(const smp_hdr *h, uint8_t out[SMP_HDR_LEN]);
/* -1 when len is short or the body length in the header disagrees. */
int smp_hdr_unpack(const uint8_t *pkt, size_t len, smp_hdr *h);

/* CRC-16/XMODEM: poly 0x1021, init 0, no reflection, no final xor. */
uint16_t smp_crc16(const uint8_t *p, size_t n, uint16_t crc);

/* Build a packet: header (len filled in) + the CBOR encoding of body.
 * Returns the packet length, 0 when it would exceed cap. */
size_t smp_packet(const smp_hdr *h, const cbor_item_t *body, uint8_t *out, size_t cap);

/* Serial framing (Zephyr's smp_shell transport): the packet's content
 * [u16 BE len = packet + 2][packet][CRC16 BE] is cut into chunks of at most
 * 93 bytes, each base64 on its own, each a line: 0x06 0x09 for the first,
 * 0x04 0x14 for the rest, then '\n'.  So no line exceeds 127 bytes. */
size_t smp_serial_encode(const uint8_t *pkt, size_t len, uint8_t *out, size_t cap);
#define SMP_SERIAL_ENCODED_MAX(n) ((((n) + 4 + 92) / 93) * 128)

/* Reassembly of frames from a byte stream.  Lines longer than 127 bytes are
 * accepted (old devices send them) up to SMP_SERIAL_LINE_MAX; anything that
 * is not a frame -- console output, noise -- is skipped. */
#define SMP_SERIAL_LINE_MAX 1024
typedef struct smp_serial_rx {
	uint8_t line[SMP_SERIAL_LINE_MAX];
	size_t line_len;
	bool line_overflow;
	uint8_t buf[SMP_PACKET_MAX + 4];
	size_t have, want; /* want = 0: waiting for a first frame */
	uint8_t pkt[SMP_PACKET_MAX];
} smp_serial_rx;

void smp_serial_rx_init(smp_serial_rx *rx);
/* Feed one byte.  1: rx->pkt holds a packet of *len bytes (CRC checked);
 * -1: a frame was damaged (bad base64, length or CRC) and was dropped;
 * 0: more bytes needed. */
int smp_serial_feed(smp_serial_rx *rx, uint8_t byte, size_t *len);

/* Reassembly of a packet cut into pieces with no framing of their own, as
 * SMP travels over GATT: the first piece starts with the header, whose
 * length says how many bytes make the packet. */
typedef struct smp_reasm {
	uint8_t buf[SMP_PACKET_MAX];
	size_t have;
	bool done; /* buf holds a whole packet; the next piece starts anew */
} smp_reasm;

void smp_reasm_reset(smp_reasm *r);
/* Add one piece.  1: r->buf holds a packet of *len bytes; 0: more pieces
 * needed; -1: the pieces do not make a packet (longer than the header says,
 * or a header announcing more than SMP_PACKET_MAX) and were dropped. */
int smp_reasm_feed(smp_reasm *r, const uint8_t *piece, size_t n, size_t *len);

/* Whether a CBOR body can be loaded without letting it size our memory:
 * every definite array or map declares no more items than the bytes left
 * could hold (libcbor allocates a container for its declared size before
 * reading the items), and the bytes are well-formed CBOR items.  Call before
 * cbor_load on anything a peer sent. */
bool smp_body_sane(const uint8_t *p, size_t n);

/* CBOR body helpers.  Lookups return NULL when the key is absent. */
cbor_item_t *smp_map_get(const cbor_item_t *map, const char *key);
bool smp_map_uint(const cbor_item_t *map, const char *key, uint64_t *out);
bool smp_map_bool(const cbor_item_t *map, const char *key, bool *out);
/* Byte or text string: pointer into the item and its length. */
bool smp_map_bytes(const cbor_item_t *map, const char *key, const uint8_t **p, size_t *n);
void smp_map_put(cbor_item_t *map, const char *key, cbor_item_t *value); /* takes value */
cbor_item_t *smp_uint(uint64_t v);

/* The error in a response body, in either form: v1 {"rc": n} or v2
 * {"err": {"group": g, "rc": n}}.  0 when the body reports success. */
int smp_body_rc(const cbor_item_t *body, int *group);

#endif
