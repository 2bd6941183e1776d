/* Applying a ferry-delta-1 patch (the format: ferry/delta.h, docs/delta.md).
 * Every byte of the patch is hostile: lengths are checked against what is
 * left before anything is read or written, base offsets against the base,
 * and each stream must end exactly where the new image does. */
#include "ferry/delta.h"

#include <errno.h>
#include <lzma.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK 65536
static const char *const stream_name[3] = {"control", "diff", "extra"};

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t ferry_delta_dict_for(uint64_t new_size)
{
	uint32_t d = FERRY_DELTA_DICT_MIN;
	while (d < new_size && d < FERRY_DELTA_DICT_MAX)
		d <<= 1;
	return d;
}

ferry_err ferry_delta_parse_header(const unsigned char *h, uint64_t patch_size, ferry_delta_info *out,
				   ferry_status *st)
{
	ferry_delta_info d;
	uint64_t total = FERRY_DELTA_HEADER;

	if (patch_size < FERRY_DELTA_HEADER || memcmp(h, "FDL1", 4))
		return ferry_fail(st, FERRY_E_MALFORMED, "not a %s patch (no FDL1 header)", FERRY_DELTA_FORMAT);
	memcpy(d.base_sha256, h + 4, 32);
	d.base_size = le64(h + 36);
	d.new_size = le64(h + 44);
	for (int i = 0; i < 3; i++) {
		d.dict[i] = le32(h + 52 + 4 * i);
		d.len[i] = le64(h + 64 + 8 * i);
		/* what the maker uses, and so all a patch may ask for: memory
		 * follows the new image's size, never the patch's say-so */
		if (d.dict[i] < FERRY_DELTA_DICT_MIN || d.dict[i] > ferry_delta_dict_for(d.new_size))
			return ferry_fail(st, FERRY_E_MALFORMED,
					  "the %s stream asks for a %u-byte dictionary; a %llu-byte image allows %u",
					  stream_name[i], d.dict[i], (unsigned long long)d.new_size,
					  ferry_delta_dict_for(d.new_size));
		if (d.len[i] > patch_size - total)
			return ferry_fail(st, FERRY_E_MALFORMED, "the %s stream runs past the end of the patch",
					  stream_name[i]);
		total += d.len[i];
	}
	if (total != patch_size)
		return ferry_fail(st, FERRY_E_MALFORMED, "%llu bytes follow the last stream",
				  (unsigned long long)(patch_size - total));
	*out = d;
	return FERRY_OK;
}

/* One LZMA2 stream of the patch, read with pread from its offset. */
typedef struct lz {
	lzma_stream s;
	int fd;
	uint64_t off, left; /* compressed bytes not yet read */
	unsigned char in[CHUNK];
	bool ended;
	const char *name;
} lz;

static ferry_err lz_open(lz *z, int fd, uint64_t off, uint64_t len, uint32_t dict, const char *name,
			 ferry_status *st)
{
	lzma_options_lzma opt;
	memset(z, 0, sizeof(*z));
	z->s = (lzma_stream)LZMA_STREAM_INIT;
	z->fd = fd;
	z->off = off;
	z->left = len;
	z->name = name;
	if (lzma_lzma_preset(&opt, 6))
		return ferry_fail(st, FERRY_E_INTERNAL, "liblzma has no preset 6");
	opt.dict_size = dict;
	lzma_filter f[] = {{LZMA_FILTER_LZMA2, &opt}, {LZMA_VLI_UNKNOWN, NULL}};
	if (lzma_raw_decoder(&z->s, f) != LZMA_OK)
		return ferry_fail(st, FERRY_E_INTERNAL, "cannot start an LZMA2 decoder with a %u-byte dictionary", dict);
	return FERRY_OK;
}

/* Exactly n bytes of the stream into out. */
static ferry_err lz_read(lz *z, unsigned char *out, size_t n, ferry_status *st)
{
	z->s.next_out = out;
	z->s.avail_out = n;
	while (z->s.avail_out) {
		if (z->ended)
			return ferry_fail(st, FERRY_E_MALFORMED, "the %s stream ends before the new image does", z->name);
		if (!z->s.avail_in && z->left) {
			size_t want = z->left < sizeof(z->in) ? (size_t)z->left : sizeof(z->in);
			ssize_t r = pread(z->fd, z->in, want, (off_t)z->off);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return ferry_fail(st, FERRY_E_MALFORMED, "cannot read the patch's %s stream: %s", z->name,
						  r < 0 ? strerror(errno) : "it is shorter than its header says");
			z->off += (uint64_t)r;
			z->left -= (uint64_t)r;
			z->s.next_in = z->in;
			z->s.avail_in = (size_t)r;
		}
		size_t before = z->s.avail_out;
		lzma_ret rc = lzma_code(&z->s, z->s.avail_in || z->left ? LZMA_RUN : LZMA_FINISH);
		if (rc == LZMA_STREAM_END)
			z->ended = true;
		else if (rc == LZMA_MEM_ERROR)
			return ferry_fail(st, FERRY_E_INSUFFICIENT_SPACE, "no memory to decode the %s stream", z->name);
		else if (rc != LZMA_OK)
			return ferry_fail(st, FERRY_E_MALFORMED, "the %s stream is corrupt (liblzma error %d)", z->name,
					  (int)rc);
		else if (!z->s.avail_in && !z->left && z->s.avail_out == before)
			return ferry_fail(st, FERRY_E_MALFORMED, "the %s stream is cut short", z->name);
	}
	return FERRY_OK;
}

/* The stream must end here, with nothing after its end marker. */
static ferry_err lz_done(lz *z, ferry_status *st)
{
	unsigned char extra;
	if (!z->ended) {
		ferry_err e = lz_read(z, &extra, 1, st);
		if (e == FERRY_OK)
			return ferry_fail(st, FERRY_E_MALFORMED, "the %s stream goes on after the new image", z->name);
		if (!z->ended)
			return e;
	}
	if (z->s.avail_in || z->left)
		return ferry_fail(st, FERRY_E_MALFORMED, "bytes follow the end of the %s stream", z->name);
	return FERRY_OK;
}

/* One LEB128 number of the control stream (at most 64 bits). */
static ferry_err ctrl_num(lz *z, uint64_t *v, ferry_status *st)
{
	*v = 0;
	for (int shift = 0;; shift += 7) {
		unsigned char b;
		ferry_err e = lz_read(z, &b, 1, st);
		if (e)
			return e;
		if (shift == 63 && b > 1)
			return ferry_fail(st, FERRY_E_MALFORMED, "a control number does not fit 64 bits");
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return FERRY_OK;
		if (shift == 63)
			return ferry_fail(st, FERRY_E_MALFORMED, "a control number does not fit 64 bits");
	}
}

static ferry_err read_all(int fd, unsigned char *p, size_t n, uint64_t off, const char *what, ferry_status *st)
{
	while (n) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return ferry_fail(st, FERRY_E_MALFORMED, "cannot read %s: %s", what,
					  r < 0 ? strerror(errno) : "it is shorter than expected");
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return FERRY_OK;
}

static ferry_err check_base(int fd, const ferry_delta_info *d, ferry_status *st)
{
	struct stat sb;
	unsigned char md[32], *buf = malloc(CHUNK);
	unsigned int mdlen = 0;
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	ferry_err e = FERRY_OK;

	if (!buf || !c || !EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != d->base_size) {
		e = ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the base is %lld bytes; this delta was made from %llu",
			       (long long)sb.st_size, (unsigned long long)d->base_size);
		goto out;
	}
	for (uint64_t off = 0; off < d->base_size;) {
		size_t n = d->base_size - off < CHUNK ? (size_t)(d->base_size - off) : CHUNK;
		if ((e = read_all(fd, buf, n, off, "the base", st)))
			goto out;
		EVP_DigestUpdate(c, buf, n);
		off += n;
	}
	if (!EVP_DigestFinal_ex(c, md, &mdlen)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "SHA-256 failed");
	} else if (memcmp(md, d->base_sha256, 32)) {
		char want[65], got[65];
		for (int i = 0; i < 32; i++) {
			snprintf(want + 2 * i, 3, "%02x", d->base_sha256[i]);
			snprintf(got + 2 * i, 3, "%02x", md[i]);
		}
		e = ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "the base has SHA-256 %s; this delta was made from %s", got,
			       want);
	}
out:
	EVP_MD_CTX_free(c);
	free(buf);
	return e;
}

ferry_err ferry_delta_apply(int base_fd, int patch_fd, uint64_t max_new, ferry_delta_sink sink, void *ctx,
			    ferry_status *st)
{
	unsigned char hdr[FERRY_DELTA_HEADER];
	ferry_delta_info d;
	struct stat sb;
	lz *z = NULL;
	unsigned char *diff = NULL, *base = NULL;
	ferry_err e;

	if (fstat(patch_fd, &sb) || !S_ISREG(sb.st_mode))
		return ferry_fail(st, FERRY_E_MALFORMED, "the patch is not a regular file");
	if ((uint64_t)sb.st_size < FERRY_DELTA_HEADER)
		return ferry_fail(st, FERRY_E_MALFORMED, "the patch is %lld bytes, shorter than its header",
				  (long long)sb.st_size);
	if ((e = read_all(patch_fd, hdr, sizeof(hdr), 0, "the patch", st)) ||
	    (e = ferry_delta_parse_header(hdr, (uint64_t)sb.st_size, &d, st)))
		return e;
	if (d.new_size > max_new)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the delta makes a %llu-byte image; at most %llu allowed",
				  (unsigned long long)d.new_size, (unsigned long long)max_new);
	if ((e = check_base(base_fd, &d, st)))
		return e;
	if (!(z = calloc(3, sizeof(*z))) || !(diff = malloc(CHUNK)) || !(base = malloc(CHUNK))) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	uint64_t off = FERRY_DELTA_HEADER;
	int opened = 0;
	for (; opened < 3; opened++) {
		if ((e = lz_open(&z[opened], patch_fd, off, d.len[opened], d.dict[opened], stream_name[opened], st)))
			goto out;
		off += d.len[opened];
	}
	uint64_t done = 0, pos = 0; /* bytes of the new image out; the base offset */
	while (done < d.new_size) {
		uint64_t add, copy, zz;
		if ((e = ctrl_num(&z[0], &add, st)) || (e = ctrl_num(&z[0], &copy, st)) ||
		    (e = ctrl_num(&z[0], &zz, st)))
			goto out;
		/* zigzag: even is forward, odd is back by (zz >> 1) + 1 */
		bool back = zz & 1;
		uint64_t by = back ? (zz >> 1) + 1 : zz >> 1;
		if (add > d.new_size - done || copy > d.new_size - done - add) {
			e = ferry_fail(st, FERRY_E_MALFORMED, "an entry at byte %llu runs past the new image's %llu bytes",
				       (unsigned long long)done, (unsigned long long)d.new_size);
			goto out;
		}
		if (add > d.base_size - pos) {
			e = ferry_fail(st, FERRY_E_MALFORMED, "an entry reads past the end of the base (offset %llu)",
				       (unsigned long long)pos);
			goto out;
		}
		for (uint64_t k = 0; k < add;) {
			size_t n = add - k < CHUNK ? (size_t)(add - k) : CHUNK;
			if ((e = lz_read(&z[1], diff, n, st)) || (e = read_all(base_fd, base, n, pos + k, "the base", st)))
				goto out;
			for (size_t i = 0; i < n; i++)
				diff[i] = (unsigned char)(diff[i] + base[i]);
			if ((e = sink(ctx, diff, n, st)))
				goto out;
			k += n;
		}
		for (uint64_t k = 0; k < copy;) {
			size_t n = copy - k < CHUNK ? (size_t)(copy - k) : CHUNK;
			if ((e = lz_read(&z[2], diff, n, st)) || (e = sink(ctx, diff, n, st)))
				goto out;
			k += n;
		}
		done += add + copy;
		pos += add;
		/* the next entry starts within the base or at its end */
		if (back ? by > pos : by > d.base_size - pos) {
			e = ferry_fail(st, FERRY_E_MALFORMED, "an entry moves outside the base (offset %llu, %s %llu)",
				       (unsigned long long)pos, back ? "back" : "on", (unsigned long long)by);
			goto out;
		}
		pos = back ? pos - by : pos + by;
	}
	for (int i = 0; i < 3; i++)
		if ((e = lz_done(&z[i], st)))
			goto out;
	e = FERRY_OK;
out:
	for (int i = 0; z && i < 3; i++)
		lzma_end(&z[i].s);
	free(z);
	free(diff);
	free(base);
	return e;
}
