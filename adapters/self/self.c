/* The `self` adapter: configuration and application files of the gateway
 * itself, format `file`.
 *
 * How an install goes, and why each step is there:
 *   write     copy the verified image from the store to PATH.ferry-new in the
 *             same directory (same file system, so the switch can be a
 *             rename), fsync it.  Stale names are removed first and the file
 *             is created exclusively, never through a symlink planted there;
 *   activate  write PATH.ferry-trial (the old version, and whether there was
 *             an old file) by temp + rename, hard-link the running PATH to
 *             PATH.ferry-previous, rename PATH.ferry-new over PATH, fsync the
 *             directory, record the version in PATH.ferry-version (itself
 *             written by temp + rename), then run the optional reload
 *             command; if the command fails the previous file and version
 *             are put back and the install fails.  The new file now runs on
 *             trial: the old one is kept;
 *   confirm   read PATH.ferry-version back;
 *   commit    drop PATH.ferry-previous and PATH.ferry-trial: the new file is
 *             there for good;
 *   abort     while PATH.ferry-trial exists, put PATH.ferry-previous back
 *             (or remove PATH when there was nothing before), restore the
 *             old version and run the reload command again.
 * commit and abort read everything they need from those files, so they work
 * in a fresh session after a restart.  A power cut at any point leaves
 * either the old file or the new one at PATH, never a mix, and a trial file
 * that says how to go back.
 *
 * Config (adapters.self):
 *   vendor_id, class_id      the gateway's identity, matched against targets
 *   files[i].name            the component name in manifests
 *   files[i].path            absolute path of the installed file
 *   files[i].reload          optional shell command run after the switch
 *                            (and after a switch back)
 */
#include "self.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <libgen.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define SELF_FILES_MAX FERRY_ADAPTER_COMPONENTS_MAX /* one device: its components */
#define PATH_LEN 1024

extern char **environ;

typedef struct self_file {
	char name[FERRY_ADAPTER_STR_MAX];
	char path[PATH_LEN];
	char reload[PATH_LEN];
} self_file;

typedef struct self_state {
	const ferry_host_v1 *host;
	char vendor_id[FERRY_ADAPTER_STR_MAX], class_id[FERRY_ADAPTER_STR_MAX];
	self_file files[SELF_FILES_MAX];
	size_t n;
} self_state;

typedef struct self_session {
	self_state *s;
	const ferry_session_host_v1 *sh;
	const self_file *f;
} self_session;

/* the SDK's: a sentence into detail, and the code back */
#define fail ferry_adapter_fail

static const char *cfg(const self_state *s, size_t i, const char *key)
{
	char k[96];
	snprintf(k, sizeof(k), "files[%zu].%s", i, key);
	return s->host->config(s->host->ctx, k);
}

static int self_init(const ferry_host_v1 *host, void **state, char *detail)
{
	self_state *s = calloc(1, sizeof(*s));
	const char *v, *c;

	if (!s)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "out of memory");
	s->host = host;
	v = host->config(host->ctx, "vendor_id");
	c = host->config(host->ctx, "class_id");
	if (!v || !c || strlen(v) >= sizeof(s->vendor_id) || strlen(c) >= sizeof(s->class_id)) {
		free(s);
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "vendor_id and class_id (1-64 characters) are required");
	}
	snprintf(s->vendor_id, sizeof(s->vendor_id), "%s", v);
	snprintf(s->class_id, sizeof(s->class_id), "%s", c);
	for (size_t i = 0; i < SELF_FILES_MAX; i++) {
		const char *name = cfg(s, i, "name"), *path = cfg(s, i, "path");
		const char *reload = cfg(s, i, "reload");
		if (!name && !path)
			break;
		if (!name || !path || path[0] != '/' || strlen(name) >= FERRY_ADAPTER_STR_MAX ||
		    strlen(path) >= PATH_LEN - 32 || (reload && strlen(reload) >= PATH_LEN)) {
			free(s);
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR,
				    "files[]: each needs a name and an absolute path");
		}
		snprintf(s->files[i].name, sizeof(s->files[i].name), "%s", name);
		snprintf(s->files[i].path, sizeof(s->files[i].path), "%s", path);
		snprintf(s->files[i].reload, sizeof(s->files[i].reload), "%s", reload ? reload : "");
		s->n = i + 1;
	}
	if (cfg(s, SELF_FILES_MAX, "name") || cfg(s, SELF_FILES_MAX, "path")) {
		free(s);
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "files[]: at most %d files", SELF_FILES_MAX);
	}
	*state = s;
	return 0;
}

static void self_fini(void *state)
{
	free(state);
}

static void sidecar(const self_file *f, const char *suffix, char *out)
{
	snprintf(out, PATH_LEN, "%s.ferry-%s", f->path, suffix);
}

/* The first line of a small file of ours, or "" when it is missing. */
static void read_line(const char *path, char *out, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n = 0;

	out[0] = '\0';
	if (fd < 0)
		return;
	n = read(fd, out, cap - 1);
	close(fd);
	out[n > 0 ? n : 0] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
}

/* The recorded version of f, or "" when it was never installed by ferry. */
static void read_version(const self_file *f, char *out)
{
	char p[PATH_LEN];
	sidecar(f, "version", p);
	read_line(p, out, FERRY_ADAPTER_STR_MAX);
}

static int self_discover(void *state, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	self_state *s = state;
	ferry_device_v1 *d = devs;

	*n = 0;
	if (max < 1)
		return 0;
	snprintf(d->id, sizeof(d->id), "self");
	snprintf(d->vendor_id, sizeof(d->vendor_id), "%s", s->vendor_id);
	snprintf(d->class_id, sizeof(d->class_id), "%s", s->class_id);
	/* every configured file is served; its version is "" until ferry
	 * installed it */
	for (size_t i = 0; i < s->n && d->n_components < FERRY_ADAPTER_COMPONENTS_MAX; i++) {
		snprintf(d->components[d->n_components].key, FERRY_ADAPTER_STR_MAX, "%s", s->files[i].name);
		read_version(&s->files[i], d->components[d->n_components].value);
		d->n_components++;
	}
	*n = 1;
	return 0;
}

static int self_open(void *state, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **session,
		     char *detail)
{
	self_session *ss = calloc(1, sizeof(*ss));
	if (!ss)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "out of memory");
	ss->s = state;
	ss->sh = sh;
	*session = ss;
	return 0;
}

static const self_file *file_for(self_state *s, const char *component)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->files[i].name, component))
			return &s->files[i];
	return NULL;
}

/* The session's file for img's component. */
static int pick(self_session *ss, const ferry_image_v1 *img, char *detail)
{
	if (!ss->f && !(ss->f = file_for(ss->s, img->component)))
		return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "component %s is not among adapters.self.files",
			    img->component);
	return 0;
}

static int self_check(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char dir[PATH_LEN];
	struct statvfs vfs;
	int rc;

	if (strcmp(img->format, "file"))
		return fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "format %s: self installs only format file",
			    img->format);
	if ((rc = pick(ss, img, detail)))
		return rc;
	snprintf(dir, sizeof(dir), "%s", ss->f->path);
	if (statvfs(dirname(dir), &vfs))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: %s", ss->f->path, strerror(errno));
	if ((uint64_t)vfs.f_bavail * vfs.f_frsize < img->length * 2 + 4096)
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "not enough space beside %s", ss->f->path);
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char dir[PATH_LEN];
	int fd, rc;

	snprintf(dir, sizeof(dir), "%s", path);
	fd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

/* A new file of ours at path: whatever is there is removed first (a symlink
 * planted there is removed, never followed), then created exclusively. */
static int create_fresh(const char *path)
{
	if (unlink(path) && errno != ENOENT)
		return -1;
	return open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
}

static int self_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	self_session *ss = session;
	char tmp[PATH_LEN], buf[65536];
	int in, out, rc;
	uint64_t done = 0;
	ssize_t n;

	if ((rc = pick(ss, img, detail)))
		return rc;
	sidecar(ss->f, "new", tmp);
	if ((in = open(img->path, O_RDONLY | O_CLOEXEC)) < 0)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "image %s: %s", img->path, strerror(errno));
	if ((out = create_fresh(tmp)) < 0) {
		int e = errno;
		close(in);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: %s", tmp, strerror(e));
	}
	*resume_from = 0; /* a local copy is cheap: always start over */
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		if (ss->sh->cancelled(ss->sh->ctx)) {
			close(in);
			close(out);
			unlink(tmp);
			return fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled");
		}
		if (write(out, buf, (size_t)n) != n)
			break;
		done += (uint64_t)n;
		*resume_from = done;
		ss->sh->progress(ss->sh->ctx, done, img->length);
	}
	int bad = n != 0 || done != img->length || fsync(out);
	close(in);
	close(out);
	if (bad) {
		unlink(tmp);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "writing %s failed", tmp);
	}
	return 0;
}

/* Replace the small file at path with text (temp + fsync + rename). */
static int write_small(const char *path, const char *text)
{
	char tmp[PATH_LEN + 8];
	size_t len = strlen(text);
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fd = create_fresh(tmp)) < 0)
		return -1;
	ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, path)) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int write_version(const self_file *f, const char *version)
{
	char p[PATH_LEN], line[FERRY_ADAPTER_STR_MAX + 2];

	sidecar(f, "version", p);
	if (!version[0])
		return unlink(p) && errno != ENOENT ? -1 : 0;
	snprintf(line, sizeof(line), "%s\n", version);
	return write_small(p, line);
}

static int run_reload(const self_file *f)
{
	char *argv[] = {"/bin/sh", "-c", (char *)f->reload, NULL};
	pid_t pid;
	int status;

	if (!f->reload[0])
		return 0;
	if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ))
		return -1;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* The trial file: "OLD_VERSION\nfile|none\nNEW_VERSION\n": how to go back,
 * and to which update it belongs.  Present from before the switch until
 * commit or abort. */
typedef struct trial {
	bool on; /* the file exists */
	bool had_file;
	char old_version[FERRY_ADAPTER_STR_MAX];
	char new_version[FERRY_ADAPTER_STR_MAX];
} trial;

static void read_trial(const self_file *f, trial *t)
{
	char p[PATH_LEN], buf[3 * FERRY_ADAPTER_STR_MAX + 16];
	char *line[3] = {NULL, NULL, NULL};
	int fd;
	ssize_t n;

	memset(t, 0, sizeof(*t));
	sidecar(f, "trial", p);
	if ((fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	t->on = true;
	line[0] = buf;
	for (int i = 1; i < 3 && line[i - 1]; i++)
		if ((line[i] = strchr(line[i - 1], '\n')))
			*line[i]++ = '\0';
	snprintf(t->old_version, sizeof(t->old_version), "%s", line[0]);
	t->had_file = line[1] && !strncmp(line[1], "file", 4);
	if (line[2])
		snprintf(t->new_version, sizeof(t->new_version), "%.*s", (int)strcspn(line[2], "\n"), line[2]);
}

static void drop_trial(const self_file *f)
{
	char p[PATH_LEN];
	sidecar(f, "previous", p);
	unlink(p);
	sidecar(f, "trial", p);
	unlink(p);
	fsync_dir_of(f->path);
}

/* Put the previous file and version back, run the reload command again,
 * and end the trial.  0 when the old file is in place.  The version goes
 * back first: a version file that names the new version always means the
 * new file is in place, so a crash here never reads as installed. */
static int restore(const self_file *f, const trial *t)
{
	char prev[PATH_LEN], tp[PATH_LEN];
	int rc = 0;

	sidecar(f, "previous", prev);
	sidecar(f, "trial", tp);
	if (write_version(f, t->old_version))
		return -1;
	if (t->had_file) {
		if (access(prev, F_OK) == 0)
			rc = rename(prev, f->path);
		/* no previous file: the switch never happened, PATH is the old one */
	} else if (unlink(f->path) && errno != ENOENT) {
		rc = -1;
	}
	if (rc || fsync_dir_of(f->path))
		return -1;
	if (unlink(tp) && errno != ENOENT)
		return -1;
	fsync_dir_of(f->path);
	run_reload(f);
	return 0;
}

static int self_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char tmp[PATH_LEN], prev[PATH_LEN], tp[PATH_LEN], text[3 * FERRY_ADAPTER_STR_MAX + 16];
	trial t;
	int rc;

	if ((rc = pick(ss, img, detail)))
		return rc;
	sidecar(ss->f, "new", tmp);
	sidecar(ss->f, "previous", prev);
	sidecar(ss->f, "trial", tp);
	read_trial(ss->f, &t);
	if (t.on && strcmp(t.new_version, img->version)) {
		/* left by an earlier update that ended without knowing what ran:
		 * what is there now is what this update goes back to */
		drop_trial(ss->f);
		t.on = false;
	}
	if (!t.on) {
		/* say how to go back before anything changes */
		t.on = true;
		t.had_file = access(ss->f->path, F_OK) == 0;
		read_version(ss->f, t.old_version);
		snprintf(t.new_version, sizeof(t.new_version), "%s", img->version);
		snprintf(text, sizeof(text), "%s\n%s\n%s\n", t.old_version, t.had_file ? "file" : "none", img->version);
		if (unlink(prev) && errno != ENOENT)
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: %s", prev, strerror(errno));
		if (write_small(tp, text))
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot write %s: %s", tp, strerror(errno));
	}
	/* keep the old file (also when an activation was cut between the trial
	 * file and this link: PATH is still the old file then, since the
	 * switch comes after the link) */
	if (t.had_file && access(prev, F_OK) && link(ss->f->path, prev)) {
		int e = errno;
		if (access(tmp, F_OK) == 0) /* not switched yet: nothing changed */
			drop_trial(ss->f);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot keep %s for rollback: %s", ss->f->path,
			    strerror(e));
	}
	if (rename(tmp, ss->f->path) || fsync_dir_of(ss->f->path)) {
		int e = errno;
		restore(ss->f, &t);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot switch %s: %s", ss->f->path, strerror(e));
	}
	if (write_version(ss->f, img->version)) {
		restore(ss->f, &t);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot record the version of %s", ss->f->path);
	}
	if (run_reload(ss->f)) {
		restore(ss->f, &t);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "reload command for %s failed; previous file restored",
			    ss->f->name);
	}
	return 0;
}

static int self_confirm(void *session, const ferry_image_v1 *img, char *version, char *detail)
{
	self_session *ss = session;
	int rc;

	if ((rc = pick(ss, img, detail)))
		return rc;
	read_version(ss->f, version);
	return 0;
}

static int self_commit(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char v[FERRY_ADAPTER_STR_MAX], prev[PATH_LEN], tp[PATH_LEN];
	trial t;
	int rc;

	if ((rc = pick(ss, img, detail)))
		return rc;
	read_version(ss->f, v);
	if (strcmp(v, img->version))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s runs version \"%s\", not %s: nothing to commit",
			    ss->f->name, v, img->version);
	read_trial(ss->f, &t);
	if (!t.on || strcmp(t.new_version, img->version))
		return 0; /* committed already (a trial of another update is not ours to end) */
	sidecar(ss->f, "previous", prev);
	sidecar(ss->f, "trial", tp);
	if ((unlink(prev) && errno != ENOENT) || (unlink(tp) && errno != ENOENT) || fsync_dir_of(ss->f->path))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot drop the previous %s: %s", ss->f->path,
			    strerror(errno));
	return 0;
}

static int self_abort(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char tmp[PATH_LEN], v[FERRY_ADAPTER_STR_MAX];
	trial t;

	if (pick(ss, img, detail))
		return 0; /* not ours: nothing was touched */
	sidecar(ss->f, "new", tmp);
	unlink(tmp);
	read_trial(ss->f, &t);
	if (t.on && !strcmp(t.new_version, img->version))
		return restore(ss->f, &t) ? fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
						 "cannot put the previous %s back: %s", ss->f->path, strerror(errno))
					  : 0;
	read_version(ss->f, v);
	if (!strcmp(v, img->version))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s %s was made permanent; it cannot be reverted",
			    ss->f->name, v);
	return 0;
}

static void self_close(void *session)
{
	free(session);
}

static const char *const self_formats[] = {"file", NULL};

static const ferry_config_key self_keys[] = {
	{"vendor_id", FERRY_CFG_TEXT, 1, 64, true},
	{"class_id", FERRY_CFG_TEXT, 1, 64, true},
	{"files[].name", FERRY_CFG_TEXT, 1, 64, true},
	{"files[].path", FERRY_CFG_TEXT, 2, PATH_LEN - 33, true},
	{"files[].reload", FERRY_CFG_TEXT, 0, PATH_LEN - 1, false},
	{NULL, 0, 0, 0, false},
};

static const ferry_adapter_v2 self_table = {
	.abi = 2,
	.name = "self",
	.formats = self_formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK,
	.max_sessions = 1, /* one device: the gateway */
	.config_keys = self_keys,
	.init = self_init,
	.fini = self_fini,
	.discover = self_discover,
	.open = self_open,
	.check = self_check,
	.write = self_write,
	.activate = self_activate,
	.confirm = self_confirm,
	.commit = self_commit,
	.abort = self_abort,
	.close = self_close,
};

const ferry_adapter_v2 *ferry_self_adapter(void)
{
	return &self_table;
}
