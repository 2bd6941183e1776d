/* Encrypted images, "ferry-enc-1" (docs/encryption.md): one libsodium
 * secretstream (XChaCha20-Poly1305) over the image, cut in chunks.
 *
 *   offset  size  field
 *        0     4  magic "FEN1"
 *        4     4  chunk size, little-endian: 65536 in this format
 *        8    24  the secretstream header
 *       32        the chunks: each is one secretstream message of up to
 *                 65536 plaintext bytes plus 17 bytes (tag and MAC), with
 *                 the first 8 bytes above as additional data
 *
 * Every chunk but the last holds exactly 65536 plaintext bytes and the
 * MESSAGE tag; the last holds 0..65536 bytes and the FINAL tag, and the
 * file ends right after it.  The stream's nonce moves with every chunk, so
 * a chunk dropped, repeated or moved fails its MAC; a file cut at a chunk
 * boundary lacks the FINAL tag; bytes after it are refused. */
#ifndef FERRY_ENC_H
#define FERRY_ENC_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/delta.h"
#include "ferry/err.h"

#define FERRY_ENC_FORMAT "ferry-enc-1"
#define FERRY_ENC_CHUNK 65536
#define FERRY_ENC_HEADER 32
#define FERRY_ENC_ABYTES 17
#define FERRY_ENC_KEY 32

/* The size of the encrypted file of a plain image of `plain` bytes. */
int64_t ferry_enc_size(int64_t plain);

/* A fresh random content key. */
bool ferry_enc_keygen(uint8_t key[FERRY_ENC_KEY]);

/* Encrypt everything in in_fd to out_fd (from where each stands). */
ferry_err ferry_enc_encrypt(int in_fd, int out_fd, const uint8_t key[FERRY_ENC_KEY], ferry_status *st) FERRY_WUR;

/* Decrypt the file in in_fd (read from where it stands to its end) and hand
 * the plaintext to sink in pieces of at most one chunk.  More than
 * max_plain plaintext bytes is size_mismatch; a bad header, a chunk that
 * fails its MAC, a missing FINAL tag or bytes after it is decrypt_failed,
 * naming the chunk.  On an error, what the sink took is not the image. */
ferry_err ferry_enc_decrypt(int in_fd, const uint8_t key[FERRY_ENC_KEY], uint64_t max_plain, ferry_delta_sink sink,
			    void *ctx, ferry_status *st) FERRY_WUR;

#endif
