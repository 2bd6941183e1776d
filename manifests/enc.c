/* ferry-enc-1: chunked, authenticated image encryption on libsodium's
 * secretstream.  The format is described in ferry/enc.h; this file only
 * frames the stream and says precisely what was wrong with a bad one.
 *
 * libsodium is loaded with the first image encrypted or decrypted (and
 * then stays): a gateway that never gets an encrypted image never maps it. */
#include "ferry/enc.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ferry/lazylib.h"

#define LIBSODIUM_SONAME "libsodium.so.23"

#define SS_HEADER crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define SS_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define SS_TAG_MESSAGE crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
#define SS_TAG_FINAL crypto_secretstream_xchacha20poly1305_TAG_FINAL

_Static_assert(SS_HEADER + 8 == FERRY_ENC_HEADER, "the header layout of ferry-enc-1");
_Static_assert(SS_ABYTES == FERRY_ENC_ABYTES, "the chunk overhead of ferry-enc-1");
_Static_assert(crypto_secretstream_xchacha20poly1305_KEYBYTES == FERRY_ENC_KEY, "the key size of ferry-enc-1");

static const unsigned char magic[4] = {'F', 'E', 'N', '1'};

static struct {
	__typeof__(sodium_init) *init;
	__typeof__(crypto_secretstream_xchacha20poly1305_keygen) *keygen;
	__typeof__(crypto_secretstream_xchacha20poly1305_init_push) *init_push;
	__typeof__(crypto_secretstream_xchacha20poly1305_push) *push;
	__typeof__(crypto_secretstream_xchacha20poly1305_init_pull) *init_pull;
	__typeof__(crypto_secretstream_xchacha20poly1305_pull) *pull;
	bool ok;
	char why[200];
} na;
static pthread_once_t na_once = PTHREAD_ONCE_INIT;

static void na_load(void)
{
	const ferry_lazy_sym syms[] = {
		{"sodium_init", (void **)&na.init},
		{"crypto_secretstream_xchacha20poly1305_keygen", (void **)&na.keygen},
		{"crypto_secretstream_xchacha20poly1305_init_push", (void **)&na.init_push},
		{"crypto_secretstream_xchacha20poly1305_push", (void **)&na.push},
		{"crypto_secretstream_xchacha20poly1305_init_pull", (void **)&na.init_pull},
		{"crypto_secretstream_xchacha20poly1305_pull", (void **)&na.pull},
	};
	if (!ferry_lazy_open(LIBSODIUM_SONAME, syms, sizeof(syms) / sizeof(syms[0]), na.why, sizeof(na.why)))
		return;
	if (na.init() < 0) {
		snprintf(na.why, sizeof(na.why), "libsodium failed to initialise");
		return;
	}
	na.ok = true;
}

/* libsodium, loaded and initialised; false with the reason in st if not */
static bool sodium_ready(ferry_status *st)
{
	pthread_once(&na_once, na_load);
	if (!na.ok && st)
		ferry_fail(st, FERRY_E_INTERNAL, "%s", na.why);
	return na.ok;
}

int64_t ferry_enc_size(int64_t plain)
{
	int64_t chunks = plain ? (plain + FERRY_ENC_CHUNK - 1) / FERRY_ENC_CHUNK : 1;
	return FERRY_ENC_HEADER + plain + chunks * FERRY_ENC_ABYTES;
}

bool ferry_enc_keygen(uint8_t key[FERRY_ENC_KEY])
{
	if (!sodium_ready(NULL))
		return false;
	na.keygen(key);
	return true;
}

/* Read up to n bytes (short only at the end of the file). */
static ssize_t read_full(int fd, unsigned char *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, p + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static bool write_full(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

ferry_err ferry_enc_encrypt(int in_fd, int out_fd, const uint8_t key[FERRY_ENC_KEY], ferry_status *st)
{
	crypto_secretstream_xchacha20poly1305_state s;
	unsigned char hdr[FERRY_ENC_HEADER];
	unsigned char *in = malloc(FERRY_ENC_CHUNK), *out = malloc(FERRY_ENC_CHUNK + SS_ABYTES);
	ferry_err e = FERRY_OK;
	ssize_t n;

	if (!in || !out) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if (!sodium_ready(st)) {
		e = st->code;
		goto out;
	}
	memcpy(hdr, magic, 4);
	put_le32(hdr + 4, FERRY_ENC_CHUNK);
	na.init_push(&s, hdr + 8, key);
	if (!write_full(out_fd, hdr, sizeof(hdr))) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "writing the encrypted image: %s", strerror(errno));
		goto out;
	}
	/* read one chunk ahead, so the last one is known when it is sealed */
	if ((n = read_full(in_fd, in, FERRY_ENC_CHUNK)) < 0) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "reading the image: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		unsigned char next;
		ssize_t more = n == FERRY_ENC_CHUNK ? read_full(in_fd, &next, 1) : 0;
		unsigned long long clen;
		if (more < 0) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "reading the image: %s", strerror(errno));
			goto out;
		}
		na.push(&s, out, &clen, in, (unsigned long long)n, hdr, 8,
							   more ? SS_TAG_MESSAGE : SS_TAG_FINAL);
		if (!write_full(out_fd, out, (size_t)clen)) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "writing the encrypted image: %s", strerror(errno));
			goto out;
		}
		if (!more)
			break;
		in[0] = next;
		if ((n = read_full(in_fd, in + 1, FERRY_ENC_CHUNK - 1)) < 0) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "reading the image: %s", strerror(errno));
			goto out;
		}
		n++;
	}
out:
	explicit_bzero(&s, sizeof(s));
	if (in)
		explicit_bzero(in, FERRY_ENC_CHUNK);
	free(in);
	free(out);
	return e;
}

ferry_err ferry_enc_decrypt(int in_fd, const uint8_t key[FERRY_ENC_KEY], uint64_t max_plain, ferry_delta_sink sink,
			    void *ctx, ferry_status *st)
{
	crypto_secretstream_xchacha20poly1305_state s;
	unsigned char hdr[FERRY_ENC_HEADER];
	unsigned char *in = malloc(FERRY_ENC_CHUNK + SS_ABYTES), *out = malloc(FERRY_ENC_CHUNK);
	uint64_t total = 0;
	ferry_err e = FERRY_OK;
	ssize_t n;

	if (!in || !out) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if (!sodium_ready(st)) {
		e = st->code;
		goto out;
	}
	if ((n = read_full(in_fd, hdr, sizeof(hdr))) != (ssize_t)sizeof(hdr)) {
		e = n < 0 ? ferry_fail(st, FERRY_E_INTERNAL, "reading the encrypted image: %s", strerror(errno))
			  : ferry_fail(st, FERRY_E_DECRYPT_FAILED, "the encrypted image is shorter than its header");
		goto out;
	}
	if (memcmp(hdr, magic, 4)) {
		e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "not a ferry-enc-1 image (no FEN1 magic)");
		goto out;
	}
	uint32_t chunk_size = hdr[4] | hdr[5] << 8 | hdr[6] << 16 | (uint32_t)hdr[7] << 24;
	if (chunk_size != FERRY_ENC_CHUNK) {
		e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "chunk size %u; ferry-enc-1 uses %u", chunk_size,
			       FERRY_ENC_CHUNK);
		goto out;
	}
	if (na.init_pull(&s, hdr + 8, key)) {
		e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "the stream header is invalid");
		goto out;
	}
	for (uint64_t chunk = 0;; chunk++) {
		unsigned long long mlen;
		unsigned char tag;
		if ((n = read_full(in_fd, in, FERRY_ENC_CHUNK + SS_ABYTES)) < 0) {
			e = ferry_fail(st, FERRY_E_INTERNAL, "reading the encrypted image: %s", strerror(errno));
			goto out;
		}
		if (n == 0) {
			e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "truncated: the stream ends after chunk %llu without "
				       "its final chunk", (unsigned long long)chunk);
			goto out;
		}
		if (n < (ssize_t)SS_ABYTES ||
		    na.pull(&s, out, &mlen, &tag, in, (unsigned long long)n, hdr, 8)) {
			e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "chunk %llu fails authentication (tampered, reordered, "
				       "cut, or another key)", (unsigned long long)chunk);
			goto out;
		}
		if (tag != SS_TAG_FINAL && tag != SS_TAG_MESSAGE) {
			e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "chunk %llu has tag %u", (unsigned long long)chunk, tag);
			goto out;
		}
		if (tag == SS_TAG_MESSAGE && mlen != FERRY_ENC_CHUNK) {
			e = ferry_fail(st, FERRY_E_DECRYPT_FAILED, "truncated: chunk %llu is short and not final",
				       (unsigned long long)chunk);
			goto out;
		}
		if (mlen > max_plain - total) {
			e = ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the decrypted image grows past %llu bytes",
				       (unsigned long long)max_plain);
			goto out;
		}
		total += mlen;
		if (mlen && (e = sink(ctx, out, (size_t)mlen, st)))
			goto out;
		if (tag == SS_TAG_FINAL)
			break;
	}
	if ((n = read_full(in_fd, in, 1)) != 0)
		e = n < 0 ? ferry_fail(st, FERRY_E_INTERNAL, "reading the encrypted image: %s", strerror(errno))
			  : ferry_fail(st, FERRY_E_DECRYPT_FAILED, "bytes follow the final chunk");
out:
	explicit_bzero(&s, sizeof(s));
	if (out)
		explicit_bzero(out, FERRY_ENC_CHUNK);
	free(in);
	free(out);
	return e;
}
