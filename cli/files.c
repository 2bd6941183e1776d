/* File helpers for the operator's tool.  Output files are written whole or
 * not at all, so an interrupted `ferry manifest sign` never leaves half a
 * manifest where a good one stood. */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

ferry_err ferry_read_file(const char *path, size_t max, char **out, size_t *len, ferry_status *st)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	char *buf;
	size_t n;

	if (!f)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(errno));
	buf = malloc(max + 1);
	if (!buf) {
		if (f != stdin)
			fclose(f);
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f) || n > max) {
		bool err = ferror(f);
		if (f != stdin)
			fclose(f);
		free(buf);
		return err ? ferry_fail(st, FERRY_E_MALFORMED, "%s: read error", path)
			   : ferry_fail(st, FERRY_E_MALFORMED, "%s: larger than %zu bytes", path, max);
	}
	if (f != stdin)
		fclose(f);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return FERRY_OK;
}

static ferry_err write_mode(const char *path, const void *buf, size_t len, mode_t mode, ferry_status *st)
{
	char tmp[4096];
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >= (int)sizeof(tmp))
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: path too long", path);
	fd = mkstemp(tmp);
	if (fd < 0)
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: cannot create a temporary file: %s", path, strerror(errno));
	if (write(fd, buf, len) != (ssize_t)len || fchmod(fd, mode) || fsync(fd)) {
		int err = errno;
		close(fd);
		unlink(tmp);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(err));
	}
	close(fd);
	if (rename(tmp, path)) {
		int err = errno;
		unlink(tmp);
		return ferry_fail(st, FERRY_E_MALFORMED, "%s: %s", path, strerror(err));
	}
	return FERRY_OK;
}

ferry_err ferry_write_file(const char *path, const void *buf, size_t len, ferry_status *st)
{
	return write_mode(path, buf, len, 0644, st);
}

ferry_err ferry_write_secret(const char *path, const void *buf, size_t len, ferry_status *st)
{
	return write_mode(path, buf, len, 0600, st);
}

size_t ferry_trim_len(const char *s, size_t len)
{
	while (len && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	return len;
}
