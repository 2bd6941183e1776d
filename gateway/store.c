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

struct ferry_store {
	char dir[FERRY_PATH_MAX - 200];
	int64_t cap;
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
	*out = s;
	return FERRY_OK;
}

void ferry_store_close(ferry_store *s)
{
	free(s);
}

bool ferry_store_has(ferry_store *s, const uint8_t sha256[32], char path[FERRY_PATH_MAX])
{
	char hex[65];
	ferry_hex32_fmt(sha256, hex);
	snprintf(path, FERRY_PATH_MAX, "%s/%s", s->dir, hex);
	return access(path, F_OK) == 0;
}

void ferry_store_partial(ferry_store *s, const uint8_t sha256[32], char path[FERRY_PATH_MAX])
{
	char hex[65];
	ferry_hex32_fmt(sha256, hex);
	snprintf(path, FERRY_PATH_MAX, "%s/partial/%s", s->dir, hex);
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

static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	int rc;
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

ferry_err ferry_store_commit(ferry_store *s, const uint8_t sha256[32], ferry_status *st)
{
	char part[FERRY_PATH_MAX], done[FERRY_PATH_MAX];

	ferry_store_partial(s, sha256, part);
	ferry_store_has(s, sha256, done);
	if (chmod(part, 0444) || fsync_path(part, O_RDONLY) || rename(part, done) ||
	    fsync_path(s->dir, O_RDONLY | O_DIRECTORY))
		return ferry_fail(st, FERRY_E_INTERNAL, "store: cannot commit %s: %s", done, strerror(errno));
	return FERRY_OK;
}

void ferry_store_remove(ferry_store *s, const uint8_t sha256[32])
{
	char p[FERRY_PATH_MAX];

	if (ferry_store_has(s, sha256, p))
		unlink(p);
	ferry_store_partial(s, sha256, p);
	unlink(p);
}
