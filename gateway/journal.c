/* The journal in SQLite.  WAL and synchronous=FULL: a committed transition
 * survives a power cut.  Each public function is one transaction, and the
 * transition + report pair is one, so the outbox can never hold a report
 * whose stage the journal does not, or the other way round.  A mutex makes
 * the handle safe to share between the engine's threads. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 4

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

/* The one way through: each state to the next, or to failed or cancelled. */
static bool ustate_move(ferry_ustate from, ferry_ustate to)
{
	if (ferry_ustate_final(from) || from == FERRY_U_REQUESTED)
		return false;
	if (to == FERRY_U_FAILED || to == FERRY_U_CANCELLED)
		return true;
	return from < FERRY_U_INSTALLING ? to == from + 1 : to == FERRY_U_DONE;
}

/* forward, then (last,) then committing or reverting */
static bool phase_move(ferry_phase from, ferry_phase to)
{
	if (from == FERRY_P_FORWARD)
		return to == FERRY_P_LAST || to == FERRY_P_COMMITTING || to == FERRY_P_REVERTING;
	if (from == FERRY_P_LAST)
		return to == FERRY_P_COMMITTING || to == FERRY_P_REVERTING;
	return false;
}

#define STEPS_TABLE                                                                                                \
	"CREATE TABLE steps(update_id TEXT NOT NULL REFERENCES updates(id), component TEXT NOT NULL,"              \
	" device TEXT NOT NULL, adapter TEXT NOT NULL, idx INTEGER NOT NULL, stage TEXT NOT NULL DEFAULT '',"      \
	" reason TEXT NOT NULL DEFAULT '', push_offset INTEGER NOT NULL DEFAULT 0, version TEXT NOT NULL DEFAULT ''," \
	" PRIMARY KEY(update_id, component, device));"
#define DEVICES_TABLE                                                                                              \
	"CREATE TABLE devices(adapter TEXT NOT NULL, id TEXT NOT NULL, record TEXT NOT NULL,"                      \
	" last_seen INTEGER NOT NULL, PRIMARY KEY(adapter, id));"
#define INSTALLED_TABLE(name)                                                                                      \
	"CREATE TABLE " name "(component TEXT NOT NULL, device TEXT NOT NULL, version TEXT NOT NULL,"              \
	" ts INTEGER NOT NULL, PRIMARY KEY(component, device));"

static const char schema[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
	"INSERT INTO meta VALUES('last_sequence', 0);"
	"CREATE TABLE updates(id TEXT PRIMARY KEY, state INTEGER NOT NULL, manifest TEXT NOT NULL,"
	" sequence INTEGER NOT NULL, expires INTEGER NOT NULL, deploy INTEGER NOT NULL,"
	" created INTEGER NOT NULL, next_seq INTEGER NOT NULL DEFAULT 1, atomic INTEGER NOT NULL DEFAULT 0,"
	" phase INTEGER NOT NULL DEFAULT 0, cancel INTEGER NOT NULL DEFAULT 0, pruned INTEGER NOT NULL DEFAULT 0);"
	"CREATE TABLE components(update_id TEXT NOT NULL REFERENCES updates(id), name TEXT NOT NULL,"
	" idx INTEGER NOT NULL, stage TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',"
	" dl_offset INTEGER NOT NULL DEFAULT 0, link TEXT, PRIMARY KEY(update_id, name));"
	STEPS_TABLE
	"CREATE TABLE outbox(update_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,"
	" PRIMARY KEY(update_id, seq));"
	"CREATE TABLE replay(jti TEXT PRIMARY KEY, exp INTEGER NOT NULL);"
	INSTALLED_TABLE("installed")
	DEVICES_TABLE
	"CREATE TABLE identity(id TEXT NOT NULL);"
	"PRAGMA user_version = 2;";

/* Schema 1 knew one device per component: steps, devices and the update's
 * all-or-nothing columns are new, and installed versions gain a device. */
static const char migrate_1_2[] =
	"ALTER TABLE updates ADD COLUMN atomic INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE updates ADD COLUMN phase INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE updates ADD COLUMN cancel INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE updates ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;"
	STEPS_TABLE
	DEVICES_TABLE
	INSTALLED_TABLE("installed2")
	"INSERT INTO installed2 SELECT component, '', version, ts FROM installed;"
	"DROP TABLE installed;"
	"ALTER TABLE installed2 RENAME TO installed;"
	"CREATE TABLE identity(id TEXT NOT NULL);"
	"PRAGMA user_version = 2;";

/* Schema 3: deltas.  An installed record names the image (the device's
 * base for a delta), and delta links are kept beside whole-image ones. */
static const char migrate_2_3[] =
	"ALTER TABLE installed ADD COLUMN image TEXT NOT NULL DEFAULT '';"
	"CREATE TABLE delta_links(update_id TEXT NOT NULL REFERENCES updates(id), component TEXT NOT NULL,"
	" base TEXT NOT NULL, url TEXT NOT NULL, PRIMARY KEY(update_id, component, base));"
	"CREATE TABLE unpinned(image TEXT PRIMARY KEY);"
	"PRAGMA user_version = 3;";

/* Schema 4: an encrypted component's wrapped content key, kept like its
 * link until the image is in the store. */
static const char migrate_3_4[] =
	"ALTER TABLE components ADD COLUMN key TEXT;"
	"PRAGMA user_version = 4;";

/* A database or disk that is full is insufficient_space: the runner keeps
 * the fact and tries again once there is room (jobs.c); anything else is
 * internal. */
static ferry_err dberr(ferry_journal *j, ferry_status *st, const char *what)
{
	int ec = sqlite3_extended_errcode(j->db);
	int sys = sqlite3_system_errno(j->db);

	if ((ec & 0xff) == SQLITE_FULL || ((ec & 0xff) == SQLITE_IOERR && (sys == ENOSPC || sys == EDQUOT)))
		return ferry_fail(st, FERRY_E_INSUFFICIENT_SPACE, "journal %s: %s: the disk or the database is full",
				  j->path, what);
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

/* One integer from a query: 1 and *v, 0 when there is no row, -1 on error. */
static int scalar(ferry_journal *j, int64_t *v, const char *sql, const char *types, ...)
{
	sqlite3_stmt *s = NULL;
	va_list ap;
	int rc = -1;

	if (sqlite3_prepare_v2(j->db, sql, -1, &s, NULL) != SQLITE_OK)
		return -1;
	va_start(ap, types);
	for (int i = 0; types[i]; i++) {
		if (types[i] == 'i')
			sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
		else
			sqlite3_bind_text(s, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
	}
	va_end(ap);
	switch (sqlite3_step(s)) {
	case SQLITE_ROW:
		*v = sqlite3_column_int64(s, 0);
		rc = 1;
		break;
	case SQLITE_DONE:
		rc = 0;
		break;
	}
	sqlite3_finalize(s);
	return rc;
}

static void copy_col(sqlite3_stmt *s, int col, char *out, size_t n)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	snprintf(out, n, "%s", t ? (const char *)t : "");
}

static char *report_body(const ferry_transition *t, int64_t seq)
{
	json_t *r = json_pack("{s:s,s:s,s:s}", "update_id", t->update_id, "component", t->component, "stage",
			      ferry_stage_name(t->stage));
	char *body;

	if (!r)
		return NULL;
	if (t->device)
		json_object_set_new(r, "device", json_string(t->device));
	json_object_set_new(r, "seq", json_integer(seq));
	json_object_set_new(r, "ts", json_integer(t->ts_ms / 1000));
	json_object_set_new(r, "ts_ms", json_integer(t->ts_ms));
	if (t->total >= 0)
		json_object_set_new(r, "progress", json_pack("{s:I,s:I}", "done", (json_int_t)t->done, "total",
							     (json_int_t)t->total));
	if (t->reason) {
		json_object_set_new(r, "reason", json_string(t->reason));
		json_object_set_new(r, "detail", json_string(t->detail ? t->detail : ""));
	}
	if (t->version)
		json_object_set_new(r, "version", json_string(t->version));
	if (t->devices)
		json_object_set_new(r, "devices", json_deep_copy(t->devices));
	body = json_dumps(r, JSON_COMPACT);
	json_decref(r);
	return body;
}

/* Schema 1 updates that had not ended cannot go on: each of their components
 * without an outcome gets `failed` (internal, saying why), in the outbox,
 * and the update fails.  Inside the migration's transaction. */
static int end_v1_updates(ferry_journal *j, int64_t now)
{
	sqlite3_stmt *s = prep(j, "SELECT c.update_id, c.name FROM components c JOIN updates u ON u.id = c.update_id"
				  " WHERE u.state NOT IN (?, ?, ?, ?) AND c.stage NOT IN"
				  " ('installed', 'already_installed', 'failed', 'rolled_back', 'cancelled')",
			       "iiii", (int64_t)FERRY_U_DONE, (int64_t)FERRY_U_FAILED, (int64_t)FERRY_U_CANCELLED,
			       (int64_t)FERRY_U_REFUSED);
	json_t *open_comps = json_array(), *row;
	size_t i;
	int rc = 0;

	while (s && sqlite3_step(s) == SQLITE_ROW)
		json_array_append_new(open_comps, json_pack("[s,s]", sqlite3_column_text(s, 0), sqlite3_column_text(s, 1)));
	if (!s)
		rc = -1;
	sqlite3_finalize(s);
	json_array_foreach(open_comps, i, row) {
		const char *uid = json_string_value(json_array_get(row, 0)), *comp = json_string_value(json_array_get(row, 1));
		int64_t seq = 0;
		ferry_transition t = {.update_id = uid, .component = comp, .stage = FERRY_S_FAILED, .reason = "internal",
				      .detail = "ferryd was upgraded while this update ran and cannot resume it; "
						"send it again",
				      .total = -1, .ts_ms = now * 1000};
		char *body;
		if (rc || scalar(j, &seq, "SELECT next_seq FROM updates WHERE id = ?", "s", uid) != 1 ||
		    !(body = report_body(&t, seq))) {
			rc = -1;
			break;
		}
		if (run(prep(j, "UPDATE updates SET next_seq = next_seq + 1 WHERE id = ?", "s", uid)) ||
		    run(prep(j, "UPDATE components SET stage = 'failed', reason = 'internal' WHERE update_id = ? AND"
				" name = ?", "ss", uid, comp)) ||
		    run(prep(j, "INSERT INTO outbox VALUES(?, ?, ?)", "sis", uid, seq, body)))
			rc = -1;
		free(body);
	}
	json_decref(open_comps);
	if (!rc && run(prep(j, "UPDATE updates SET state = ? WHERE state NOT IN (?, ?, ?, ?)", "iiiii",
			    (int64_t)FERRY_U_FAILED, (int64_t)FERRY_U_DONE, (int64_t)FERRY_U_FAILED,
			    (int64_t)FERRY_U_CANCELLED, (int64_t)FERRY_U_REFUSED)))
		rc = -1;
	return rc;
}

static ferry_err in_transaction(ferry_journal *j, const char *sql, bool v1_updates, ferry_status *st,
				const char *what)
{
	if (sqlite3_exec(j->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(j->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
	    (v1_updates && end_v1_updates(j, (int64_t)time(NULL))) ||
	    sqlite3_exec(j->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		ferry_err e = dberr(j, st, what);
		sqlite3_exec(j->db, "ROLLBACK", NULL, NULL, NULL);
		return e;
	}
	return FERRY_OK;
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
	ferry_err e;
	if (version == 0) {
		if ((e = in_transaction(j, schema, false, st, "creating the tables")))
			return e;
		version = 2;
	}
	if (version == 1) {
		if ((e = in_transaction(j, migrate_1_2, true, st, "moving to schema 2")))
			return e;
		version = 2;
	}
	if (version == 2) {
		if ((e = in_transaction(j, migrate_2_3, false, st, "moving to schema 3")))
			return e;
		version = 3;
	}
	if (version == 3) {
		if ((e = in_transaction(j, migrate_3_4, false, st, "moving to schema 4")))
			return e;
		version = 4;
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
	/* the journal holds download links until used: only ferryd reads it,
	 * whatever the umask (SQLite gives its -wal and -shm files the mode of
	 * the database file) */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || fchmod(fd, 0600)) {
		e = ferry_fail(st, FERRY_E_INTERNAL, "journal %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		ferry_journal_close(j);
		return e;
	}
	close(fd);
	/* NOFOLLOW: SQLite refuses a symlink for the database too */
	if (sqlite3_open_v2(path, &j->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
			    NULL) != SQLITE_OK) {
		e = dberr(j, st, "open");
		ferry_journal_close(j);
		return e;
	}
	sqlite3_busy_timeout(j->db, 5000);
	if ((e = check_and_migrate(j, st)) ||
	    sqlite3_exec(j->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
				" PRAGMA secure_delete=ON;", NULL, NULL, NULL) != SQLITE_OK) {
		if (!e)
			e = dberr(j, st, "settings");
		ferry_journal_close(j);
		return e;
	}
	*out = j;
	return FERRY_OK;
}

ferry_err ferry_journal_identity(ferry_journal *j, char id[65], ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;

	id[0] = '\0';
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT id FROM identity LIMIT 1", "");
	if (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		copy_col(s, 0, id, 65);
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return rc == SQLITE_DONE ? FERRY_OK : dberr(j, st, "reading the journal's identity");
}

ferry_err ferry_journal_set_identity(ferry_journal *j, const char *id, ferry_status *st)
{
	ferry_err e = FERRY_OK;
	int64_t n = 0;

	if (begin(j))
		return dberr(j, st, "begin");
	if (scalar(j, &n, "SELECT count(*) FROM identity", "") != 1)
		e = dberr(j, st, "reading the journal's identity");
	else if (n)
		e = ferry_fail(st, FERRY_E_INTERNAL, "journal %s has an identity already", j->path);
	else if (run(prep(j, "INSERT INTO identity VALUES(?)", "s", id)))
		e = dberr(j, st, "recording the journal's identity");
	return end(j, e, st, "recording the journal's identity");
}

ferry_err ferry_journal_summary(ferry_journal *j, json_t **out, ferry_status *st)
{
	int64_t last = 0, open_updates = 0, installed = 0, replay = 0, outbox = 0;
	ferry_err e = FERRY_OK;

	pthread_mutex_lock(&j->lock);
	if (scalar(j, &last, "SELECT value FROM meta WHERE key = 'last_sequence'", "") != 1 ||
	    scalar(j, &open_updates, "SELECT count(*) FROM updates WHERE state NOT IN (?, ?, ?, ?)", "iiii",
		   (int64_t)FERRY_U_DONE, (int64_t)FERRY_U_FAILED, (int64_t)FERRY_U_CANCELLED,
		   (int64_t)FERRY_U_REFUSED) != 1 ||
	    scalar(j, &installed, "SELECT count(*) FROM installed", "") != 1 ||
	    scalar(j, &replay, "SELECT count(*) FROM replay", "") != 1 ||
	    scalar(j, &outbox, "SELECT count(*) FROM outbox", "") != 1)
		e = dberr(j, st, "summarising");
	pthread_mutex_unlock(&j->lock);
	if (!e)
		*out = json_pack("{s:I,s:I,s:I,s:I,s:I}", "last_sequence", (json_int_t)last, "unfinished_updates",
				 (json_int_t)open_updates, "installed_versions", (json_int_t)installed, "command_ids",
				 (json_int_t)replay, "unsent_reports", (json_int_t)outbox);
	return e;
}

void ferry_journal_release_memory(ferry_journal *j)
{
	sqlite3_db_release_memory(j->db);
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
	int64_t seen;
	int rc;
	ferry_err e = FERRY_OK;

	if (begin(j))
		return dberr(j, st, "begin");
	if (run(prep(j, "DELETE FROM replay WHERE exp < ?", "i", now)))
		e = dberr(j, st, "pruning the replay store");
	if (!e && (rc = scalar(j, &seen, "SELECT 1 FROM replay WHERE jti = ?", "s", jti)) != 0)
		e = rc < 0 ? dberr(j, st, "reading the replay store")
			   : ferry_fail(st, FERRY_E_REPLAYED, "jti \"%.64s\" was used before", jti);
	if (!e && run(prep(j, "INSERT INTO replay VALUES(?, ?)", "si", jti, exp)))
		e = dberr(j, st, "recording the jti");
	return end(j, e, st, "replay store");
}

ferry_err ferry_journal_last_sequence(ferry_journal *j, int64_t *out, ferry_status *st)
{
	ferry_err e = FERRY_OK;

	pthread_mutex_lock(&j->lock);
	if (scalar(j, out, "SELECT value FROM meta WHERE key = 'last_sequence'", "") != 1)
		e = dberr(j, st, "reading the last sequence");
	pthread_mutex_unlock(&j->lock);
	return e;
}

ferry_err ferry_journal_update_add(ferry_journal *j, const ferry_jupdate *u, const char *const *names,
				   const bool *settled, const char *const *links, const char *const *keys, size_t n,
				   const ferry_jdelta_link *dlinks, size_t n_dlinks, const ferry_jstep_new *steps,
				   size_t n_steps, ferry_status *st)
{
	ferry_err e = FERRY_OK;
	int64_t have = 0;
	int rc;

	if (begin(j))
		return dberr(j, st, "begin");
	if ((rc = scalar(j, &have, "SELECT 1 FROM updates WHERE id = ?", "s", u->id)) != 0)
		e = rc < 0 ? dberr(j, st, "reading updates")
			   : ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s exists already", u->id);
	else if (run(prep(j, "INSERT INTO updates(id, state, manifest, sequence, expires, deploy, created, atomic)"
			     " VALUES(?, ?, ?, ?, ?, ?, ?, ?)", "sisiiiii", u->id, (int64_t)u->state, u->manifest,
			     u->sequence, u->expires, (int64_t)u->deploy, u->created, (int64_t)u->atomic)) ||
		 run(prep(j, "UPDATE meta SET value = max(value, ?) WHERE key = 'last_sequence'", "i", u->sequence)))
		e = dberr(j, st, "adding an update");
	for (size_t i = 0; !e && i < n; i++)
		if (run(prep(j, "INSERT INTO components(update_id, name, idx, stage, link, key) VALUES(?, ?, ?, ?, ?, ?)",
			     "ssisnn", u->id, names[i], (int64_t)i,
			     settled && settled[i] ? ferry_stage_name(FERRY_S_ALREADY_INSTALLED) : "",
			     links ? links[i] : NULL, keys ? keys[i] : NULL)))
			e = dberr(j, st, "adding a component");
	for (size_t i = 0; !e && i < n_dlinks; i++)
		if (run(prep(j, "INSERT INTO delta_links VALUES(?, ?, ?, ?)", "ssss", u->id, dlinks[i].component,
			     dlinks[i].base_hex, dlinks[i].url)))
			e = dberr(j, st, "adding a delta link");
	for (size_t i = 0; !e && i < n_steps; i++) {
		int64_t idx = -1;
		if (scalar(j, &idx, "SELECT idx FROM components WHERE update_id = ? AND name = ?", "ss", u->id,
			   steps[i].component) != 1)
			e = ferry_fail(st, FERRY_E_INTERNAL, "journal: step for unknown component %s", steps[i].component);
		else if (run(prep(j, "INSERT INTO steps(update_id, component, device, adapter, idx) VALUES(?, ?, ?, ?, ?)",
				  "ssssi", u->id, steps[i].component, steps[i].device, steps[i].adapter, idx)))
			e = dberr(j, st, "adding a step");
	}
	return end(j, e, st, "adding an update");
}

ferry_err ferry_journal_update_get(ferry_journal *j, const char *id, ferry_jupdate *out, ferry_status *st)
{
	sqlite3_stmt *s;
	ferry_err e = FERRY_OK;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT state, manifest, sequence, expires, deploy, created, atomic, phase, cancel FROM updates"
		    " WHERE id = ?", "s", id);
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
		out->atomic = sqlite3_column_int(s, 6) != 0;
		out->phase = (ferry_phase)sqlite3_column_int(s, 7);
		out->cancel_requested = sqlite3_column_int(s, 8) != 0;
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

ferry_err ferry_journal_update_move(ferry_journal *j, const char *id, ferry_ustate from, ferry_ustate to,
				    ferry_status *st)
{
	ferry_err e = FERRY_OK;
	int64_t now;
	int rc;

	if (begin(j))
		return dberr(j, st, "begin");
	if ((rc = scalar(j, &now, "SELECT state FROM updates WHERE id = ?", "s", id)) != 1)
		e = rc < 0 ? dberr(j, st, "reading an update") : ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", id);
	else if (now != (int64_t)from || !ustate_move(from, to))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s is %s, not %s: it cannot become %s", id,
			       ferry_ustate_name((ferry_ustate)now), ferry_ustate_name(from), ferry_ustate_name(to));
	else if (run(prep(j, "UPDATE updates SET state = ? WHERE id = ?", "is", (int64_t)to, id)))
		e = dberr(j, st, "update state");
	return end(j, e, st, "update state");
}

ferry_err ferry_journal_phase_move(ferry_journal *j, const char *id, ferry_phase from, ferry_phase to,
				   ferry_status *st)
{
	ferry_err e = FERRY_OK;
	int64_t now;
	int rc;

	if (begin(j))
		return dberr(j, st, "begin");
	int64_t cancel = 0;

	if ((rc = scalar(j, &now, "SELECT phase FROM updates WHERE id = ?", "s", id)) != 1 ||
	    scalar(j, &cancel, "SELECT cancel FROM updates WHERE id = ?", "s", id) != 1)
		e = rc < 0 ? dberr(j, st, "reading an update") : ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", id);
	else if (now != (int64_t)from || !phase_move(from, to))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s: phase %lld cannot become %d", id, (long long)now,
			       (int)to);
	else if (from == FERRY_P_FORWARD && to != FERRY_P_REVERTING && cancel)
		e = ferry_fail(st, FERRY_E_CANCELLED, "update %s was cancelled before it could commit", id);
	else if (run(prep(j, "UPDATE updates SET phase = ? WHERE id = ?", "is", (int64_t)to, id)))
		e = dberr(j, st, "phase");
	return end(j, e, st, "phase");
}

ferry_err ferry_journal_cancel_request(ferry_journal *j, const char *id, ferry_status *st)
{
	ferry_err e = FERRY_OK;
	int64_t state = 0, atomic = 0, phase = 0;
	int rc;

	if (begin(j))
		return dberr(j, st, "begin");
	if ((rc = scalar(j, &state, "SELECT state FROM updates WHERE id = ?", "s", id)) != 1 ||
	    scalar(j, &atomic, "SELECT atomic FROM updates WHERE id = ?", "s", id) != 1 ||
	    scalar(j, &phase, "SELECT phase FROM updates WHERE id = ?", "s", id) != 1)
		e = rc < 0 ? dberr(j, st, "reading an update") : ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "no update %s", id);
	else if (ferry_ustate_final((ferry_ustate)state))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s has ended", id);
	else if (atomic && (phase == FERRY_P_COMMITTING || phase == FERRY_P_LAST))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE,
			       "update %s is %s: past the point of no return", id,
			       phase == FERRY_P_LAST ? "activating the device that cannot revert"
						     : "committing every device to the new version");
	else if (run(prep(j, "UPDATE updates SET cancel = 1 WHERE id = ?", "s", id)))
		e = dberr(j, st, "recording a cancel");
	return end(j, e, st, "recording a cancel");
}

/* One UPDATE statement in its own transaction, on a row that must exist. */
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

ferry_err ferry_journal_set_link(ferry_journal *j, const char *update_id, const char *component, const char *url,
				 ferry_status *st)
{
	ferry_err e;

	if (begin(j))
		return dberr(j, st, "begin");
	e = change(j, st, "link", prep(j, "UPDATE components SET link = ? WHERE update_id = ? AND name = ?", "nss", url,
				       update_id, component));
	e = end(j, e, st, "link");
	if (!e && !url) {
		/* a used link leaves no copy behind: secure_delete zeroed it in
		 * the database pages, and the write-ahead log, which still holds
		 * the page as it was, is checkpointed and truncated */
		pthread_mutex_lock(&j->lock);
		/* best effort: a reader of our own would only delay it to the
		 * next link forgotten, or to the close */
		sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
		pthread_mutex_unlock(&j->lock);
	}
	return e;
}

ferry_err ferry_journal_set_key(ferry_journal *j, const char *update_id, const char *component, const char *jwe,
				ferry_status *st)
{
	ferry_err e;

	if (begin(j))
		return dberr(j, st, "begin");
	e = change(j, st, "key", prep(j, "UPDATE components SET key = ? WHERE update_id = ? AND name = ?", "nss", jwe,
				      update_id, component));
	return end(j, e, st, "key");
}

ferry_err ferry_journal_set_delta_link(ferry_journal *j, const char *update_id, const char *component,
				       const char *base_hex, const char *url, ferry_status *st)
{
	ferry_err e = FERRY_OK;

	if (begin(j))
		return dberr(j, st, "begin");
	if (url ? run(prep(j, "INSERT OR REPLACE INTO delta_links VALUES(?, ?, ?, ?)", "ssss", update_id, component,
			   base_hex, url))
		: base_hex ? run(prep(j, "DELETE FROM delta_links WHERE update_id = ? AND component = ? AND base = ?",
				      "sss", update_id, component, base_hex))
			   : run(prep(j, "DELETE FROM delta_links WHERE update_id = ? AND component = ?", "ss", update_id,
				      component)))
		e = dberr(j, st, "delta link");
	e = end(j, e, st, "delta link");
	if (!e && !url) {
		/* as for whole-image links: no copy stays behind in the log */
		pthread_mutex_lock(&j->lock);
		sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
		pthread_mutex_unlock(&j->lock);
	}
	return e;
}

ferry_err ferry_journal_delta_links(ferry_journal *j, const char *update_id, const char *component,
				    char (**bases)[65], char ***urls, size_t *n, ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;
	size_t cap = 0;

	*bases = NULL;
	*urls = NULL;
	*n = 0;
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT base, url FROM delta_links WHERE update_id = ? AND component = ? ORDER BY rowid", "ss",
		 update_id, component);
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			size_t c2 = cap ? cap * 2 : 8;
			char(*b)[65] = realloc(*bases, c2 * sizeof(**bases));
			char **u = b ? realloc(*urls, c2 * sizeof(**urls)) : NULL;
			if (b)
				*bases = b;
			if (!u) {
				rc = SQLITE_NOMEM;
				break;
			}
			*urls = u;
			cap = c2;
		}
		copy_col(s, 0, (*bases)[*n], 65);
		if (!((*urls)[*n] = strdup((const char *)sqlite3_column_text(s, 1)))) {
			rc = SQLITE_NOMEM;
			break;
		}
		(*n)++;
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	if (rc == SQLITE_DONE)
		return FERRY_OK;
	ferry_jdelta_urls_free(*bases, *urls, *n);
	*bases = NULL;
	*urls = NULL;
	*n = 0;
	return dberr(j, st, "delta links");
}

void ferry_jdelta_urls_free(char (*bases)[65], char **urls, size_t n)
{
	for (size_t i = 0; urls && i < n; i++)
		free(urls[i]);
	free(urls);
	free(bases);
}

ferry_err ferry_journal_image_devices(ferry_journal *j, const char *component, const char *image_hex, json_t **out,
				      ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;

	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT device, version FROM installed WHERE component = ? AND image = ?", "ss", component,
		 image_hex);
	*out = json_array();
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(*out, json_pack("[s,s]", sqlite3_column_text(s, 0), sqlite3_column_text(s, 1)));
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	if (rc == SQLITE_DONE)
		return FERRY_OK;
	json_decref(*out);
	*out = NULL;
	return dberr(j, st, "installed images");
}

/* The first column of every row of sql (no parameters), as strings. */
static ferry_err column_strings(ferry_journal *j, const char *sql, const char *what, json_t **out, ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;

	pthread_mutex_lock(&j->lock);
	s = prep(j, sql, "");
	*out = json_array();
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(*out, json_string((const char *)sqlite3_column_text(s, 0)));
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	if (rc == SQLITE_DONE)
		return FERRY_OK;
	json_decref(*out);
	*out = NULL;
	return dberr(j, st, what);
}

ferry_err ferry_journal_unpinned(ferry_journal *j, json_t **out, ferry_status *st)
{
	return column_strings(j, "SELECT image FROM unpinned", "unpinned images", out, st);
}

ferry_err ferry_journal_unpinned_done(ferry_journal *j, const char *image_hex, ferry_status *st)
{
	CHANGE("unpinned images", "DELETE FROM unpinned WHERE image = ?", "s", image_hex);
}

ferry_err ferry_journal_installed_images(ferry_journal *j, json_t **out, ferry_status *st)
{
	return column_strings(j, "SELECT DISTINCT image FROM installed WHERE image != ''", "installed images", out, st);
}

ferry_err ferry_journal_set_dl_offset(ferry_journal *j, const char *update_id, const char *component, int64_t off,
				      ferry_status *st)
{
	CHANGE("download offset", "UPDATE components SET dl_offset = ? WHERE update_id = ? AND name = ?", "iss", off,
	       update_id, component);
}

ferry_err ferry_journal_set_push_offset(ferry_journal *j, const char *update_id, const char *component,
					const char *device, int64_t off, ferry_status *st)
{
	CHANGE("push offset", "UPDATE steps SET push_offset = ? WHERE update_id = ? AND component = ? AND device = ?",
	       "isss", off, update_id, component, device);
}

/* Update ids selected by sql, oldest first; its four placeholders take the
 * four ended states (done, failed, cancelled, refused). */
static ferry_err list_updates(ferry_journal *j, const char *sql, json_t **ids, ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;

	pthread_mutex_lock(&j->lock);
	s = prep(j, sql, "iiii", (int64_t)FERRY_U_DONE, (int64_t)FERRY_U_FAILED, (int64_t)FERRY_U_CANCELLED,
		 (int64_t)FERRY_U_REFUSED);
	*ids = json_array();
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(*ids, json_string((const char *)sqlite3_column_text(s, 0)));
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return rc == SQLITE_DONE ? FERRY_OK : dberr(j, st, "listing updates");
}

ferry_err ferry_journal_unfinished(ferry_journal *j, json_t **ids, ferry_status *st)
{
	return list_updates(j, "SELECT id FROM updates WHERE state NOT IN (?, ?, ?, ?) ORDER BY created, rowid", ids,
			    st);
}

ferry_err ferry_journal_ended_unpruned(ferry_journal *j, json_t **ids, ferry_status *st)
{
	return list_updates(
		j, "SELECT id FROM updates WHERE state IN (?, ?, ?, ?) AND pruned = 0 ORDER BY created, rowid", ids, st);
}

ferry_err ferry_journal_set_pruned(ferry_journal *j, const char *id, ferry_status *st)
{
	CHANGE("pruned", "UPDATE updates SET pruned = 1 WHERE id = ?", "s", id);
}

static ferry_stage stage_of(sqlite3_stmt *s, int col)
{
	ferry_stage out = FERRY_S_NONE;
	const unsigned char *t = sqlite3_column_text(s, col);
	if (t && ferry_stage_parse((const char *)t, &out))
		out = FERRY_S_FAILED; /* not a name we wrote: treat as ended */
	return out;
}

ferry_err ferry_journal_components(ferry_journal *j, const char *update_id, ferry_jcomponent **out, size_t *n,
				   ferry_status *st)
{
	sqlite3_stmt *s;
	size_t cap = 0;
	int rc = SQLITE_ERROR;
	ferry_err e = FERRY_OK;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT name, idx, stage, reason, dl_offset, link, key FROM components WHERE update_id = ? ORDER BY idx",
		 "s", update_id);
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
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
		c->stage = stage_of(s, 2);
		copy_col(s, 3, c->reason, sizeof(c->reason));
		c->dl_offset = sqlite3_column_int64(s, 4);
		if (sqlite3_column_type(s, 5) != SQLITE_NULL)
			c->link = strdup((const char *)sqlite3_column_text(s, 5));
		if (sqlite3_column_type(s, 6) != SQLITE_NULL)
			c->key = strdup((const char *)sqlite3_column_text(s, 6));
	}
	if (!e && rc != SQLITE_DONE)
		e = dberr(j, st, "reading components");
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
	for (size_t i = 0; c && i < n; i++) {
		free(c[i].link);
		free(c[i].key);
	}
	free(c);
}

ferry_err ferry_journal_steps(ferry_journal *j, const char *update_id, ferry_jstep **out, size_t *n,
			      ferry_status *st)
{
	sqlite3_stmt *s;
	size_t cap = 0;
	int rc = SQLITE_ERROR;
	ferry_err e = FERRY_OK;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT component, device, adapter, idx, stage, reason, push_offset, version FROM steps"
		    " WHERE update_id = ? ORDER BY idx, device", "s", update_id);
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			ferry_jstep *ns = realloc(*out, (cap = cap ? cap * 2 : 8) * sizeof(**out));
			if (!ns) {
				e = ferry_fail(st, FERRY_E_INTERNAL, "out of memory");
				break;
			}
			*out = ns;
		}
		ferry_jstep *p = &(*out)[(*n)++];
		memset(p, 0, sizeof(*p));
		copy_col(s, 0, p->component, sizeof(p->component));
		copy_col(s, 1, p->device, sizeof(p->device));
		copy_col(s, 2, p->adapter, sizeof(p->adapter));
		p->idx = sqlite3_column_int(s, 3);
		p->stage = stage_of(s, 4);
		copy_col(s, 5, p->reason, sizeof(p->reason));
		p->push_offset = sqlite3_column_int64(s, 6);
		copy_col(s, 7, p->version, sizeof(p->version));
	}
	if (!e && rc != SQLITE_DONE)
		e = dberr(j, st, "reading steps");
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	if (e) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return e;
}

/* The stage a component or step is at now, inside a transaction. */
static ferry_err current_stage(ferry_journal *j, const ferry_transition *t, ferry_stage *cur, ferry_status *st)
{
	sqlite3_stmt *s = t->device ? prep(j, "SELECT stage FROM steps WHERE update_id = ? AND component = ? AND"
					      " device = ?", "sss", t->update_id, t->component, t->device)
				    : prep(j, "SELECT stage FROM components WHERE update_id = ? AND name = ?", "ss",
					   t->update_id, t->component);
	ferry_err e = FERRY_OK;

	if (!s)
		return dberr(j, st, "reading a stage");
	switch (sqlite3_step(s)) {
	case SQLITE_ROW:
		*cur = stage_of(s, 0);
		break;
	case SQLITE_DONE:
		e = ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "journal: update %s has no %s %s%s%s", t->update_id,
			       t->device ? "step" : "component", t->component, t->device ? " on " : "",
			       t->device ? t->device : "");
		break;
	default:
		e = dberr(j, st, "reading a stage");
	}
	sqlite3_finalize(s);
	return e;
}

ferry_err ferry_journal_transition(ferry_journal *j, const ferry_transition *t, char **report, int64_t *seq,
				   ferry_status *st)
{
	ferry_err e = FERRY_OK;
	ferry_stage cur = FERRY_S_NONE;
	int64_t state = 0;
	char *body = NULL;
	int rc;

	*report = NULL;
	if (!ferry_stage_name(t->stage))
		return ferry_fail(st, FERRY_E_INTERNAL, "journal: stage %d is not a stage", (int)t->stage);
	if (begin(j))
		return dberr(j, st, "begin");
	if ((rc = scalar(j, &state, "SELECT state FROM updates WHERE id = ?", "s", t->update_id)) != 1)
		e = rc < 0 ? dberr(j, st, "reading an update")
			   : ferry_fail(st, FERRY_E_UNKNOWN_UPDATE, "journal: no update %s", t->update_id);
	else if (ferry_ustate_final((ferry_ustate)state))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s has ended (%s): no %s for %s", t->update_id,
			       ferry_ustate_name((ferry_ustate)state), ferry_stage_name(t->stage), t->component);
	if (!e)
		e = current_stage(j, t, &cur, st);
	if (!e && !(t->device ? ferry_stage_step_move(cur, t->stage) : ferry_stage_component_move(cur, t->stage)))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE, "%s%s%s is %s: it cannot become %s", t->component,
			       t->device ? " on " : "", t->device ? t->device : "",
			       cur == FERRY_S_NONE ? "new" : ferry_stage_name(cur), ferry_stage_name(t->stage));
	if (!e && t->moves && (state != (int64_t)t->from || !ustate_move(t->from, t->to)))
		e = ferry_fail(st, FERRY_E_WRONG_STAGE, "update %s is %s, not %s: it cannot become %s", t->update_id,
			       ferry_ustate_name((ferry_ustate)state), ferry_ustate_name(t->from),
			       ferry_ustate_name(t->to));
	if (!e && t->moves && run(prep(j, "UPDATE updates SET state = ? WHERE id = ?", "is", (int64_t)t->to,
				       t->update_id)))
		e = dberr(j, st, "update state");
	if (!e && scalar(j, seq, "SELECT next_seq FROM updates WHERE id = ?", "s", t->update_id) != 1)
		e = dberr(j, st, "reading the report sequence");
	if (!e && !(body = report_body(t, *seq)))
		e = ferry_fail(st, FERRY_E_INTERNAL, "cannot build the report");
	if (!e && (run(prep(j, "UPDATE updates SET next_seq = next_seq + 1 WHERE id = ?", "s", t->update_id)) ||
		   (t->device ? run(prep(j, "UPDATE steps SET stage = ?, reason = coalesce(?, reason), version ="
					    " coalesce(?, version) WHERE update_id = ? AND component = ? AND device = ?",
					 "snnsss", ferry_stage_name(t->stage), t->reason, t->version, t->update_id,
					 t->component, t->device))
			      : run(prep(j, "UPDATE components SET stage = ?, reason = coalesce(?, reason) WHERE"
					    " update_id = ? AND name = ?", "snss", ferry_stage_name(t->stage), t->reason,
					 t->update_id, t->component))) ||
		   sqlite3_changes(j->db) != 1 ||
		   run(prep(j, "INSERT INTO outbox VALUES(?, ?, ?)", "sis", t->update_id, *seq, body)) ||
		   (t->device && t->stage == FERRY_S_INSTALLED &&
		    /* the image the device had before is its base no more */
		    run(prep(j, "INSERT OR IGNORE INTO unpinned SELECT image FROM installed WHERE component = ? AND"
				" device = ? AND image != '' AND image != ?", "sss", t->component, t->device,
			     t->image ? t->image : ""))) ||
		   (t->device && t->stage == FERRY_S_INSTALLED &&
		    run(prep(j, "INSERT OR REPLACE INTO installed(component, device, version, ts, image)"
			     " VALUES(?, ?, ?, ?, ?)", "sssis", t->component, t->device, t->version ? t->version : "",
			     t->ts_ms / 1000, t->image ? t->image : "")))))
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
	int rc = SQLITE_ERROR;

	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT o.update_id, o.seq, o.body FROM outbox o JOIN updates u ON u.id = o.update_id"
		    " ORDER BY u.created, u.rowid, o.seq", "");
	*reports = json_array();
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(*reports, json_pack("{s:s,s:I,s:s}", "update_id", sqlite3_column_text(s, 0),
							  "seq", (json_int_t)sqlite3_column_int64(s, 1), "body",
							  sqlite3_column_text(s, 2)));
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return rc == SQLITE_DONE ? FERRY_OK : dberr(j, st, "reading the outbox");
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

ferry_err ferry_journal_installed(ferry_journal *j, const char *component, const char *device, char version[65],
				  bool *found, ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;

	pthread_mutex_lock(&j->lock);
	/* the device's own record first, then one from before devices had names */
	s = prep(j, "SELECT version FROM installed WHERE component = ? AND device IN (?, '') ORDER BY device = '' LIMIT 1",
		 "ss", component, device);
	*found = false;
	version[0] = '\0';
	if (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		copy_col(s, 0, version, 65);
		*found = true;
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return rc == SQLITE_DONE ? FERRY_OK : dberr(j, st, "installed versions");
}

ferry_err ferry_journal_devices_seen(ferry_journal *j, const json_t *records, int64_t now, ferry_status *st)
{
	ferry_err e = FERRY_OK;
	json_t *r;
	size_t i;

	if (begin(j))
		return dberr(j, st, "begin");
	json_array_foreach(records, i, r) {
		char *text = json_dumps(r, JSON_COMPACT | JSON_SORT_KEYS);
		const char *adapter = json_string_value(json_object_get(r, "adapter"));
		const char *id = json_string_value(json_object_get(r, "id"));
		if (!text || !adapter || !id ||
		    run(prep(j, "INSERT OR REPLACE INTO devices VALUES(?, ?, ?, ?)", "sssi", adapter, id, text, now)))
			e = text && adapter && id ? dberr(j, st, "remembering devices")
						  : ferry_fail(st, FERRY_E_INTERNAL, "journal: not a device record");
		free(text);
		if (e)
			break;
	}
	return end(j, e, st, "remembering devices");
}

ferry_err ferry_journal_devices(ferry_journal *j, json_t **records, ferry_status *st)
{
	sqlite3_stmt *s;
	int rc = SQLITE_ERROR;

	pthread_mutex_lock(&j->lock);
	s = prep(j, "SELECT record, last_seen FROM devices ORDER BY adapter, id", "");
	*records = json_array();
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		json_t *r = json_loads((const char *)sqlite3_column_text(s, 0), 0, NULL);
		if (json_is_object(r)) {
			json_object_set_new(r, "last_seen", json_integer(sqlite3_column_int64(s, 1)));
			json_array_append_new(*records, r);
		} else {
			json_decref(r);
		}
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&j->lock);
	return rc == SQLITE_DONE ? FERRY_OK : dberr(j, st, "reading devices");
}
