/* libFuzzer target over ferry-delta-1 patches: what a file host hands the
 * gateway in place of an image.  The base is fixed, and the input's header
 * gets that base's size and SHA-256 written in, so runs get past the base
 * check into the control entries and the streams.  Whatever the input, the
 * new image that comes out is never larger than the header says, and never
 * larger than allowed. */
#define _GNU_SOURCE
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/delta.h"

#define BASE 4096
#define MAX_NEW (1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t total;

static ferry_err sink(void *ctx, const unsigned char *p, size_t n, ferry_status *st)
{
	(void)ctx;
	(void)p;
	(void)st;
	total += n;
	if (total > MAX_NEW)
		abort(); /* more than the limit came out */
	return FERRY_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char base[BASE], md[32];
	static int ready;
	unsigned char *patch;
	ferry_status st = {0};

	if (!ready) {
		for (int i = 0; i < BASE; i++)
			base[i] = (unsigned char)(i * 7 + (i >> 5));
		EVP_Digest(base, BASE, md, NULL, EVP_sha256(), NULL);
		ready = 1;
	}
	if (size < FERRY_DELTA_HEADER || !(patch = malloc(size)))
		return 0;
	memcpy(patch, data, size);
	memcpy(patch + 4, md, 32);
	for (int i = 0; i < 8; i++)
		patch[36 + i] = (unsigned char)((uint64_t)BASE >> (8 * i));
	int bfd = memfd_create("base", MFD_CLOEXEC), pfd = memfd_create("patch", MFD_CLOEXEC);
	if (bfd >= 0 && pfd >= 0 && write(bfd, base, BASE) == BASE && write(pfd, patch, size) == (ssize_t)size) {
		total = 0;
		ferry_delta_info d;
		int ok = ferry_delta_parse_header(patch, size, &d, NULL) == FERRY_OK;
		if (ferry_delta_apply(bfd, pfd, MAX_NEW, sink, NULL, &st) == FERRY_OK && (!ok || total != d.new_size))
			abort(); /* a patch applied with another size than its header names */
	}
	if (bfd >= 0)
		close(bfd);
	if (pfd >= 0)
		close(pfd);
	free(patch);
	return 0;
}
