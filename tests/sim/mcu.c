/* The simulated MCU shared by the simulated links (see mcu.h). */
#include "mcu.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "smp.h"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
static bool parse_image(mcu_slot *s)
{
	const uint8_t *p = s->data;
	if (s->len < 32 || le32(p) != 0x96f3b83du)
		return false;
	uint16_t hdr = (uint16_t)(p[8] | p[9] << 8);
	uint32_t img = le32(p + 12);
	if (hdr < 32 || (size_t)hdr + img > s->len)
		return false;
	snprintf(s->version, sizeof(s->version), "%u.%u.%u", p[20], p[21], (unsigned)(p[22] | p[23] << 8));
	uint8_t computed[32];
	sha256(p, hdr + img, computed);
	memcpy(s->hash, computed, 32);
	s->intact = true;
	size_t t = hdr + img;
	if (t + 4 <= s->len && (p[t] | p[t + 1] << 8) == 0x6907) {
		size_t end = t + (size_t)(p[t + 2] | p[t + 3] << 8), q = t + 4;
		while (q + 4 <= end && end <= s->len) {
			uint16_t type = (uint16_t)(p[q] | p[q + 1] << 8), l = (uint16_t)(p[q + 2] | p[q + 3] << 8);
			if (type == 0x10 && l == 32 && q + 4 + 32 <= end) {
				memcpy(s->hash, p + q + 4, 32);
				s->intact = !memcmp(computed, s->hash, 32);
			}
			q += 4 + l;
		}
	}
	return true;
}

size_t mcu_make_image(const char *version, size_t payload, uint8_t *out)
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

int mcu_make_image_file(const char *version, const char *size, const char *out)
{
	size_t n = strtoul(size, NULL, 10);
	uint8_t *img = n <= MCU_SLOT_MAX ? malloc(n + 32 + 40) : NULL; /* header, payload, TLV area */
	FILE *f = img ? fopen(out, "wb") : NULL;
	bool ok = false;

	if (f) {
		size_t len = mcu_make_image(version, n, img);
		ok = fwrite(img, 1, len, f) == len;
		ok = fclose(f) == 0 && ok;
	}
	free(img);
	if (!ok)
		perror("make-image");
	return ok ? 0 : 1;
}

void mcu_init(mcu *m, const char *version, const mcu_io *io)
{
	memset(m, 0, sizeof(*m));
	m->io = *io;
	m->reset_at = -1;
	m->reset_delay_ms = 250;
	m->buf_size = 384;
	m->buf_count = 4;
	m->flash_erase_ms = 85;
	m->flash_write_us = 41;
	m->flash_page = 4096;
	m->s[0].data = malloc(64 * 1024);
	m->s[0].len = mcu_make_image(version, 30000, m->s[0].data);
	m->s[0].valid = parse_image(&m->s[0]);
}

static void reply(mcu *m, const smp_hdr *req, uint8_t op, cbor_item_t *body)
{
	uint8_t pkt[SMP_PACKET_MAX];
	smp_hdr h = {.op = op, .version = req->version, .group = req->group, .seq = req->seq, .id = req->id};
	size_t n = smp_packet(&h, body, pkt, sizeof(pkt));

	cbor_decref(&body);
	if (n)
		m->io.send(m->io.ctx, pkt, n);
}

static cbor_item_t *rc_body(int rc)
{
	cbor_item_t *m = cbor_new_definite_map(1);
	smp_map_put(m, "rc", smp_uint((uint64_t)rc));
	return m;
}

static cbor_item_t *state_body(const mcu *m)
{
	cbor_item_t *b = cbor_new_definite_map(1), *arr = cbor_new_definite_array(2);
	for (int i = 0; i < 2; i++) {
		const mcu_slot *s = &m->s[i];
		if (!s->valid)
			continue;
		cbor_item_t *e = cbor_new_definite_map(9);
		smp_map_put(e, "image", smp_uint(0));
		smp_map_put(e, "slot", smp_uint((uint64_t)i));
		smp_map_put(e, "version", cbor_build_string(s->version));
		smp_map_put(e, "hash", cbor_build_bytestring(s->hash, 32));
		smp_map_put(e, "bootable", cbor_build_bool(true));
		smp_map_put(e, "pending", cbor_build_bool(s->pending));
		smp_map_put(e, "confirmed", cbor_build_bool(i == 0 ? !m->test_boot : false));
		smp_map_put(e, "active", cbor_build_bool(i == 0));
		smp_map_put(e, "permanent", cbor_build_bool(s->permanent));
		cbor_array_push(arr, cbor_move(e));
	}
	smp_map_put(b, "images", arr);
	return b;
}

static void swap_slots(mcu *m)
{
	mcu_slot t = m->s[0];
	m->s[0] = m->s[1];
	m->s[1] = t;
}

void mcu_boot(mcu *m)
{
	m->reset_due = 0;
	m->resets++;
	if (m->test_boot) { /* the trial image never confirmed itself: revert */
		swap_slots(m);
		m->test_boot = false;
		m->s[1].pending = false;
		fprintf(stderr, "mcu: revert to %s\n", m->s[0].version);
	} else if (m->s[1].valid && m->s[1].pending) {
		bool perm = m->s[1].permanent;
		m->s[1].pending = m->s[1].permanent = false;
		swap_slots(m);
		if (!m->s[0].intact) { /* MCUboot validates the image hash first */
			swap_slots(m);
			m->damaged_boots++;
			fprintf(stderr, "mcu: new image %s fails its hash check: not booted, still %s\n",
				m->s[1].version, m->s[0].version);
		} else if (m->boot_fails) { /* the new image does not come up: MCUboot reverts */
			swap_slots(m);
			fprintf(stderr, "mcu: new image failed to boot, still %s\n", m->s[0].version);
		} else {
			m->test_boot = !perm;
			fprintf(stderr, "mcu: booted %s (%s)\n", m->s[0].version, perm ? "permanent" : "test");
		}
	}
	m->up_active = false;
}

static void upload(mcu *m, const smp_hdr *h, const cbor_item_t *b)
{
	uint64_t off, len = 0;
	const uint8_t *data, *sha;
	size_t dn, shan = 0;
	cbor_item_t *r;

	m->uploads++;
	if (!smp_map_uint(b, "off", &off) || !smp_map_bytes(b, "data", &data, &dn)) {
		reply(m, h, SMP_OP_WRITE_RSP, rc_body(3));
		return;
	}
	if (m->stall_ms > 0 && !m->stall_done && m->uploads == 3) {
		m->stall_done = true;
		sleep_ms(m->stall_ms);
	}
	if (off == 0) {
		if (!smp_map_uint(b, "len", &len) || len > MCU_SLOT_MAX) {
			reply(m, h, SMP_OP_WRITE_RSP, rc_body(3));
			return;
		}
		bool same = smp_map_bytes(b, "sha", &sha, &shan) && shan == 32 && m->up_len == len &&
			    !memcmp(sha, m->up_sha, 32) && m->up_off > 0;
		if (same) { /* resume: tell the client where we are */
			m->up_active = true;
			m->up_resumes++;
			fprintf(stderr, "mcu: upload resumed at %zu (same sha)\n", m->up_off);
			r = cbor_new_definite_map(1);
			smp_map_put(r, "off", smp_uint(m->up_off));
			reply(m, h, SMP_OP_WRITE_RSP, r);
			return;
		}
		free(m->s[1].data);
		m->s[1] = (mcu_slot){.data = calloc(1, len ? len : 1)};
		m->up_len = len;
		m->up_off = 0;
		m->erased_pages = 0;
		m->up_active = true;
		m->up_starts++;
		fprintf(stderr, "mcu: upload started, %zu bytes\n", m->up_len);
		memset(m->up_sha, 0, 32);
		if (shan == 32)
			memcpy(m->up_sha, sha, 32);
	} else if (!m->up_active || off != m->up_off) {
		r = cbor_new_definite_map(1); /* out of step: say where we are (0 = start over) */
		smp_map_put(r, "off", smp_uint(m->up_active ? m->up_off : 0));
		reply(m, h, SMP_OP_WRITE_RSP, r);
		return;
	}
	if (m->up_off + dn > m->up_len) {
		reply(m, h, SMP_OP_WRITE_RSP, rc_body(9));
		return;
	}
	/* the flash takes its time: pages erased as the upload first reaches
	 * them, then the words written */
	size_t last_page = (m->up_off + dn + m->flash_page - 1) / m->flash_page;
	long busy_us = (long)(dn + 3) / 4 * m->flash_write_us;
	if (last_page > m->erased_pages) {
		busy_us += (long)(last_page - m->erased_pages) * m->flash_erase_ms * 1000;
		m->erased_pages = last_page;
	}
	if (busy_us > 0) {
		struct timespec ts = {busy_us / 1000000, (busy_us % 1000000) * 1000};
		nanosleep(&ts, NULL);
	}
	memcpy(m->s[1].data + m->up_off, data, dn);
	m->up_off += dn;
	m->up_bytes += dn;
	if (m->reset_at >= 0 && !m->reset_done && m->up_off >= (size_t)m->reset_at) {
		m->reset_done = true;
		fprintf(stderr, "mcu: fault: reset during upload at %zu\n", m->up_off);
		m->io.reset(m->io.ctx);
		return; /* no answer: the device rebooted */
	}
	r = cbor_new_definite_map(2);
	smp_map_put(r, "off", smp_uint(m->up_off));
	if (m->up_off == m->up_len) {
		m->s[1].len = m->up_len;
		m->s[1].valid = parse_image(&m->s[1]);
		uint8_t got[32];
		sha256(m->s[1].data, m->s[1].len, got);
		smp_map_put(r, "match", cbor_build_bool(!memcmp(got, m->up_sha, 32)));
		m->up_active = false;
		m->up_off = 0;
	}
	reply(m, h, SMP_OP_WRITE_RSP, r);
}

static void image_state(mcu *m, const smp_hdr *h, const cbor_item_t *b)
{
	const uint8_t *hash = NULL;
	size_t hn = 0;
	bool confirm = false;

	if (h->op == SMP_OP_READ) {
		/* a client in the middle of an upload does not ask this: someone
		 * else is talking to the device (the tests look for this line) */
		if (m->up_active)
			fprintf(stderr, "mcu: image state read during an upload, at %zu\n", m->up_off);
		reply(m, h, SMP_OP_READ_RSP, state_body(m));
		return;
	}
	smp_map_bool(b, "confirm", &confirm);
	smp_map_bytes(b, "hash", &hash, &hn);
	if (confirm && m->refuse_confirm) {
		reply(m, h, SMP_OP_WRITE_RSP, rc_body(11));
	} else if (confirm && (!hash || (hn == 32 && !memcmp(hash, m->s[0].hash, 32)))) {
		m->test_boot = false; /* the running image is made permanent */
		if (m->vanish_on_confirm) {
			/* the link dies right after the flash write: the client
			 * can learn nothing more from this device */
			m->vanished = true;
			fprintf(stderr, "mcu: fault: confirmed %s permanently, then gone silent\n", m->s[0].version);
			return;
		}
		reply(m, h, SMP_OP_WRITE_RSP, state_body(m));
	} else if (hn == 32 && m->s[1].valid && !memcmp(hash, m->s[1].hash, 32)) {
		m->s[1].pending = true;
		m->s[1].permanent = confirm;
		reply(m, h, SMP_OP_WRITE_RSP, state_body(m));
	} else {
		reply(m, h, SMP_OP_WRITE_RSP, rc_body(8)); /* HASH_NOT_FOUND */
	}
}

void mcu_handle(mcu *m, const uint8_t *pkt, size_t len)
{
	smp_hdr h;
	struct cbor_load_result res;
	cbor_item_t *b;

	if (smp_hdr_unpack(pkt, len, &h))
		return;
	if (len + m->frame_overhead > m->buf_size) {
		/* Zephyr has nowhere to put it: gone without an answer */
		m->too_big++;
		fprintf(stderr, "mcu: a request of %zu bytes does not fit in buf_size %zu; dropped\n", len,
			m->buf_size);
		return;
	}
	m->requests++;
	if (m->vanished)
		return;
	if (m->drop_every > 0 && m->requests % (unsigned long)m->drop_every == 0)
		return;
	b = smp_body_sane(pkt + SMP_HDR_LEN, h.len) ? cbor_load(pkt + SMP_HDR_LEN, h.len, &res) : NULL;
	if (!b || !cbor_isa_map(b)) {
		if (b)
			cbor_decref(&b);
		reply(m, &h, h.op + 1, rc_body(3));
		return;
	}
	if (h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_UPLOAD && h.op == SMP_OP_WRITE)
		upload(m, &h, b);
	else if (h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_STATE)
		image_state(m, &h, b);
	else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_ECHO) {
		cbor_item_t *r = cbor_new_definite_map(1), *v = smp_map_get(b, "d");
		smp_map_put(r, "r", v && cbor_isa_string(v) ? cbor_copy(v) : cbor_build_string(""));
		reply(m, &h, h.op + 1, r);
	} else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_PARAMS) {
		cbor_item_t *r = cbor_new_definite_map(2);
		smp_map_put(r, "buf_size", smp_uint(m->buf_size));
		smp_map_put(r, "buf_count", smp_uint(m->buf_count));
		reply(m, &h, SMP_OP_READ_RSP, r);
	} else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_RESET) {
		if (m->lose_resets > 0) {
			m->lose_resets--;
			fprintf(stderr, "mcu: fault: os reset lost on the way\n");
		} else {
			reply(m, &h, SMP_OP_WRITE_RSP, cbor_new_definite_map(0));
			/* Zephyr schedules the reset; one already scheduled stays */
			if (m->reset_delay_ms <= 0) {
				m->io.reset(m->io.ctx);
			} else if (!m->reset_due) {
				m->reset_due = now_ms() + m->reset_delay_ms;
				fprintf(stderr, "mcu: os reset answered; resetting in %ld ms\n", m->reset_delay_ms);
			}
		}
	} else {
		reply(m, &h, h.op + 1, rc_body(8)); /* ENOTSUP */
	}
	cbor_decref(&b);
}

long mcu_due_ms(const mcu *m)
{
	int64_t left;
	if (!m->reset_due)
		return -1;
	left = m->reset_due - now_ms();
	return left > 0 ? (long)left : 0;
}

void mcu_tick(mcu *m)
{
	if (m->reset_due && now_ms() >= m->reset_due) {
		m->reset_due = 0;
		fprintf(stderr, "mcu: resetting\n");
		m->io.reset(m->io.ctx);
	}
}

int mcu_option(mcu *m, int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	bool has_value = *i + 1 < argc;

	if (!strcmp(a, "--refuse-confirm"))
		m->refuse_confirm = true;
	else if (!strcmp(a, "--vanish-on-confirm"))
		m->vanish_on_confirm = true;
	else if (!strcmp(a, "--boot-fails"))
		m->boot_fails = true;
	else if (has_value && !strcmp(a, "--reset-at"))
		m->reset_at = atol(argv[++*i]);
	else if (has_value && !strcmp(a, "--drop-every"))
		m->drop_every = atol(argv[++*i]);
	else if (has_value && !strcmp(a, "--stall-ms"))
		m->stall_ms = atol(argv[++*i]);
	else if (has_value && !strcmp(a, "--reset-delay-ms"))
		m->reset_delay_ms = atol(argv[++*i]);
	else if (has_value && !strcmp(a, "--lose-reset"))
		m->lose_resets = atol(argv[++*i]);
	else if (has_value && !strcmp(a, "--buf-size"))
		m->buf_size = strtoul(argv[++*i], NULL, 10);
	else if (has_value && !strcmp(a, "--buf-count"))
		m->buf_count = (unsigned)strtoul(argv[++*i], NULL, 10);
	else if (has_value && !strcmp(a, "--flash-erase-ms"))
		m->flash_erase_ms = atol(argv[++*i]);
	else if (has_value && !strcmp(a, "--flash-write-us"))
		m->flash_write_us = atol(argv[++*i]);
	else
		return 0;
	return 1;
}
