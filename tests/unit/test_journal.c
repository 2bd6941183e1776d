/* The journal: sequence numbers across reopen, the replay store, the
 * outbox, refusal of a damaged file, all-or-nothing transitions under
 * SIGKILL, transitions refused from the wrong state, installed versions per
 * device, remembered devices, and the move from schema 1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "journal.h"

static char dir[64], path[128];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/ferry-journal-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/journal.db", dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static ferry_journal *open_j(void)
{
	ferry_journal *j = NULL;
	ferry_status st = {0};
	if (ferry_journal_open(path, &j, &st))
		fail_msg("open: %s", st.detail);
	return j;
}

/* An update with components a and b; a goes to devices d1 and d2, b to d1. */
static void add_update(ferry_journal *j, const char *id)
{
	static const char *const comps[] = {"a", "b"};
	static const ferry_jstep_new steps[] = {
		{"a", "d1", "ad"}, {"a", "d2", "ad"}, {"b", "d1", "ad"}};
	ferry_jupdate u = {.state = FERRY_U_ALLOWED, .manifest = "x.y.z", .sequence = 1, .created = 1};
	ferry_status st = {0};
	snprintf(u.id, sizeof(u.id), "%s", id);
	assert_int_equal(ferry_journal_update_add(j, &u, comps, NULL, NULL, NULL, 2, NULL, 0, steps, 3, &st), FERRY_OK);
}

static ferry_err try_transition(ferry_journal *j, const char *id, const char *comp, const char *dev, ferry_stage stage,
				int64_t *seq, ferry_status *st)
{
	ferry_transition t = {.update_id = id, .component = comp, .device = dev, .stage = stage, .total = -1, .ts_ms = 5678,
			      .version = stage == FERRY_S_INSTALLED ? "1.2.3" : NULL};
	char *body = NULL;
	ferry_err e = ferry_journal_transition(j, &t, &body, seq, st);
	if (!e) {
		char want[64];
		snprintf(want, sizeof(want), "\"stage\":\"%s\"", ferry_stage_name(stage));
		assert_non_null(strstr(body, want));
		/* whole seconds as before, and the milliseconds beside them */
		assert_non_null(strstr(body, "\"ts\":5,\"ts_ms\":5678"));
		if (dev) {
			snprintf(want, sizeof(want), "\"device\":\"%s\"", dev);
			assert_non_null(strstr(body, want));
		} else {
			assert_null(strstr(body, "\"device\""));
		}
	}
	free(body);
	return e;
}

static int64_t transition(ferry_journal *j, const char *id, const char *comp, const char *dev, ferry_stage stage)
{
	ferry_status st = {0};
	int64_t seq = 0;
	if (try_transition(j, id, comp, dev, stage, &seq, &st))
		fail_msg("transition: %s", st.detail);
	return seq;
}

static void test_seq_survives_reopen(void **state)
{
	ferry_journal *j = open_j();
	add_update(j, "u1");
	assert_int_equal(transition(j, "u1", "a", NULL, FERRY_S_ALLOWED), 1);
	assert_int_equal(transition(j, "u1", "b", NULL, FERRY_S_ALLOWED), 2);
	ferry_journal_close(j);
	j = open_j();
	assert_int_equal(transition(j, "u1", "a", NULL, FERRY_S_DOWNLOADING), 3);
	ferry_jcomponent *cs;
	size_t n;
	ferry_status st = {0};
	assert_int_equal(ferry_journal_components(j, "u1", &cs, &n, &st), FERRY_OK);
	assert_int_equal(n, 2);
	assert_string_equal(cs[0].name, "a");
	assert_int_equal(cs[0].stage, FERRY_S_DOWNLOADING);
	assert_int_equal(cs[1].stage, FERRY_S_ALLOWED);
	ferry_jcomponents_free(cs, n);
	/* an unknown update, component or step changes nothing */
	int64_t seq;
	assert_int_equal(try_transition(j, "nope", "a", NULL, FERRY_S_DOWNLOADING, &seq, &st), FERRY_E_UNKNOWN_UPDATE);
	assert_int_not_equal(try_transition(j, "u1", "zz", NULL, FERRY_S_DOWNLOADING, &seq, &st), FERRY_OK);
	assert_int_not_equal(try_transition(j, "u1", "b", "d2", FERRY_S_INSTALLING, &seq, &st), FERRY_OK);
	assert_int_equal(transition(j, "u1", "b", NULL, FERRY_S_DOWNLOADING), 4); /* no seq was spent */
	/* steps are listed by install order, then device */
	ferry_jstep *steps;
	assert_int_equal(ferry_journal_steps(j, "u1", &steps, &n, &st), FERRY_OK);
	assert_int_equal(n, 3);
	assert_string_equal(steps[0].component, "a");
	assert_string_equal(steps[0].device, "d1");
	assert_string_equal(steps[1].device, "d2");
	assert_string_equal(steps[2].component, "b");
	assert_int_equal(steps[2].idx, 1);
	assert_int_equal(steps[0].stage, FERRY_S_NONE);
	free(steps);
	ferry_journal_close(j);
}

/* The journal refuses a move a stage cannot make, and every move once the
 * update has ended; a refusal spends no sequence number. */
static void test_wrong_moves_refused(void **state)
{
	ferry_journal *j = open_j();
	ferry_status st = {0};
	int64_t seq;

	add_update(j, "w");
	transition(j, "w", "a", NULL, FERRY_S_ALLOWED);
	transition(j, "w", "a", NULL, FERRY_S_DOWNLOADING);
	transition(j, "w", "a", NULL, FERRY_S_DOWNLOADING); /* progress */
	transition(j, "w", "a", NULL, FERRY_S_DOWNLOADED);
	assert_int_equal(try_transition(j, "w", "a", NULL, FERRY_S_DOWNLOADING, &seq, &st), FERRY_E_WRONG_STAGE);
	assert_non_null(strstr(st.detail, "downloaded"));
	/* a component's stage is not a step's */
	assert_int_equal(try_transition(j, "w", "a", NULL, FERRY_S_INSTALLED, &seq, &st), FERRY_E_WRONG_STAGE);
	assert_int_equal(try_transition(j, "w", "a", "d1", FERRY_S_ACTIVATING, &seq, &st), FERRY_E_WRONG_STAGE);
	transition(j, "w", "a", "d1", FERRY_S_INSTALLING);
	transition(j, "w", "a", "d1", FERRY_S_ACTIVATING);
	transition(j, "w", "a", "d1", FERRY_S_INSTALLED);
	/* an outcome is final */
	assert_int_equal(try_transition(j, "w", "a", "d1", FERRY_S_INSTALLING, &seq, &st), FERRY_E_WRONG_STAGE);
	assert_int_equal(try_transition(j, "w", "a", "d1", FERRY_S_CANCELLED, &seq, &st), FERRY_E_WRONG_STAGE);
	/* compare and set on the update: from the state it is in only */
	assert_int_equal(ferry_journal_update_move(j, "w", FERRY_U_DOWNLOADING, FERRY_U_DOWNLOADED, &st),
			 FERRY_E_WRONG_STAGE);
	assert_non_null(strstr(st.detail, "allowed"));
	assert_int_equal(ferry_journal_update_move(j, "w", FERRY_U_ALLOWED, FERRY_U_INSTALLING, &st), FERRY_E_WRONG_STAGE);
	assert_int_equal(ferry_journal_update_move(j, "w", FERRY_U_ALLOWED, FERRY_U_DOWNLOADING, &st), FERRY_OK);
	assert_int_equal(ferry_journal_update_move(j, "w", FERRY_U_DOWNLOADING, FERRY_U_CANCELLED, &st), FERRY_OK);
	/* a cancel that raced the runner: its late report is refused */
	assert_int_equal(ferry_journal_update_move(j, "w", FERRY_U_DOWNLOADING, FERRY_U_DOWNLOADED, &st),
			 FERRY_E_WRONG_STAGE);
	assert_int_equal(try_transition(j, "w", "b", NULL, FERRY_S_ALLOWED, &seq, &st), FERRY_E_WRONG_STAGE);
	assert_non_null(strstr(st.detail, "has ended"));
	/* the phase of an all-or-nothing update moves once */
	assert_int_equal(ferry_journal_phase_move(j, "w", FERRY_P_FORWARD, FERRY_P_COMMITTING, &st), FERRY_OK);
	assert_int_equal(ferry_journal_phase_move(j, "w", FERRY_P_FORWARD, FERRY_P_REVERTING, &st), FERRY_E_WRONG_STAGE);
	ferry_jupdate u;
	assert_int_equal(ferry_journal_update_get(j, "w", &u, &st), FERRY_OK);
	assert_int_equal(u.phase, FERRY_P_COMMITTING);
	assert_int_equal(u.state, FERRY_U_CANCELLED);
	ferry_jupdate_free(&u);
	assert_int_equal(transition(j, "u1", "b", NULL, FERRY_S_DOWNLOADED), 5); /* u1 from the first test */
	ferry_journal_close(j);
}

/* `installed` records the version per device, in the same transaction; a
 * record from schema 1 (no device) answers for any device. */
static void test_installed_per_device(void **state)
{
	ferry_journal *j = open_j();
	ferry_status st = {0};
	char v[65];
	bool found;

	add_update(j, "i");
	transition(j, "i", "a", "d2", FERRY_S_INSTALLING);
	transition(j, "i", "a", "d2", FERRY_S_ACTIVATING);
	transition(j, "i", "a", "d2", FERRY_S_INSTALLED);
	assert_int_equal(ferry_journal_installed(j, "a", "d2", v, &found, &st), FERRY_OK);
	assert_true(found);
	assert_string_equal(v, "1.2.3");
	assert_int_equal(ferry_journal_installed(j, "a", "d9", v, &found, &st), FERRY_OK);
	assert_false(found);
	assert_int_equal(ferry_journal_installed(j, "b", "d2", v, &found, &st), FERRY_OK);
	assert_false(found);
	ferry_journal_close(j);
}

/* Deltas: delta links are kept with the update and forgotten per
 * component; `installed` names the image, which is a base while it is the
 * device's last one and unpinned once another is installed there. */
static void test_delta_links_and_bases(void **state)
{
	static const char *const comps[] = {"a", "b"};
	static const ferry_jstep_new steps[] = {{"a", "d1", "ad"}, {"a", "d2", "ad"}, {"b", "d1", "ad"}};
	const ferry_jdelta_link dl[] = {{"a", "1111111111111111111111111111111111111111111111111111111111111111", "https://h/p1"},
					{"a", "2222222222222222222222222222222222222222222222222222222222222222", "https://h/p2"}};
	ferry_jupdate u = {.state = FERRY_U_ALLOWED, .manifest = "x.y.z", .sequence = 1, .created = 1};
	ferry_journal *j = open_j();
	ferry_status st = {0};
	char(*bases)[65];
	char **urls;
	size_t n;
	json_t *imgs, *devs;

	snprintf(u.id, sizeof(u.id), "dl");
	assert_int_equal(ferry_journal_update_add(j, &u, comps, NULL, NULL, NULL, 2, dl, 2, steps, 3, &st), FERRY_OK);
	assert_int_equal(ferry_journal_delta_links(j, "dl", "a", &bases, &urls, &n, &st), FERRY_OK);
	assert_int_equal(n, 2);
	assert_string_equal(bases[1], dl[1].base_hex);
	assert_string_equal(urls[0], "https://h/p1");
	ferry_jdelta_urls_free(bases, urls, n);
	assert_int_equal(ferry_journal_delta_links(j, "dl", "b", &bases, &urls, &n, &st), FERRY_OK);
	assert_int_equal(n, 0);
	ferry_jdelta_urls_free(bases, urls, n);
	assert_int_equal(ferry_journal_set_delta_link(j, "dl", "a", NULL, NULL, &st), FERRY_OK);
	assert_int_equal(ferry_journal_delta_links(j, "dl", "a", &bases, &urls, &n, &st), FERRY_OK);
	assert_int_equal(n, 0);
	ferry_jdelta_urls_free(bases, urls, n);

	/* installed with an image: d1 runs image X as version 1.2.3 */
	ferry_transition t = {.update_id = "dl", .component = "a", .device = "d1", .total = -1, .ts_ms = 1,
			      .version = "1.2.3", .image = "aaaa"};
	char *body;
	int64_t seq;
	ferry_stage moves[] = {FERRY_S_INSTALLING, FERRY_S_ACTIVATING, FERRY_S_INSTALLED};
	for (size_t i = 0; i < 3; i++) {
		t.stage = moves[i];
		assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
		free(body);
	}
	assert_int_equal(ferry_journal_installed_images(j, &imgs, &st), FERRY_OK);
	assert_int_equal(json_array_size(imgs), 1);
	assert_string_equal(json_string_value(json_array_get(imgs, 0)), "aaaa");
	json_decref(imgs);
	assert_int_equal(ferry_journal_image_devices(j, "a", "aaaa", &devs, &st), FERRY_OK);
	assert_int_equal(json_array_size(devs), 1);
	assert_string_equal(json_string_value(json_array_get(json_array_get(devs, 0), 1)), "1.2.3");
	json_decref(devs);
	assert_int_equal(ferry_journal_unpinned(j, &imgs, &st), FERRY_OK);
	assert_int_equal(json_array_size(imgs), 0);
	json_decref(imgs);

	/* a second update gives d1 image Y: X is unpinned */
	add_update(j, "dl2");
	t.update_id = "dl2";
	t.image = "bbbb";
	for (size_t i = 0; i < 3; i++) {
		t.stage = moves[i];
		assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
		free(body);
	}
	assert_int_equal(ferry_journal_unpinned(j, &imgs, &st), FERRY_OK);
	assert_int_equal(json_array_size(imgs), 1);
	assert_string_equal(json_string_value(json_array_get(imgs, 0)), "aaaa");
	json_decref(imgs);
	assert_int_equal(ferry_journal_unpinned_done(j, "aaaa", &st), FERRY_OK);
	assert_int_equal(ferry_journal_unpinned(j, &imgs, &st), FERRY_OK);
	assert_int_equal(json_array_size(imgs), 0);
	json_decref(imgs);
	ferry_journal_close(j);
}

static void test_last_sequence_error(void **state)
{
	ferry_journal *j = open_j();
	ferry_status st = {0};
	int64_t last = -1;
	sqlite3 *db;

	assert_int_equal(ferry_journal_last_sequence(j, &last, &st), FERRY_OK);
	assert_int_equal(last, 1);
	ferry_journal_close(j);
	/* the row is gone: an error, never 0 (which would let any sequence in) */
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM meta", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	j = open_j();
	assert_int_equal(ferry_journal_last_sequence(j, &last, &st), FERRY_E_INTERNAL);
	assert_non_null(strstr(st.detail, "last sequence"));
	ferry_journal_close(j);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO meta VALUES('last_sequence', 1)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_devices_remembered(void **state)
{
	ferry_journal *j = open_j();
	ferry_status st = {0};
	json_t *seen = json_pack("[{s:s,s:s},{s:s,s:s}]", "id", "d1", "adapter", "ad", "id", "d2", "adapter", "ad");
	json_t *back;

	assert_int_equal(ferry_journal_devices_seen(j, seen, 100, &st), FERRY_OK);
	json_decref(seen);
	seen = json_pack("[{s:s,s:s,s:s}]", "id", "d1", "adapter", "ad", "x", "newer");
	assert_int_equal(ferry_journal_devices_seen(j, seen, 200, &st), FERRY_OK);
	json_decref(seen);
	assert_int_equal(ferry_journal_devices(j, &back, &st), FERRY_OK);
	assert_int_equal(json_array_size(back), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(back, 0), "x")), "newer");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(back, 0), "last_seen")), 200);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(back, 1), "last_seen")), 100);
	json_decref(back);
	ferry_journal_close(j);
}

static void test_replay_store(void **state)
{
	ferry_journal *j = open_j();
	ferry_status st = {0};
	assert_int_equal(ferry_journal_jti_use(j, "j1", 100, 50, &st), FERRY_OK);
	assert_int_equal(ferry_journal_jti_use(j, "j1", 100, 60, &st), FERRY_E_REPLAYED);
	ferry_journal_close(j);
	j = open_j();
	assert_int_equal(ferry_journal_jti_use(j, "j1", 100, 70, &st), FERRY_E_REPLAYED);
	/* kept until it expires, then pruned (the command is expired by then too) */
	assert_int_equal(ferry_journal_jti_use(j, "j1", 300, 101, &st), FERRY_OK);
	ferry_journal_close(j);
}

static void test_outbox_and_links(void **state)
{
	ferry_journal *j = open_j();
	ferry_status st = {0};
	json_t *out;
	add_update(j, "u2");
	transition(j, "u2", "a", NULL, FERRY_S_ALLOWED);
	transition(j, "u2", "b", NULL, FERRY_S_ALLOWED);
	assert_int_equal(ferry_journal_outbox(j, &out, &st), FERRY_OK);
	size_t before = json_array_size(out);
	json_decref(out);
	assert_int_equal(ferry_journal_outbox_done(j, "u2", 1, &st), FERRY_OK);
	assert_int_equal(ferry_journal_outbox(j, &out, &st), FERRY_OK);
	assert_int_equal(json_array_size(out), before - 1);
	json_decref(out);
	assert_int_equal(ferry_journal_set_link(j, "u2", "a", "https://h/secret", &st), FERRY_OK);
	ferry_jcomponent *cs;
	size_t n;
	assert_int_equal(ferry_journal_components(j, "u2", &cs, &n, &st), FERRY_OK);
	assert_string_equal(cs[0].link, "https://h/secret");
	ferry_jcomponents_free(cs, n);
	assert_int_equal(ferry_journal_set_link(j, "u2", "a", NULL, &st), FERRY_OK);
	assert_int_equal(ferry_journal_components(j, "u2", &cs, &n, &st), FERRY_OK);
	assert_null(cs[0].link);
	ferry_jcomponents_free(cs, n);
	/* a wrapped content key is kept the same way, and forgotten */
	assert_int_equal(ferry_journal_set_key(j, "u2", "b", "e30.a.b.c.d", &st), FERRY_OK);
	assert_int_equal(ferry_journal_components(j, "u2", &cs, &n, &st), FERRY_OK);
	assert_null(cs[0].key);
	assert_string_equal(cs[1].key, "e30.a.b.c.d");
	ferry_jcomponents_free(cs, n);
	assert_int_equal(ferry_journal_set_key(j, "u2", "b", NULL, &st), FERRY_OK);
	assert_int_equal(ferry_journal_components(j, "u2", &cs, &n, &st), FERRY_OK);
	assert_null(cs[1].key);
	ferry_jcomponents_free(cs, n);
	ferry_journal_close(j);
}

static void test_damaged_file_refused(void **state)
{
	char p[160];
	ferry_journal *j = NULL;
	ferry_status st = {0};
	FILE *f;

	snprintf(p, sizeof(p), "%s/damaged.db", dir);
	f = fopen(p, "w");
	for (int i = 0; i < 4096; i++)
		fputc(i * 31 & 0xff, f);
	fclose(f);
	assert_int_equal(ferry_journal_open(p, &j, &st), FERRY_E_INTERNAL);
	assert_non_null(strstr(st.detail, "damaged.db"));
	assert_null(j);
}

/* A child records transitions as fast as it can and is killed at a random
 * moment; every report in the outbox must then be there with its stage, and
 * the sequence must have no gap. */
static void test_sigkill_leaves_whole_transitions(void **state)
{
	ferry_journal *j = open_j();
	add_update(j, "k");
	ferry_journal_close(j);
	for (int round = 0; round < 3; round++) {
		pid_t pid = fork();
		if (pid == 0) {
			ferry_journal *c = open_j();
			for (;;)
				transition(c, "k", "a", round % 2 ? "d1" : "d2", FERRY_S_INSTALLING);
		}
		usleep((useconds_t)(100000 + rand() % 200000));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	j = open_j();
	json_t *out, *r;
	ferry_status st = {0};
	size_t i;
	json_int_t want = 1;
	assert_int_equal(ferry_journal_outbox(j, &out, &st), FERRY_OK);
	json_array_foreach(out, i, r) {
		if (strcmp(json_string_value(json_object_get(r, "update_id")), "k"))
			continue; /* other tests' updates share the file */
		assert_int_equal(json_integer_value(json_object_get(r, "seq")), want);
		assert_non_null(strstr(json_string_value(json_object_get(r, "body")), "\"stage\":\"installing\""));
		want++;
	}
	assert_true(want > 1);
	int64_t next = transition(j, "k", "a", "d1", FERRY_S_ACTIVATING);
	assert_int_equal(next, (int64_t)want);
	json_decref(out);
	ferry_journal_close(j);
}

/* A schema 1 journal: its tables are kept, installed versions carried over,
 * and an update that had not ended is failed with a report that says why. */
static void test_schema_1_moves_on(void **state)
{
	static const char v1[] =
		"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
		"INSERT INTO meta VALUES('last_sequence', 7);"
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
		"INSERT INTO installed VALUES('fw', '1.4.0', '', 9);"
		"INSERT INTO updates VALUES('old', 6, 'x.y.z', 7, 0, 1, 1, 4);"
		"INSERT INTO components VALUES('old', 'fw', 0, 'installing', '', 0, 100, NULL, '');"
		"INSERT INTO components VALUES('old', 'cfg', 1, 'installed', '', 0, 0, NULL, '1.0.0');"
		"PRAGMA user_version = 1;";
	char p[160];
	sqlite3 *db;
	ferry_journal *j = NULL;
	ferry_status st = {0};
	json_t *out;
	ferry_jupdate u;
	char v[65];
	bool found;
	int64_t last;

	snprintf(p, sizeof(p), "%s/v1.db", dir);
	assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(ferry_journal_open(p, &j, &st), FERRY_OK);
	assert_int_equal(ferry_journal_last_sequence(j, &last, &st), FERRY_OK);
	assert_int_equal(last, 7);
	assert_int_equal(ferry_journal_installed(j, "fw", "any-device", v, &found, &st), FERRY_OK);
	assert_true(found);
	assert_string_equal(v, "1.4.0");
	assert_int_equal(ferry_journal_update_get(j, "old", &u, &st), FERRY_OK);
	assert_int_equal(u.state, FERRY_U_FAILED);
	ferry_jupdate_free(&u);
	assert_int_equal(ferry_journal_outbox(j, &out, &st), FERRY_OK);
	assert_int_equal(json_array_size(out), 1);
	const char *body = json_string_value(json_object_get(json_array_get(out, 0), "body"));
	assert_non_null(strstr(body, "\"component\":\"fw\",\"stage\":\"failed\",\"seq\":4"));
	assert_non_null(strstr(body, "send it again"));
	json_decref(out);
	/* through every schema since: the key column of schema 4 is there */
	assert_int_equal(ferry_journal_set_key(j, "old", "fw", "e30.a.b.c.d", &st), FERRY_OK);
	ferry_jcomponent *cs;
	size_t n;
	assert_int_equal(ferry_journal_components(j, "old", &cs, &n, &st), FERRY_OK);
	assert_string_equal(cs[0].key, "e30.a.b.c.d");
	ferry_jcomponents_free(cs, n);
	ferry_journal_close(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seq_survives_reopen),
		cmocka_unit_test(test_wrong_moves_refused),
		cmocka_unit_test(test_installed_per_device),
		cmocka_unit_test(test_last_sequence_error),
		cmocka_unit_test(test_devices_remembered),
		cmocka_unit_test(test_schema_1_moves_on),
		cmocka_unit_test(test_delta_links_and_bases),
		cmocka_unit_test(test_replay_store),
		cmocka_unit_test(test_outbox_and_links),
		cmocka_unit_test(test_damaged_file_refused),
		cmocka_unit_test(test_sigkill_leaves_whole_transitions),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
