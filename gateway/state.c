/* The state dir and the journal's identity (see state.h). */
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ferry/manifest.h"

#define ID_FILE "journal.id"
#define FERRY_STATE_PATH_MAX 1100

static int mkdir_p(const char *path, mode_t last)
{
	char tmp[FERRY_STATE_PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0755) && errno != EEXIST)
				return -1;
			*p = '/';
		}
	return mkdir(tmp, last) && errno != EEXIST ? -1 : 0;
}

/* The identity state_dir/journal.id names: 1 and id, 0 when there is no
 * such file, -1 when it cannot be read. */
static int read_marker(const char *dir, char id[65])
{
	int dfd, fd, e;
	ssize_t n;

	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -1;
	fd = openat(dfd, ID_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	e = errno;
	close(dfd);
	if (fd < 0)
		return e == ENOENT ? 0 : -1;
	n = read(fd, id, 64);
	close(fd);
	if (n <= 0)
		return -1;
	id[n] = '\0';
	id[strcspn(id, "\r\n")] = '\0';
	return 1;
}

/* Written fresh beside it (through the directory's fd, never through a
 * symlink), then renamed over it. */
static int write_marker(const char *dir, const char *id)
{
	static const char tmp[] = "." ID_FILE ".tmp";
	int dfd, fd, ok;

	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -1;
	unlinkat(dfd, tmp, 0);
	if ((fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		close(dfd);
		return -1;
	}
	ok = dprintf(fd, "%s\n", id) > 0 && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || renameat(dfd, tmp, dfd, ID_FILE)) {
		unlinkat(dfd, tmp, 0);
		close(dfd);
		return -1;
	}
	fsync(dfd);
	close(dfd);
	return 0;
}

static ferry_err new_identity(char id[65], ferry_status *st)
{
	uint8_t r[32];
	if (RAND_bytes(r, sizeof(r)) != 1)
		return ferry_fail(st, FERRY_E_INTERNAL, "no randomness for the journal's identity");
	ferry_hex32_fmt(r, id);
	return FERRY_OK;
}

ferry_err ferry_state_open(const char *dir, ferry_journal **out, ferry_status *st)
{
	char db[FERRY_STATE_PATH_MAX + 16], marker[65] = "", jid[65] = "";
	struct stat sb;
	int have_marker;
	bool empty;
	ferry_journal *j = NULL;
	ferry_err err;

	*out = NULL;
	if (strlen(dir) >= FERRY_STATE_PATH_MAX - 32)
		return ferry_fail(st, FERRY_E_MALFORMED, "state_dir %s: path too long", dir);
	if (mkdir_p(dir, 0700))
		return ferry_fail(st, FERRY_E_INTERNAL, "state_dir %s: %s", dir, strerror(errno));
	snprintf(db, sizeof(db), "%s/journal.db", dir);
	empty = stat(db, &sb) != 0 || sb.st_size == 0;
	if ((have_marker = read_marker(dir, marker)) < 0)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s/" ID_FILE ": cannot be read", dir);
	if (empty && have_marker)
		return ferry_fail(st, FERRY_E_INTERNAL,
				  "%s is %s, but this state dir was used before (%s/" ID_FILE " names journal %.12s): "
				  "refusing to start as a new gateway, which would forget the last manifest sequence, the "
				  "installed versions and the commands seen; restore the journal, or run ferryd "
				  "--reset-journal to start over knowing what is lost",
				  db, stat(db, &sb) ? "missing" : "empty", dir, marker);
	if ((err = ferry_journal_open(db, &j, st)) || (err = ferry_journal_identity(j, jid, st)))
		goto fail;
	if (!jid[0]) {
		/* a new journal, or one from before journals had an identity */
		if ((err = new_identity(jid, st)) || (err = ferry_journal_set_identity(j, jid, st)))
			goto fail;
	}
	if (have_marker && strcmp(marker, jid)) {
		err = ferry_fail(st, FERRY_E_INTERNAL,
				 "%s is journal %.12s, but this state dir holds journal %.12s: it was replaced; refusing to "
				 "start; put the right journal back, or run ferryd --reset-journal to start over knowing "
				 "what is lost",
				 db, jid, marker);
		goto fail;
	}
	if (!have_marker && write_marker(dir, jid)) {
		err = ferry_fail(st, FERRY_E_INTERNAL, "%s/" ID_FILE ": %s", dir, strerror(errno));
		goto fail;
	}
	*out = j;
	return FERRY_OK;
fail:
	ferry_journal_close(j);
	return err;
}

ferry_err ferry_state_reset(const char *dir, FILE *say, ferry_status *st)
{
	static const char *const suffixes[] = {"", "-wal", "-shm"};
	char db[FERRY_STATE_PATH_MAX + 16], from[FERRY_STATE_PATH_MAX + 32], to[FERRY_STATE_PATH_MAX + 64];
	ferry_journal *j = NULL;
	ferry_status why = {0};
	json_t *sum = NULL;
	long long now = (long long)time(NULL);

	struct stat sb;

	snprintf(db, sizeof(db), "%s/journal.db", dir);
	if (stat(db, &sb) || sb.st_size == 0)
		ferry_fail(&why, FERRY_E_INTERNAL, "it is %s", stat(db, &sb) ? "missing" : "empty");
	else if (ferry_journal_open(db, &j, &why) == FERRY_OK && ferry_journal_summary(j, &sum, &why) == FERRY_OK) {
		fprintf(say,
			"ferryd: resetting the journal %s.  Lost with it:\n"
			"  the last manifest sequence accepted, %lld: any manifest of a higher sequence is taken again,\n"
			"    so an old one signed with a higher number than the next new one could roll devices back\n"
			"  %lld unfinished updates: they end without a report\n"
			"  %lld installed versions: devices that cannot tell their version lose their anti-rollback floor\n"
			"  %lld command ids: commands not yet expired could be replayed\n"
			"  %lld reports the cloud has not acknowledged\n",
			db, (long long)json_integer_value(json_object_get(sum, "last_sequence")),
			(long long)json_integer_value(json_object_get(sum, "unfinished_updates")),
			(long long)json_integer_value(json_object_get(sum, "installed_versions")),
			(long long)json_integer_value(json_object_get(sum, "command_ids")),
			(long long)json_integer_value(json_object_get(sum, "unsent_reports")));
	}
	if (!sum)
		fprintf(say, "ferryd: resetting the journal %s, which cannot be read (%s): everything it held is lost\n",
			db, why.detail[0] ? why.detail : "no detail");
	json_decref(sum);
	ferry_journal_close(j);
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(from, sizeof(from), "%s%s", db, suffixes[i]);
		snprintf(to, sizeof(to), "%s.reset-%lld%s", db, now, suffixes[i]);
		if (rename(from, to) && errno != ENOENT)
			return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", from, strerror(errno));
		if (!i)
			fprintf(say, "ferryd: the old journal is kept as %s\n", to);
	}
	snprintf(from, sizeof(from), "%s/" ID_FILE, dir);
	if (unlink(from) && errno != ENOENT)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", from, strerror(errno));
	fprintf(say, "ferryd: the next start begins a new journal\n");
	return FERRY_OK;
}
