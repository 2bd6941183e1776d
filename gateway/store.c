/* The image store.  Complete images are named by their SHA-256 and enter the
 * store only by fsync + rename + fsync of the directory, so a name there
 * always means a whole, verified file; downloads in progress live apart in
 * partial/ where they can be resumed. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ferry/manifest.h"
#include "log.h"

struct ferry_store {
	char dir[FERRY_PATH_MAX - 200];
	int64_t cap;
	int dfd, pfd; /* DIR and DIR/partial */
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
	*out = s;
	return FERRY_OK;
}

void ferry_store_close(ferry_store *s)
{
	if (!s)
		return;
	close(s->dfd);
	close(s->pfd);
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
	char hex[65];
	bool exists;
	int fd = -1;

	ferry_hex32_fmt(sha256, hex);
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
	/* bytes past the last durable offset may be garbage after a power cut;
	 * a file shorter than that is never lengthened with zeros */
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

ferry_err ferry_store_commit(ferry_store *s, const uint8_t sha256[32], ferry_status *st)
{
	char hex[65];
	int fd, ok;

	ferry_hex32_fmt(sha256, hex);
	if ((fd = openat(s->pfd, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "store: cannot commit %s: %s", hex, strerror(errno));
	ok = fchmod(fd, 0444) == 0 && fsync(fd) == 0;
	close(fd);
	if (!ok || renameat(s->pfd, hex, s->dfd, hex) || fsync(s->dfd))
		return ferry_fail(st, FERRY_E_INTERNAL, "store: cannot commit %s/%s: %s", s->dir, hex, strerror(errno));
	return FERRY_OK;
}

void ferry_store_remove(ferry_store *s, const uint8_t sha256[32])
{
	char hex[65];

	ferry_hex32_fmt(sha256, hex);
	unlinkat(s->dfd, hex, 0);
	unlinkat(s->pfd, hex, 0);
}
