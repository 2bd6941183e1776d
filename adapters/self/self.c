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
 * Every name is reached through an fd of PATH's directory, opened once per
 * session (openat, renameat, linkat, unlinkat), so a directory swapped
 * underneath cannot redirect half an install.  Every file is created fresh
 * (O_EXCL|O_NOFOLLOW after removing whatever had the name), sidecars 0600.
 * A symlink is never written through: at PATH it is refused unless the file
 * allows it (follow_symlink), then PATH is resolved once per session and
 * the file it names is installed, its sidecars beside it; a symlink planted
 * at a sidecar's name is removed or refused, never followed.
 *
 * Config (adapters.self):
 *   vendor_id, class_id      the gateway's identity, matched against targets
 *   files[i].name            the component name in manifests
 *   files[i].path            absolute path of the installed file
 *   files[i].reload          optional shell command run after the switch
 *                            (and after a switch back)
 *   files[i].mode            the installed file's mode, octal ("0644"); by
 *                            default the mode of the file it replaces, or
 *                            0600 for a new one
 *   files[i].follow_symlink  true: PATH may be a symlink, and the file it
 *                            points to is installed (default false: refused)
 */
#include "self.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	int mode; /* -1: keep the replaced file's */
	bool follow_symlink;
} self_file;

/* Where a file is, for one session: its directory's fd and its name there
 * (PATH itself, or what a symlink at PATH names when that is allowed). */
typedef struct place {
	int dfd;
	char dir[PATH_LEN];
	char base[256];
	char shown[PATH_LEN]; /* for messages */
} place;

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
	place at; /* dfd -1 until the file is picked */
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
		const char *reload = cfg(s, i, "reload"), *mode = cfg(s, i, "mode");
		const char *follow = cfg(s, i, "follow_symlink");
		char *end = NULL;
		long m = -1;
		if (!name && !path)
			break;
		if (mode && (!mode[0] || strspn(mode, "01234567") != strlen(mode) ||
			     (m = strtol(mode, &end, 8)) > 07777 || *end)) {
			free(s);
			return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "files[%zu].mode: an octal mode such as 0644",
				    i);
		}
		s->files[i].mode = (int)m;
		s->files[i].follow_symlink = follow && !strcmp(follow, "true");
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

/* ---- places and names ---- */

static void unplace(place *p)
{
	if (p->dfd >= 0)
		close(p->dfd);
	p->dfd = -1;
}

/* Find f: open its directory, refuse a symlink at PATH unless allowed (then
 * take what it names) and anything there that is not a regular file. */
static int place_of(const self_file *f, place *p, char *detail)
{
	char path[PATH_LEN], real[PATH_MAX + 1];
	struct stat sb;
	char *slash;

	p->dfd = -1;
	snprintf(path, sizeof(path), "%s", f->path);
	if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
		if (!f->follow_symlink)
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED,
				    "%s is a symlink: ferry does not write through one unless "
				    "adapters.self.files[].follow_symlink is true for it",
				    f->path);
		if (!realpath(f->path, real) || strlen(real) >= sizeof(path) - 32)
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: the symlink leads nowhere usable: %s",
				    f->path, strerror(errno ? errno : ENAMETOOLONG));
		snprintf(path, sizeof(path), "%s", real);
	}
	slash = strrchr(path, '/');
	if (!slash || !slash[1] || strlen(slash + 1) >= sizeof(p->base) - 32)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: not a file path", path);
	snprintf(p->base, sizeof(p->base), "%s", slash + 1);
	snprintf(p->shown, sizeof(p->shown), "%s", path);
	*slash = '\0';
	snprintf(p->dir, sizeof(p->dir), "%s", path[0] ? path : "/");
	if ((p->dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: %s", p->dir, strerror(errno));
	if (fstatat(p->dfd, p->base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(sb.st_mode)) {
		bool link = S_ISLNK(sb.st_mode);
		unplace(p);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s %s", p->shown,
			    link ? "became a symlink: refused" : "is not a regular file: refused");
	}
	return 0;
}

/* NAME.ferry-SUFFIX, in the place's directory */
static void sidecar(const place *p, const char *suffix, char *out)
{
	snprintf(out, 300, "%s.ferry-%s", p->base, suffix);
}

static bool exists(const place *p, const char *name)
{
	struct stat sb;
	return fstatat(p->dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0;
}

/* A regular file of ours, not a symlink planted under its name. */
static bool regular(const place *p, const char *name)
{
	struct stat sb;
	return fstatat(p->dfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode);
}

/* The first line of a small file of ours, or "" when it is missing (or is
 * not a plain file). */
static void read_line(const place *p, const char *name, char *out, size_t cap)
{
	int fd = openat(p->dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat sb;
	ssize_t n = 0;

	out[0] = '\0';
	if (fd < 0)
		return;
	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
		n = read(fd, out, cap - 1);
	close(fd);
	out[n > 0 ? n : 0] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
}

/* The recorded version, or "" when ferry never installed the file. */
static void read_version(const place *p, char *out)
{
	char v[300];
	sidecar(p, "version", v);
	read_line(p, v, out, FERRY_ADAPTER_STR_MAX);
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
	/* the gateway's own files never leave it */
	snprintf(d->attributes[0].key, sizeof(d->attributes[0].key), FERRY_ADAPTER_ATTR_LINK);
	snprintf(d->attributes[0].value, sizeof(d->attributes[0].value), FERRY_LINK_PHYSICAL);
	d->n_attributes = 1;
	/* every configured file is served; its version is "" until ferry
	 * installed it (or while its place cannot be used) */
	for (size_t i = 0; i < s->n && d->n_components < FERRY_ADAPTER_COMPONENTS_MAX; i++) {
		char why[FERRY_ADAPTER_DETAIL_MAX];
		place p;
		snprintf(d->components[d->n_components].key, FERRY_ADAPTER_STR_MAX, "%s", s->files[i].name);
		d->components[d->n_components].value[0] = '\0';
		if (place_of(&s->files[i], &p, why) == 0)
			read_version(&p, d->components[d->n_components].value);
		unplace(&p);
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
	ss->at.dfd = -1;
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

/* The session's file for img's component, and where it is. */
static int pick(self_session *ss, const ferry_image_v1 *img, char *detail)
{
	if (!ss->f && !(ss->f = file_for(ss->s, img->component)))
		return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "component %s is not among adapters.self.files",
			    img->component);
	if (ss->at.dfd < 0)
		return place_of(ss->f, &ss->at, detail);
	return 0;
}

static int self_check(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	struct statvfs vfs;
	int rc;

	if (strcmp(img->format, "file"))
		return fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "format %s: self installs only format file",
			    img->format);
	if ((rc = pick(ss, img, detail)))
		return rc;
	if (fstatvfs(ss->at.dfd, &vfs))
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "%s: %s", ss->at.dir, strerror(errno));
	if ((uint64_t)vfs.f_bavail * vfs.f_frsize < img->length * 2 + 4096)
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "not enough space beside %s", ss->at.shown);
	return 0;
}

/* A new file of ours: whatever has the name is removed first (a symlink
 * planted there is removed, never followed), then it is created
 * exclusively. */
static int create_fresh(const place *p, const char *name, mode_t mode)
{
	if (unlinkat(p->dfd, name, 0) && errno != ENOENT)
		return -1;
	return openat(p->dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
}

/* The installed file's mode: configured, or the replaced file's, or 0600. */
static mode_t mode_for(const self_session *ss)
{
	struct stat sb;
	if (ss->f->mode >= 0)
		return (mode_t)ss->f->mode;
	if (fstatat(ss->at.dfd, ss->at.base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode))
		return sb.st_mode & 07777;
	return 0600;
}

static int self_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	self_session *ss = session;
	char tmp[300], buf[65536];
	int in, out, rc;
	uint64_t done = 0;
	mode_t mode;
	ssize_t n;

	if ((rc = pick(ss, img, detail)))
		return rc;
	sidecar(&ss->at, "new", tmp);
	mode = mode_for(ss);
	if ((in = open(img->path, O_RDONLY | O_CLOEXEC)) < 0)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "image %s: %s", img->path, strerror(errno));
	if ((out = create_fresh(&ss->at, tmp, mode)) < 0) {
		int e = errno;
		close(in);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s/%s: %s", ss->at.dir, tmp, strerror(e));
	}
	*resume_from = 0; /* a local copy is cheap: always start over */
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		if (ss->sh->cancelled(ss->sh->ctx)) {
			close(in);
			close(out);
			unlinkat(ss->at.dfd, tmp, 0);
			return fail(detail, FERRY_ADAPTER_E_CANCELLED, "cancelled");
		}
		if (write(out, buf, (size_t)n) != n)
			break;
		done += (uint64_t)n;
		*resume_from = done;
		ss->sh->progress(ss->sh->ctx, done, img->length);
	}
	/* the umask may have taken bits the configured mode asks for */
	int bad = n != 0 || done != img->length || fchmod(out, mode) || fsync(out);
	close(in);
	close(out);
	if (bad) {
		unlinkat(ss->at.dfd, tmp, 0);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "writing %s/%s failed", ss->at.dir, tmp);
	}
	return 0;
}

/* Replace the small file `name` with text (temp + fsync + rename). */
static int write_small(const place *p, const char *name, const char *text)
{
	char tmp[320];
	size_t len = strlen(text);
	int fd, ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	if ((fd = create_fresh(p, tmp, 0600)) < 0)
		return -1;
	ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || renameat(p->dfd, tmp, p->dfd, name)) {
		unlinkat(p->dfd, tmp, 0);
		return -1;
	}
	return 0;
}

static int write_version(const place *p, const char *version)
{
	char v[300], line[FERRY_ADAPTER_STR_MAX + 2];

	sidecar(p, "version", v);
	if (!version[0])
		return unlinkat(p->dfd, v, 0) && errno != ENOENT ? -1 : 0;
	snprintf(line, sizeof(line), "%s\n", version);
	return write_small(p, v, line);
}

static int run_reload(const self_file *f)
{
	char *argv[] = {"/bin/sh", "-c", (char *)f->reload, NULL};
	pid_t pid;
	int status;

	if (!f->reload[0])
		return 0;
	/* ferryd blocks SIGTERM and SIGINT in its threads (one thread waits
	 * for them): the command gets a clean mask and default handlers */
	posix_spawnattr_t at;
	sigset_t none, deflt;
	sigemptyset(&none);
	sigemptyset(&deflt);
	sigaddset(&deflt, SIGTERM);
	sigaddset(&deflt, SIGINT);
	sigaddset(&deflt, SIGPIPE);
	if (posix_spawnattr_init(&at))
		return -1;
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &deflt);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	int rc = posix_spawn(&pid, "/bin/sh", NULL, &at, argv, environ);
	posix_spawnattr_destroy(&at);
	if (rc)
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

static void read_trial(const place *p, trial *t)
{
	char tp[300], buf[3 * FERRY_ADAPTER_STR_MAX + 16];
	char *line[3] = {NULL, NULL, NULL};
	struct stat sb;
	int fd;
	ssize_t n;

	memset(t, 0, sizeof(*t));
	sidecar(p, "trial", tp);
	if ((fd = openat(p->dfd, tp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) < 0)
		return;
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
		close(fd);
		return;
	}
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

static void drop_trial(const place *p)
{
	char n[300];
	sidecar(p, "previous", n);
	unlinkat(p->dfd, n, 0);
	sidecar(p, "trial", n);
	unlinkat(p->dfd, n, 0);
	fsync(p->dfd);
}

/* Put the previous file and version back, run the reload command again,
 * and end the trial.  0 when the old file is in place.  The version goes
 * back first: a version file that names the new version always means the
 * new file is in place, so a crash here never reads as installed.  A
 * previous file that is not a regular file (a symlink put there) is not
 * moved to PATH: -1 with errno ELOOP. */
static int restore(const self_file *f, const place *p, const trial *t)
{
	char prev[300], tp[300];
	int rc = 0;

	sidecar(p, "previous", prev);
	sidecar(p, "trial", tp);
	if (exists(p, prev) && !regular(p, prev)) {
		errno = ELOOP;
		return -1;
	}
	if (write_version(p, t->old_version))
		return -1;
	if (t->had_file) {
		if (exists(p, prev))
			rc = renameat(p->dfd, prev, p->dfd, p->base);
		/* no previous file: the switch never happened, PATH is the old one */
	} else if (unlinkat(p->dfd, p->base, 0) && errno != ENOENT) {
		rc = -1;
	}
	if (rc || fsync(p->dfd))
		return -1;
	if (unlinkat(p->dfd, tp, 0) && errno != ENOENT)
		return -1;
	fsync(p->dfd);
	run_reload(f);
	return 0;
}

static int self_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char tmp[300], prev[300], tp[300], text[3 * FERRY_ADAPTER_STR_MAX + 16];
	const place *p = &ss->at;
	trial t;
	int rc;

	if ((rc = pick(ss, img, detail)))
		return rc;
	sidecar(p, "new", tmp);
	sidecar(p, "previous", prev);
	sidecar(p, "trial", tp);
	if (!regular(p, tmp))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s/%s is not the file written: refused", p->dir,
			    tmp);
	read_trial(p, &t);
	if (t.on && strcmp(t.new_version, img->version)) {
		/* left by an earlier update that ended without knowing what ran:
		 * what is there now is what this update goes back to */
		drop_trial(p);
		t.on = false;
	}
	if (!t.on) {
		/* say how to go back before anything changes */
		t.on = true;
		t.had_file = exists(p, p->base);
		read_version(p, t.old_version);
		snprintf(t.new_version, sizeof(t.new_version), "%s", img->version);
		snprintf(text, sizeof(text), "%s\n%s\n%s\n", t.old_version, t.had_file ? "file" : "none", img->version);
		if (unlinkat(p->dfd, prev, 0) && errno != ENOENT)
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s/%s: %s", p->dir, prev, strerror(errno));
		if (write_small(p, tp, text))
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot write %s/%s: %s", p->dir, tp,
				    strerror(errno));
	}
	/* keep the old file (also when an activation was cut between the trial
	 * file and this link: PATH is still the old file then, since the
	 * switch comes after the link); a name planted at prev goes first */
	if (t.had_file && !regular(p, prev)) {
		int e = 0;
		if ((unlinkat(p->dfd, prev, 0) && errno != ENOENT) || linkat(p->dfd, p->base, p->dfd, prev, 0))
			e = errno;
		if (e) {
			if (exists(p, tmp)) /* not switched yet: nothing changed */
				drop_trial(p);
			return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot keep %s for rollback: %s", p->shown,
				    strerror(e));
		}
	}
	if (renameat(p->dfd, tmp, p->dfd, p->base) || fsync(p->dfd)) {
		int e = errno;
		restore(ss->f, p, &t);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot switch %s: %s", p->shown, strerror(e));
	}
	if (write_version(p, img->version)) {
		restore(ss->f, p, &t);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot record the version of %s", p->shown);
	}
	if (run_reload(ss->f)) {
		restore(ss->f, p, &t);
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
	read_version(&ss->at, version);
	return 0;
}

static int self_commit(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char v[FERRY_ADAPTER_STR_MAX], prev[300], tp[300];
	const place *p = &ss->at;
	trial t;
	int rc;

	if ((rc = pick(ss, img, detail)))
		return rc;
	read_version(p, v);
	if (strcmp(v, img->version))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s runs version \"%s\", not %s: nothing to commit",
			    ss->f->name, v, img->version);
	read_trial(p, &t);
	if (!t.on || strcmp(t.new_version, img->version))
		return 0; /* committed already (a trial of another update is not ours to end) */
	sidecar(p, "previous", prev);
	sidecar(p, "trial", tp);
	if ((unlinkat(p->dfd, prev, 0) && errno != ENOENT) || (unlinkat(p->dfd, tp, 0) && errno != ENOENT) ||
	    fsync(p->dfd))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot drop the previous %s: %s", p->shown,
			    strerror(errno));
	return 0;
}

static int self_abort(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char tmp[300], v[FERRY_ADAPTER_STR_MAX];
	trial t;

	int rc;

	if (!ss->f && !file_for(ss->s, img->component))
		return 0; /* not ours: nothing was touched */
	if ((rc = pick(ss, img, detail)))
		return rc;
	sidecar(&ss->at, "new", tmp);
	unlinkat(ss->at.dfd, tmp, 0);
	read_trial(&ss->at, &t);
	if (t.on && !strcmp(t.new_version, img->version))
		return restore(ss->f, &ss->at, &t)
			   ? fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot put the previous %s back: %s",
				  ss->at.shown,
				  errno == ELOOP ? "its kept copy is not a regular file" : strerror(errno))
			   : 0;
	read_version(&ss->at, v);
	if (!strcmp(v, img->version))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s %s was made permanent; it cannot be reverted",
			    ss->f->name, v);
	return 0;
}

static void self_close(void *session)
{
	self_session *ss = session;
	unplace(&ss->at);
	free(ss);
}

static const char *const self_formats[] = {"file", NULL};

static const ferry_config_key self_keys[] = {
	{"vendor_id", FERRY_CFG_TEXT, 1, 64, true},
	{"class_id", FERRY_CFG_TEXT, 1, 64, true},
	{"files[].name", FERRY_CFG_TEXT, 1, 64, true},
	{"files[].path", FERRY_CFG_TEXT, 2, PATH_LEN - 33, true},
	{"files[].reload", FERRY_CFG_TEXT, 0, PATH_LEN - 1, false},
	{"files[].mode", FERRY_CFG_TEXT, 1, 5, false},
	{"files[].follow_symlink", FERRY_CFG_BOOL, 0, 0, false},
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
