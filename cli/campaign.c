/* The campaigns' SQLite file (campaign.h).  Several processes use it at
 * once (a runner, and the commands that steer it): WAL, a busy timeout,
 * and every change in a transaction. */
#define _GNU_SOURCE /* strptime, timegm */
#include "campaign.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ferry/jsonfield.h"

struct camp_db {
	sqlite3 *db;
	char path[1100];
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS campaigns("
	" name TEXT PRIMARY KEY, tag TEXT NOT NULL, created INTEGER NOT NULL, manifest TEXT NOT NULL,"
	" payload TEXT, components TEXT NOT NULL, images TEXT NOT NULL, conditions TEXT NOT NULL,"
	" sequence INTEGER NOT NULL, continuous INTEGER NOT NULL, atomic INTEGER NOT NULL,"
	" batch INTEGER NOT NULL, advance_pct INTEGER NOT NULL, stop_n INTEGER NOT NULL, stop_pct INTEGER NOT NULL,"
	" start_at INTEGER NOT NULL, win_from INTEGER NOT NULL, win_to INTEGER NOT NULL, ttl INTEGER NOT NULL,"
	" state TEXT NOT NULL CHECK(state IN ('active','paused','stopped','cancelled','done')),"
	" why TEXT NOT NULL DEFAULT '', targeted INTEGER NOT NULL DEFAULT 0, cur_batch INTEGER NOT NULL DEFAULT 0,"
	" attempt INTEGER NOT NULL DEFAULT 1, seq INTEGER, keys TEXT);"
	"CREATE TABLE IF NOT EXISTS targets("
	" campaign TEXT NOT NULL REFERENCES campaigns(name), gateway TEXT NOT NULL, batch INTEGER NOT NULL,"
	" attempt INTEGER NOT NULL,"
	" state TEXT NOT NULL CHECK(state IN ('pending','sending','sent','running','installed',"
	"  'already_installed','failed','rolled_back','refused','cancelled')),"
	" reason TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', update_id TEXT, jti TEXT,"
	" command TEXT, cancel_jti TEXT, cancel_command TEXT, cancel_sent INTEGER NOT NULL DEFAULT 0,"
	" added INTEGER NOT NULL, PRIMARY KEY(campaign, gateway));"
	/* every command a runner made, recorded before it was published */
	"CREATE TABLE IF NOT EXISTS commands("
	" jti TEXT PRIMARY KEY, campaign TEXT NOT NULL, gateway TEXT NOT NULL, op TEXT NOT NULL,"
	" attempt INTEGER NOT NULL, made INTEGER NOT NULL);"
	/* the verified replies and reports of targets, to follow them again after a restart */
	"CREATE TABLE IF NOT EXISTS messages("
	" n INTEGER PRIMARY KEY AUTOINCREMENT, campaign TEXT NOT NULL, gateway TEXT NOT NULL,"
	" update_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, component TEXT, device TEXT,"
	" stage TEXT, reason TEXT, seq INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS messages_by_target ON messages(campaign, gateway, update_id);"
	/* a report the gateway sent again (after its reconnection) is kept once */
	"CREATE UNIQUE INDEX IF NOT EXISTS messages_once ON messages(campaign, gateway, update_id, kind, seq,"
	" ifnull(component, ''), ifnull(device, ''), ifnull(stage, ''));";

ferry_err camp_db_open(const char *state_dir, camp_db **out, ferry_status *st)
{
	camp_db *d = calloc(1, sizeof(*d));
	char *err = NULL;

	if (!d)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	if (mkdir(state_dir, 0700) && errno != EEXIST) {
		free(d);
		return ferry_fail(st, FERRY_E_MALFORMED, "state_dir %s: %s", state_dir, strerror(errno));
	}
	snprintf(d->path, sizeof(d->path), "%s/campaigns.db", state_dir);
	/* it holds the content keys of encrypted campaigns: the file, its
	 * journal and its WAL are the operator's alone, whatever the umask */
	mode_t mask = umask(077);
	if (sqlite3_open_v2(d->path, &d->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW, NULL) !=
		    SQLITE_OK ||
	    sqlite3_busy_timeout(d->db, 10000) != SQLITE_OK ||
	    sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;", NULL, NULL,
			 &err) != SQLITE_OK ||
	    sqlite3_exec(d->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		umask(mask);
		ferry_err e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", d->path, err ? err : sqlite3_errmsg(d->db));
		sqlite3_free(err);
		sqlite3_close(d->db);
		free(d);
		return e;
	}
	umask(mask);
	if (chmod(d->path, 0600)) {
		ferry_err e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", d->path, strerror(errno));
		sqlite3_close(d->db);
		free(d);
		return e;
	}
	/* a file from before encrypted campaigns: the content keys' column */
	sqlite3_stmt *probe = NULL;
	if (sqlite3_prepare_v2(d->db, "SELECT keys FROM campaigns LIMIT 0", -1, &probe, NULL) != SQLITE_OK &&
	    sqlite3_exec(d->db, "ALTER TABLE campaigns ADD COLUMN keys TEXT", NULL, NULL, &err) != SQLITE_OK) {
		ferry_err e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", d->path, err ? err : sqlite3_errmsg(d->db));
		sqlite3_free(err);
		sqlite3_close(d->db);
		free(d);
		return e;
	}
	sqlite3_finalize(probe);
	*out = d;
	return FERRY_OK;
}

void camp_db_close(camp_db *db)
{
	if (!db)
		return;
	sqlite3_close(db->db);
	free(db);
}

sqlite3 *camp_db_handle(camp_db *db)
{
	return db->db;
}

static ferry_err exec(camp_db *db, const char *sql, ferry_status *st)
{
	if (sqlite3_exec(db->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
	return FERRY_OK;
}

ferry_err camp_begin(camp_db *db, ferry_status *st)
{
	return exec(db, "BEGIN IMMEDIATE", st);
}

ferry_err camp_commit(camp_db *db, ferry_status *st)
{
	return exec(db, "COMMIT", st);
}

void camp_rollback(camp_db *db)
{
	sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
}

static char *dump(const json_t *j)
{
	return j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

ferry_err camp_insert(camp_db *db, const campaign *c, ferry_status *st)
{
	sqlite3_stmt *s = NULL;
	char *payload = dump(c->payload), *comps = dump(c->components), *images = dump(c->images),
	     *where = dump(c->where), *keys = dump(c->keys);
	ferry_err e = FERRY_OK;

	if (!comps || !images || !where || (c->payload && !payload) || (c->keys && !keys)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if (sqlite3_prepare_v2(db->db,
			       "INSERT INTO campaigns(name, tag, created, manifest, payload, components, images, conditions,"
			       " sequence, continuous, atomic, batch, advance_pct, stop_n, stop_pct, start_at, win_from,"
			       " win_to, ttl, keys, state) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'active')",
			       -1, &s, NULL) != SQLITE_OK) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
		goto out;
	}
	sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, c->tag, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, c->created);
	sqlite3_bind_text(s, 4, c->manifest, -1, SQLITE_STATIC);
	if (payload)
		sqlite3_bind_text(s, 5, payload, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, comps, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 7, images, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, where, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 9, c->sequence);
	sqlite3_bind_int(s, 10, c->continuous);
	sqlite3_bind_int(s, 11, c->atomic);
	sqlite3_bind_int64(s, 12, c->batch);
	sqlite3_bind_int64(s, 13, c->advance_pct);
	sqlite3_bind_int64(s, 14, c->stop_n);
	sqlite3_bind_int64(s, 15, c->stop_pct);
	sqlite3_bind_int64(s, 16, c->start_at);
	sqlite3_bind_int64(s, 17, c->win_from);
	sqlite3_bind_int64(s, 18, c->win_to);
	sqlite3_bind_int64(s, 19, c->ttl);
	if (keys)
		sqlite3_bind_text(s, 20, keys, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_CONSTRAINT)
		e = ferry_fail(st, FERRY_E_MALFORMED, "a campaign named %s exists already", c->name);
	else if (rc != SQLITE_DONE)
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
out:
	sqlite3_finalize(s);
	free(payload);
	free(comps);
	free(images);
	free(where);
	free(keys);
	return e;
}

static json_t *col_json(sqlite3_stmt *s, int i)
{
	const char *t = (const char *)sqlite3_column_text(s, i);
	return t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
}

ferry_err camp_get(camp_db *db, const char *name, campaign *c, ferry_status *st)
{
	sqlite3_stmt *s = NULL;
	ferry_err e = FERRY_OK;

	memset(c, 0, sizeof(*c));
	if (sqlite3_prepare_v2(db->db,
			       "SELECT name, tag, created, manifest, payload, components, images, conditions, sequence,"
			       " continuous, atomic, batch, advance_pct, stop_n, stop_pct, start_at, win_from, win_to, ttl,"
			       " state, why, targeted, cur_batch, attempt, keys FROM campaigns WHERE name = ?",
			       -1, &s, NULL) != SQLITE_OK)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_DONE) {
		e = ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no campaign named %s", name);
	} else if (rc != SQLITE_ROW) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
	} else {
		snprintf(c->name, sizeof(c->name), "%s", (const char *)sqlite3_column_text(s, 0));
		snprintf(c->tag, sizeof(c->tag), "%s", (const char *)sqlite3_column_text(s, 1));
		c->created = sqlite3_column_int64(s, 2);
		c->manifest = strdup((const char *)sqlite3_column_text(s, 3));
		c->payload = col_json(s, 4);
		c->components = col_json(s, 5);
		c->images = col_json(s, 6);
		c->where = col_json(s, 7);
		c->sequence = sqlite3_column_int64(s, 8);
		c->continuous = sqlite3_column_int(s, 9);
		c->atomic = sqlite3_column_int(s, 10);
		c->batch = sqlite3_column_int64(s, 11);
		c->advance_pct = sqlite3_column_int64(s, 12);
		c->stop_n = sqlite3_column_int64(s, 13);
		c->stop_pct = sqlite3_column_int64(s, 14);
		c->start_at = sqlite3_column_int64(s, 15);
		c->win_from = sqlite3_column_int64(s, 16);
		c->win_to = sqlite3_column_int64(s, 17);
		c->ttl = sqlite3_column_int64(s, 18);
		snprintf(c->state, sizeof(c->state), "%s", (const char *)sqlite3_column_text(s, 19));
		snprintf(c->why, sizeof(c->why), "%s", (const char *)sqlite3_column_text(s, 20));
		c->targeted = sqlite3_column_int(s, 21);
		c->cur_batch = sqlite3_column_int64(s, 22);
		c->attempt = sqlite3_column_int64(s, 23);
		c->keys = col_json(s, 24);
		if (!c->manifest || !json_is_array(c->components) || !json_is_object(c->images) ||
		    !json_is_array(c->where) || (c->keys && !json_is_object(c->keys))) {
			camp_free(c);
			e = ferry_fail(st, FERRY_E_INTERNAL, "%s: campaign %s is damaged", db->path, name);
		}
	}
	sqlite3_finalize(s);
	return e;
}

void camp_free(campaign *c)
{
	free(c->manifest);
	json_decref(c->payload);
	json_decref(c->components);
	json_decref(c->images);
	json_decref(c->where);
	json_decref(c->keys);
	c->keys = NULL;
	c->manifest = NULL;
	c->payload = c->components = c->images = c->where = NULL;
}

ferry_err camp_names(camp_db *db, char (**names)[CAMPAIGN_NAME_MAX + 1], size_t *n, ferry_status *st)
{
	sqlite3_stmt *s = NULL;
	size_t cap = 0;

	*names = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(db->db, "SELECT name FROM campaigns ORDER BY created, name", -1, &s, NULL) != SQLITE_OK)
		return ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			void *p = realloc(*names, cap * sizeof(**names));
			if (!p) {
				sqlite3_finalize(s);
				return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
			}
			*names = p;
		}
		snprintf((*names)[(*n)++], CAMPAIGN_NAME_MAX + 1, "%s", (const char *)sqlite3_column_text(s, 0));
	}
	sqlite3_finalize(s);
	return FERRY_OK;
}

ferry_err camp_save(camp_db *db, const campaign *c, ferry_status *st)
{
	sqlite3_stmt *s = NULL;
	char *payload = dump(c->payload), *comps = dump(c->components), *images = dump(c->images), *keys = dump(c->keys);
	ferry_err e = FERRY_OK;

	/* with the manifest, what came from it: a retry with a newer one
	 * links its images, and wraps its keys */
	if (!comps || !images || (c->payload && !payload) || (c->keys && !keys)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
		goto out;
	}
	if (sqlite3_prepare_v2(db->db,
			       "UPDATE campaigns SET state = ?, why = ?, targeted = ?, cur_batch = ?, attempt = ?,"
			       " manifest = ?, sequence = ?, payload = ?, components = ?, images = ?, keys = ?"
			       " WHERE name = ?",
			       -1, &s, NULL) != SQLITE_OK) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
		goto out;
	}
	sqlite3_bind_text(s, 1, c->state, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, c->why, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 3, c->targeted);
	sqlite3_bind_int64(s, 4, c->cur_batch);
	sqlite3_bind_int64(s, 5, c->attempt);
	sqlite3_bind_text(s, 6, c->manifest, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 7, c->sequence);
	if (payload)
		sqlite3_bind_text(s, 8, payload, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 9, comps, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 10, images, -1, SQLITE_STATIC);
	if (keys)
		sqlite3_bind_text(s, 11, keys, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 12, c->name, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
out:
	sqlite3_finalize(s);
	free(payload);
	free(comps);
	free(images);
	free(keys);
	return e;
}

void camp_update_id(const campaign *c, int64_t attempt, char out[65])
{
	snprintf(out, 65, "%s.%s.%lld", c->name, c->tag, (long long)attempt);
}

bool camp_final(const char *s)
{
	return !strcmp(s, "installed") || !strcmp(s, "already_installed") || camp_failure(s) || !strcmp(s, "cancelled");
}

bool camp_failure(const char *s)
{
	return !strcmp(s, "failed") || !strcmp(s, "rolled_back") || !strcmp(s, "refused");
}

static bool hhmm(const char *s, int64_t *m)
{
	if (strlen(s) != 5 || s[2] != ':')
		return false;
	for (int i = 0; i < 5; i++)
		if (i != 2 && (s[i] < '0' || s[i] > '9'))
			return false;
	int h = (s[0] - '0') * 10 + (s[1] - '0'), mi = (s[3] - '0') * 10 + (s[4] - '0');
	if (h > 23 || mi > 59)
		return false;
	*m = h * 60 + mi;
	return true;
}

bool camp_parse_window(const char *s, int64_t *from, int64_t *to)
{
	char a[8], b[8];
	if (strlen(s) != 11 || s[5] != '-')
		return false;
	memcpy(a, s, 5);
	a[5] = 0;
	memcpy(b, s + 6, 5);
	b[5] = 0;
	return hhmm(a, from) && hhmm(b, to) && *from != *to;
}

bool camp_in_window(int64_t from, int64_t to, int64_t m)
{
	if (from < 0)
		return true;
	return from < to ? m >= from && m < to : m >= from || m < to;
}

bool camp_parse_time(const char *s, int64_t *out)
{
	struct tm tm = {0};
	char *end;

	if (*s >= '0' && *s <= '9' && !strchr(s, '-')) {
		long long v = strtoll(s, &end, 10);
		if (*end || v < 0)
			return false;
		*out = v;
		return true;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M", &tm);
	if (end && *end == ':')
		end = strptime(end, ":%S", &tm);
	if (!end || strcmp(end, "Z"))
		return false;
	time_t t = timegm(&tm);
	if (t < 0)
		return false;
	*out = t;
	return true;
}

bool camp_parse_count(const char *s, int64_t *n, int64_t *pct)
{
	char *end;
	long long v = strtoll(s, &end, 10);

	if (!*s || *s < '0' || *s > '9')
		return false;
	if (!strcmp(end, "%")) {
		if (v < 1 || v > 100)
			return false;
		*pct = v;
		*n = 0;
		return true;
	}
	if (*end || v < 1 || v > 1000000)
		return false;
	*n = v;
	*pct = 0;
	return true;
}

static void bump(json_t *o, const char *k)
{
	json_object_set_new(o, k, json_integer(json_integer_value(json_object_get(o, k)) + 1));
}

static json_t *zero_counts(void)
{
	return json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:{}}", "targeted", 0, "pending", 0, "in_progress", 0,
			 "installed", 0, "already_installed", 0, "failed", 0, "rolled_back", 0, "refused", 0,
			 "cancelled", 0, "reasons");
}

/* a target state counted under its heading */
static const char *heading(const char *s)
{
	if (!strcmp(s, "pending") || !strcmp(s, "sending"))
		return "pending";
	if (!strcmp(s, "sent") || !strcmp(s, "running"))
		return "in_progress";
	return s;
}

static int rank(const char *stage)
{
	static const char *const order[] = {"installed", "already_installed", "cancelled", "rolled_back", "failed"};
	for (int i = 0; i < 5; i++)
		if (!strcmp(stage, order[i]))
			return i + 1;
	return 0;
}

ferry_err camp_counts(camp_db *db, const campaign *c, json_t **out, ferry_status *st)
{
	sqlite3_stmt *s = NULL, *m = NULL;
	json_t *all = zero_counts(), *per = json_object();
	ferry_err e = FERRY_OK;

	if (sqlite3_prepare_v2(db->db, "SELECT gateway, state, reason, update_id FROM targets WHERE campaign = ?", -1, &s,
			       NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db->db,
			       "SELECT component, device, stage, reason FROM messages WHERE campaign = ? AND gateway = ?"
			       " AND update_id = ? AND kind IN ('stage','step') AND stage IN ('installed','already_installed',"
			       "'failed','rolled_back','cancelled') ORDER BY n",
			       -1, &m, NULL) != SQLITE_OK) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "%s: %s", db->path, sqlite3_errmsg(db->db));
		goto out;
	}
	size_t i;
	json_t *name;
	json_array_foreach(c->components, i, name) json_object_set_new(per, json_string_value(name), zero_counts());
	sqlite3_bind_text(s, 1, c->name, -1, SQLITE_STATIC);
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *gw = (const char *)sqlite3_column_text(s, 0), *state = (const char *)sqlite3_column_text(s, 1),
			   *reason = (const char *)sqlite3_column_text(s, 2), *uid = (const char *)sqlite3_column_text(s, 3);
		bump(all, "targeted");
		bump(all, heading(state));
		if (camp_failure(state))
			bump(json_object_get(all, "reasons"), reason[0] ? reason : "unknown");
		/* each component: its worst step outcome on this gateway */
		json_t *worst = json_object(), *why = json_object();
		if (uid) {
			sqlite3_reset(m);
			sqlite3_bind_text(m, 1, c->name, -1, SQLITE_STATIC);
			sqlite3_bind_text(m, 2, gw, -1, SQLITE_STATIC);
			sqlite3_bind_text(m, 3, uid, -1, SQLITE_STATIC);
			while (sqlite3_step(m) == SQLITE_ROW) {
				const char *comp = (const char *)sqlite3_column_text(m, 0);
				const char *stage = (const char *)sqlite3_column_text(m, 2);
				const char *r = (const char *)sqlite3_column_text(m, 3);
				const char *cur = json_string_value(json_object_get(worst, comp));
				if (!comp || !stage || !json_object_get(per, comp))
					continue;
				/* a failure of the image (no device) fails the component */
				if (!sqlite3_column_text(m, 1) && strcmp(stage, "failed"))
					continue;
				if (!cur || rank(stage) > rank(cur)) {
					json_object_set_new(worst, comp, json_string(stage));
					json_object_set_new(why, comp, json_string(r ? r : ""));
				}
			}
		}
		json_array_foreach(c->components, i, name) {
			const char *n = json_string_value(name);
			json_t *pc = json_object_get(per, n);
			const char *w = json_string_value(json_object_get(worst, n));
			bump(pc, "targeted");
			if (w) {
				bump(pc, w);
				if (camp_failure(w)) {
					const char *r = json_string_value(json_object_get(why, n));
					bump(json_object_get(pc, "reasons"), r && *r ? r : "unknown");
				}
			} else {
				/* no step ended: as its gateway stands (refused: not started) */
				const char *h = heading(state);
				bump(pc, !strcmp(h, "installed") || !strcmp(h, "already_installed") ? "in_progress" : h);
				if (camp_failure(h))
					bump(json_object_get(pc, "reasons"), reason[0] ? reason : "unknown");
			}
		}
		json_decref(worst);
		json_decref(why);
	}
	json_object_set_new(all, "components", per);
	per = NULL;
	*out = all;
	all = NULL;
out:
	sqlite3_finalize(s);
	sqlite3_finalize(m);
	json_decref(all);
	json_decref(per);
	return e;
}
