/* Making a ferry-delta-1 patch.
 *
 * The matcher follows bsdiff's idea.  The base's suffix array (libdivsufsort)
 * finds, for each position of the new image, the longest exact match in the
 * base.  Firmware built from slightly changed sources moves code around and
 * changes addresses inside it, so an exact match is rarely long; what counts
 * is a region of the base that the new image follows with few differences.
 * So a match is taken only when it is clearly better than simply going on
 * with the current alignment (the base offset the previous match implied),
 * and each aligned region is stretched forward and backward as long as at
 * least half of its bytes agree.  An aligned region becomes bytewise
 * differences (mostly zeros), the bytes between regions are taken as they
 * are.  LZMA2 then compresses the three streams, each on its own: the
 * differences are mostly runs of zeros with the same few values in them,
 * which is where the size goes. */
#include "delta.h"

#include <divsufsort.h>
#include <lzma.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/delta.h"

/* The largest LZMA2 dictionary a patch asks for: what the gateway allocates
 * per stream to apply it.  On the nine real firmware pairs of
 * bench/delta.sh even 256 KiB compresses exactly as well as 4 MiB; 1 MiB
 * keeps the decoder near 1 MiB for any image size. */
#define MAKE_DICT_MAX (1024u * 1024)

/* A match must beat the current alignment by this many bytes to be taken. */
#define MATCH_GAIN 8

typedef struct buf {
	unsigned char *p;
	size_t n, cap;
	bool failed;
} buf;

static void put(buf *b, const void *d, size_t n)
{
	if (b->failed || !n)
		return;
	if (n > b->cap - b->n) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap - b->n < n)
			cap *= 2;
		unsigned char *p = realloc(b->p, cap);
		if (!p) {
			b->failed = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
}

static void put_num(buf *b, uint64_t v)
{
	unsigned char t[10];
	int k = 0;
	do {
		t[k] = v & 0x7f;
		v >>= 7;
		if (v)
			t[k] |= 0x80;
		k++;
	} while (v);
	put(b, t, (size_t)k);
}

static size_t common_prefix(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
	size_t n = an < bn ? an : bn, i = 0;
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

/* The longest match of want (wn bytes) in old, by binary search of the
 * suffix array; its offset in *at. */
static size_t longest(const saidx_t *sa, const unsigned char *old, size_t on, const unsigned char *want, size_t wn,
		      size_t *at)
{
	size_t lo = 0, hi = on - 1;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2, rest = on - (size_t)sa[mid];
		if (memcmp(old + sa[mid], want, rest < wn ? rest : wn) < 0)
			lo = mid;
		else
			hi = mid;
	}
	size_t a = common_prefix(old + sa[lo], on - (size_t)sa[lo], want, wn);
	size_t b = common_prefix(old + sa[hi], on - (size_t)sa[hi], want, wn);
	*at = (size_t)(a >= b ? sa[lo] : sa[hi]);
	return a >= b ? a : b;
}

/* Does new[i] agree with the base under the alignment new -> old + off? */
static bool agrees(const unsigned char *old, size_t on, const unsigned char *nw, size_t i, int64_t off)
{
	int64_t j = (int64_t)i + off;
	return j >= 0 && (uint64_t)j < on && old[j] == nw[i];
}

typedef struct streams {
	buf ctrl, diff, extra;
} streams;

/* One entry: the region new[ns, ns + add) aligned with old[os, ...), then
 * new[ns + add, ns + add + copy) as it is, then the base offset moves to
 * next_os. */
static void entry(streams *s, const unsigned char *old, const unsigned char *nw, size_t ns, size_t os, size_t add,
		  size_t copy, size_t next_os)
{
	unsigned char d[4096];
	for (size_t k = 0; k < add;) {
		size_t n = add - k < sizeof(d) ? add - k : sizeof(d);
		for (size_t i = 0; i < n; i++)
			d[i] = (unsigned char)(nw[ns + k + i] - old[os + k + i]);
		put(&s->diff, d, n);
		k += n;
	}
	put(&s->extra, nw + ns + add, copy);
	int64_t seek = (int64_t)next_os - (int64_t)(os + add);
	put_num(&s->ctrl, add);
	put_num(&s->ctrl, copy);
	put_num(&s->ctrl, seek >= 0 ? (uint64_t)seek << 1 : ((uint64_t)(-(seek + 1)) << 1) | 1);
}

static void match_all(streams *s, const saidx_t *sa, const unsigned char *old, size_t on, const unsigned char *nw,
		      size_t nn)
{
	size_t scan = 0, len = 0, at = 0; /* the current match: new[scan..) = old[at..), len bytes */
	size_t last_scan = 0, last_at = 0; /* where the previous aligned region starts */
	int64_t last_off = 0;              /* its alignment: old index - new index */

	if (on == 0) { /* nothing to align with: all of it is literal */
		if (nn)
			entry(s, old, nw, 0, 0, 0, nn, 0);
		return;
	}
	while (scan < nn) {
		int64_t same = 0; /* bytes of the candidate that the current alignment gets right too */
		size_t counted = scan += len;
		for (; scan < nn; scan++) {
			len = longest(sa, old, on, nw + scan, nn - scan, &at);
			for (; counted < scan + len; counted++)
				same += agrees(old, on, nw, counted, last_off);
			if (((int64_t)len == same && len != 0) || (int64_t)len > same + MATCH_GAIN)
				break;
			same -= agrees(old, on, nw, scan, last_off);
		}
		if ((int64_t)len == same && scan != nn)
			continue; /* the current alignment covers this match: keep going */

		/* stretch the previous region forward while half of it agrees */
		size_t fwd = 0;
		int64_t score = 0, best = 0;
		for (size_t i = 0; last_scan + i < scan && last_at + i < on;) {
			score += old[last_at + i] == nw[last_scan + i];
			i++;
			if (score * 2 - (int64_t)i > best * 2 - (int64_t)fwd) {
				best = score;
				fwd = i;
			}
		}
		/* and the new match backward the same way */
		size_t back = 0;
		if (scan < nn) {
			score = best = 0;
			for (size_t i = 1; scan >= last_scan + i && at >= i; i++) {
				score += old[at - i] == nw[scan - i];
				if (score * 2 - (int64_t)i > best * 2 - (int64_t)back) {
					best = score;
					back = i;
				}
			}
		}
		/* where the two overlap, the byte goes to whichever agrees more */
		if (last_scan + fwd > scan - back) {
			size_t overlap = last_scan + fwd - (scan - back), keep = 0;
			score = best = 0;
			for (size_t i = 0; i < overlap; i++) {
				score += nw[last_scan + fwd - overlap + i] == old[last_at + fwd - overlap + i];
				score -= nw[scan - back + i] == old[at - back + i];
				if (score > best) {
					best = score;
					keep = i + 1;
				}
			}
			fwd = fwd - overlap + keep;
			back -= keep;
		}
		entry(s, old, nw, last_scan, last_at, fwd, (scan - back) - (last_scan + fwd), at - back);
		last_scan = scan - back;
		last_at = at - back;
		last_off = (int64_t)at - (int64_t)scan;
	}
}

/* One raw LZMA2 stream of b, with the dictionary the header will name. */
static ferry_err compress(const buf *b, uint32_t dict, buf *out, uint64_t *len, ferry_status *st)
{
	lzma_options_lzma opt;
	if (lzma_lzma_preset(&opt, 9 | LZMA_PRESET_EXTREME))
		return ferry_fail(st, FERRY_E_INTERNAL, "liblzma has no preset 9e");
	opt.dict_size = dict;
	lzma_filter f[] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
	size_t cap = lzma_stream_buffer_bound(b->n), pos = 0;
	unsigned char *tmp = malloc(cap);
	if (!tmp)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	lzma_ret rc = lzma_raw_buffer_encode(f, NULL, b->p ? b->p : (const uint8_t *)"", b->n, tmp, &pos, cap);
	if (rc == LZMA_OK)
		put(out, tmp, pos);
	free(tmp);
	if (rc != LZMA_OK)
		return ferry_fail(st, FERRY_E_INTERNAL, "LZMA2 compression failed (liblzma error %d)", (int)rc);
	*len = pos;
	return FERRY_OK;
}

static void le(unsigned char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++, v >>= 8)
		p[i] = (unsigned char)v;
}

ferry_err ferry_delta_make(const unsigned char *old, size_t on, const unsigned char *nw, size_t nn,
			   unsigned char **out, size_t *outlen, ferry_status *st)
{
	streams s = {0};
	saidx_t *sa = NULL;
	buf body = {0};
	unsigned char hdr[FERRY_DELTA_HEADER] = "FDL1";
	uint64_t len[3];
	ferry_err e = FERRY_OK;

	*out = NULL;
	if (on > FERRY_DELTA_MAKE_MAX || nn > FERRY_DELTA_MAKE_MAX)
		return ferry_fail(st, FERRY_E_UNSUPPORTED, "a delta is made for images up to %u bytes",
				  FERRY_DELTA_MAKE_MAX);
	if (on && (!(sa = malloc(sizeof(*sa) * on)) || divsufsort(old, sa, (saidx_t)on) != 0)) {
		free(sa);
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot sort the base's suffixes (out of memory?)");
	}
	match_all(&s, sa, old, on, nw, nn);
	free(sa);
	if (s.ctrl.failed || s.diff.failed || s.extra.failed) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	/* each stream's dictionary covers that stream (up to MAKE_DICT_MAX) and
	 * no more: what the gateway allocates to apply it */
	const buf *part[3] = {&s.ctrl, &s.diff, &s.extra};
	uint32_t dict[3];
	for (int i = 0; i < 3; i++) {
		dict[i] = ferry_delta_dict_for(part[i]->n < nn ? part[i]->n : nn);
		if (dict[i] > MAKE_DICT_MAX)
			dict[i] = MAKE_DICT_MAX;
		if ((e = compress(part[i], dict[i], &body, &len[i], st)))
			goto out;
	}
	if (body.failed) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if (!EVP_Digest(old, on, hdr + 4, NULL, EVP_sha256(), NULL)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "SHA-256 failed");
		goto out;
	}
	le(hdr + 36, on, 8);
	le(hdr + 44, nn, 8);
	for (int i = 0; i < 3; i++) {
		le(hdr + 52 + 4 * i, dict[i], 4);
		le(hdr + 64 + 8 * i, len[i], 8);
	}
	if (!(*out = malloc(sizeof(hdr) + body.n))) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	memcpy(*out, hdr, sizeof(hdr));
	if (body.n)
		memcpy(*out + sizeof(hdr), body.p, body.n);
	*outlen = sizeof(hdr) + body.n;
out:
	free(s.ctrl.p);
	free(s.diff.p);
	free(s.extra.p);
	free(body.p);
	return e;
}
