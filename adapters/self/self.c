/* The `self` adapter: configuration and application files of the gateway
 * itself, format `file`.
 *
 * How an install goes, and why each step is there:
 *   write     copy the verified image from the store to PATH.ferry-new in the
 *             same directory (same file system, so the switch can be a
 *             rename), fsync it;
 *   activate  hard-link the running PATH to PATH.ferry-previous (kept for
 *             rollback), rename PATH.ferry-new over PATH, fsync the
 *             directory, record the version in PATH.ferry-version (itself
 *             written by temp + rename), then run the optional reload
 *             command; if the command fails the previous file and version
 *             are put back and the install fails;
 *   confirm   read PATH.ferry-version back.
 * A power cut at any point leaves either the old file or the new one at
 * PATH, never a mix.
 *
 * Config (adapters.self):
 *   vendor_id, class_id      the gateway's identity, matched against targets
 *   files[i].name            the component name in manifests
 *   files[i].path            absolute path of the installed file
 *   files[i].reload          optional shell command run after the switch
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

#define SELF_FILES_MAX 16
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
	int activated; /* the switch happened and can be undone */
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

/* The recorded version of f, or "" when it was never installed by ferry. */
static void read_version(const self_file *f, char *out)
{
	char p[PATH_LEN];
	FILE *fp;

	out[0] = '\0';
	sidecar(f, "version", p);
	if (!(fp = fopen(p, "r")))
		return;
	if (!fgets(out, FERRY_ADAPTER_STR_MAX, fp))
		out[0] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
	fclose(fp);
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
	for (size_t i = 0; i < s->n && d->n_components < FERRY_ADAPTER_COMPONENTS_MAX; i++) {
		char v[FERRY_ADAPTER_STR_MAX];
		read_version(&s->files[i], v);
		if (!v[0])
			continue;
		snprintf(d->components[d->n_components].key, FERRY_ADAPTER_STR_MAX, "%s", s->files[i].name);
		snprintf(d->components[d->n_components].value, FERRY_ADAPTER_STR_MAX, "%s", v);
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

static int self_check(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char dir[PATH_LEN];
	struct statvfs vfs;

	if (strcmp(img->format, "file"))
		return fail(detail, FERRY_ADAPTER_E_UNSUPPORTED, "format %s: self installs only format file",
			    img->format);
	if (!(ss->f = file_for(ss->s, img->component)))
		return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE,
			    "component %s is not among adapters.self.files", img->component);
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

static int self_write(void *session, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	self_session *ss = session;
	char tmp[PATH_LEN], buf[65536];
	int in, out;
	uint64_t done = 0;
	ssize_t n;

	if (!ss->f && self_check(session, img, detail))
		return FERRY_ADAPTER_E_INSTALL_FAILED;
	sidecar(ss->f, "new", tmp);
	if ((in = open(img->path, O_RDONLY | O_CLOEXEC)) < 0)
		return fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "image %s: %s", img->path, strerror(errno));
	if ((out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		close(in);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "%s: %s", tmp, strerror(errno));
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

static int write_version(const self_file *f, const char *version)
{
	char p[PATH_LEN], tmp[PATH_LEN + 8];
	FILE *fp;
	int ok;

	sidecar(f, "version", p);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	if (!(fp = fopen(tmp, "w")))
		return -1;
	ok = fprintf(fp, "%s\n", version) > 0 && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
	ok = (fclose(fp) == 0) && ok;
	return ok && rename(tmp, p) == 0 ? 0 : -1;
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

/* Put the previous file and version back after a failed switch. */
static void restore(self_session *ss, const char *old_version)
{
	char prev[PATH_LEN];

	sidecar(ss->f, "previous", prev);
	if (access(prev, F_OK) == 0)
		rename(prev, ss->f->path);
	else
		unlink(ss->f->path); /* there was nothing before */
	fsync_dir_of(ss->f->path);
	if (old_version[0])
		write_version(ss->f, old_version);
	ss->activated = 0;
}

static int self_activate(void *session, const ferry_image_v1 *img, char *detail)
{
	self_session *ss = session;
	char tmp[PATH_LEN], prev[PATH_LEN], old_version[FERRY_ADAPTER_STR_MAX];

	if (!ss->f && self_check(session, img, detail))
		return FERRY_ADAPTER_E_INSTALL_FAILED;
	sidecar(ss->f, "new", tmp);
	sidecar(ss->f, "previous", prev);
	read_version(ss->f, old_version);
	unlink(prev);
	if (access(ss->f->path, F_OK) == 0 && link(ss->f->path, prev))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot keep %s for rollback: %s", ss->f->path,
			    strerror(errno));
	if (rename(tmp, ss->f->path) || fsync_dir_of(ss->f->path))
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot switch %s: %s", ss->f->path, strerror(errno));
	ss->activated = 1;
	if (write_version(ss->f, img->version)) {
		restore(ss, old_version);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot record the version of %s", ss->f->path);
	}
	if (run_reload(ss->f)) {
		restore(ss, old_version);
		return fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "reload command for %s failed; previous file restored",
			    ss->f->name);
	}
	return 0;
}

static int self_confirm(void *session, const ferry_image_v1 *img, char *version, char *detail)
{
	self_session *ss = session;

	if (!ss->f && !(ss->f = file_for(ss->s, img->component)))
		return fail(detail, FERRY_ADAPTER_E_NO_MATCHING_DEVICE, "component %s is not configured", img->component);
	read_version(ss->f, version);
	if (strcmp(version, img->version))
		return fail(detail, FERRY_ADAPTER_E_VERSION_MISMATCH, "%s reports version \"%s\"", ss->f->name, version);
	ss->activated = 0;
	return 0;
}

static int self_abort(void *session, char *detail)
{
	self_session *ss = session;
	char tmp[PATH_LEN];

	if (!ss->f)
		return 0;
	sidecar(ss->f, "new", tmp);
	unlink(tmp);
	return 0;
}

static void self_close(void *session)
{
	free(session);
}

static const char *const self_formats[] = {"file", NULL};

static const ferry_adapter_v1 self_table = {
	.abi = 1,
	.name = "self",
	.formats = self_formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK,
	.init = self_init,
	.fini = self_fini,
	.discover = self_discover,
	.open = self_open,
	.check = self_check,
	.write = self_write,
	.activate = self_activate,
	.confirm = self_confirm,
	.abort = self_abort,
	.close = self_close,
};

const ferry_adapter_v1 *ferry_self_adapter(void)
{
	return &self_table;
}
