/* The operator's side in process: when `ferry deploy` counts a gateway as
 * through (follow.c, fed signed reports in any order), which messages it
 * refuses, and `ferry fleet --where` (fleet.c).  Reports are signed here
 * with gateway certificates from `ferry pki init`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet.h"
#include "follow.h"
#include "ferry/jws.h"
#include "ferry/trust.h"
#include "pki.h"

static char dir[64];
static ferry_trust *trust;
static EVP_PKEY *key[2];
static STACK_OF(X509) *chain[2];
static FILE *sink;

static int setup(void **state)
{
	const char *gws[] = {"gw-1", "gw-2"};
	ferry_status st = {0};
	char path[128];

	snprintf(dir, sizeof(dir), "/tmp/ferry-op-XXXXXX");
	assert_non_null(mkdtemp(dir));
	rmdir(dir);
	assert_int_equal(ferry_pki_init(dir, gws, 2, &st), 0);
	snprintf(path, sizeof(path), "%s/ca.pem", dir);
	assert_int_equal(ferry_trust_load(path, &trust, &st), 0);
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/gw-%s.key", dir, gws[i]);
		assert_int_equal(ferry_pki_load_key(path, &key[i], &st), 0);
		snprintf(path, sizeof(path), "%s/gw-%s.pem", dir, gws[i]);
		assert_int_equal(ferry_pki_load_certs(path, &chain[i], &st), 0);
	}
	sink = fopen("/dev/null", "w");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	for (int i = 0; i < 2; i++) {
		EVP_PKEY_free(key[i]);
		sk_X509_pop_free(chain[i], X509_free);
	}
	ferry_trust_free(trust);
	fclose(sink);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

/* feed f a message on ferry/v1/GW/KIND, signed by gateway `by` (0 gw-1,
 * 1 gw-2, -1 unsigned) */
static void feed(follow *f, const char *gw, const char *kind, int by, const char *json)
{
	char topic[64], *jws = NULL;
	ferry_status st = {0};

	snprintf(topic, sizeof(topic), "ferry/v1/%s/%s", gw, kind);
	if (by < 0) {
		follow_message(f, topic, json, strlen(json), NULL, NULL);
		return;
	}
	assert_int_equal(ferry_jws_sign(json, strlen(json), key[by], chain[by], "ferry-report", &jws, &st), 0);
	follow_message(f, topic, jws, strlen(jws), NULL, NULL);
	free(jws);
}

#define ACCEPTED "{\"jti\":\"j1\",\"op\":\"update.deploy\",\"update_id\":\"u-1\",\"result\":\"accepted\",\"ts\":1}"
#define STAGE(c, s, extra, seq) \
	"{\"update_id\":\"u-1\",\"component\":\"" c "\",\"stage\":\"" s "\"" extra ",\"seq\":" #seq ",\"ts\":1}"

static follow *expect_ab(void)
{
	static const char *const comps[] = {"a", "b"};
	follow *f = follow_new(FOLLOW_PLAIN, sink, trust);
	assert_non_null(f);
	follow_expect(f, "gw-1", "u-1", "j1", comps, 2, false);
	return f;
}

/* a goes to d1; every device of b runs it already (no allowed for b) */
static void test_through_with_settled_component(void **state)
{
	follow *f = expect_ab();

	feed(f, "gw-1", "stage", 0, STAGE("b", "already_installed", ",\"device\":\"d2\",\"version\":\"1.0.0\"", 2));
	feed(f, "gw-1", "reply", 0, ACCEPTED);
	assert_false(follow_done(f)); /* seq 1 is not in: it may be b's allowed */
	feed(f, "gw-1", "stage", 0, STAGE("a", "allowed", ",\"devices\":[\"d1\"]", 1));
	assert_false(follow_done(f)); /* d1 has no outcome yet */
	assert_int_equal(follow_result(f, false), 1); /* were the commands to expire now: not installed */
	/* a long push numbers its reports far past 65535 */
	feed(f, "gw-1", "stage", 0, STAGE("a", "installing", ",\"device\":\"d1\",\"progress\":{\"done\":1,\"total\":9}", 70000));
	assert_int_equal(follow_refused(f), 0);
	feed(f, "gw-1", "stage", 0, STAGE("a", "installing", ",\"device\":\"d1\",\"progress\":{\"done\":1,\"total\":2}", 3));
	assert_false(follow_done(f));
	feed(f, "gw-1", "stage", 0, STAGE("a", "installed", ",\"device\":\"d1\",\"version\":\"2.0.0\"", 4));
	assert_true(follow_done(f));
	assert_int_equal(follow_result(f, false), 0);
	assert_int_equal(follow_refused(f), 0);
	follow_free(f);
}

/* b's allowed comes late and lists a device: b is not settled */
static void test_allowed_after_already(void **state)
{
	follow *f = expect_ab();

	feed(f, "gw-1", "reply", 0, ACCEPTED);
	feed(f, "gw-1", "stage", 0, STAGE("a", "allowed", ",\"devices\":[\"d1\"]", 1));
	feed(f, "gw-1", "stage", 0, STAGE("b", "already_installed", ",\"device\":\"d3\",\"version\":\"1.0.0\"", 3));
	feed(f, "gw-1", "stage", 0, STAGE("a", "installed", ",\"device\":\"d1\",\"version\":\"2.0.0\"", 5));
	assert_false(follow_done(f)); /* seq 2 is missing */
	feed(f, "gw-1", "stage", 0, STAGE("b", "allowed", ",\"devices\":[\"d2\"]", 2));
	assert_false(follow_done(f)); /* d2 must end */
	feed(f, "gw-1", "stage", 0, STAGE("b", "rolled_back", ",\"device\":\"d2\",\"reason\":\"version_mismatch\",\"detail\":\"x\"", 4));
	assert_true(follow_done(f));
	assert_int_equal(follow_result(f, false), 1);
	follow_free(f);
}

/* forged: unsigned, signed by gw-2, malformed; none counts */
static void test_forgeries_refused(void **state)
{
	follow *f = expect_ab();

	feed(f, "gw-1", "reply", -1, ACCEPTED);
	feed(f, "gw-1", "reply", 1, ACCEPTED);
	feed(f, "gw-1", "reply", 0, "{\"jti\":");
	follow_message(f, "ferry/v1/gw-1/reply", "eyJ.x.y", 7, NULL, NULL);
	assert_int_equal(follow_refused(f), 3 + 1);
	assert_false(follow_done(f)); /* no reply was taken */
	/* the gateway's own refusal of a command that did not verify (anyone
	 * may publish one on its cmd topic): nothing says it was ours */
	feed(f, "gw-1", "reply", 0, "{\"jti\":null,\"result\":\"refused\",\"reason\":\"bad_signature\",\"ts\":1}");
	assert_false(follow_done(f));
	assert_int_equal(follow_refused(f), 4);
	feed(f, "gw-1", "reply", 0,
	     "{\"jti\":\"j1\",\"op\":\"update.deploy\",\"update_id\":\"u-1\",\"result\":\"refused\",\"reason\":\"downgrade\",\"ts\":1}");
	assert_true(follow_done(f));
	assert_int_equal(follow_result(f, false), 1);
	/* a gateway deploy did not send to is dropped unread (not even checked) */
	feed(f, "gw-2", "stage", 0, STAGE("a", "installed", ",\"device\":\"d1\"", 9));
	assert_int_equal(follow_refused(f), 4);
	follow_free(f);
}

static void test_fleet_where(void **state)
{
	fleet *fl = fleet_new();
	ferry_status st = {0};
	const char *inv1 = "{\"gateway\":{\"id\":\"gw-1\",\"attributes\":{\"site\":\"a\"}},\"devices\":[{\"id\":\"m\","
			   "\"components\":[{\"name\":\"fw\",\"version\":\"1.4.0\"}]}]}";
	const char *inv2 = "{\"gateway\":{\"id\":\"gw-2\",\"attributes\":{\"site\":\"b\"}},\"devices\":[{\"id\":\"m\","
			   "\"components\":[{\"name\":\"fw\",\"version\":null}]}]}";
	char *j1 = NULL, *j2 = NULL, *j3 = NULL;

	fleet_set_trust(fl, trust);
	assert_int_equal(ferry_jws_sign(inv1, strlen(inv1), key[0], chain[0], "ferry-report", &j1, &st), 0);
	assert_int_equal(ferry_jws_sign(inv2, strlen(inv2), key[1], chain[1], "ferry-report", &j2, &st), 0);
	assert_int_equal(ferry_jws_sign(inv1, strlen(inv1), key[1], chain[1], "ferry-report", &j3, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j1, strlen(j1));
	fleet_add(fl, "ferry/v1/gw-2/inventory", j2, strlen(j2));
	fleet_add(fl, "ferry/v1/gw-3/inventory", j3, strlen(j3)); /* gw-2's signature on gw-3's topic */
	fleet_add(fl, "ferry/v1/gw-1/inventory", inv1, strlen(inv1)); /* unsigned */
	fleet_add(fl, "ferry/v1/gw-1/state", "{\"state\":\"online\"}", 18);
	assert_int_equal(fleet_refused(fl), 2);
	assert_int_equal(fleet_matching(fl), 2);

	assert_int_equal(fleet_where(fl, "component.fw<1.5.0", &st), 0);
	assert_int_equal(fleet_matching(fl), 2); /* an unknown version is below any */
	assert_int_equal(fleet_where(fl, "site!=b", &st), 0);
	assert_int_equal(fleet_matching(fl), 1);
	assert_int_equal(fleet_where(fl, "state=online", &st), 0);
	assert_int_equal(fleet_matching(fl), 1);
	assert_int_equal(fleet_where(fl, "component.fw>=1.4.0", &st), 0);
	assert_int_equal(fleet_matching(fl), 1);
	assert_int_equal(fleet_where(fl, "component.fw>1.4.0", &st), 0);
	assert_int_equal(fleet_matching(fl), 0);

	/* refused conditions name what was wrong */
	assert_int_not_equal(fleet_where(fl, "site", &st), 0);
	assert_non_null(strstr(st.detail, "site"));
	assert_int_not_equal(fleet_where(fl, "site<b", &st), 0);
	assert_int_not_equal(fleet_where(fl, "component.fw<1.x", &st), 0);
	assert_int_not_equal(fleet_where(fl, "bad key=1", &st), 0);
	assert_int_not_equal(fleet_where(fl, "=1", &st), 0);
	free(j1);
	free(j2);
	free(j3);
	fleet_free(fl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_through_with_settled_component),
		cmocka_unit_test(test_allowed_after_already),
		cmocka_unit_test(test_forgeries_refused),
		cmocka_unit_test(test_fleet_where),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
