/* A plugin built for ABI 1, as third parties wrote them before ABI 2: its
 * confirm makes the image permanent, it has no commit, its abort takes no
 * image, and its device lists its component only once a version is
 * installed.  ferryd must still load it, install through it, and count it
 * as a device that cannot revert.  The "device" is a directory:
 * adapters.legacy.dir holds image and version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/adapter.h"

typedef struct st {
	const ferry_host_v1 *h;
	char dir[256], component[FERRY_ADAPTER_STR_MAX];
} st;

static void path(const st *s, const char *name, char *out)
{
	snprintf(out, 400, "%s/%s", s->dir, name);
}

static void version(const st *s, char *out)
{
	char p[400];
	FILE *f;
	out[0] = '\0';
	path(s, "version", p);
	if ((f = fopen(p, "r"))) {
		if (!fgets(out, FERRY_ADAPTER_STR_MAX, f))
			out[0] = '\0';
		out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

static int l_init(const ferry_host_v1 *h, void **state, char *detail)
{
	st *s = calloc(1, sizeof(*s));
	const char *dir = h->config(h->ctx, "dir"), *comp = h->config(h->ctx, "component");
	if (!s || !dir || !comp)
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_ADAPTER_ERROR, "dir and component are required");
	s->h = h;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->component, sizeof(s->component), "%s", comp);
	*state = s;
	return 0;
}

static void l_fini(void *state)
{
	free(state);
}

static int l_discover(void *state, ferry_device_v1 *d, size_t max, size_t *n, char *detail)
{
	st *s = state;
	*n = 0;
	if (!max)
		return 0;
	snprintf(d->id, sizeof(d->id), "legacy-0");
	snprintf(d->vendor_id, sizeof(d->vendor_id), "acme");
	snprintf(d->class_id, sizeof(d->class_id), "legacy");
	version(s, d->components[0].value);
	if (d->components[0].value[0]) {
		snprintf(d->components[0].key, sizeof(d->components[0].key), "%s", s->component);
		d->n_components = 1;
	}
	*n = 1;
	return 0;
}

static int l_open(void *state, const ferry_device_v1 *dev, const ferry_session_host_v1 *sh, void **sess, char *detail)
{
	*sess = state;
	return 0;
}

static int l_check(void *sess, const ferry_image_v1 *img, char *detail)
{
	return 0;
}

static int l_write(void *sess, const ferry_image_v1 *img, uint64_t *off, char *detail)
{
	st *s = sess;
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s/image.new'", img->path, s->dir);
	if (system(cmd))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "copy failed");
	*off = img->length;
	return 0;
}

static int l_activate(void *sess, const ferry_image_v1 *img, char *detail)
{
	st *s = sess;
	char from[400], to[400], v[400];
	FILE *f;
	path(s, "image.new", from);
	path(s, "image", to);
	path(s, "version", v);
	if (rename(from, to) || !(f = fopen(v, "w")))
		return ferry_adapter_fail(detail, FERRY_ADAPTER_E_INSTALL_FAILED, "cannot switch");
	fprintf(f, "%s\n", img->version);
	fclose(f);
	return 0;
}

static int l_confirm(void *sess, const ferry_image_v1 *img, char *v, char *detail)
{
	version(sess, v);
	return strcmp(v, img->version) ? ferry_adapter_fail(detail, FERRY_ADAPTER_E_VERSION_MISMATCH, "runs %s", v) : 0;
}

static int l_abort(void *sess, char *detail)
{
	return 0;
}

static void l_close(void *sess)
{
}

static const char *const formats[] = {"raw", NULL};
static const ferry_adapter_v1 table = {.abi = 1, .name = "legacy", .formats = formats, .init = l_init,
				       .fini = l_fini, .discover = l_discover, .open = l_open, .check = l_check,
				       .write = l_write, .activate = l_activate, .confirm = l_confirm,
				       .abort = l_abort, .close = l_close};

int ferry_adapter_abi(const int *offered, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (offered[i] == 1)
			return 1;
	return -1;
}

const ferry_adapter_v1 *ferry_adapter_table_v1(void)
{
	return &table;
}
