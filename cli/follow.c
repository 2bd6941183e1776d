/* Following updates: rows of gateway x component x device, and the rule
 * that tells deploy a gateway is through (docs/protocol.md, stage reports):
 *  - a refused command ends it;
 *  - a component with an `allowed` report ends when every device it lists
 *    has an outcome (a failed download or check cancels each of them);
 *  - a component with no `allowed` (every device already runs it) has only
 *    `already_installed` reports.  The gateway reports a component's
 *    `allowed` before its `already_installed` ones and numbers every report
 *    of an update 1, 2, 3, ... (`seq`), so once every report before the
 *    first `already_installed` is in and none was its `allowed`, there is
 *    none.
 * Messages are hostile input: anything that does not parse is counted and
 * skipped. */
#include "follow.h"

#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ferry/jsonfield.h"
#include "ferry/report.h"

#define SEQ_MAX 65536
/* Bounds on what one run keeps, whatever gateways send: rows on screen,
 * and device outcomes per gateway. */
#define ROWS_MAX 16384
#define OUTCOMES_MAX 4096

typedef struct row {
	char gw[65], comp[65], dev[129], uid[65];
	char stage[24], version[65], reason[33], detail[200];
	long long done, total;
	long long mark_ms, mark_done; /* for the rate */
	double rate;                 /* bytes/s, smoothed */
} row;

typedef struct comp_track {
	char name[65];
	int64_t allowed_seq;  /* 0: none seen */
	json_t *devices;      /* from `allowed` */
	int64_t first_already; /* seq of the first already_installed, 0: none */
	bool failed;          /* a component-level failure */
} comp_track;

typedef struct gw_track {
	char gw[65], uid[65], jti[65];
	bool request_only;
	int reply;            /* 0 none, 1 accepted, 2 refused */
	char reason[33], detail[256];
	comp_track *comps;
	size_t n_comps;
	unsigned char *seen;  /* a bit per seq */
	json_t *outcomes;     /* "component/device" -> stage */
} gw_track;

struct follow {
	follow_mode mode;
	FILE *out;
	row *rows;
	size_t n_rows, cap_rows;
	gw_track *gws;
	size_t n_gws;
	size_t drawn;         /* rows on screen */
	const ferry_trust *trust;
	long long last_draw_ms;
	unsigned refused;
};

/* snprintf that never ends on a cut UTF-8 sequence (what gateways send is
 * cut to fit, and JSON takes only whole characters) */
static void put_text(char *dst, size_t n, const char *src)
{
	snprintf(dst, n, "%s", src);
	size_t len = strlen(dst), k = len;
	while (k > 0 && ((unsigned char)dst[k - 1] & 0xc0) == 0x80)
		k--; /* continuation bytes */
	if (k > 0 && ((unsigned char)dst[k - 1] & 0x80)) {
		unsigned char lead = (unsigned char)dst[k - 1];
		size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
		if (len - (k - 1) < want)
			dst[k - 1] = 0;
	}
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

follow *follow_new(follow_mode mode, FILE *out, const ferry_trust *trust)
{
	follow *f = calloc(1, sizeof(*f));
	if (f) {
		f->mode = mode;
		f->out = out;
		f->trust = trust;
	}
	return f;
}

void follow_free(follow *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_gws; i++) {
		for (size_t k = 0; k < f->gws[i].n_comps; k++)
			json_decref(f->gws[i].comps[k].devices);
		free(f->gws[i].comps);
		free(f->gws[i].seen);
		json_decref(f->gws[i].outcomes);
	}
	free(f->gws);
	free(f->rows);
	free(f);
}

bool follow_expect(follow *f, const char *gw, const char *uid, const char *jti, const char *const *components,
		   size_t n, bool op_request)
{
	gw_track *g = realloc(f->gws, (f->n_gws + 1) * sizeof(*g));
	if (!g)
		return false;
	f->gws = g;
	g = &f->gws[f->n_gws++];
	memset(g, 0, sizeof(*g));
	snprintf(g->gw, sizeof(g->gw), "%s", gw);
	snprintf(g->uid, sizeof(g->uid), "%s", uid);
	snprintf(g->jti, sizeof(g->jti), "%s", jti);
	g->request_only = op_request;
	g->comps = calloc(n ? n : 1, sizeof(*g->comps));
	g->seen = calloc(SEQ_MAX / 8, 1);
	g->outcomes = json_object();
	if (!g->comps || !g->seen || !g->outcomes) {
		/* out of memory: this gateway is never through, and deploy says so */
		free(g->comps);
		free(g->seen);
		json_decref(g->outcomes);
		g->comps = NULL;
		g->seen = NULL;
		g->outcomes = NULL;
		g->reply = 0;
		g->n_comps = 0;
		snprintf(g->uid, sizeof(g->uid), "%s", "");
		return false;
	}
	g->n_comps = n;
	for (size_t i = 0; i < g->n_comps; i++)
		snprintf(g->comps[i].name, sizeof(g->comps[i].name), "%s", components[i]);
	return true;
}

static gw_track *track_of(follow *f, const char *gw, const char *uid)
{
	for (size_t i = 0; i < f->n_gws; i++)
		if (!strcmp(f->gws[i].gw, gw) && (!uid || !strcmp(f->gws[i].uid, uid)))
			return &f->gws[i];
	return NULL;
}

static row *row_find(follow *f, const char *gw, const char *comp, const char *dev)
{
	for (size_t i = 0; i < f->n_rows; i++)
		if (!strcmp(f->rows[i].gw, gw) && !strcmp(f->rows[i].comp, comp) && !strcmp(f->rows[i].dev, dev))
			return &f->rows[i];
	return NULL;
}

static row *row_of(follow *f, const char *gw, const char *comp, const char *dev)
{
	row *found = row_find(f, gw, comp, dev);
	if (found)
		return found;
	if (f->n_rows == ROWS_MAX)
		return NULL;
	if (f->n_rows == f->cap_rows) {
		size_t cap = f->cap_rows ? f->cap_rows * 2 : 16;
		row *r = realloc(f->rows, cap * sizeof(*r));
		if (!r)
			return NULL;
		f->rows = r;
		f->cap_rows = cap;
	}
	row *r = &f->rows[f->n_rows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->gw, sizeof(r->gw), "%s", gw);
	snprintf(r->comp, sizeof(r->comp), "%s", comp);
	snprintf(r->dev, sizeof(r->dev), "%s", dev);
	r->done = r->total = -1;
	return r;
}

static bool is_outcome(const char *s)
{
	return !strcmp(s, "installed") || !strcmp(s, "already_installed") || !strcmp(s, "failed") ||
	       !strcmp(s, "rolled_back") || !strcmp(s, "cancelled");
}

static void human(long long b, char *out, size_t n)
{
	if (b < 10 * 1024)
		snprintf(out, n, "%lld B", b);
	else if (b < 10 * 1024 * 1024)
		snprintf(out, n, "%.1f KiB", b / 1024.0);
	else
		snprintf(out, n, "%.1f MiB", b / 1048576.0);
}

/* one plain line for a report */
static void plain_stage(follow *f, const char *gw, const json_t *r)
{
	const char *uid = json_string_value(json_object_get(r, "update_id"));
	const char *comp = json_string_value(json_object_get(r, "component"));
	const char *dev = json_string_value(json_object_get(r, "device"));
	const char *stage = json_string_value(json_object_get(r, "stage"));
	const json_t *p = json_object_get(r, "progress");
	const char *ver = json_string_value(json_object_get(r, "version"));
	const char *reason = json_string_value(json_object_get(r, "reason"));
	const char *detail = json_string_value(json_object_get(r, "detail"));

	fprintf(f->out, "%s %s %s %s %s", gw, uid, comp, dev ? dev : "-", stage);
	if (json_is_object(p)) {
		long long d = json_integer_value(json_object_get(p, "done")),
			  t = json_integer_value(json_object_get(p, "total"));
		fprintf(f->out, " %lld/%lld", d, t);
	}
	if (ver)
		fprintf(f->out, " %s", ver);
	if (reason)
		fprintf(f->out, " %s: %s", reason, detail ? detail : "");
	const json_t *devs = json_object_get(r, "devices");
	if (json_is_array(devs)) {
		size_t i;
		const json_t *d;
		fprintf(f->out, " to");
		json_array_foreach(devs, i, d) fprintf(f->out, " %s", json_string_value(d));
	}
	fputc('\n', f->out);
	fflush(f->out);
}

static void emit_json(follow *f, const char *gw, const char *kind, const json_t *msg)
{
	json_t *o = json_deep_copy(msg);
	json_object_set_new(o, "gateway", json_string(gw));
	json_object_set_new(o, "type", json_string(kind));
	json_dumpf(o, f->out, JSON_COMPACT | JSON_SORT_KEYS);
	fputc('\n', f->out);
	fflush(f->out);
	json_decref(o);
}

/* The members a report must have, with their bounds; NULL when it lacks them. */
static bool report_ok(const json_t *r)
{
	ferry_status st = {0};
	char buf[200];
	int64_t seq;

	if (ferry_json_str(r, "update_id", true, 1, 64, FERRY_CS_ID, buf, sizeof(buf), NULL, &st) ||
	    ferry_json_str(r, "component", true, 1, 64, FERRY_CS_ID, buf, sizeof(buf), NULL, &st) ||
	    ferry_json_str(r, "stage", true, 1, 20, FERRY_CS_ID, buf, sizeof(buf), NULL, &st) ||
	    ferry_json_str(r, "device", false, 1, 128, FERRY_CS_ANY, buf, sizeof(buf), NULL, &st) ||
	    ferry_json_int(r, "seq", true, 1, INT64_C(1) << 53, &seq, NULL, &st))
		return false;
	const json_t *p = json_object_get(r, "progress");
	if (p && (!json_is_object(p) || !json_is_integer(json_object_get(p, "done")) ||
		  !json_is_integer(json_object_get(p, "total"))))
		return false;
	const json_t *d = json_object_get(r, "devices");
	if (d && !json_is_array(d))
		return false;
	for (size_t i = 0; d && i < json_array_size(d); i++)
		if (!json_is_string(json_array_get(d, i)))
			return false;
	return true;
}

static void track_stage(gw_track *g, const json_t *r)
{
	const char *comp = json_string_value(json_object_get(r, "component"));
	const char *stage = json_string_value(json_object_get(r, "stage"));
	const char *dev = json_string_value(json_object_get(r, "device"));
	int64_t seq = json_integer_value(json_object_get(r, "seq"));
	comp_track *c = NULL;

	for (size_t i = 0; i < g->n_comps; i++)
		if (!strcmp(g->comps[i].name, comp))
			c = &g->comps[i];
	if (!c)
		return;
	if (seq < SEQ_MAX) /* (admission's reports, the ones that matter here, come first) */
		g->seen[seq >> 3] |= (unsigned char)(1u << (seq & 7));
	if (!strcmp(stage, "allowed")) {
		c->allowed_seq = seq;
		json_decref(c->devices);
		c->devices = json_incref(json_object_get(r, "devices"));
		if (!c->devices)
			c->devices = json_array();
	} else if (!dev && !strcmp(stage, "failed")) {
		c->failed = true;
	} else if (dev && is_outcome(stage)) {
		char key[200];
		snprintf(key, sizeof(key), "%s/%s", comp, dev);
		if (!json_object_get(g->outcomes, key) && json_object_size(g->outcomes) < OUTCOMES_MAX)
			json_object_set_new(g->outcomes, key, json_string(stage));
		if (!strcmp(stage, "already_installed") && (!c->first_already || seq < c->first_already))
			c->first_already = seq;
	}
}

static void track_reply(follow *f, const char *gw, const json_t *r)
{
	const char *jti = json_string_value(json_object_get(r, "jti"));
	const char *result = json_string_value(json_object_get(r, "result"));
	const char *reason = json_string_value(json_object_get(r, "reason"));
	const char *detail = json_string_value(json_object_get(r, "detail"));

	/* A command that did not verify is answered with a null jti: nothing
	 * says it was ours (anyone who may publish a command can cause one),
	 * so it is shown but never taken as our command's answer. */
	if (!jti)
		return;
	/* `replayed` says the gateway has had this very command before (sent
	 * again after a crash, or by someone who copied it): its answer to the
	 * first copy is the one that counts */
	if (reason && !strcmp(reason, "replayed"))
		return;
	for (size_t i = 0; i < f->n_gws; i++) {
		gw_track *g = &f->gws[i];
		if (strcmp(g->gw, gw) || g->reply || strcmp(jti, g->jti))
			continue;
		g->reply = result && !strcmp(result, "accepted") ? 1 : 2;
		put_text(g->reason, sizeof(g->reason), reason ? reason : "");
		put_text(g->detail, sizeof(g->detail), detail ? detail : "");
	}
}

static void row_update(row *w, const json_t *r)
{
	const char *stage = json_string_value(json_object_get(r, "stage"));
	const json_t *p = json_object_get(r, "progress");
	const char *ver = json_string_value(json_object_get(r, "version"));
	const char *reason = json_string_value(json_object_get(r, "reason"));
	const char *detail = json_string_value(json_object_get(r, "detail"));
	long long now = mono_ms();

	if (is_outcome(w->stage) && !is_outcome(stage))
		return; /* a late report after the outcome */
	if (strcmp(w->stage, stage)) {
		w->mark_ms = now;
		w->mark_done = 0;
		w->rate = 0;
	}
	snprintf(w->stage, sizeof(w->stage), "%s", stage);
	if (json_is_object(p)) {
		/* clamped: the arithmetic below must not overflow on any input */
		const long long cap = 1LL << 40;
		long long d = json_integer_value(json_object_get(p, "done"));
		long long t = json_integer_value(json_object_get(p, "total"));
		d = d < 0 ? 0 : d > cap ? cap : d;
		t = t < 0 ? 0 : t > cap ? cap : t;
		w->total = t;
		if (now > w->mark_ms + 200 && d >= w->mark_done) {
			double inst = (double)(d - w->mark_done) * 1000.0 / (double)(now - w->mark_ms);
			w->rate = w->rate > 0 ? 0.7 * w->rate + 0.3 * inst : inst;
			w->mark_ms = now;
			w->mark_done = d;
		}
		w->done = d;
	}
	if (ver)
		put_text(w->version, sizeof(w->version), ver);
	if (reason)
		put_text(w->reason, sizeof(w->reason), reason);
	if (detail)
		put_text(w->detail, sizeof(w->detail), detail);
}

/* Strings from the network reach the operator's terminal: control bytes,
 * C0 and C1 (escape sequences among them), become '?'. */
void clean_text(char *dst, size_t n, const char *src)
{
	size_t k = 0;
	for (const unsigned char *p = (const unsigned char *)src; *p && k + 1 < n; p++) {
		if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) { /* U+0080..U+009F in UTF-8 */
			dst[k++] = '?';
			p++;
		} else {
			dst[k++] = *p < 0x20 || *p == 0x7f ? '?' : (char)*p;
		}
	}
	dst[k] = 0;
}

static void defang(json_t *v)
{
	const char *k;
	json_t *m;
	size_t i;

	if (json_is_object(v)) {
		json_object_foreach(v, k, m) defang(m);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, m) defang(m);
	} else if (json_is_string(v)) {
		size_t n = json_string_length(v);
		char *c = malloc(n + 1);
		if (!c)
			return;
		clean_text(c, n + 1, json_string_value(v)); /* an embedded NUL ends it */
		json_string_set(v, c);
		free(c);
	}
}

/* A message that passed ferry_report_open and defang. */
static void take(follow *f, const char *gw, const char *kind, json_t *msg, const char *only_update)
{
	if (!strcmp(kind, "reply")) {
		const char *uid = json_string_value(json_object_get(msg, "update_id"));
		/* deploy shows only the gateways it sent to */
		bool wanted = !only_update || (uid && !strcmp(uid, only_update));
		if (f->n_gws) {
			const char *jti = json_string_value(json_object_get(msg, "jti"));
			wanted = false;
			for (size_t i = 0; i < f->n_gws; i++)
				if (!strcmp(f->gws[i].gw, gw) && (jti ? !strcmp(f->gws[i].jti, jti) : !f->gws[i].reply))
					wanted = true;
		}
		if (wanted) {
			track_reply(f, gw, msg);
			if (f->mode == FOLLOW_JSON) {
				emit_json(f, gw, "reply", msg);
			} else if (f->mode != FOLLOW_QUIET) {
				const char *res = json_string_value(json_object_get(msg, "result"));
				const char *reason = json_string_value(json_object_get(msg, "reason"));
				const char *detail = json_string_value(json_object_get(msg, "detail"));
				if (f->mode == FOLLOW_TTY && f->drawn) {
					fprintf(f->out, "\033[%zuA\033[J", f->drawn);
					f->drawn = 0;
				}
				const char *op = json_string_value(json_object_get(msg, "op"));
				fprintf(f->out, "%s %s %s %s", gw, uid ? uid : "-", op ? op : "command", res ? res : "?");
				if (reason)
					fprintf(f->out, " %s", reason);
				if (detail && *detail)
					fprintf(f->out, ": %s", detail);
				fputc('\n', f->out);
				fflush(f->out);
			}
		}
		return;
	}
	if (!report_ok(msg)) {
		f->refused++;
		return;
	}
	const char *uid = json_string_value(json_object_get(msg, "update_id"));
	if (only_update && strcmp(uid, only_update))
		return;
	gw_track *g = track_of(f, gw, uid);
	if (g) {
		track_stage(g, msg);
	} else if (f->n_gws) {
		return; /* deploy shows only its own update */
	}
	if (f->mode == FOLLOW_JSON)
		emit_json(f, gw, "stage", msg);
	else if (f->mode == FOLLOW_PLAIN)
		plain_stage(f, gw, msg);
	const char *dev = json_string_value(json_object_get(msg, "device"));
	const char *comp = json_string_value(json_object_get(msg, "component"));
	row *w = row_of(f, gw, comp, dev ? dev : "");
	if (w) {
		row_update(w, msg);
		snprintf(w->uid, sizeof(w->uid), "%s", uid);
	}
	/* a device step that ended leaves its image's row with no stage to come */
	const char *stage = json_string_value(json_object_get(msg, "stage"));
	row *img = dev && is_outcome(stage) ? row_find(f, gw, comp, "") : NULL;
	if (img && (!strcmp(img->stage, "downloading") || !strcmp(img->stage, "verifying") ||
		    !strcmp(img->stage, "allowed"))) {
		snprintf(img->stage, sizeof(img->stage), "stopped");
		img->total = -1;
	}
	if (f->mode == FOLLOW_TTY)
		follow_draw(f, false);
}


void follow_message(follow *f, const char *topic, const char *payload, size_t len, const char *only_gw,
		    const char *only_update)
{
	char gw[65], kind[16];
	json_t *msg = NULL;
	ferry_status st = {0};

	/* ferry/v1/GW/KIND */
	if (strncmp(topic, "ferry/v1/", 9) || sscanf(topic + 9, "%64[A-Za-z0-9._-]/%15[a-z]", gw, kind) != 2 ||
	    strlen(topic) != 9 + strlen(gw) + 1 + strlen(kind))
		return;
	if (only_gw && strcmp(gw, only_gw))
		return;
	if (strcmp(kind, "stage") && strcmp(kind, "reply"))
		return;
	if (f->n_gws && !track_of(f, gw, NULL))
		return; /* deploy: a gateway it did not send to (nothing is checked for it) */
	if (ferry_report_open(payload, len, f->trust, gw, time(NULL), &msg, &st)) {
		char clean[sizeof(st.detail)];
		f->refused++;
		clean_text(clean, sizeof(clean), st.detail);
		fprintf(stderr, "ferry: refused a message on %s: %s: %s\n", topic, ferry_err_code(st.code), clean);
		return;
	}
	defang(msg);
	take(f, gw, kind, msg, only_update);
	json_decref(msg);
}

void follow_take(follow *f, const char *gw, const char *kind, json_t *msg)
{
	defang(msg);
	take(f, gw, kind, msg, NULL);
}

static void bar(char *out, size_t n, long long done, long long total)
{
	int width = 20, fill = total > 0 ? (int)(done * width / total) : 0;
	if (fill > width)
		fill = width;
	size_t k = 0;
	out[k++] = '[';
	for (int i = 0; i < width && k + 2 < n; i++)
		out[k++] = i < fill ? '#' : '.';
	out[k++] = ']';
	out[k] = 0;
}

void follow_draw(follow *f, bool force)
{
	long long now = mono_ms();

	if (f->mode != FOLLOW_TTY || (!force && now - f->last_draw_ms < 100))
		return;
	f->last_draw_ms = now;
	if (f->drawn)
		fprintf(f->out, "\033[%zuA", f->drawn);
	for (size_t i = 0; i < f->n_rows; i++) {
		row *w = &f->rows[i];
		char b[32] = "", rate[32] = "", left[32] = "", tail[256] = "";
		if (w->total > 0 && !is_outcome(w->stage)) {
			bar(b, sizeof(b), w->done, w->total);
			if (w->rate > 0) {
				char h[24];
				human((long long)w->rate, h, sizeof(h));
				snprintf(rate, sizeof(rate), "%s/s", h);
				long long s = (long long)((double)(w->total - w->done) / w->rate);
				snprintf(left, sizeof(left), "%lld:%02lld left", s / 60, s % 60);
			}
			snprintf(tail, sizeof(tail), "%s %3lld%% %s %s", b, w->done * 100 / w->total, rate, left);
		} else if (w->version[0] && (!strcmp(w->stage, "installed") || !strcmp(w->stage, "already_installed"))) {
			snprintf(tail, sizeof(tail), "%s", w->version);
		} else if (w->reason[0]) {
			snprintf(tail, sizeof(tail), "%s: %.120s", w->reason, w->detail);
		}
		fprintf(f->out, "\033[2K%-12.12s %-14.14s %-20.20s %-12s %s\n", w->gw, w->comp, w->dev[0] ? w->dev : "(image)",
			w->stage, tail);
	}
	f->drawn = f->n_rows;
	fflush(f->out);
}

static bool comp_done(const gw_track *g, const comp_track *c)
{
	if (c->allowed_seq) {
		size_t i;
		const json_t *d;
		json_array_foreach(c->devices, i, d) {
			char key[200];
			snprintf(key, sizeof(key), "%s/%s", c->name, json_string_value(d));
			if (!json_object_get(g->outcomes, key))
				return false;
		}
		return true;
	}
	if (!c->first_already || c->first_already >= SEQ_MAX)
		return false;
	for (int64_t s = 1; s < c->first_already; s++)
		if (!(g->seen[s >> 3] & (1u << (s & 7))))
			return false;
	return true; /* every earlier report is in, and none was its `allowed` */
}

static bool gw_done(const gw_track *g)
{
	if (!g->seen)
		return false; /* not tracked (out of memory) */
	if (g->reply == 2)
		return true;
	if (g->reply != 1)
		return false;
	for (size_t i = 0; i < g->n_comps; i++) {
		const comp_track *c = &g->comps[i];
		if (g->request_only ? !(c->allowed_seq || comp_done(g, c)) : !comp_done(g, c))
			return false;
	}
	return true;
}

bool follow_done(const follow *f)
{
	for (size_t i = 0; i < f->n_gws; i++)
		if (!gw_done(&f->gws[i]))
			return false;
	return f->n_gws > 0;
}

int follow_result(const follow *f, bool print)
{
	int rc = 0;

	for (size_t i = 0; i < f->n_gws; i++) {
		const gw_track *g = &f->gws[i];
		if (!g->seen) {
			rc = 1;
			if (print)
				fprintf(stderr, "%s: not followed (out of memory)\n", g->gw);
			continue;
		}
		if (g->reply != 1) {
			rc = 1;
			if (print)
				fprintf(stderr, "%s: %s%s%s\n", g->gw, g->reply ? g->reason : "no answer",
					g->detail[0] ? ": " : "", g->detail);
			continue;
		}
		if (!gw_done(g)) {
			/* accepted, but not every step ended (the commands expired) */
			rc = 1;
			for (size_t c = 0; print && c < g->n_comps; c++) {
				const comp_track *ct = &g->comps[c];
				size_t k;
				const json_t *d;
				if (!ct->allowed_seq && !comp_done(g, ct))
					fprintf(stderr, "%s: %s: no report of its admission\n", g->gw, ct->name);
				json_array_foreach(ct->devices, k, d) {
					char key[200];
					snprintf(key, sizeof(key), "%s/%s", ct->name, json_string_value(d));
					if (!json_object_get(g->outcomes, key))
						fprintf(stderr, "%s: %s on %s: no outcome\n", g->gw, ct->name, json_string_value(d));
				}
			}
		}
		const char *k;
		json_t *v;
		json_object_foreach(g->outcomes, k, v) {
			const char *s = json_string_value(v);
			if (strcmp(s, "installed") && strcmp(s, "already_installed")) {
				rc = 1;
				if (print) {
					const char *slash = strchr(k, '/');
					const row *w = NULL;
					for (size_t r = 0; r < f->n_rows; r++)
						if (!strcmp(f->rows[r].gw, g->gw) && slash &&
						    !strncmp(f->rows[r].comp, k, (size_t)(slash - k)) &&
						    !f->rows[r].comp[slash - k] && !strcmp(f->rows[r].dev, slash + 1))
							w = &f->rows[r];
					fprintf(stderr, "%s: %s %s%s%s%s%s\n", g->gw, k, s, w && w->reason[0] ? ": " : "",
						w ? w->reason : "", w && w->detail[0] ? ": " : "", w ? w->detail : "");
				}
			}
		}
		for (size_t c = 0; c < g->n_comps; c++)
			if (g->comps[c].failed)
				rc = 1;
	}
	return rc;
}

follow_state follow_outcome(const follow *f, const char *gw, const char *uid, char reason[33], char detail[256])
{
	const gw_track *g = NULL;
	follow_state worst = FS_INSTALLED;
	bool any_installed = false;
	const char *k;
	json_t *v;

	reason[0] = detail[0] = 0;
	for (size_t i = 0; i < f->n_gws && !g; i++)
		if (!strcmp(f->gws[i].gw, gw) && !strcmp(f->gws[i].uid, uid))
			g = &f->gws[i];
	if (!g || !g->seen || !g->reply)
		return FS_WAITING;
	if (g->reply == 2) {
		put_text(reason, 33, g->reason);
		put_text(detail, 256, g->detail);
		return FS_REFUSED;
	}
	if (!gw_done(g))
		return FS_RUNNING;
	/* the worst outcome of its steps: failed, rolled back, cancelled */
	json_object_foreach(g->outcomes, k, v) {
		const char *s = json_string_value(v);
		follow_state fs = !strcmp(s, "failed")        ? FS_FAILED
				  : !strcmp(s, "rolled_back") ? FS_ROLLED_BACK
				  : !strcmp(s, "cancelled")   ? FS_CANCELLED
							      : FS_INSTALLED;
		any_installed = any_installed || !strcmp(s, "installed");
		if (fs > worst) {
			worst = fs;
			const char *slash = strchr(k, '/');
			for (size_t r = 0; r < f->n_rows && slash; r++) {
				const row *w = &f->rows[r];
				if (!strcmp(w->gw, gw) && !strncmp(w->comp, k, (size_t)(slash - k)) && !w->comp[slash - k] &&
				    !strcmp(w->dev, slash + 1)) {
					put_text(reason, 33, w->reason);
					put_text(detail, 256, w->detail);
				}
			}
		}
	}
	for (size_t c = 0; c < g->n_comps; c++)
		if (g->comps[c].failed && worst < FS_FAILED) {
			worst = FS_FAILED;
			const row *w = row_find((follow *)f, gw, g->comps[c].name, "");
			if (w) {
				put_text(reason, 33, w->reason);
				put_text(detail, 256, w->detail);
			}
		}
	if (worst == FS_INSTALLED && !any_installed)
		return FS_ALREADY;
	return worst;
}

void follow_status(follow *f, const char *gw, const char *uid, const json_t *given)
{
	gw_track *g = track_of(f, gw, uid);
	size_t i, k;
	json_t *c, *step;

	if (!g || !g->seen || !json_is_object(given))
		return;
	json_t *status = json_deep_copy(given);
	if (!status)
		return;
	defang(status);
	if (!g->reply)
		g->reply = 1; /* the gateway has the update: it accepted the command */
	json_array_foreach(json_object_get(status, "components"), i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		comp_track *ct = NULL;
		for (size_t n = 0; name && n < g->n_comps; n++)
			if (!strcmp(g->comps[n].name, name))
				ct = &g->comps[n];
		if (!ct)
			continue;
		json_t *devs = json_array();
		json_array_foreach(json_object_get(c, "steps"), k, step) {
			const char *dev = json_string_value(json_object_get(step, "device"));
			const char *stage = json_string_value(json_object_get(step, "stage"));
			if (!dev || !stage || strlen(dev) > 128)
				continue;
			json_array_append_new(devs, json_string(dev));
			char key[200];
			snprintf(key, sizeof(key), "%s/%s", name, dev);
			if (is_outcome(stage) && !json_object_get(g->outcomes, key) &&
			    json_object_size(g->outcomes) < OUTCOMES_MAX)
				json_object_set_new(g->outcomes, key, json_string(stage));
			row *w = row_of(f, gw, name, dev);
			if (w && !is_outcome(w->stage)) {
				const char *reason = json_string_value(json_object_get(step, "reason"));
				const char *ver = json_string_value(json_object_get(step, "version"));
				put_text(w->stage, sizeof(w->stage), stage);
				snprintf(w->uid, sizeof(w->uid), "%s", uid);
				if (reason)
					put_text(w->reason, sizeof(w->reason), reason);
				if (ver)
					put_text(w->version, sizeof(w->version), ver);
			}
		}
		/* the steps are every device the component goes to: what its
		 * `allowed` lists, and those already running it (a component has
		 * one at least: an answer without any says nothing) */
		if (!ct->allowed_seq && json_array_size(devs)) {
			ct->allowed_seq = INT64_MAX;
			json_decref(ct->devices);
			ct->devices = devs;
		} else {
			json_decref(devs);
		}
		const char *cstage = json_string_value(json_object_get(c, "stage"));
		if (cstage && !strcmp(cstage, "failed"))
			ct->failed = true;
	}
	json_decref(status);
}

json_t *follow_rows_json(const follow *f)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < f->n_rows; i++) {
		const row *w = &f->rows[i];
		json_t *r = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:f}", "gateway", w->gw, "update_id", w->uid,
				      "component", w->comp, "stage", w->stage, "version", w->version, "done",
				      (json_int_t)(w->done < 0 ? 0 : w->done), "total", (json_int_t)(w->total < 0 ? 0 : w->total),
				      "rate", w->rate);
		if (!r)
			continue;
		json_object_set_new(r, "device", w->dev[0] ? json_string(w->dev) : json_null());
		if (w->reason[0]) {
			json_object_set_new(r, "reason", json_string(w->reason));
			json_object_set_new(r, "detail", json_string(w->detail));
		}
		json_array_append_new(a, r);
	}
	return a;
}

unsigned follow_refused(const follow *f)
{
	return f->refused;
}
