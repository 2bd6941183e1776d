/* The image store.  Complete images are named by their SHA-256 and enter the
 * store only by fsync + rename + fsync of the directory, so a name there
 * always means a whole, verified file; downloads in progress live apart in
 * partial/ where they can be resumed. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ferry/manifest.h"
#include "log.h"

/* An image this process hashed as it arrived and committed: the file it
 * became, so that the check can tell it is still that file. */
typedef struct streamed {
	uint8_t sha256[32];
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
} streamed;

#define STREAMED_MAX 64

struct ferry_store {
	char dir[FERRY_PATH_MAX - 200];
	int64_t cap;
	int dfd, pfd; /* DIR and DIR/partial */
	pthread_mutex_t lock; /* the streamed list: download threads commit at once */
	streamed seen[STREAMED_MAX];
	size_t n_seen;
};

static int mkdir_p(const char *path)
{
	char tmp[FERRY_PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0755) && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(tmp, 0700) && errno != EEXIST ? -1 : 0;
}

/* Up to n-1 bytes of a small file, without its last newline ("" if none). */
static void read_small(int dfd, const char *name, char *out, size_t n)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t k = fd >= 0 ? read(fd, out, n - 1) : -1;

	out[k > 0 ? k : 0] = '\0';
	if (k > 0 && out[k - 1] == '\n')
		out[k - 1] = '\0';
	if (fd >= 0)
		close(fd);
}

static bool is_hex64(const char *name)
{
	size_t i = 0;
	while (name[i] && i < 64 && ((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
		i++;
	return i == 64 && !name[i];
}

/* What a killed ferryd wrote to a partial file is whole when the next one
 * starts in the same boot: the page cache kept it.  After a reboot only the
 * prefix the journal knows to be durable can be trusted.  DIR/.boot holds
 * the boot the store was last opened in; in another boot every partial file
 * is first renamed NAME.earlier, and cut to its durable offset when it is
 * opened again (ferry_store_partial_open).  A power cut in between leaves
 * .boot as it was, and the next start does this again. */
static void age_partials(ferry_store *s)
{
	char now[64], was[64];
	int root = open("/proc/sys/kernel/random", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	now[0] = '\0';
	if (root >= 0) {
		read_small(root, "boot_id", now, sizeof(now));
		close(root);
	}
	read_small(s->dfd, ".boot", was, sizeof(was));
	if (now[0] && !strcmp(now, was))
		return;
	int pfd = dup(s->pfd);
	DIR *d = pfd >= 0 ? fdopendir(pfd) : NULL;
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char older[80];
		if (!is_hex64(e->d_name))
			continue;
		snprintf(older, sizeof(older), "%s.earlier", e->d_name);
		if (renameat(s->pfd, e->d_name, s->pfd, older))
			ferry_log(LOG_WARNING, "store: cannot set aside partial/%s: %s", e->d_name, strerror(errno));
	}
	if (d)
		closedir(d);
	else if (pfd >= 0)
		close(pfd);
	if (fsync(s->pfd) || !now[0])
		return;
	int fd = openat(s->dfd, ".boot.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && dprintf(fd, "%s\n", now) > 0 && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	if (!ok || renameat(s->dfd, ".boot.tmp", s->dfd, ".boot") || fsync(s->dfd))
		ferry_log(LOG_WARNING, "store: cannot record the boot in %s/.boot: %s", s->dir, strerror(errno));
}

ferry_err ferry_store_open(const char *dir, int64_t cap, ferry_store **out, ferry_status *st)
{
	char part[FERRY_PATH_MAX];
	ferry_store *s;

	if (strlen(dir) >= sizeof(s->dir))
		return ferry_fail(st, FERRY_E_MALFORMED, "store dir %s: path too long", dir);
	snprintf(part, sizeof(part), "%s/partial", dir);
	if (mkdir_p(dir) || mkdir_p(part))
		return ferry_fail(st, FERRY_E_INTERNAL, "store dir %s: %s", dir, strerror(errno));
	if (!(s = calloc(1, sizeof(*s))))
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->cap = cap;
	pthread_mutex_init(&s->lock, NULL);
	/* partial/ is ours: a symlink there is refused, not followed */
	if ((s->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (s->pfd = openat(s->dfd, "partial", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		int e = errno;
		if (s->dfd >= 0)
			close(s->dfd);
		free(s);
		return ferry_fail(st, FERRY_E_INTERNAL, "store dir %s%s: %s", dir,
				  e == ELOOP || e == ENOTDIR ? "/partial is not a directory" : "", strerror(e));
	}
	age_partials(s);
	*out = s;
	return FERRY_OK;
}

void ferry_store_close(ferry_store *s)
{
	if (!s)
		return;
	close(s->dfd);
	close(s->pfd);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* A plain file of ours: regular, one link. */
static bool plain(int dfd, const char *name, bool *exists)
{
	struct stat sb;
	*exists = fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0;
	return *exists && S_ISREG(sb.st_mode) && sb.st_nlink == 1;
}

bool ferry_store_has(ferry_store *s, const uint8_t sha256[32], char path[FERRY_PATH_MAX])
{
	char hex[65];
	bool exists;
	ferry_hex32_fmt(sha256, hex);
	snprintf(path, FERRY_PATH_MAX, "%s/%s", s->dir, hex);
	return plain(s->dfd, hex, &exists);
}

int ferry_store_partial_open(ferry_store *s, const uint8_t sha256[32], int64_t keep, ferry_status *st)
{
	char hex[65], older[80];
	bool exists;
	int fd = -1;

	ferry_hex32_fmt(sha256, hex);
	snprintf(older, sizeof(older), "%s.earlier", hex);
	if (plain(s->pfd, older, &exists)) {
		/* from an earlier boot: only its durable prefix is kept, cut
		 * before it takes the name a restart in this boot keeps whole */
		struct stat ob;
		int ofd = openat(s->pfd, older, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		bool ok = ofd >= 0 && !fstat(ofd, &ob) && (ob.st_size <= keep || !ftruncate(ofd, keep)) && !fsync(ofd);
		if (ofd >= 0)
			close(ofd);
		if (!ok || renameat(s->pfd, older, s->pfd, hex)) {
			ferry_fail(st, FERRY_E_INTERNAL, "store: partial file %s/partial/%s: %s", s->dir, older,
				   strerror(errno));
			return -1;
		}
		keep = INT64_MAX;
	} else {
		if (exists) {
			ferry_log(LOG_WARNING, "store: %s/partial/%s is not a plain file of ours; removed", s->dir, older);
			unlinkat(s->pfd, older, 0);
		}
		keep = INT64_MAX; /* written in this boot: whole */
	}
	if (plain(s->pfd, hex, &exists))
		fd = openat(s->pfd, hex, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	else if (exists) {
		ferry_log(LOG_WARNING, "store: %s/partial/%s is not a plain file of ours; replaced", s->dir, hex);
		if (unlinkat(s->pfd, hex, 0) && errno != ENOENT) {
			ferry_fail(st, FERRY_E_INTERNAL, "store: cannot remove %s/partial/%s: %s", s->dir, hex,
				   strerror(errno));
			return -1;
		}
	}
	if (fd < 0) {
		keep = 0;
		fd = openat(s->pfd, hex, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		ferry_fail(st, FERRY_E_INTERNAL, "store: partial file %s/partial/%s: %s", s->dir, hex, strerror(errno));
		return -1;
	}
	/* bytes past the last durable offset may be garbage after a power cut
	 * (a file of an earlier boot); a file shorter than that is never
	 * lengthened with zeros */
	struct stat sb;
	if (fstat(fd, &sb) || (sb.st_size > keep && ftruncate(fd, keep))) {
		ferry_fail(st, FERRY_E_INTERNAL, "store: partial file %s/partial/%s: %s", s->dir, hex, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int64_t dir_bytes(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int64_t sum = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char p[FERRY_PATH_MAX];
		struct stat sb;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		if (e->d_name[0] != '.' && stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
			sum += (int64_t)sb.st_size;
	}
	closedir(d);
	return sum;
}

int64_t ferry_store_free(ferry_store *s)
{
	struct statvfs vfs;
	char part[FERRY_PATH_MAX];
	int64_t fs = 0;

	if (statvfs(s->dir, &vfs) == 0)
		fs = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
	if (s->cap > 0) {
		snprintf(part, sizeof(part), "%s/partial", s->dir);
		int64_t left = s->cap - dir_bytes(s->dir) - dir_bytes(part);
		if (left < fs)
			fs = left > 0 ? left : 0;
	}
	return fs;
}

ferry_err ferry_store_commit(ferry_store *s, const uint8_t sha256[32], bool streamed_ok, ferry_status *st)
{
	char hex[65];
	int fd, ok;

	ferry_hex32_fmt(sha256, hex);
	if ((fd = openat(s->pfd, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "store: cannot commit %s: %s", hex, strerror(errno));
	ok = fchmod(fd, 0444) == 0 && fsync(fd) == 0;
	if (!ok || renameat(s->pfd, hex, s->dfd, hex) || fsync(s->dfd)) {
		close(fd);
		return ferry_fail(st, FERRY_E_INTERNAL, "store: cannot commit %s/%s: %s", s->dir, hex, strerror(errno));
	}
	if (streamed_ok) {
		struct stat sb;
		if (!fstat(fd, &sb)) {
			pthread_mutex_lock(&s->lock);
			if (s->n_seen == STREAMED_MAX) /* forget the oldest: it is hashed again if checked */
				memmove(s->seen, s->seen + 1, sizeof(s->seen[0]) * --s->n_seen);
			streamed *v = &s->seen[s->n_seen++];
			memcpy(v->sha256, sha256, 32);
			v->dev = sb.st_dev;
			v->ino = sb.st_ino;
			v->size = sb.st_size;
			v->mtime = sb.st_mtim;
			pthread_mutex_unlock(&s->lock);
		}
	}
	close(fd);
	return FERRY_OK;
}

bool ferry_store_streamed(ferry_store *s, const uint8_t sha256[32], int64_t *size)
{
	char hex[65];
	struct stat sb;
	bool found = false;

	ferry_hex32_fmt(sha256, hex);
	if (fstatat(s->dfd, hex, &sb, AT_SYMLINK_NOFOLLOW) || !S_ISREG(sb.st_mode))
		return false;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n_seen && !found; i++) {
		const streamed *v = &s->seen[i];
		found = !memcmp(v->sha256, sha256, 32) && v->dev == sb.st_dev && v->ino == sb.st_ino &&
			v->size == sb.st_size && v->mtime.tv_sec == sb.st_mtim.tv_sec &&
			v->mtime.tv_nsec == sb.st_mtim.tv_nsec;
	}
	pthread_mutex_unlock(&s->lock);
	if (found)
		*size = sb.st_size;
	return found;
}

void ferry_store_remove(ferry_store *s, const uint8_t sha256[32])
{
	char hex[65];

	ferry_hex32_fmt(sha256, hex);
	unlinkat(s->dfd, hex, 0);
	ferry_store_remove_partial(s, sha256);
}

void ferry_store_remove_partial(ferry_store *s, const uint8_t sha256[32])
{
	char hex[65];

	ferry_hex32_fmt(sha256, hex);
	unlinkat(s->pfd, hex, 0);
	char older[80];
	snprintf(older, sizeof(older), "%s.earlier", hex);
	unlinkat(s->pfd, older, 0);
}
