/* A minimal ferry adapter, to copy when writing your own.
 *
 * Its "subdevice" is a directory: the installed image is DIR/image and its
 * version DIR/version.  Replace each operation's body with your link's
 * protocol; keep the contract:
 *   - answer ferry_adapter_abi() with the literal ABI version you implement;
 *   - return 0 or a FERRY_ADAPTER_E_* code, and say what went wrong in
 *     `detail` (at most FERRY_ADAPTER_DETAIL_MAX bytes);
 *   - in write(), report progress, stop when cancelled() says so, and keep
 *     *resume_from at the bytes the device has acknowledged;
 *   - activate runs the new image on trial and keeps the old one; commit
 *     drops the old one; abort brings it back.  commit and abort must work
 *     in a fresh session (after a restart of ferryd), so this template keeps
 *     a marker file, DIR/trial, while an image is on trial;
 *   - never talk to the network, MQTT or ferryd's journal.
 *
 * Config (adapters.template in ferryd.yaml): dir, vendor_id, class_id,
 * component (the component name manifests use).
 */
#include <ferry/adapter.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct state {
	const ferry_host_v1 *host;
	char dir[512], vendor_id[FERRY_ADAPTER_STR_MAX], class_id[FERRY_ADAPTER_STR_MAX];
	char component[FERRY_ADAPTER_STR_MAX];
} state;

typedef struct session {
	state *s;
	const ferry_session_host_v1 *sh;
} session;

static int copy_cfg(const ferry_host_v1 *h, const char *key, char *out, size_t n, char *detail)
{
	const char *v = h->config(h->ctx, key);
	if (!v || strlen(v) >= n) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "config key %.64s is missing or too long", key);
		return -1;
	}
	snprintf(out, n, "%s", v);
	return 0;
}

static int t_init(const ferry_host_v1 *host, void **st, char *detail)
{
	state *s = calloc(1, sizeof(*s));
	if (!s)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	s->host = host;
	if (copy_cfg(host, "dir", s->dir, sizeof(s->dir), detail) ||
	    copy_cfg(host, "vendor_id", s->vendor_id, sizeof(s->vendor_id), detail) ||
	    copy_cfg(host, "class_id", s->class_id, sizeof(s->class_id), detail) ||
	    copy_cfg(host, "component", s->component, sizeof(s->component), detail)) {
		free(s);
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	host->log(host->ctx, FERRY_LOG_INFO, "template adapter ready");
	*st = s;
	return 0;
}

static void t_fini(void *st)
{
	free(st);
}

static void read_version(const state *s, char *out)
{
	char p[600];
	FILE *f;

	out[0] = '\0';
	snprintf(p, sizeof(p), "%s/version", s->dir);
	if ((f = fopen(p, "r"))) {
		if (!fgets(out, FERRY_ADAPTER_STR_MAX, f))
			out[0] = '\0';
		out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

static int t_discover(void *st, ferry_device_v1 *devs, size_t max, size_t *n, char *detail)
{
	state *s = st;
	(void)detail;
	*n = 0;
	if (max == 0)
		return 0;
	snprintf(devs[0].id, sizeof(devs[0].id), "template-0");
	snprintf(devs[0].vendor_id, sizeof(devs[0].vendor_id), "%s", s->vendor_id);
	snprintf(devs[0].class_id, sizeof(devs[0].class_id), "%s", s->class_id);
	/* the component it serves, with its version ("" before the first install) */
	snprintf(devs[0].components[0].key, sizeof(devs[0].components[0].key), "%s", s->component);
	read_version(s, devs[0].components[0].value);
	devs[0].n_components = 1;
	/* what the link to the device gives (docs/adapters.md, "Link
	 * security"): here a file on the gateway itself */
	snprintf(devs[0].attributes[0].key, sizeof(devs[0].attributes[0].key), FERRY_ADAPTER_ATTR_LINK);
	snprintf(devs[0].attributes[0].value, sizeof(devs[0].attributes[0].value), FERRY_LINK_PHYSICAL);
	devs[0].n_attributes = 1;
	*n = 1;
	return 0;
}

static int t_open(void *st, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **sess, char *detail)
{
	session *x = calloc(1, sizeof(*x));
	(void)dev; /* one device only; a real adapter opens the one it is given */
	(void)detail;
	if (!x)
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	x->s = st;
	x->sh = sh;
	*sess = x;
	return 0;
}

static int t_check(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	if (strcmp(img->component, x->s->component)) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "component %.64s is not %.64s", img->component, x->s->component);
		return FERRY_ADAPTER_E_NO_MATCHING_DEVICE;
	}
	return 0;
}

static int t_write(void *sess, const ferry_image_v1 *img, uint64_t *resume_from, char *detail)
{
	session *x = sess;
	char dst[600], buf[16384];
	FILE *in = fopen(img->path, "rb"), *out;
	size_t r;
	uint64_t done = 0;

	snprintf(dst, sizeof(dst), "%s/image.new", x->s->dir);
	out = fopen(dst, "wb");
	if (!in || !out) {
		if (in)
			fclose(in);
		if (out)
			fclose(out);
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "cannot open the image or %.200s", dst);
		return FERRY_ADAPTER_E_ADAPTER_ERROR;
	}
	while ((r = fread(buf, 1, sizeof(buf), in)) > 0 && !x->sh->cancelled(x->sh->ctx)) {
		fwrite(buf, 1, r, out);
		done += r;
		*resume_from = done;
		x->sh->progress(x->sh->ctx, done, img->length);
	}
	fclose(in);
	if (fclose(out) || done != img->length) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "copied %llu of %llu bytes", (unsigned long long)done,
			 (unsigned long long)img->length);
		return x->sh->cancelled(x->sh->ctx) ? FERRY_ADAPTER_E_CANCELLED : FERRY_ADAPTER_E_INSTALL_FAILED;
	}
	return 0;
}

/* DIR/name into p (600 bytes). */
static char *in_dir(const state *s, const char *name, char *p)
{
	snprintf(p, 600, "%s/%s", s->dir, name);
	return p;
}

static bool exists(const char *p)
{
	FILE *f = fopen(p, "rb");
	if (f)
		fclose(f);
	return f != NULL;
}

static int t_activate(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	char from[600], to[600], prev[600], ver[600], prev_ver[600], trial[600];
	FILE *f;

	in_dir(x->s, "image.new", from);
	in_dir(x->s, "image", to);
	in_dir(x->s, "image.previous", prev);
	in_dir(x->s, "version", ver);
	in_dir(x->s, "version.previous", prev_ver);
	in_dir(x->s, "trial", trial);
	if (!exists(trial)) {
		/* keep the old image and version for abort, then mark the trial */
		if ((exists(to) && rename(to, prev)) || (exists(ver) && rename(ver, prev_ver)) || !(f = fopen(trial, "w")))
			return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot keep the old image");
		fclose(f);
	}
	if (rename(from, to) || !(f = fopen(ver, "w")))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot switch to the new image");
	fprintf(f, "%s\n", img->version);
	fclose(f);
	return 0;
}

/* Only reads back: ferryd compares the version with the manifest's. */
static int t_confirm(void *sess, const ferry_image_v1 *img, char *version, char *detail)
{
	session *x = sess;
	(void)img;
	(void)detail;
	read_version(x->s, version);
	return 0;
}

static int t_commit(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	char p[600];
	(void)img;
	(void)detail;
	remove(in_dir(x->s, "image.previous", p));
	remove(in_dir(x->s, "version.previous", p));
	remove(in_dir(x->s, "trial", p));
	return 0;
}

static int t_abort(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	char p[600], q[600];
	(void)img;
	remove(in_dir(x->s, "image.new", p));
	if (!exists(in_dir(x->s, "trial", p)))
		return 0; /* nothing was switched */
	if (exists(in_dir(x->s, "image.previous", p)) ? rename(p, in_dir(x->s, "image", q))
						       : (remove(in_dir(x->s, "image", q)), 0))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot put the old image back");
	if (exists(in_dir(x->s, "version.previous", p)))
		rename(p, in_dir(x->s, "version", q));
	else
		remove(in_dir(x->s, "version", q));
	remove(in_dir(x->s, "trial", p));
	return 0;
}

static void t_close(void *sess)
{
	free(sess);
}

static const char *const formats[] = {"raw", NULL};

/* Every key its config section may hold: ferryd refuses any other. */
static const ferry_config_key keys[] = {
	{"dir", FERRY_CFG_TEXT, 1, 500, true},
	{"vendor_id", FERRY_CFG_TEXT, 1, 64, true},
	{"class_id", FERRY_CFG_TEXT, 1, 64, true},
	{"component", FERRY_CFG_TEXT, 1, 64, true},
	{NULL, 0, 0, 0, false},
};

static const ferry_adapter_v2 table = {
	.abi = 2,
	.name = "template",
	.formats = formats,
	.caps = FERRY_ADAPTER_CAP_ROLLBACK, /* activate keeps the old image until commit */
	.max_sessions = 1,                  /* one device */
	.config_keys = keys,
	.init = t_init,
	.fini = t_fini,
	.discover = t_discover,
	.open = t_open,
	.check = t_check,
	.write = t_write,
	.activate = t_activate,
	.confirm = t_confirm,
	.commit = t_commit,
	.abort = t_abort,
	.close = t_close,
};

FERRY_ADAPTER_EXPORT int ferry_adapter_abi(const int *offered, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (offered[i] == 2)
			return 2; /* the literal version this file implements */
	return -1;
}

FERRY_ADAPTER_EXPORT const ferry_adapter_v2 *ferry_adapter_table_v2(void)
{
	return &table;
}
