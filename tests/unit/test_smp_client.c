/* The shared SMP client against a scripted transport: answers matched by
 * sequence number, bounded retries, an upload that continues by sha after
 * the link drops, a link too small to carry an upload, uploads that do not
 * advance, and the reset that activates a test image: Zephyr's delayed
 * reset, lost reset requests, a device found still pending. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smp_client.h"

/* A tiny device behind a fake link: it answers image state, os params and
 * upload, and can be told to stay silent, to send a stale answer first, or
 * to drop the link once past an upload offset. */
typedef struct fake {
	uint8_t out[8][SMP_PACKET_MAX]; /* answers waiting to be received */
	size_t out_len[8], n_out;
	/* pipelining: the buffers os params reports (0: not said), upload
	 * requests sent and not yet answered (the most seen), and one upload
	 * request (the lose_upload-th) lost on the way */
	unsigned bufs;
	int in_flight, most_in_flight, uploads_seen, lose_upload;
	int sends, silent, stale_first, link_down, reconnects;
	int flood; /* answer every request with endless answers to another one */
	uint8_t flood_pkt[SMP_PACKET_MAX];
	size_t flood_len;
	unsigned long flood_sent;
	size_t mtu_packet; /* what max_packet answers */
	/* upload state */
	uint64_t up_len, up_off, drop_at;
	uint8_t up_sha[32];
	int first_requests, data_at_zero;
	uint8_t *image;
	/* a device that does not advance: once up_off reaches stuck_at it
	 * answers STUCK_REPEAT that offset again, STUCK_SWING 100 bytes
	 * back and then forward again, without ever going further;
	 * STUCK_ZERO answers off 0 to everything */
	enum { STUCK_NONE, STUCK_ZERO, STUCK_REPEAT, STUCK_SWING } stuck;
	uint64_t stuck_at;
	/* MCUboot's slots, for activate, confirm and abort (when `slots`):
	 * the old image (hash 0x11, 1.0.0) and the new one (0x22, 2.0.0) */
	int slots;
	int new_slot;        /* where the new image is: 0 (running) or 1 */
	bool pending, trial; /* the new image is marked for a test boot; it runs on trial */
	int reset_after;     /* an answered reset happens this many requests later (Zephyr's delay) */
	int reset_countdown; /* -1: no reset scheduled */
	int lose_resets;     /* reset requests lost on the way */
	int lose_reset_answers;  /* resets accepted, but their answers lost */
	bool answer_then_boot;   /* an accepted reset happens right after the next answer */
	bool reset_now_on_trial; /* a reset that reaches the new image on trial takes at once */
	bool boot_after_this;
	int lose_mark_answers, lose_confirm_answers; /* written, but the answers are lost */
	int lose_reads_after_confirm;                /* image state reads lost once confirmed */
	int resets, reset_requests;
} fake;

static void queue(fake *f, const smp_hdr *req, cbor_item_t *body, uint8_t seq)
{
	assert_true(f->n_out < 8);
	smp_hdr h = {.op = req->op + 1, .group = req->group, .id = req->id, .seq = seq};
	f->out_len[f->n_out] = smp_packet(&h, body, f->out[f->n_out], SMP_PACKET_MAX);
	f->n_out++;
	cbor_decref(&body);
}

#define OLD_HASH 0x11
#define NEW_HASH 0x22

static void put_slot(cbor_item_t *arr, int slot, uint8_t fill, bool active, bool pending, bool confirmed)
{
	cbor_item_t *e = cbor_new_definite_map(7);
	uint8_t hash[32];
	memset(hash, fill, 32);
	smp_map_put(e, "image", smp_uint(0));
	smp_map_put(e, "slot", smp_uint((uint64_t)slot));
	smp_map_put(e, "version", cbor_build_string(fill == NEW_HASH ? "2.0.0" : "1.0.0"));
	smp_map_put(e, "hash", cbor_build_bytestring(hash, 32));
	smp_map_put(e, "active", cbor_build_bool(active));
	smp_map_put(e, "pending", cbor_build_bool(pending));
	smp_map_put(e, "confirmed", cbor_build_bool(confirmed));
	cbor_array_push(arr, cbor_move(e));
}

static cbor_item_t *slots_body(const fake *f)
{
	cbor_item_t *m = cbor_new_definite_map(1), *arr = cbor_new_definite_array(2);
	bool new_runs = f->new_slot == 0;
	put_slot(arr, 0, new_runs ? NEW_HASH : OLD_HASH, true, false, !(new_runs && f->trial));
	put_slot(arr, 1, new_runs ? OLD_HASH : NEW_HASH, false, !new_runs && f->pending, false);
	smp_map_put(m, "images", arr);
	return m;
}

/* MCUboot at boot: a trial image that was not confirmed is reverted, a
 * pending one is swapped in on trial. */
static void boot(fake *f)
{
	f->resets++;
	f->reset_countdown = -1;
	if (f->trial) {
		f->trial = false;
		f->new_slot = 1;
	} else if (f->pending && f->new_slot == 1) {
		f->pending = false;
		f->new_slot = 0;
		f->trial = true;
	}
}

/* image state and os reset against the slots; 1 when handled */
static int slots_request(fake *f, const smp_hdr *h, const cbor_item_t *b)
{
	const uint8_t *hash;
	size_t hn = 0;
	bool confirm = false;

	if (h->group == SMP_GROUP_OS && h->id == SMP_OS_RESET) {
		f->reset_requests++;
		if (f->lose_resets > 0) {
			f->lose_resets--;
			return 1;
		}
		if (f->lose_reset_answers > 0)
			f->lose_reset_answers--;
		else
			queue(f, h, cbor_new_definite_map(0), h->seq);
		if (f->reset_after == 0 || (f->trial && f->reset_now_on_trial))
			boot(f);
		else if (f->answer_then_boot)
			f->boot_after_this = true;
		else if (f->reset_countdown < 0)
			f->reset_countdown = f->reset_after;
		return 1;
	}
	if (h->group != SMP_GROUP_IMAGE || h->id != SMP_IMG_STATE)
		return 0;
	if (h->op == SMP_OP_WRITE) {
		smp_map_bool(b, "confirm", &confirm);
		if (confirm && f->new_slot == 0) {
			f->trial = false;
			if (f->lose_confirm_answers > 0 && f->lose_confirm_answers--)
				return 1;
		} else if (!confirm && smp_map_bytes(b, "hash", &hash, &hn) && hn == 32 && hash[0] == NEW_HASH &&
			   f->new_slot == 1) {
			f->pending = true;
			if (f->lose_mark_answers > 0 && f->lose_mark_answers--)
				return 1;
		}
	} else if (f->lose_reads_after_confirm > 0 && f->new_slot == 0 && !f->trial) {
		f->lose_reads_after_confirm--;
		return 1;
	}
	queue(f, h, slots_body(f), h->seq);
	return 1;
}

static cbor_item_t *state_body(void)
{
	cbor_item_t *m = cbor_new_definite_map(1), *arr = cbor_new_definite_array(1), *e = cbor_new_definite_map(4);
	uint8_t hash[32];
	memset(hash, 0x11, 32);
	smp_map_put(e, "image", smp_uint(0));
	smp_map_put(e, "active", cbor_build_bool(true));
	smp_map_put(e, "version", cbor_build_string("1.0.0"));
	smp_map_put(e, "hash", cbor_build_bytestring(hash, 32));
	cbor_array_push(arr, cbor_move(e));
	smp_map_put(m, "images", arr);
	return m;
}

static void upload(fake *f, const smp_hdr *h, const cbor_item_t *b)
{
	uint64_t off = 0, len = 0;
	const uint8_t *data, *sha;
	size_t dn = 0, shan = 0;
	cbor_item_t *r = cbor_new_definite_map(1);

	assert_true(smp_map_uint(b, "off", &off));
	assert_true(smp_map_bytes(b, "data", &data, &dn));
	if (f->stuck == STUCK_ZERO || (f->stuck != STUCK_NONE && f->up_off >= f->stuck_at && off > 0)) {
		uint64_t a = f->stuck_at;
		if (f->stuck == STUCK_ZERO)
			a = 0;
		else if (f->stuck == STUCK_SWING && off >= f->stuck_at)
			a = f->stuck_at - 100;
		smp_map_put(r, "off", smp_uint(a));
		queue(f, h, r, h->seq);
		return;
	}
	if (off == 0) {
		f->first_requests++;
		assert_true(smp_map_uint(b, "len", &len));
		assert_true(smp_map_bytes(b, "sha", &sha, &shan));
		assert_int_equal(shan, 32);
		if (f->up_off > 0 && len == f->up_len && !memcmp(sha, f->up_sha, 32)) {
			smp_map_put(r, "off", smp_uint(f->up_off)); /* resume by sha */
			queue(f, h, r, h->seq);
			return;
		}
		f->up_len = len;
		f->up_off = 0;
		memcpy(f->up_sha, sha, 32);
		f->data_at_zero++;
	} else if (off != f->up_off) {
		smp_map_put(r, "off", smp_uint(f->up_off));
		queue(f, h, r, h->seq);
		return;
	}
	memcpy(f->image + f->up_off, data, dn);
	f->up_off += dn;
	if (f->drop_at && f->up_off >= f->drop_at) {
		f->drop_at = 0;
		f->link_down = 1; /* the answer is lost with the link */
		cbor_decref(&r);
		return;
	}
	smp_map_put(r, "off", smp_uint(f->up_off));
	queue(f, h, r, h->seq);
}

static int f_send(void *t, const uint8_t *pkt, size_t len)
{
	fake *f = t;
	smp_hdr h;
	struct cbor_load_result res;
	cbor_item_t *b;

	if (f->link_down)
		return -1;
	f->sends++;
	assert_int_equal(smp_hdr_unpack(pkt, len, &h), 0);
	if (f->silent)
		return 0;
	b = cbor_load(pkt + SMP_HDR_LEN, h.len, &res);
	assert_non_null(b);
	if (f->flood) {
		smp_hdr o = {.op = h.op + 1, .group = h.group, .id = h.id, .seq = (uint8_t)(h.seq + 100)};
		cbor_item_t *sb = state_body();
		f->flood_len = smp_packet(&o, sb, f->flood_pkt, sizeof(f->flood_pkt));
		cbor_decref(&sb);
		cbor_decref(&b);
		return 0;
	}
	if (f->slots && f->reset_countdown >= 0 && f->reset_countdown-- == 0) {
		boot(f); /* the reset it answered happens now: this request is lost with it */
		cbor_decref(&b);
		return 0;
	}
	if (f->slots && f->boot_after_this) {
		/* the reboot comes right after this answer */
		f->boot_after_this = false;
		assert_int_equal(slots_request(f, &h, b), 1);
		boot(f);
		cbor_decref(&b);
		return 0;
	}
	if (f->slots && slots_request(f, &h, b)) {
		cbor_decref(&b);
		return 0;
	}
	if (h.group == SMP_GROUP_OS && h.id == SMP_OS_ECHO) {
		cbor_item_t *r = cbor_new_definite_map(1);
		smp_map_put(r, "r", cbor_build_string("ferry"));
		queue(f, &h, r, h.seq);
		cbor_decref(&b);
		return 0;
	}
	if (f->stale_first) {
		/* an answer to an older request, then garbage, then the real one */
		f->stale_first = 0;
		queue(f, &h, state_body(), (uint8_t)(h.seq - 1));
		queue(f, &h, cbor_build_uint8(3), h.seq);
	}
	if (h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_STATE)
		queue(f, &h, state_body(), h.seq);
	else if (h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_UPLOAD) {
		if (++f->in_flight > f->most_in_flight)
			f->most_in_flight = f->in_flight;
		if (++f->uploads_seen == f->lose_upload)
			f->in_flight--; /* lost on the way: never answered */
		else
			upload(f, &h, b);
	} else if (h.group == SMP_GROUP_OS && h.id == SMP_OS_PARAMS) {
		cbor_item_t *r = cbor_new_definite_map(f->bufs ? 2 : 1);
		smp_map_put(r, "buf_size", smp_uint(384));
		if (f->bufs)
			smp_map_put(r, "buf_count", smp_uint(f->bufs));
		queue(f, &h, r, h.seq);
	}
	cbor_decref(&b);
	return 0;
}

static int f_recv(void *t, uint8_t *buf, size_t *len, int64_t deadline_ms)
{
	fake *f = t;
	if (f->link_down)
		return -1;
	if (f->flood_len) { /* never quiet: only the deadline ends the wait */
		memcpy(buf, f->flood_pkt, f->flood_len);
		*len = f->flood_len;
		f->flood_sent++;
		return 1;
	}
	if (!f->n_out)
		return 0; /* nothing will come: the deadline passes at once */
	memcpy(buf, f->out[0], f->out_len[0]);
	*len = f->out_len[0];
	smp_hdr h;
	if (!smp_hdr_unpack(buf, *len, &h) && h.group == SMP_GROUP_IMAGE && h.id == SMP_IMG_UPLOAD && f->in_flight > 0)
		f->in_flight--;
	f->n_out--;
	memmove(f->out, f->out[1], sizeof(f->out[0]) * f->n_out);
	memmove(f->out_len, f->out_len + 1, sizeof(f->out_len[0]) * f->n_out);
	return 1;
}

static int f_reconnect(void *t, bool after_reset, int64_t deadline_ms, char *detail)
{
	fake *f = t;
	f->reconnects++;
	f->link_down = 0;
	f->n_out = 0;
	return 0;
}

static size_t f_max_packet(void *t, size_t dev_buf)
{
	return ((fake *)t)->mtu_packet;
}

static const smp_transport_ops ops = {f_send, f_recv, f_reconnect, f_max_packet, 1};
/* a link that carries several requests at once, as a UART does */
static const smp_transport_ops ops_window = {f_send, f_recv, f_reconnect, f_max_packet, SMP_WINDOW_MAX};

static void host_log(void *ctx, int level, const char *msg)
{
	(void)ctx;
	(void)level;
	(void)msg;
}

static const ferry_host_v1 host = {.size = sizeof(ferry_host_v1), .log = host_log};
static const smp_client_cfg cfg = {.timeout_ms = 10, .first_timeout_ms = 10, .reset_wait_ms = 100, .retries = 3};

static void progress(void *ctx, uint64_t done, uint64_t total)
{
	(void)ctx;
	assert_true(done <= total);
}

static bool not_cancelled(void *ctx)
{
	return false;
}

static const ferry_session_host_v1 sh = {.size = sizeof(sh), .progress = progress, .cancelled = not_cancelled};

static void test_matched_by_seq(void **state)
{
	/* The fake answers at once, so the wait is long: skipping the stale
	 * answer must not depend on how fast this machine (or qemu) runs. */
	static const smp_client_cfg patient = {
	    .timeout_ms = 60000, .first_timeout_ms = 60000, .reset_wait_ms = 100, .retries = 3};
	fake f = {.stale_first = 1, .mtu_packet = 384};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX];
	uint8_t hash[32];

	smp_client_init(&c, &ops, &f, "fake", &patient, &host, NULL);
	assert_int_equal(smp_client_read_state(&c, version, hash, detail), 0);
	assert_string_equal(version, "1.0.0");
	assert_int_equal(f.sends, 1); /* the stale answer and the garbage were skipped, not retried */
}

static void test_bounded_retries(void **state)
{
	fake f = {.silent = 1, .mtu_packet = 384};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX];
	uint8_t hash[32];

	smp_client_init(&c, &ops, &f, "fake", &cfg, &host, NULL);
	assert_int_equal(smp_client_read_state(&c, version, hash, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_int_equal(f.sends, cfg.retries + 1);
	assert_non_null(strstr(detail, "does not answer"));
}

/* A device that answers every request with a stream of answers to some
 * other request: each wait still ends at its deadline, and the request
 * fails after its retries. */
static void test_flood_bounded_by_deadline(void **state)
{
	fake f = {.flood = 1, .mtu_packet = 384};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX];
	uint8_t hash[32];
	int64_t t0 = smp_now_ms();

	smp_client_init(&c, &ops, &f, "fake", &cfg, &host, NULL);
	assert_int_equal(smp_client_read_state(&c, version, hash, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_int_equal(f.sends, cfg.retries + 1);
	assert_non_null(strstr(detail, "does not answer"));
	assert_true(f.flood_sent > 0);
	assert_true(smp_now_ms() - t0 < 2000);
}

/* Writes a file of n bytes; returns its path in buf. */
static void temp_image(char *path, uint8_t *data, size_t n)
{
	int fd;
	strcpy(path, "/tmp/test_smp_client.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 31 + 7);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static void test_resume_after_link_loss(void **state)
{
	static uint8_t data[20000], got[20000];
	fake f = {.mtu_packet = 384, .drop_at = 9000, .image = got};
	char path[64], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	smp_client c;
	uint64_t resume = 0;

	temp_image(path, data, sizeof(data));
	ferry_image_v1 img = {.size = sizeof(img), .component = "mcu", .path = path, .length = sizeof(data)};
	smp_client_init(&c, &ops, &f, "fake", &cfg, &host, &sh);
	assert_int_equal(smp_client_upload(&c, &img, &resume, detail), 0);
	unlink(path);
	assert_int_equal(resume, sizeof(data));
	assert_memory_equal(got, data, sizeof(data));
	assert_int_equal(f.reconnects, 1);
	assert_int_equal(c.relinks, 1);
	/* after the link came back the client asked with a first request, and
	 * the device did not have to take data at offset 0 again */
	assert_int_equal(f.first_requests, 2);
	assert_int_equal(f.data_at_zero, 1);
	uint8_t sha[32];
	EVP_Digest(data, sizeof(data), sha, NULL, EVP_sha256(), NULL);
	assert_memory_equal(f.up_sha, sha, 32);
}

/* A device with four buffers on a link that carries several requests: the
 * upload keeps three in flight (one buffer stays for the answer), fills
 * each packet to the byte, and gets past a request lost on the way (the
 * requests behind it come back out of step) to a whole image. */
static void upload_windowed(int lose, int want_in_flight)
{
	static uint8_t data[20000], got[20000];
	fake f = {.mtu_packet = 380, .image = got, .bufs = 4, .lose_upload = lose};
	char path[64], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	smp_client c;
	uint64_t resume = 0;

	memset(got, 0, sizeof(got));
	temp_image(path, data, sizeof(data));
	ferry_image_v1 img = {.size = sizeof(img), .component = "mcu", .path = path, .length = sizeof(data)};
	smp_client_init(&c, &ops_window, &f, "fake", &cfg, &host, &sh);
	assert_int_equal(smp_client_upload(&c, &img, &resume, detail), 0);
	unlink(path);
	assert_int_equal(resume, sizeof(data));
	assert_memory_equal(got, data, sizeof(data));
	assert_int_equal(f.most_in_flight, want_in_flight);
	assert_int_equal(f.first_requests, 1);
	/* full packets: 380 bytes, of which a request at an offset past 255
	 * and under 65536 takes 26 (header 8, map 1, "off" 4 + 3, "data" 5 +
	 * 3 for the length): 354 bytes of data; the first one carries len, sha
	 * and image too; a lost request costs it and the two behind it */
	assert_true(f.uploads_seen <= 1 + (int)((sizeof(data) + 353) / 354) + (lose ? 3 : 0));
}

static void test_upload_windowed(void **state)
{
	upload_windowed(0, 3);
}

static void test_upload_windowed_lost_request(void **state)
{
	upload_windowed(6, 3);
}

/* A device that does not say how many buffers it has gets one request at
 * a time. */
static void test_upload_one_at_a_time(void **state)
{
	static uint8_t data[5000], got[5000];
	fake f = {.mtu_packet = 380, .image = got};
	char path[64], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	smp_client c;
	uint64_t resume = 0;

	temp_image(path, data, sizeof(data));
	ferry_image_v1 img = {.size = sizeof(img), .component = "mcu", .path = path, .length = sizeof(data)};
	smp_client_init(&c, &ops_window, &f, "fake", &cfg, &host, &sh);
	assert_int_equal(smp_client_upload(&c, &img, &resume, detail), 0);
	unlink(path);
	assert_memory_equal(got, data, sizeof(data));
	assert_int_equal(f.most_in_flight, 1);
}

static void test_link_too_small(void **state)
{
	static uint8_t data[1000], got[1000];
	fake f = {.mtu_packet = 20, .image = got};
	char path[64], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	smp_client c;
	uint64_t resume = 0;

	temp_image(path, data, sizeof(data));
	ferry_image_v1 img = {.size = sizeof(img), .component = "mcu", .path = path, .length = sizeof(data)};
	smp_client_init(&c, &ops, &f, "fake", &cfg, &host, &sh);
	assert_int_equal(smp_client_upload(&c, &img, &resume, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	unlink(path);
	assert_non_null(strstr(detail, "too small"));
	assert_int_equal(resume, 0);
	assert_int_equal(f.first_requests, 0); /* nothing was sent to the slot */
}

static void stuck_upload(int mode, const char *want)
{
	static uint8_t data[20000], got[20000];
	fake f = {.mtu_packet = 384, .image = got, .stuck = mode, .stuck_at = 5000};
	char path[64], detail[FERRY_ADAPTER_DETAIL_MAX] = "";
	smp_client c;
	uint64_t resume = 0;

	temp_image(path, data, sizeof(data));
	ferry_image_v1 img = {.size = sizeof(img), .component = "mcu", .path = path, .length = sizeof(data)};
	smp_client_init(&c, &ops, &f, "fake", &cfg, &host, &sh);
	assert_int_equal(smp_client_upload(&c, &img, &resume, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	unlink(path);
	assert_non_null(strstr(detail, want));
	/* a bounded number of requests: those that advanced, then retries + 1
	 * that did not */
	assert_true(f.sends <= 5000 / 100 + cfg.retries + 2);
}

/* The first request is answered off 0, again and again. */
static void test_upload_stuck_at_zero(void **state)
{
	stuck_upload(STUCK_ZERO, "does not advance the upload");
}

/* Mid-upload, the device repeats the same offset forever. */
static void test_upload_repeats_offset(void **state)
{
	stuck_upload(STUCK_REPEAT, "does not advance the upload");
}

/* Mid-upload, the device goes back 100 bytes, forward again, back... */
static void test_upload_swings(void **state)
{
	stuck_upload(STUCK_SWING, "does not advance the upload");
}

static const smp_client_cfg reset_cfg = {
    .timeout_ms = 10, .first_timeout_ms = 10, .reset_wait_ms = 3000, .retries = 3};

/* A device with the new image in its secondary slot, and a client that
 * checked it. */
static void slots_client(smp_client *c, fake *f)
{
	smp_client_init(c, &ops, f, "fake", &reset_cfg, &host, &sh);
	memset(c->new_hash, NEW_HASH, 32);
	c->have_hash = true;
	f->slots = 1;
	f->new_slot = 1;
	f->reset_countdown = -1;
	f->mtu_packet = 384;
}

/* Zephyr answers os reset and resets 250 ms later: until then the old
 * firmware answers everything, still listing the new image as pending.
 * confirm reads the trial back; only commit makes it permanent. */
static void test_activate_waits_for_delayed_reset(void **state)
{
	fake f = {.reset_after = 3};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(f.resets, 1);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_string_equal(version, "2.0.0");
	assert_int_equal(f.new_slot, 0);
	assert_true(f.trial); /* read back, not made permanent */
	assert_int_equal(smp_client_commit(&c, NULL, detail), 0);
	assert_false(f.trial);
	assert_int_equal(f.reset_requests, 1);
}

/* The reset request is lost on the way: the old firmware keeps answering,
 * and the reset is sent again. */
static void test_activate_resends_lost_reset(void **state)
{
	fake f = {.reset_after = 1, .lose_resets = 1};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(f.reset_requests, 2);
	assert_int_equal(f.resets, 1);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_string_equal(version, "2.0.0");
}

/* The device accepts the reset but its answer is lost: the old firmware
 * still lists the image as pending, so the reset is sent again at once (no
 * clock decides).  It reaches the old firmware, which keeps the reset it
 * scheduled: one reboot. */
static void test_activate_reset_answer_lost(void **state)
{
	fake f = {.reset_after = 3, .lose_reset_answers = 1};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(f.reset_requests, 2);
	assert_int_equal(f.resets, 1);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_string_equal(version, "2.0.0");
	assert_true(f.trial);
}

/* An answered reset is never sent again, however many times the old
 * firmware answers before it reboots. */
static void test_activate_answered_reset_not_resent(void **state)
{
	fake f = {.reset_after = 40};
	smp_client c;
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(f.reset_requests, 1);
	assert_int_equal(f.resets, 1);
	assert_true(f.trial);
}

/* The worst case of a resend: the reset's answer is lost, the old firmware
 * answers once more and reboots right after, so the second reset reaches
 * the new image on trial and MCUboot reverts it.  The client sees the image
 * neither active nor pending after a resend of its own: it marks the image
 * again and resets, and the device ends on trial with the new image. */
static void test_activate_resend_reverted_is_marked_again(void **state)
{
	fake f = {.lose_reset_answers = 1, .answer_then_boot = true, .reset_now_on_trial = true, .reset_after = 1};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(f.reset_requests, 3);
	assert_int_equal(f.resets, 3); /* trial, revert, trial */
	assert_true(f.trial);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_string_equal(version, "2.0.0");
}

/* A device that never resets: activate fails, naming it, after a bounded
 * number of requests. */
static void test_activate_device_never_resets(void **state)
{
	fake f = {.lose_resets = 1000};
	smp_client c;
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_non_null(strstr(detail, "did not reset"));
	assert_int_equal(f.reset_requests, reset_cfg.retries + 1);
	assert_int_equal(f.resets, 0);
}

/* ferryd stopped after the test mark, before the reset took: after the
 * restart, confirm finds the new image pending, waits, and resets it. */
static void test_confirm_finds_image_pending(void **state)
{
	fake f = {.pending = true, .reset_after = 2};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_string_equal(version, "2.0.0");
	assert_int_equal(f.resets, 1);
	assert_int_equal(f.new_slot, 0);
	assert_true(f.trial);
	assert_int_equal(smp_client_commit(&c, NULL, detail), 0);
	assert_false(f.trial);
}

/* The device commits, but every answer to the confirm request is lost: the
 * device lists the new image as active and confirmed, so the commit took.
 * abort then tells the truth: the image is permanent. */
static void test_commit_answer_lost(void **state)
{
	fake f = {.reset_after = 1, .lose_confirm_answers = 1000};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_int_equal(smp_client_commit(&c, NULL, detail), 0);
	assert_string_equal(version, "2.0.0");
	assert_false(c.tested);
	assert_int_equal(smp_client_abort(&c, NULL, detail), FERRY_ADAPTER_E_INSTALL_FAILED);
	assert_non_null(strstr(detail, "cannot be reverted"));
	assert_int_equal(f.resets, 1); /* no reset for a permanent image */
}

/* The commit is answered, then the device stops answering: the commit was
 * accepted, and that is the outcome. */
static void test_commit_then_silence(void **state)
{
	fake f = {.reset_after = 1, .lose_reads_after_confirm = 1000};
	smp_client c;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_int_equal(smp_client_commit(&c, NULL, detail), 0);
	assert_false(c.tested);
	assert_false(f.trial);
}

/* A commit for a device that came back on its old image: refused, naming
 * what it runs, and nothing is written. */
static void test_commit_old_image(void **state)
{
	fake f = {0};
	smp_client c;
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_commit(&c, NULL, detail), FERRY_ADAPTER_E_INSTALL_FAILED);
	assert_non_null(strstr(detail, "nothing to commit"));
	assert_int_equal(f.new_slot, 1);
}

/* After a restart (a fresh client that never marked anything) abort still
 * finds the image running on trial, and one reset reverts it. */
static void test_abort_fresh_session_reverts_trial(void **state)
{
	fake f = {.reset_after = 1};
	smp_client c, fresh;
	char version[FERRY_ADAPTER_STR_MAX], detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), 0);
	assert_int_equal(smp_client_confirm(&c, NULL, version, detail), 0);
	assert_true(f.trial);
	slots_client(&fresh, &f);
	f.new_slot = 0; /* slots_client resets it; the device runs the new image */
	f.trial = true;
	assert_false(fresh.tested);
	assert_int_equal(smp_client_abort(&fresh, NULL, detail), 0);
	assert_false(f.trial);
	assert_int_equal(f.new_slot, 1);
	assert_int_equal(f.resets, 2);
}

/* Every answer to the test mark is lost, but the mark was written: abort
 * finds the image pending and resets twice -- it boots on trial, then
 * MCUboot reverts it -- so nothing is left to boot by surprise later. */
static void test_abort_after_lost_test_mark(void **state)
{
	fake f = {.reset_after = 1, .lose_mark_answers = 1000};
	smp_client c;
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	assert_int_equal(smp_client_activate(&c, detail), FERRY_ADAPTER_E_ADAPTER_ERROR);
	assert_true(f.pending);
	assert_int_equal(smp_client_abort(&c, NULL, detail), 0);
	assert_int_equal(f.resets, 2);
	assert_int_equal(f.new_slot, 1);
	assert_false(f.pending);
	assert_false(f.trial);
}

/* MCUboot already dropped the new image (it would not boot): abort has
 * nothing to reset. */
static void test_abort_nothing_left(void **state)
{
	fake f = {0};
	smp_client c;
	char detail[FERRY_ADAPTER_DETAIL_MAX] = "";

	slots_client(&c, &f);
	c.tested = true;
	assert_int_equal(smp_client_abort(&c, NULL, detail), 0);
	assert_int_equal(f.reset_requests, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_matched_by_seq),
	    cmocka_unit_test(test_bounded_retries),
	    cmocka_unit_test(test_flood_bounded_by_deadline),
	    cmocka_unit_test(test_resume_after_link_loss),
	    cmocka_unit_test(test_link_too_small),
	    cmocka_unit_test(test_upload_windowed),
	    cmocka_unit_test(test_upload_windowed_lost_request),
	    cmocka_unit_test(test_upload_one_at_a_time),
	    cmocka_unit_test(test_upload_stuck_at_zero),
	    cmocka_unit_test(test_upload_repeats_offset),
	    cmocka_unit_test(test_upload_swings),
	    cmocka_unit_test(test_activate_waits_for_delayed_reset),
	    cmocka_unit_test(test_activate_resends_lost_reset),
	    cmocka_unit_test(test_activate_device_never_resets),
	    cmocka_unit_test(test_activate_reset_answer_lost),
	    cmocka_unit_test(test_activate_answered_reset_not_resent),
	    cmocka_unit_test(test_activate_resend_reverted_is_marked_again),
	    cmocka_unit_test(test_confirm_finds_image_pending),
	    cmocka_unit_test(test_commit_answer_lost),
	    cmocka_unit_test(test_commit_then_silence),
	    cmocka_unit_test(test_commit_old_image),
	    cmocka_unit_test(test_abort_fresh_session_reverts_trial),
	    cmocka_unit_test(test_abort_after_lost_test_mark),
	    cmocka_unit_test(test_abort_nothing_left),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
