/* A simulated MCU on the far end of a pseudo-terminal: a Zephyr application
 * with mcumgr over the serial console, under MCUboot with two slots.
 *
 * It follows the SMP spec (docs in adapters/smp/smp.h): image state read and
 * test/confirm, upload into the secondary slot with `off` continuation and
 * resume by `sha`, os echo, params and reset.  A reset takes the device away
 * for a while; at boot MCUboot's rules apply: a pending image is swapped in
 * for a test boot, and a test image that was not confirmed is reverted at the
 * next reset.
 *
 * Faults, each switched on from the command line, for the tests:
 *   --reset-at N       reset once when an upload passes offset N (upload lost
 *                      unless resumed by sha)
 *   --corrupt-every K  damage every K-th response frame
 *   --drop-every K     leave every K-th request unanswered
 *   --stall-ms MS      once, answer the 3rd upload request MS late
 *   --refuse-confirm   answer confirm with rc 11 (EACCESSDENIED)
 *   --boot-fails       a new image never boots: MCUboot reverts at once
 *   --rate BPS         bytes per second on the wire (emulates a baud rate)
 *
 *   smp_device --link PATH --version 1.0.0 [faults]
 *       creates a pty, links PATH to its slave side, and serves forever;
 *       the running image is a generated one of the given version.
 *   smp_device --make-image VERSION SIZE OUT
 *       writes an MCUboot image (header, payload, SHA256 TLV) for tests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "smp.h"

#define SLOT_MAX (1024 * 1024)
#define IMAGE_MAGIC 0x96f3b83du

typedef struct slot {
	uint8_t *data;
	size_t len;
	char version[32];
	uint8_t hash[32];
	bool valid, pending, permanent, confirmed;
} slot;

static struct dev {
	int fd;
	slot s[2]; /* 0 primary (running), 1 secondary */
	bool test_boot; /* running image is on trial */
	/* upload in progress */
	size_t up_len, up_off;
	uint8_t up_sha[32];
	bool up_active;
	/* faults */
	long reset_at, corrupt_every, drop_every, stall_ms, rate;
	bool refuse_confirm, boot_fails, reset_done, stall_done;
	unsigned long responses, requests, uploads;
	unsigned reset_ms;
} d = {.reset_at = -1, .reset_ms = 300};

static void die(const char *m)
{
	perror(m);
	exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
	EVP_Digest(p, n, out, NULL, EVP_sha256(), NULL);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Parse an MCUboot image: version from the header, hash from the SHA256
 * TLV (or of header+payload when there is none). */
static bool parse_image(slot *s)
{
	const uint8_t *p = s->data;
	if (s->len < 32 || le32(p) != IMAGE_MAGIC)
		return false;
	uint16_t hdr = (uint16_t)(p[8] | p[9] << 8);
	uint32_t img = le32(p + 12);
	if (hdr < 32 || (size_t)hdr + img > s->len)
		return false;
	snprintf(s->version, sizeof(s->version), "%u.%u.%u", p[20], p[21], (unsigned)(p[22] | p[23] << 8));
	sha256(p, hdr + img, s->hash);
	size_t t = hdr + img;
	if (t + 4 <= s->len && (p[t] | p[t + 1] << 8) == 0x6907) {
		size_t end = t + (size_t)(p[t + 2] | p[t + 3] << 8), q = t + 4;
		while (q + 4 <= end && end <= s->len) {
			uint16_t type = (uint16_t)(p[q] | p[q + 1] << 8), l = (uint16_t)(p[q + 2] | p[q + 3] << 8);
			if (type == 0x10 && l == 32 && q + 4 + 32 <= end)
				memcpy(s->hash, p + q + 4, 32);
			q += 4 + l;
		}
	}
	return true;
}

static size_t make_image(const char *version, size_t payload, uint8_t *out)
{
	unsigned maj = 0, min = 0, rev = 0;
	sscanf(version, "%u.%u.%u", &maj, &min, &rev);
	memset(out, 0, 32);
	out[0] = 0x3d, out[1] = 0xb8, out[2] = 0xf3, out[3] = 0x96;
	out[8] = 32;
	out[12] = (uint8_t)payload, out[13] = (uint8_t)(payload >> 8), out[14] = (uint8_t)(payload >> 16);
	out[20] = (uint8_t)maj, out[21] = (uint8_t)min, out[22] = (uint8_t)rev, out[23] = (uint8_t)(rev >> 8);
	for (size_t i = 0; i < payload; i++)
		out[32 + i] = (uint8_t)(rand() & 0xff);
	size_t t = 32 + payload;
	out[t] = 0x07, out[t + 1] = 0x69, out[t + 2] = 40, out[t + 3] = 0;
	out[t + 4] = 0x10, out[t + 5] = 0, out[t + 6] = 32, out[t + 7] = 0;
	sha256(out, t, out + t + 8);
	return t + 40;
}

static void send_pkt(const smp_hdr *req, uint8_t op, cbor_item_t *body)
{
	uint8_t pkt[SMP_PACKET_MAX], enc[SMP_SERIAL_ENCODED_MAX(SMP_PACKET_MAX)];
	smp_hdr h = {.op = op, .version = req->version, .group = req->group, .seq = req->seq, .id = req->id};
	size_t n = smp_packet(&h, body, pkt, sizeof(pkt)), e;

	cbor_decref(&body);
	e = smp_serial_encode(pkt, n, enc, sizeof(enc));
	d.responses++;
	if (d.corrupt_every > 0 && d.responses % (unsigned long)d.corrupt_every == 0)
		enc[e / 2] = enc[e / 2] == 'A' ? 'B' : 'A';
	for (size_t off = 0; off < e;) {
		size_t chunk = d.rate > 0 ? (size_t)(d.rate / 100 > 0 ? d.rate / 100 : 1) : e;
		if (chunk > e - off)
			chunk = e - off;
		ssize_t w = write(d.fd, enc + off, chunk);
		if (w < 0 && errno != EAGAIN && errno != EIO)
			return;
		if (w > 0)
			off += (size_t)w;
		if (d.rate > 0)
			sleep_ms(10);
	}
}

static cbor_item_t *rc_body(int rc)
{
	cbor_item_t *m = cbor_new_definite_map(1);
	smp_map_put(m, "rc", smp_uint((uint64_t)rc));
	return m;
}

static cbor_item_t *state_body(void)
{
	cbor_item_t *m = cbor_new_definite_map(1), *arr = cbor_new_definite_array(2);
	for (int i = 0; i < 2; i++) {
		slot *s = &d.s[i];
		if (!s->valid)
			continue;
		cbor_item_t *e = cbor_new_definite_map(9);
		smp_map_put(e, "image", smp_uint(0));
		smp_map_put(e, "slot", smp_uint((uint64_t)i));
		smp_map_put(e, "version", cbor_build_string(s->version));
		smp_map_put(e, "hash", cbor_build_bytestring(s->hash, 32));
		smp_map_put(e, "bootable", cbor_build_bool(true));
		smp_map_put(e, "pending", cbor_build_bool(s->pending));
		smp_map_put(e, "confirmed", cbor_build_bool(i == 0 ? !d.test_boot : false));
		smp_map_put(e, "active", cbor_build_bool(i == 0));
		smp_map_put(e, "permanent", cbor_build_bool(s->permanent));
		cbor_array_push(arr, cbor_move(e));
	}
	smp_map_put(m, "images", arr);
	return m;
}

static void swap_slots(void)
{
	slot t = d.s[0];
	d.s[0] = d.s[1];
	d.s[1] = t;
}

/* MCUboot at boot. */
static void boot(void)
{
	if (d.test_boot) { /* the trial image never confirmed itself: revert */
		swap_slots();
		d.test_boot = false;
		d.s[1].pending = false;
		fprintf(stderr, "smp_device: revert to %s\n", d.s[0].version);
	} else if (d.s[1].valid && d.s[1].pending) {
		bool perm = d.s[1].permanent;
		d.s[1].pending = d.s[1].permanent = false;
		swap_slots();
		if (d.boot_fails) { /* the new image does not come up: MCUboot reverts */
			swap_slots();
			fprintf(stderr, "smp_device: new image failed to boot, still %s\n", d.s[0].version);
		} else {
			d.test_boot = !perm;
			fprintf(stderr, "smp_device: booted %s (%s)\n", d.s[0].version, perm ? "permanent" : "test");
		}
	}
	d.up_active = false;
}

static void do_reset(void)
{
	sleep_ms(d.reset_ms); /* the device is away */
	tcflush(d.fd, TCIOFLUSH);
	boot();
}

static void upload(const smp_hdr *h, const cbor_item_t *b)
{
	uint64_t off, len = 0;
	const uint8_t *data, *sha;
	size_t dn, shan;
	cbor_item_t *r;

	d.uploads++;
	if (!smp_map_uint(b, "off", &off) || !smp_map_bytes(b, "data", &data, &dn))
		return send_pkt(h, SMP_OP_WRITE_RSP, rc_body(3));
	if (d.stall_ms > 0 && !d.stall_done && d.uploads == 3) {
		d.stall_done = true;
		sleep_ms(d.stall_ms);
	}
	if (off == 0) {
		if (!smp_map_uint(b, "len", &len) || len > SLOT_MAX)
			return send_pkt(h, SMP_OP_WRITE_RSP, rc_body(3));
		bool same = smp_map_bytes(b, "sha", &sha, &shan) && shan == 32 && d.up_len == len &&
			    !memcmp(sha, d.up_sha, 32) && d.up_off > 0;
		if (same) { /* resume: tell the client where we are */
			d.up_active = true;
			r = cbor_new_definite_map(1);
			smp_map_put(r, "off", smp_uint(d.up_off));
			return send_pkt(h, SMP_OP_WRITE_RSP, r);
		}
		free(d.s[1].data);
		d.s[1] = (slot){.data = calloc(1, len ? len : 1)};
		d.up_len = len;
		d.up_off = 0;
		d.up_active = true;
		memset(d.up_sha, 0, 32);
		if (shan == 32)
			memcpy(d.up_sha, sha, 32);
	} else if (!d.up_active || off != d.up_off) {
		r = cbor_new_definite_map(1); /* out of step: say where we are (0 = start over) */
		smp_map_put(r, "off", smp_uint(d.up_active ? d.up_off : 0));
		return send_pkt(h, SMP_OP_WRITE_RSP, r);
	}
	if (d.up_off + dn > d.up_len)
		return send_pkt(h, SMP_OP_WRITE_RSP, rc_body(9));
	memcpy(d.s[1].data + d.up_off, data, dn);
	d.up_off += dn;
	if (d.reset_at >= 0 && !d.reset_done && d.up_off >= (size_t)d.reset_at) {
		d.reset_done = true;
		fprintf(stderr, "smp_device: fault: reset during upload at %zu\n", d.up_off);
		do_reset();
		return; /* no answer: the device rebooted */
	}
	r = cbor_new_definite_map(2);
	smp_map_put(r, "off", smp_uint(d.up_off));
	if (d.up_off == d.up_len) {
		d.s[1].len = d.up_len;
		d.s[1].valid = parse_image(&d.s[1]);
		uint8_t got[32];
		sha256(d.s[1].data, d.s[1].len, got);
		smp_map_put(r, "match", cbor_build_bool(!memcmp(got, d.up_sha, 32)));
		d.up_active = false;
		d.up_off = 0;
	}
	send_pkt(h, SMP_OP_WRITE_RSP, r);
}

static void image_state(const smp_hdr *h, const cbor_item_t *b)
{
	const uint8_t *hash = NULL;
	size_t hn = 0;
	bool confirm = false;

	if (h->op == SMP_OP_READ)
		return send_pkt(h, SMP_OP_READ_RSP, state_body());
	smp_map_bool(b, "confirm", &confirm);
	smp_map_bytes(b, "hash", &hash, &hn);
	if (confirm && d.refuse_confirm)
		return send_pkt(h, SMP_OP_WRITE_RSP, rc_body(11));
	if (confirm && (!hash || (hn == 32 && !memcmp(hash, d.s[0].hash, 32)))) {
		d.test_boot = false; /* the running image is made permanent */
		return send_pkt(h, SMP_OP_WRITE_RSP, state_body());
	}
	if (hn == 32 && d.s[1].valid && !memcmp(hash, d.s[1].hash, 32)) {
		d.s[1].pending = true;
		d.s[1].permanent = confirm;
		return send_pkt(h, SMP_OP_WRITE_RSP, state_body());
	}
	send_pkt(h, SMP_OP_WRITE_RSP, rc_body(8)); /* HASH_NOT_FOUND */
}

static void handle(const uint8_t *pkt, size_t len)
{
	smp_hdr h;
	struct cbor_load_result res;
	cbor_item_t *b;

	if (smp_hdr_unpack(pkt, len, &h))
		return;
	d.requests++;
	if (d.drop_every > 0 && d.requests % (unsigned long)d.drop_every == 0)
		return;
	b = cbor_load(pkt + SMP_HDR_LEN, h.len, &res);
	if (!b || !cbor_isa_map(b)) {
		if (b)
			cbor_decref(&b);
		return send_pkt(&h, h.op + 1, rc_body(3));
	}
	if (h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_UPLOAD && h.op == SMP_OP_WRITE)
		upload(&h, b);
	else if (h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_STATE)
		image_state(&h, b);
	else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_ECHO) {
		cbor_item_t *r = cbor_new_definite_map(1), *v = smp_map_get(b, "d");
		smp_map_put(r, "r", v && cbor_isa_string(v) ? cbor_copy(v) : cbor_build_string(""));
		send_pkt(&h, h.op + 1, r);
	} else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_PARAMS) {
		cbor_item_t *r = cbor_new_definite_map(2);
		smp_map_put(r, "buf_size", smp_uint(384));
		smp_map_put(r, "buf_count", smp_uint(4));
		send_pkt(&h, SMP_OP_READ_RSP, r);
	} else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_RESET) {
		send_pkt(&h, SMP_OP_WRITE_RSP, cbor_new_definite_map(0));
		tcdrain(d.fd);
		do_reset();
	} else {
		send_pkt(&h, h.op + 1, rc_body(8)); /* ENOTSUP */
	}
	cbor_decref(&b);
}

static int serve(const char *link, const char *version)
{
	smp_serial_rx *rx = malloc(sizeof(*rx));
	struct termios t;
	uint8_t buf[4096];

	d.s[0].data = malloc(64 * 1024);
	d.s[0].len = make_image(version, 30000, d.s[0].data);
	d.s[0].valid = parse_image(&d.s[0]);
	d.fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (d.fd < 0 || grantpt(d.fd) || unlockpt(d.fd))
		die("pty");
	tcgetattr(d.fd, &t);
	cfmakeraw(&t);
	tcsetattr(d.fd, TCSANOW, &t);
	unlink(link);
	if (symlink(ptsname(d.fd), link))
		die("symlink");
	fprintf(stderr, "smp_device: %s -> %s, running %s\n", link, ptsname(d.fd), d.s[0].version);
	smp_serial_rx_init(rx);
	for (;;) {
		struct pollfd p = {.fd = d.fd, .events = POLLIN};
		if (poll(&p, 1, 1000) <= 0)
			continue;
		/* With a rate, take at most 10 ms worth of bytes at a time: the
		 * host's writes then drain as slowly as a real UART would. */
		size_t cap = d.rate > 0 ? (size_t)(d.rate / 100 > 0 ? d.rate / 100 : 1) : sizeof(buf);
		ssize_t n = read(d.fd, buf, cap < sizeof(buf) ? cap : sizeof(buf));
		if (n > 0 && d.rate > 0)
			sleep_ms(10);
		if (n <= 0) { /* nobody has the slave open: wait */
			sleep_ms(20);
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			size_t len;
			if (smp_serial_feed(rx, buf[i], &len) == 1)
				handle(rx->pkt, len);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *link = NULL, *version = "1.0.0";

	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	if (argc == 5 && !strcmp(argv[1], "--make-image")) {
		size_t n = strtoul(argv[3], NULL, 10);
		uint8_t *img = malloc(n + 32 + 40); /* header, payload, TLV area */
		FILE *f = fopen(argv[4], "wb");
		if (!img || !f || n > SLOT_MAX)
			die("make-image");
		size_t len = make_image(argv[2], n, img);
		bool ok = fwrite(img, 1, len, f) == len;
		free(img);
		return fclose(f) == 0 && ok ? 0 : 1;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--link") && v) link = argv[++i];
		else if (!strcmp(a, "--version") && v) version = argv[++i];
		else if (!strcmp(a, "--reset-at") && v) d.reset_at = atol(argv[++i]);
		else if (!strcmp(a, "--corrupt-every") && v) d.corrupt_every = atol(argv[++i]);
		else if (!strcmp(a, "--drop-every") && v) d.drop_every = atol(argv[++i]);
		else if (!strcmp(a, "--stall-ms") && v) d.stall_ms = atol(argv[++i]);
		else if (!strcmp(a, "--rate") && v) d.rate = atol(argv[++i]);
		else if (!strcmp(a, "--refuse-confirm")) d.refuse_confirm = true;
		else if (!strcmp(a, "--boot-fails")) d.boot_fails = true;
		else {
			fprintf(stderr, "smp_device: unknown argument %s\n", a);
			return 2;
		}
	}
	if (!link) {
		fprintf(stderr, "usage: smp_device --link PATH [--version V] [faults] | --make-image V SIZE OUT\n");
		return 2;
	}
	return serve(link, version);
}
