/* ferry's delta format, "ferry-delta-1" (docs/delta.md): a patch that turns
 * one base image into one new image.  The matcher is bsdiff's idea (copy
 * runs from the base with small differences, plus literal bytes); the three
 * streams it yields are each one raw LZMA2 stream.
 *
 *   offset  size  field (integers little-endian)
 *        0     4  magic "FDL1"
 *        4    32  SHA-256 of the base
 *       36     8  base size
 *       44     8  new size
 *       52    12  LZMA2 dictionary size of the control, diff and extra
 *                 streams (4 bytes each)
 *       64    24  compressed length of each stream (8 bytes each)
 *       88        the control, diff and extra streams, in that order; the
 *                 patch ends where the extra stream ends
 *
 * The control stream is a list of entries, three LEB128 numbers each: ADD,
 * COPY and SEEK (zigzag-encoded, signed).  Each entry adds ADD bytes of the
 * diff stream to ADD bytes of the base at the base offset (mod 256), then
 * takes COPY bytes of the extra stream as they are, then moves the base
 * offset by ADD + SEEK.  The new image is done when NEW SIZE bytes are out;
 * every stream must end exactly there.
 *
 * Applying reads the base and the patch through file descriptors and hands
 * the new image to a sink in pieces: memory is three LZMA2 dictionaries,
 * each at most the new size rounded up to a power of two (and never over
 * FERRY_DELTA_DICT_MAX), plus fixed buffers.  A patch that asks for more, or
 * for a new image larger than the caller allows, is refused before anything
 * is decoded. */
#ifndef FERRY_DELTA_H
#define FERRY_DELTA_H

#include <stddef.h>
#include <stdint.h>

#include "ferry/err.h"

#define FERRY_DELTA_FORMAT "ferry-delta-1"
#define FERRY_DELTA_HEADER 88
#define FERRY_DELTA_DICT_MIN 4096u
#define FERRY_DELTA_DICT_MAX (64u * 1024 * 1024)

typedef struct ferry_delta_info {
	unsigned char base_sha256[32];
	uint64_t base_size, new_size;
	uint32_t dict[3];
	uint64_t len[3]; /* compressed control, diff and extra */
} ferry_delta_info;

/* The dictionary a stream of an image of new_size bytes may use: the power
 * of two at or above it, within FERRY_DELTA_DICT_MIN..MAX. */
uint32_t ferry_delta_dict_for(uint64_t new_size);

/* Parse and check a header: magic, sizes, dictionaries within what
 * new_size allows, and patch_size equal to the header plus the streams. */
ferry_err ferry_delta_parse_header(const unsigned char *hdr, uint64_t patch_size, ferry_delta_info *out,
				   ferry_status *st) FERRY_WUR;

/* Where the new image goes, piece by piece. */
typedef ferry_err (*ferry_delta_sink)(void *ctx, const unsigned char *p, size_t n, ferry_status *st);

/* Apply the patch in patch_fd to the base in base_fd.  The base must have
 * the size and SHA-256 the patch names (size_mismatch, digest_mismatch);
 * the new image may be at most max_new bytes (size_mismatch).  Any fault in
 * the patch is malformed, with what was wrong.  On an error, what the sink
 * took is not the new image. */
ferry_err ferry_delta_apply(int base_fd, int patch_fd, uint64_t max_new, ferry_delta_sink sink, void *ctx,
			    ferry_status *st) FERRY_WUR;

#endif
