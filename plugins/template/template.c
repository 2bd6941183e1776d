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
 *   - never talk to the network, MQTT or ferryd's journal.
 *
 * Config (adapters.template in ferryd.yaml): dir, vendor_id, class_id,
 * component (the component name manifests use).
 */
#include <ferry/adapter.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ferry_adapter_abi(const int *offered, size_t n);
const ferry_adapter_v1 *ferry_adapter_table_v1(void);

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
	read_version(s, devs[0].components[0].value);
	if (devs[0].components[0].value[0]) {
		snprintf(devs[0].components[0].key, sizeof(devs[0].components[0].key), "%s", s->component);
		devs[0].n_components = 1;
	}
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

static int t_activate(void *sess, const ferry_image_v1 *img, char *detail)
{
	session *x = sess;
	char from[600], to[600], ver[600];
	FILE *f;

	snprintf(from, sizeof(from), "%s/image.new", x->s->dir);
	snprintf(to, sizeof(to), "%s/image", x->s->dir);
	snprintf(ver, sizeof(ver), "%s/version", x->s->dir);
	if (rename(from, to) || !(f = fopen(ver, "w"))) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "cannot switch to the new image");
		return FERRY_ADAPTER_E_INSTALL_FAILED;
	}
	fprintf(f, "%s\n", img->version);
	fclose(f);
	return 0;
}

static int t_confirm(void *sess, const ferry_image_v1 *img, char *version, char *detail)
{
	session *x = sess;
	read_version(x->s, version);
	if (strcmp(version, img->version)) {
		snprintf(detail, FERRY_ADAPTER_DETAIL_MAX, "device reports %.64s", version);
		return FERRY_ADAPTER_E_VERSION_MISMATCH;
	}
	return 0;
}

static int t_abort(void *sess, char *detail)
{
	session *x = sess;
	char p[600];
	(void)detail;
	snprintf(p, sizeof(p), "%s/image.new", x->s->dir);
	remove(p);
	return 0;
}

static void t_close(void *sess)
{
	free(sess);
}

static const char *const formats[] = {"raw", NULL};

static const ferry_adapter_v1 table = {
	.abi = 1,
	.name = "template",
	.formats = formats,
	.caps = 0,
	.init = t_init,
	.fini = t_fini,
	.discover = t_discover,
	.open = t_open,
	.check = t_check,
	.write = t_write,
	.activate = t_activate,
	.confirm = t_confirm,
	.abort = t_abort,
	.close = t_close,
};

int ferry_adapter_abi(const int *offered, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (offered[i] == 1)
			return 1; /* the literal version this file implements */
	return -1;
}

const ferry_adapter_v1 *ferry_adapter_table_v1(void)
{
	return &table;
}
