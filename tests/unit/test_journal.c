/* The journal: sequence numbers across reopen, the replay store, the
 * outbox, refusal of a damaged file, and all-or-nothing transitions under
 * SIGKILL. */
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

static void add_update(ferry_journal *j, const char *id)
{
	static const char *const comps[] = {"a", "b"};
	ferry_jupdate u = {.state = FERRY_U_ALLOWED, .manifest = "x.y.z", .sequence = 1, .created = 1};
	ferry_status st = {0};
	snprintf(u.id, sizeof(u.id), "%s", id);
	assert_int_equal(ferry_journal_update_add(j, &u, comps, 2, &st), FERRY_OK);
}

static int64_t transition(ferry_journal *j, const char *id, const char *comp, const char *stage)
{
	ferry_transition t = {.update_id = id, .component = comp, .stage = stage, .total = -1, .ts = 5};
	ferry_status st = {0};
	char *body = NULL;
	int64_t seq = 0;
	assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
	assert_non_null(strstr(body, stage));
	free(body);
	return seq;
}

static void test_seq_survives_reopen(void **state)
{
	ferry_journal *j = open_j();
	add_update(j, "u1");
	assert_int_equal(transition(j, "u1", "a", "allowed"), 1);
	assert_int_equal(transition(j, "u1", "b", "allowed"), 2);
	ferry_journal_close(j);
	j = open_j();
	assert_int_equal(transition(j, "u1", "a", "downloading"), 3);
	ferry_jcomponent *cs;
	size_t n;
	ferry_status st = {0};
	assert_int_equal(ferry_journal_components(j, "u1", &cs, &n, &st), FERRY_OK);
	assert_int_equal(n, 2);
	assert_string_equal(cs[0].name, "a");
	assert_string_equal(cs[0].stage, "downloading");
	assert_string_equal(cs[1].stage, "allowed");
	ferry_jcomponents_free(cs, n);
	/* an unknown update or component changes nothing */
	ferry_transition t = {.update_id = "nope", .component = "a", .stage = "x", .total = -1};
	char *body;
	int64_t seq;
	assert_int_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_E_UNKNOWN_UPDATE);
	t.update_id = "u1";
	t.component = "zz";
	assert_int_not_equal(ferry_journal_transition(j, &t, &body, &seq, &st), FERRY_OK);
	assert_int_equal(transition(j, "u1", "b", "downloading"), 4); /* no seq was spent */
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
	transition(j, "u2", "a", "allowed");
	transition(j, "u2", "b", "allowed");
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
				transition(c, "k", round % 2 ? "a" : "b", "downloading");
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
		assert_non_null(strstr(json_string_value(json_object_get(r, "body")), "\"stage\":\"downloading\""));
		want++;
	}
	assert_true(want > 1);
	int64_t next = transition(j, "k", "a", "downloaded");
	assert_int_equal(next, (int64_t)want);
	json_decref(out);
	ferry_journal_close(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seq_survives_reopen),
		cmocka_unit_test(test_replay_store),
		cmocka_unit_test(test_outbox_and_links),
		cmocka_unit_test(test_damaged_file_refused),
		cmocka_unit_test(test_sigkill_leaves_whole_transitions),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
