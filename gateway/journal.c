/* The journal in SQLite.  WAL and synchronous=FULL: a committed transition
 * survives a power cut.  Each public function is one transaction, and the
 * transition + report pair is one, so the outbox can never hold a report
 * whose stage the journal does not, or the other way round.  A mutex makes
 * the handle safe to share between the main thread and the worker. */
#include "journal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_VERSION 1

struct ferry_journal {
	sqlite3 *db;
	pthread_mutex_t lock;
	char path[1024];
};

static const char *const ustate_names[] = {
	"requested", "allowed", "downloading", "downloaded", "verifying", "verified",
	"installing", "done", "failed", "cancelled", "refused",
};

const char *ferry_ustate_name(ferry_ustate s)
{
	return (unsigned)s < sizeof(ustate_names) / sizeof(ustate_names[0]) ? ustate_names[s] : "?";
}

bool ferry_ustate_final(ferry_ustate s)
{
	return s == FERRY_U_DONE || s == FERRY_U_FAILED || s == FERRY_U_CANCELLED || s == FERRY_U_REFUSED;
}

static const char schema[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
	"INSERT INTO meta VALUES('last_sequence', 0);"
	"CREATE TABLE updates(id TEXT PRIMARY KEY, state INTEGER NOT NULL, manifest TEXT NOT NULL,"
	" sequence INTEGER NOT NULL, expires INTEGER NOT NULL, deploy INTEGER NOT NULL,"
	" created INTEGER NOT NULL, next_seq INTEGER NOT NULL DEFAULT 1);"
	"CREATE TABLE components(update_id TEXT NOT NULL REFERENCES updates(id), name TEXT NOT NULL,"
	" idx INTEGER NOT NULL, stage TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',"
	" dl_offset INTEGER NOT NULL DEFAULT 0, push_offset INTEGER NOT NULL DEFAULT 0, link TEXT,"
	" version TEXT NOT NULL DEFAULT '', PRIMARY KEY(update_id, name));"
	"CREATE TABLE outbox(update_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,"
	" PRIMARY KEY(update_id, seq));"
	"CREATE TABLE replay(jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);"
	"CREATE TABLE installed(component TEXT PRIMARY KEY, version TEXT NOT NULL, device_id TEXT NOT NULL,"
	" ts INTEGER NOT NULL);"
	"PRAGMA user_version = 1;";

static ferry_err dberr(ferry_journal *j, ferry_status *st, const char *what)
{
	return ferry_fail(st, FERRY_E_INTERNAL, "journal %s: %s: %s", j->path, what, sqlite3_errmsg(j->db));
}

/* Prepare sql and bind arguments described by types: 's' text, 'n' text or
 * NULL, 'i' int64. */
static sqlite3_stmt *prep(ferry_journal *j, const char *sql, const char *types, ...)
{
	sqlite3_stmt *s = NULL;
	va_list ap;

	if (sqlite3_prepare_v2(j->db, sql, -1, &s, NULL) != SQLITE_OK)
		return NULL;
	va_start(ap, types);
	for (int i = 0; types[i]; i++) {
		int rc;
		if (types[i] == 'i') {
			rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
		} else {
			const char *t = va_arg(ap, const char *);
			rc = t ? sqlite3_bind_text(s, i + 1, t, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s, i + 1);
		}
		if (rc != SQLITE_OK) {
			sqlite3_finalize(s);
			s = NULL;
			break;
		}
	}
	va_end(ap);
	return s;
}

/* Run a prepared statement that returns no rows. */
static int run(sqlite3_stmt *s)
{
	int rc = s ? sqlite3_step(s) : SQLITE_ERROR;
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int begin(ferry_journal *j)
{
	pthread_mutex_lock(&j->lock);
	if (sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		pthread_mutex_unlock(&j->lock);
		return -1;
	}
	return 0;
}

static ferry_err end(ferry_journal *j, ferry_err e, ferry_status *st, const char *what)
{
	if (!e && sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		e = dberr(j, st, what);
	if (e)
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&j->lock);
	return e;
}

static ferry_err check_and_migrate(ferry_journal *j, ferry_status *st)
{
	sqlite3_stmt *s;
	int version = -1;
	const char *ok = NULL;

	if ((s = prep(j, "PRAGMA quick_check", ""))) {
		if (sqlite3_step(s) == SQLITE_ROW)
			ok = (const char *)sqlite3_column_text(s, 0);
		bool good = ok && !strcmp(ok, "ok");
		sqlite3_finalize(s);
		if (!good)
			return ferry_fail(st, FERRY_E_INTERNAL, "journal %s is damaged; it was left as it is", j->path);
	} else {
		return ferry_fail(st, FERRY_E_INTERNAL, "journal %s is not a database; it was left as it is", j->path);
	}
	if ((s = prep(j, "PRAGMA user_version", "")) && sqlite3_step(s) == SQLITE_ROW)
		version = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (version == 0) {
		if (sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(j->db, schema, NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			ferry_err e = dberr(j, st, "creating the tables");
			sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
			return e;
		}
		return FERRY_OK;
	}
	if (version != SCHEMA_VERSION)
		return ferry_fail(st, FERRY_E_INTERNAL, "journal %s has schema %d; this ferryd knows %d", j->path,
				  version, SCHEMA_VERSION);
	return FERRY_OK;
}

ferry_err ferry_journal_open(const char *path, ferry_journal **out, ferry_status *st)
{
	ferry_journal *j = calloc(1, sizeof(*j));
	ferry_err e;

	if (!j)
		return ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	snprintf(j->path, sizeof(j->path), "%s", path);
	pthread_mutex_init(&j->lock, NULL);
	if (sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
			    NULL) != SQLITE_OK) {
		e = dberr(j, st, "open");
		ferry_journal_close(j);
		return e;
	}
	sqlite3_busy_timeout(j->db, 5000);
	if ((e = check_and_migrate(j, st)) ||
	    sqlite3_exec(j->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", NULL,
			 NULL, NULL) != SQLITE_OK) {
		if (!e)
			e = dberr(j, st, "settings");
		ferry_journal_close(j);
		return e;
	}
	*out = j;
	return FERRY_OK;
}

void ferry_journal_close(ferry_journal *j)
{
	if (!j)
		return;
	sqlite3_close(j->db);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

ferry_err ferry_journal_jti_use(ferry_journal *j, const char *jti, int64_t exp, int64_t now, ferry_status *st)
{
	sqlite3_stmt *s;
	ferry_err e = FERRY_OK;

	if (begin(j))
		return dberr(j, st, "begin");
	if (run(prep(j, "DELETE FROM replay WHERE exp < ?", "i", now)))
		e = dberr(j, st, "pruning the replay store");
	if (!e && (s = prep(j, "SELECT 1 FROM replay WHERE jti = ?", "s", jti))) {
		if (sqlite3_step(s) == SQLITE_ROW)
			e = ferry_fail(st, FERRY_E_REPLAYED, "jti \"%.64s\" was used before", jti);
		sqlite3_finalize(s);
	}
	if (!e && run(prep(j, "INSERT INTO replay VALUES(?, ?)", "si", jti, exp)))
		e = dberr(j, st, "recording the jti");
	return end(j, e, st, "replay store");
}

static int64_t scalar(ferry_journal *j, const char *sql, const char *arg)
{
	sqlite3_stmt *s = prep(j, sql, arg ? "s" : "", arg);
	int64_t v = 0;
	if (s && sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

int64_t ferry_journal_last_sequence(ferry_journal *j)
{
	pthread_mutex_lock(&j->lock);
	int64_t v = scalar(j, "SELECT value FROM meta WHERE key = 'last_sequence'", NULL);
	pthread_mutex_unlock(&j->lock);
	return v;
}

ferry_err ferry_journal_update_add(ferry_journal *j, const ferry_jupdate *u, const char *const *components,
				   size_t n, ferry_status *st)
{
	ferry_err e = FERRY_OK;

	if (begin(j))
		return dberr(j, st, "begin");
	if (scalar(j, "SELECT count(*) FROM updates WHERE id = ?", u->id))
		e = ferry_fail(st, FERRY_E_MALFORMED, "update %s exists already", u->id);
	else if (run(prep(j, "INSERT INTO updates(id, state, manifest, sequence, expires, deploy, created)"
			     " VALUES(?, ?, ?, ?, ?, ?, ?)", "sisiiii", u->id, (int64_t)u->state, u->manifest,
			     u->sequence, u->expires, (int64_t)u->deploy, u->created)))
		e = dberr(j, st, "adding an update");
	for (size_t i = 0; !e && i < n; i++)
		if (run(prep(j, "INSERT INTO components(update_id, name, idx) VALUES(?, ?, ?)", "ssi", u->id,
			     components[i], (int64_t)i)))
			e = dberr(j, st, "adding a component");
	return end(j, e, st, "adding an update");
}

ferry_err ferry_journal_update_get(ferry_journal *j, const char *id, ferry_jupdate *out, ferry_status *st)
{
	sqlite3_stmt *s;
	ferry_err e = FERRY_OK;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT state, manifest, sequence, expires, deploy, created FROM updates WHERE id = ?", "s", id);
	if (!s) {
		e = dberr(j, st, "reading an update");
	} else if (sqlite3_step(s) != SQLITE_ROW) {
		e = ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", id);
	} else {
		snprintf(out->id, sizeof(out->id), "%s", id);
		out->state = (ferry_ustate)sqlite3_column_int(s, 0);
		out->manifest = strdup((const char *)sqlite3_column_text(s, 1));
		out->sequence = sqlite3_column_int64(s, 2);
		out->expires = sqlite3_column_int64(s, 3);
		out->deploy = sqlite3_column_int(s, 4) != 0;
		out->created = sqlite3_column_int64(s, 5);
		if (!out->manifest)
			e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return e;
}

void ferry_jupdate_free(ferry_jupdate *u)
{
	free(u->manifest);
	u->manifest = NULL;
}

/* One UPDATE statement in its own transaction. */
static ferry_err change(ferry_journal *j, ferry_status *st, const char *what, sqlite3_stmt *s)
{
	ferry_err e = FERRY_OK;
	if (!s || run(s))
		e = dberr(j, st, what);
	else if (sqlite3_changes(j->db) == 0)
		e = ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "journal: %s: no such row", what);
	return e;
}

#define CHANGE(what, sql, types, ...)                                                                              \
	do {                                                                                                       \
		ferry_err e_;                                                                                      \
		if (begin(j))                                                                                      \
			return dberr(j, st, "begin");                                                              \
		e_ = change(j, st, what, prep(j, sql, types, __VA_ARGS__));                                        \
		return end(j, e_, st, what);                                                                       \
	} while (0)

ferry_err ferry_journal_update_state(ferry_journal *j, const char *id, ferry_ustate s, ferry_status *st)
{
	CHANGE("update state", "UPDATE updates SET state = ? WHERE id = ?", "is", (int64_t)s, id);
}

ferry_err ferry_journal_set_sequence(ferry_journal *j, int64_t sequence, ferry_status *st)
{
	CHANGE("sequence", "UPDATE meta SET value = max(value, ?) WHERE key = 'last_sequence'", "i", sequence);
}

ferry_err ferry_journal_set_deploy(ferry_journal *j, const char *id, bool deploy, ferry_status *st)
{
	CHANGE("deploy flag", "UPDATE updates SET deploy = ? WHERE id = ?", "is", (int64_t)deploy, id);
}

ferry_err ferry_journal_set_link(ferry_journal *j, const char *update_id, const char *component, const char *url,
				 ferry_status *st)
{
	CHANGE("link", "UPDATE components SET link = ? WHERE update_id = ? AND name = ?", "nss", url, update_id,
	       component);
}

ferry_err ferry_journal_set_dl_offset(ferry_journal *j, const char *update_id, const char *component, int64_t off,
				      ferry_status *st)
{
	CHANGE("download offset", "UPDATE components SET dl_offset = ? WHERE update_id = ? AND name = ?", "iss", off,
	       update_id, component);
}

ferry_err ferry_journal_set_push_offset(ferry_journal *j, const char *update_id, const char *component,
					int64_t off, ferry_status *st)
{
	CHANGE("push offset", "UPDATE components SET push_offset = ? WHERE update_id = ? AND name = ?", "iss", off,
	       update_id, component);
}

ferry_err ferry_journal_unfinished(ferry_journal *j, json_t **ids, ferry_status *st)
{
	sqlite3_stmt *s;

	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT id FROM updates WHERE state NOT IN (?, ?, ?, ?) ORDER BY created, rowid", "iiii",
		 (int64_t)FERRY_U_DONE, (int64_t)FERRY_U_FAILED, (int64_t)FERRY_U_CANCELLED, (int64_t)FERRY_U_REFUSED);
	*ids = json_array();
	while (s && sqlite3_step(s) == SQLITE_ROW)
		json_array_append_new(*ids, json_string((const char *)sqlite3_column_text(s, 0)));
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return s ? FERRY_OK : dberr(j, st, "listing updates");
}

static void copy_col(sqlite3_stmt *s, int col, char *out, size_t n)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	snprintf(out, n, "%s", t ? (const char *)t : "");
}

ferry_err ferry_journal_components(ferry_journal *j, const char *update_id, ferry_jcomponent **out, size_t *n,
				   ferry_status *st)
{
	sqlite3_stmt *s;
	size_t cap = 0;
	ferry_err e = FERRY_OK;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT name, idx, stage, reason, dl_offset, push_offset, link, version FROM components"
		    " WHERE update_id = ? ORDER BY idx", "s", update_id);
	if (!s)
		e = dberr(j, st, "reading components");
	while (!e && sqlite3_step(s) == SQLITE_ROW) {
		if (*n == cap) {
			ferry_jcomponent *nc = realloc(*out, (cap = cap ? cap * 2 : 4) * sizeof(**out));
			if (!nc) {
				e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
				break;
			}
			*out = nc;
		}
		ferry_jcomponent *c = &(*out)[(*n)++];
		memset(c, 0, sizeof(*c));
		copy_col(s, 0, c->name, sizeof(c->name));
		c->idx = sqlite3_column_int(s, 1);
		copy_col(s, 2, c->stage, sizeof(c->stage));
		copy_col(s, 3, c->reason, sizeof(c->reason));
		c->dl_offset = sqlite3_column_int64(s, 4);
		c->push_offset = sqlite3_column_int64(s, 5);
		if (sqlite3_column_type(s, 6) != SQLITE_NULL)
			c->link = strdup((const char *)sqlite3_column_text(s, 6));
		copy_col(s, 7, c->version, sizeof(c->version));
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	if (e) {
		ferry_jcomponents_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return e;
}

void ferry_jcomponents_free(ferry_jcomponent *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++)
		free(c[i].link);
	free(c);
}

static char *report_body(const ferry_transition *t, int64_t seq)
{
	json_t *r = json_pack("{s:s,s:s,s:s,s:I,s:I}", "update_id", t->update_id, "component", t->component, "stage",
			      t->stage, "seq", (json_int_t)seq, "ts", (json_int_t)t->ts);
	char *body;

	if (!r)
		return NULL;
	if (t->total >= 0)
		json_object_set_new(r, "progress", json_pack("{s:I,s:I}", "done", (json_int_t)t->done, "total",
							     (json_int_t)t->total));
	if (t->reason) {
		json_object_set_new(r, "reason", json_string(t->reason));
		json_object_set_new(r, "detail", json_string(t->detail ? t->detail : ""));
	}
	if (t->version)
		json_object_set_new(r, "version", json_string(t->version));
	body = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	return body;
}

ferry_err ferry_journal_transition(ferry_journal *j, const ferry_transition *t, char **report, int64_t *seq,
				   ferry_status *st)
{
	ferry_err e = FERRY_OK;
	char *body = NULL;

	*report = NULL;
	if (begin(j))
		return dberr(j, st, "begin");
	*seq = scalar(j, "SELECT next_seq FROM updates WHERE id = ?", t->update_id);
	if (*seq < 1)
		e = ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "journal: no update %s", t->update_id);
	if (!e && !(body = report_body(t, *seq)))
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot build the report");
	if (!e && (run(prep(j, "UPDATE updates SET next_seq = next_seq + 1 WHERE id = ?", "s", t->update_id)) ||
		   run(prep(j, "UPDATE components SET stage = ?, reason = coalesce(?, reason), version ="
			       " coalesce(?, version) WHERE update_id = ? AND name = ?", "snnss", t->stage, t->reason,
			       t->version, t->update_id, t->component)) ||
		   sqlite3_changes(j->db) != 1 ||
		   run(prep(j, "INSERT INTO outbox VALUES(?, ?, ?)", "sis", t->update_id, *seq, body))))
		e = dberr(j, st, "recording a transition");
	e = end(j, e, st, "recording a transition");
	if (e)
		free(body);
	else
		*report = body;
	return e;
}

ferry_err ferry_journal_outbox(ferry_journal *j, json_t **reports, ferry_status *st)
{
	sqlite3_stmt *s;

	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT o.update_id, o.seq, o.body FROM outbox o JOIN updates u ON u.id = o.update_id"
		    " ORDER BY u.created, u.rowid, o.seq", "");
	*reports = json_array();
	while (s && sqlite3_step(s) == SQLITE_ROW)
		json_array_append_new(*reports, json_pack("{s:s,s:I,s:s}", "update_id", sqlite3_column_text(s, 0),
							  "seq", (json_int_t)sqlite3_column_int64(s, 1), "body",
							  sqlite3_column_text(s, 2)));
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return s ? FERRY_OK : dberr(j, st, "reading the outbox");
}

ferry_err ferry_journal_outbox_done(ferry_journal *j, const char *update_id, int64_t seq, ferry_status *st)
{
	ferry_err e = FERRY_OK;

	if (begin(j))
		return dberr(j, st, "begin");
	if (run(prep(j, "DELETE FROM outbox WHERE update_id = ? AND seq = ?", "si", update_id, seq)))
		e = dberr(j, st, "outbox");
	return end(j, e, st, "outbox");
}

ferry_err ferry_journal_installed(ferry_journal *j, const char *component, char version[65], bool *found,
				  ferry_status *st)
{
	sqlite3_stmt *s;

	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT version FROM installed WHERE component = ?", "s", component);
	*found = s && sqlite3_step(s) == SQLITE_ROW;
	version[0] = '\0';
	if (*found)
		copy_col(s, 0, version, 65);
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return s ? FERRY_OK : dberr(j, st, "installed versions");
}

ferry_err ferry_journal_set_installed(ferry_journal *j, const char *component, const char *version,
				      const char *device_id, int64_t ts, ferry_status *st)
{
	ferry_err e = FERRY_OK;

	if (begin(j))
		return dberr(j, st, "begin");
	if (run(prep(j, "INSERT OR REPLACE INTO installed VALUES(?, ?, ?, ?)", "sssi", component, version, device_id,
		     ts)))
		e = dberr(j, st, "installed versions");
	return end(j, e, st, "installed versions");
}
