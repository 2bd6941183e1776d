/* Bases for delta images (docs/delta.md), and rebuilding an image from one.
 *
 * A delta applies to one exact image.  The gateway holds it for a component
 * when
 *   - the component is one of the gateway's own files (adapter `self`) and
 *     the file installed at its path has the base's SHA-256; or
 *   - ferryd installed the base on a device the component goes to, the
 *     store still has it (it keeps every image a device was last given),
 *     and that device reports the version it was installed as and, for an
 *     MCUboot device that names the image it runs (image0_hash), the hash
 *     TLV of the kept image: it still runs it.
 * The rebuilt image goes into the store only when its size and SHA-256 are
 * the manifest's; the base is hashed again as the patch is applied, so a
 * base that changed since it was chosen fails the rebuild, never the
 * install. */
#include "bases.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter_host.h"
#include "engine_int.h"
#include "ferry/delta.h"
#include "ferry/enc.h"
#include "log.h"
#include "mcuboot.h"

static bool sha_of_fd(int fd, uint8_t out[32])
{
	unsigned char buf[65536];
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL);
	ssize_t r;

	while (ok && (r = read(fd, buf, sizeof(buf))) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		ok = r > 0 && EVP_DigestUpdate(c, buf, (size_t)r);
	}
	ok = ok && EVP_DigestFinal_ex(c, out, NULL);
	EVP_MD_CTX_free(c);
	return ok;
}

/* The path of the gateway file that is component `name` (self's config). */
static bool self_file(ferry_engine *e, const char *name, char path[FERRY_PATH_MAX], bool *follow)
{
	const json_t *files = json_object_get(json_object_get(e->cfg->adapters, "self"), "files"), *f;
	size_t i;

	json_array_foreach(files, i, f) {
		const char *n = json_string_value(json_object_get(f, "name"));
		const char *p = json_string_value(json_object_get(f, "path"));
		const json_t *fl = json_object_get(f, "follow_symlink");
		if (!n || !p || strcmp(n, name) || strlen(p) >= FERRY_PATH_MAX)
			continue;
		snprintf(path, FERRY_PATH_MAX, "%s", p);
		*follow = json_is_true(fl) || (json_is_string(fl) && !strcmp(json_string_value(fl), "true"));
		return true;
	}
	return false;
}

static bool installed_file_is(ferry_engine *e, const ferry_component *c, const uint8_t base[32],
			      char path[FERRY_PATH_MAX])
{
	bool follow = false;
	uint8_t sha[32];
	struct stat sb;

	if (strcmp(c->adapter, "self") || !self_file(e, c->name, path, &follow))
		return false;
	int fd = open(path, O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
	bool ok = fd >= 0 && !fstat(fd, &sb) && S_ISREG(sb.st_mode) && sha_of_fd(fd, sha) && !memcmp(sha, base, 32);
	if (fd >= 0)
		close(fd);
	return ok;
}

static const char *attribute(const ferry_device_v1 *d, const char *key)
{
	for (size_t i = 0; i < d->n_attributes && i < FERRY_ADAPTER_ATTRS_MAX; i++)
		if (!strcmp(d->attributes[i].key, key))
			return d->attributes[i].value;
	return NULL;
}

/* The MCUboot image hash (the SHA256 TLV, what `image state` reports) of the
 * image at path, in hex; false when it is not an MCUboot image. */
static bool mcuboot_hash_of(const char *path, char hex[65])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat sb;
	mcuboot_info info;
	const char *why;
	bool ok = false;

	if (fd < 0)
		return false;
	if (!fstat(fd, &sb) && S_ISREG(sb.st_mode) && sb.st_size > 0) {
		void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (m != MAP_FAILED) {
			ok = mcuboot_parse(m, (size_t)sb.st_size, &info, &why) == 0;
			munmap(m, (size_t)sb.st_size);
		}
	}
	close(fd);
	if (ok)
		ferry_hex32_fmt(info.hash, hex);
	return ok;
}

static bool kept_image_runs(ferry_engine *e, const ferry_component *c, const uint8_t base[32],
			    char path[FERRY_PATH_MAX])
{
	char tlv[65] = "";
	char hex[65];
	json_t *rows = NULL, *row;
	size_t i, n_devs = 0;
	bool runs = false;

	if (!ferry_store_has(e->store, base, path))
		return false;
	ferry_hex32_fmt(base, hex);
	if (ferry_journal_image_devices(e->journal, c->name, hex, &rows, NULL))
		return false;
	ferry_devinfo *devs = ferry_adapters_devices(e->adapters, &n_devs);
	json_array_foreach(rows, i, row) {
		const char *dev = json_string_value(json_array_get(row, 0));
		const char *ver = json_string_value(json_array_get(row, 1));
		for (size_t k = 0; devs && k < n_devs && !runs; k++) {
			const char *now;
			if (strcmp(devs[k].dev.id, dev) || strcmp(ferry_adapter_name(devs[k].ad), c->adapter))
				continue;
			now = ferry_device_version(&devs[k].dev, c->name);
			runs = now && ver && ver[0] && !strcmp(now, ver);
			/* an MCUboot device names the image it runs: two builds of
			 * one version are told apart by it */
			const char *h = attribute(&devs[k].dev, "image0_hash");
			if (runs && c->format == FERRY_FMT_MCUBOOT && h && (tlv[0] || mcuboot_hash_of(path, tlv)))
				runs = !strcmp(h, tlv);
		}
	}
	free(devs);
	json_decref(rows);
	return runs;
}

bool eng_delta_base(ferry_engine *e, const ferry_component *c, const uint8_t base[32], char path[FERRY_PATH_MAX])
{
	return installed_file_is(e, c, base, path) || kept_image_runs(e, c, base, path);
}

const ferry_delta *eng_delta_of(const ferry_component *c, const char *base_hex)
{
	for (size_t i = 0; i < c->n_deltas; i++) {
		char hex[65];
		ferry_hex32_fmt(c->deltas[i].base_sha256, hex);
		if (!strcmp(hex, base_hex))
			return &c->deltas[i];
	}
	return NULL;
}

typedef struct rebuild {
	int fd;
	EVP_MD_CTX *md;
	int64_t written, limit;
	eng_room_fn room; /* NULL: a full disk fails the rebuild */
	void *room_ctx;
} rebuild;

static ferry_err to_partial(void *ctx, const unsigned char *p, size_t n, ferry_status *st)
{
	rebuild *b = ctx;
	if ((int64_t)n > b->limit - b->written)
		return ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the rebuilt image grows past the manifest's %lld bytes",
				  (long long)b->limit);
	while (n) {
		ssize_t w = write(b->fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == ENOSPC || errno == EDQUOT) && b->room) {
			ferry_fail(st, FERRY_E_INSUFFICIENT_SPACE, "store: writing the image: %s", strerror(errno));
			if (b->room(b->room_ctx, st))
				continue; /* the same bytes again */
			return st->code;
		}
		if (w <= 0)
			return ferry_fail(st, errno == ENOSPC || errno == EDQUOT ? FERRY_E_INSUFFICIENT_SPACE : FERRY_E_INTERNAL,
					  "store: writing the rebuilt image: %s", strerror(w < 0 ? errno : EIO));
		EVP_DigestUpdate(b->md, p, (size_t)w);
		p += w;
		n -= (size_t)w;
		b->written += w;
	}
	return FERRY_OK;
}

/* Write what `make` produces into the store as c's image, checked against
 * c's size and SHA-256 as it streams, and commit it.  A partial file left
 * by a crash is started over: producing always begins at the first byte. */
typedef ferry_err (*producer)(void *pctx, rebuild *b, ferry_status *st);

static ferry_err store_produced(ferry_engine *e, const ferry_component *c, producer make, void *pctx,
				const char *what, eng_room_fn room, void *room_ctx, ferry_status *st)
{
	rebuild b = {.fd = -1, .md = EVP_MD_CTX_new(), .limit = c->size, .room = room, .room_ctx = room_ctx};
	uint8_t sha[32];
	ferry_err err;

	if (!b.md || !EVP_DigestInit_ex(b.md, EVP_sha256(), NULL)) {
		err = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if ((b.fd = ferry_store_partial_open(e->store, c->sha256, 0, st)) < 0) {
		err = st->code;
		goto out;
	}
	if (ftruncate(b.fd, 0) || lseek(b.fd, 0, SEEK_SET) != 0) {
		err = ferry_fail(st, FERRY_E_INTERNAL, "store: %s", strerror(errno));
		goto out;
	}
	if ((err = make(pctx, &b, st)))
		goto out;
	if (!EVP_DigestFinal_ex(b.md, sha, NULL)) {
		err = ferry_fail(st, FERRY_E_INTERNAL, "SHA-256 failed");
		goto out;
	}
	if (b.written != c->size) {
		err = ferry_fail(st, FERRY_E_SIZE_MISMATCH, "the %s image has %lld bytes; the manifest says %lld", what,
				 (long long)b.written, (long long)c->size);
		goto out;
	}
	if (memcmp(sha, c->sha256, 32)) {
		char got[65], want[65];
		ferry_hex32_fmt(sha, got);
		ferry_hex32_fmt(c->sha256, want);
		err = ferry_fail(st, FERRY_E_DIGEST_MISMATCH, "the %s image has SHA-256 %s, not %s", what, got, want);
		goto out;
	}
	close(b.fd);
	b.fd = -1;
	/* every byte went through the digest on its way to the file */
	err = ferry_store_commit(e->store, c->sha256, true, st);
out:
	if (b.fd >= 0)
		close(b.fd);
	if (err)
		ferry_store_remove_partial(e->store, c->sha256); /* no half-made image stays */
	EVP_MD_CTX_free(b.md);
	return err;
}

typedef struct patching {
	int base_fd, patch_fd;
	uint64_t size;
} patching;

static ferry_err apply_patch(void *pctx, rebuild *b, ferry_status *st)
{
	const patching *p = pctx;
	return ferry_delta_apply(p->base_fd, p->patch_fd, p->size, to_partial, b, st);
}

ferry_err eng_rebuild(ferry_engine *e, const ferry_component *c, const char *base_path, int patch_fd,
		      eng_room_fn room, void *room_ctx, ferry_status *st)
{
	bool follow = false;
	char own[FERRY_PATH_MAX];
	/* the gateway's own file may be a symlink only where its config says */
	if (!strcmp(c->adapter, "self") && self_file(e, c->name, own, &follow) && strcmp(own, base_path))
		follow = false;
	int bfd = open(base_path, O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
	if (bfd < 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", base_path, strerror(errno));
	patching p = {.base_fd = bfd, .patch_fd = patch_fd, .size = (uint64_t)c->size};
	ferry_err err = store_produced(e, c, apply_patch, &p, "rebuilt", room, room_ctx, st);
	close(bfd);
	return err;
}

typedef struct decrypting {
	int fd;
	const uint8_t *key;
	uint64_t size;
} decrypting;

static ferry_err decrypt(void *pctx, rebuild *b, ferry_status *st)
{
	const decrypting *d = pctx;
	return ferry_enc_decrypt(d->fd, d->key, d->size, to_partial, b, st);
}

ferry_err eng_decrypt(ferry_engine *e, const ferry_component *c, int cipher_fd, const uint8_t key[32],
		      eng_room_fn room, void *room_ctx, ferry_status *st)
{
	if (lseek(cipher_fd, 0, SEEK_SET) != 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "store: %s", strerror(errno));
	decrypting d = {.fd = cipher_fd, .key = key, .size = (uint64_t)c->size};
	return store_produced(e, c, decrypt, &d, "decrypted", room, room_ctx, st);
}
