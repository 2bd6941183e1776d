/* ferry-delta-1: patches made by the operator's tool rebuild the image
 * exactly, and patches that lie (in their header, their control entries or
 * their streams) are refused with what was wrong. */
#define _GNU_SOURCE
#include <lzma.h>
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "delta.h"
#include "ferry/delta.h"

static uint32_t rng = 12345;
static uint8_t next_byte(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return (uint8_t)rng;
}

static int fd_of(const void *p, size_t n)
{
	int fd = memfd_create("test-delta", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	return fd;
}

typedef struct out {
	unsigned char *p;
	size_t n;
	int calls;
} out;

static ferry_err sink(void *ctx, const unsigned char *p, size_t n, ferry_status *st)
{
	out *o = ctx;
	(void)st;
	o->p = realloc(o->p, o->n + n + 1);
	memcpy(o->p + o->n, p, n);
	o->n += n;
	o->calls++;
	return FERRY_OK;
}

/* Apply patch to base; the error, and what came out in *o. */
static ferry_err apply(const void *base, size_t bn, const void *patch, size_t pn, uint64_t max, out *o,
		       ferry_status *st)
{
	int bfd = fd_of(base, bn), pfd = fd_of(patch, pn);
	memset(o, 0, sizeof(*o));
	ferry_err e = ferry_delta_apply(bfd, pfd, max, sink, o, st);
	close(bfd);
	close(pfd);
	return e;
}

static void round_trip(const unsigned char *old, size_t on, const unsigned char *nw, size_t nn, size_t *patch_len)
{
	unsigned char *patch = NULL;
	size_t pn = 0;
	ferry_status st = {0};
	out o;

	assert_int_equal(ferry_delta_make(old, on, nw, nn, &patch, &pn, &st), FERRY_OK);
	assert_int_equal(apply(old, on, patch, pn, nn, &o, &st), FERRY_OK);
	assert_int_equal(o.n, nn);
	if (nn)
		assert_memory_equal(o.p, nw, nn);
	free(o.p);
	free(patch);
	if (patch_len)
		*patch_len = pn;
}

/* A firmware-like change: addresses shift in many places, a function is
 * inserted, another removed, a block moves. */
static void test_round_trips(void **state)
{
	enum { N = 200000 };
	unsigned char *old = malloc(N), *nw = malloc(N + 4096);
	size_t nn = 0, pn = 0;
	(void)state;

	for (size_t i = 0; i < N; i++)
		old[i] = (i % 7 == 0) ? next_byte() : (uint8_t)(i * 31 >> 3);
	memcpy(nw, old, 50000);
	nn = 50000;
	for (int i = 0; i < 1000; i++)
		nw[nn++] = next_byte(); /* a new function */
	memcpy(nw + nn, old + 50500, 100000); /* 500 bytes gone */
	for (size_t i = 0; i < 100000; i += 97)
		nw[nn + i] = (uint8_t)(nw[nn + i] + 4); /* shifted addresses */
	nn += 100000;
	memcpy(nw + nn, old + 180000, 20000); /* a block moved up */
	nn += 20000;
	memcpy(nw + nn, old + 150500, 29500);
	nn += 29500;

	round_trip(old, N, nw, nn, &pn);
	/* most of it is the base: the patch is a small part of the image */
	assert_true(pn < nn / 10);

	round_trip(old, N, old, N, &pn); /* the same image */
	assert_true(pn < 300); /* the header and three streams of runs */
	round_trip(NULL, 0, nw, nn, NULL); /* from nothing: all literal */
	round_trip(old, N, NULL, 0, NULL); /* to nothing */
	round_trip(old, 1, old + 1, 1, NULL);
	free(old);
	free(nw);
}

/* A patch built by hand from the three raw streams, for entries the maker
 * never writes. */
static unsigned char *hand_patch(const unsigned char *base, size_t bn, uint64_t new_size, const unsigned char *ctrl,
				 size_t cn, const unsigned char *diff, size_t dn, const unsigned char *extra, size_t en,
				 size_t *pn)
{
	const unsigned char *part[3] = {ctrl, diff, extra};
	size_t len[3] = {cn, dn, en}, pos[3] = {0};
	unsigned char *p = calloc(1, FERRY_DELTA_HEADER + 3 * 4096 + cn + dn + en);
	size_t at = FERRY_DELTA_HEADER;
	lzma_options_lzma opt;
	assert_int_equal(lzma_lzma_preset(&opt, 6), 0);
	opt.dict_size = ferry_delta_dict_for(new_size);
	lzma_filter f[] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
	memcpy(p, "FDL1", 4);
	EVP_Digest(base, bn, p + 4, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 8; i++) {
		p[36 + i] = (unsigned char)((uint64_t)bn >> (8 * i));
		p[44 + i] = (unsigned char)(new_size >> (8 * i));
	}
	for (int s = 0; s < 3; s++) {
		assert_int_equal(lzma_raw_buffer_encode(f, NULL, len[s] ? part[s] : (const uint8_t *)"", len[s], p + at,
							&pos[s], 4096 + len[s]),
				 LZMA_OK);
		at += pos[s];
		for (int i = 0; i < 4; i++)
			p[52 + 4 * s + i] = (unsigned char)(opt.dict_size >> (8 * i));
		for (int i = 0; i < 8; i++)
			p[64 + 8 * s + i] = (unsigned char)((uint64_t)pos[s] >> (8 * i));
	}
	*pn = at;
	return p;
}

static void expect(ferry_err want, const char *needle, const unsigned char *base, size_t bn, const unsigned char *patch,
		   size_t pn, uint64_t max)
{
	ferry_status st = {0};
	out o;
	ferry_err e = apply(base, bn, patch, pn, max, &o, &st);
	if (e != want || !strstr(st.detail, needle))
		fail_msg("got %s \"%s\", wanted %s with \"%s\"", ferry_err_code(e), st.detail, ferry_err_code(want),
			 needle);
	free(o.p);
}

static void test_lying_entries(void **state)
{
	unsigned char base[64], zeros[64] = {0}, lit[64];
	size_t pn;
	unsigned char *p;
	(void)state;
	for (int i = 0; i < 64; i++)
		base[i] = (unsigned char)i, lit[i] = (unsigned char)(0xa0 + i);

	/* a good one by hand: 16 from the base, 4 literal, back to 0, 8 more */
	const unsigned char good[] = {16, 4, 15 * 2 + 1, 8, 0, 0}; /* back by 16 */
	p = hand_patch(base, 64, 28, good, sizeof(good), zeros, 24, lit, 4, &pn);
	{
		ferry_status st = {0};
		out o;
		assert_int_equal(apply(base, 64, p, pn, 1000, &o, &st), FERRY_OK);
		assert_int_equal(o.n, 28);
		assert_memory_equal(o.p, base, 16);
		assert_memory_equal(o.p + 16, lit, 4);
		assert_memory_equal(o.p + 20, base, 8);
		free(o.p);
	}
	free(p);

	/* reads past the end of the base */
	const unsigned char past[] = {65, 0, 0};
	p = hand_patch(base, 64, 65, past, sizeof(past), zeros, 64, NULL, 0, &pn);
	expect(FERRY_E_MALFORMED, "past the end of the base", base, 64, p, pn, 1000);
	free(p);

	/* moves before the start of the base */
	const unsigned char before[] = {4, 0, 4 * 2 + 1, 4, 0, 0}; /* back by 5 from 4 */
	p = hand_patch(base, 64, 8, before, sizeof(before), zeros, 8, NULL, 0, &pn);
	expect(FERRY_E_MALFORMED, "outside the base", base, 64, p, pn, 1000);
	free(p);

	/* an entry longer than the new image */
	const unsigned char longer[] = {4, 10, 0};
	p = hand_patch(base, 64, 8, longer, sizeof(longer), zeros, 4, lit, 10, &pn);
	expect(FERRY_E_MALFORMED, "runs past the new image", base, 64, p, pn, 1000);
	free(p);

	/* a number of more than 64 bits */
	const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0};
	p = hand_patch(base, 64, 8, huge, sizeof(huge), zeros, 8, NULL, 0, &pn);
	expect(FERRY_E_MALFORMED, "64 bits", base, 64, p, pn, 1000);
	free(p);

	/* the diff stream ends early, the extra stream goes on, the control
	 * stream has one entry too many */
	const unsigned char one[] = {8, 0, 0};
	p = hand_patch(base, 64, 8, one, sizeof(one), zeros, 4, NULL, 0, &pn);
	expect(FERRY_E_MALFORMED, "diff stream ends before", base, 64, p, pn, 1000);
	free(p);
	p = hand_patch(base, 64, 8, one, sizeof(one), zeros, 8, lit, 3, &pn);
	expect(FERRY_E_MALFORMED, "extra stream goes on", base, 64, p, pn, 1000);
	free(p);
	const unsigned char two[] = {8, 0, 0, 0, 0, 0};
	p = hand_patch(base, 64, 8, two, sizeof(two), zeros, 8, NULL, 0, &pn);
	expect(FERRY_E_MALFORMED, "control stream goes on", base, 64, p, pn, 1000);
	free(p);
}

static void test_lying_header(void **state)
{
	enum { N = 5000 };
	unsigned char old[N], nw[N], *patch = NULL, *bad = NULL;
	size_t pn = 0;
	ferry_status st = {0};
	(void)state;

	for (int i = 0; i < N; i++)
		old[i] = next_byte();
	memcpy(nw, old, N);
	nw[100] ^= 1;
	assert_int_equal(ferry_delta_make(old, N, nw, N, &patch, &pn, &st), FERRY_OK);
	bad = malloc(pn + 1);

	/* another base: same size, other bytes; then another size */
	unsigned char other[N];
	memcpy(other, old, N);
	other[N - 1] ^= 0xff;
	expect(FERRY_E_DIGEST_MISMATCH, "this delta was made from", other, N, patch, pn, N);
	expect(FERRY_E_SIZE_MISMATCH, "this delta was made from 5000", old, N - 1, patch, pn, N);

	/* a new image larger than allowed: refused before a byte comes out */
	{
		out o;
		assert_int_equal(apply(old, N, patch, pn, N - 1, &o, &st), FERRY_E_SIZE_MISMATCH);
		assert_int_equal(o.calls, 0);
		free(o.p);
	}

	/* a dictionary larger than the image allows */
	memcpy(bad, patch, pn);
	bad[52 + 4 + 3] = 0x10; /* the diff stream's: 256 MiB */
	expect(FERRY_E_MALFORMED, "dictionary", old, N, bad, pn, N);

	/* stream lengths that do not add up, a truncated patch, bytes after it */
	memcpy(bad, patch, pn);
	bad[64 + 16] ^= 1;
	expect(FERRY_E_MALFORMED, "", old, N, bad, pn, N);
	expect(FERRY_E_MALFORMED, "past the end of the patch", old, N, patch, pn - 1, N);
	expect(FERRY_E_MALFORMED, "shorter than its header", old, N, patch, FERRY_DELTA_HEADER - 1, N);
	memcpy(bad, patch, pn);
	bad[pn] = 0;
	expect(FERRY_E_MALFORMED, "follow the last stream", old, N, bad, pn + 1, N);
	memcpy(bad, patch, pn);
	bad[0] = 'X';
	expect(FERRY_E_MALFORMED, "FDL1", old, N, bad, pn, N);

	/* every byte of the streams flipped: an error, or an image of the size
	 * the header names (the manifest's SHA-256 judges its bytes) */
	for (size_t i = FERRY_DELTA_HEADER; i < pn; i++) {
		out o;
		memcpy(bad, patch, pn);
		bad[i] ^= 0x5a;
		if (apply(old, N, bad, pn, N, &o, &st) == FERRY_OK)
			assert_int_equal(o.n, N);
		free(o.p);
	}
	free(bad);
	free(patch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trips),
	    cmocka_unit_test(test_lying_entries),
	    cmocka_unit_test(test_lying_header),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
