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

#include "campaign.h"
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

/* Many inventories at once, opened on the worker threads while more come:
 * each gateway ends with the last good one it sent, and every forgery (one
 * gateway's signature on the other's topic) is refused, whatever order the
 * threads opened them in. */
static void test_fleet_many(void **state)
{
	enum { N = 240 };
	fleet *fl = fleet_new();
	ferry_status st = {0};
	unsigned forged = 0;
	int last[2] = {-1, -1};

	fleet_set_trust(fl, trust);
	for (int i = 0; i < N; i++) {
		int g = i % 2, signer = (i % 7 == 3) ? !g : g; /* every seventh is signed by the other */
		char inv[160], topic[64], *j = NULL;
		snprintf(inv, sizeof(inv), "{\"gateway\":{\"id\":\"gw-%d\",\"attributes\":{\"n\":\"%d\"}},\"devices\":[]}",
			 g + 1, i);
		assert_int_equal(ferry_jws_sign(inv, strlen(inv), key[signer], chain[signer], "ferry-report", &j, &st), 0);
		snprintf(topic, sizeof(topic), "ferry/v1/gw-%d/inventory", g + 1);
		fleet_add(fl, topic, j, strlen(j));
		free(j);
		if (signer != g)
			forged++;
		else
			last[g] = i;
	}
	assert_int_equal(fleet_refused(fl), forged);
	assert_int_equal(fleet_matching(fl), 2);
	for (int g = 0; g < 2; g++) {
		char id[8], want[8];
		snprintf(id, sizeof(id), "gw-%d", g + 1);
		snprintf(want, sizeof(want), "%d", last[g]);
		const json_t *inv = fleet_inventory(fl, id);
		assert_non_null(inv);
		assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(inv, "gateway"),
										      "attributes"), "n")), want);
	}
	fleet_free(fl);
}

/* ferry fleet's cache of opened messages: used only for the same bytes,
 * the same trust anchor and a certificate still valid.  A hit is seen as a
 * message taken although the fleet's trust (another CA here) would refuse
 * to open it. */
static void test_fleet_cache(void **state)
{
	const char *inv = "{\"gateway\":{\"id\":\"gw-1\",\"attributes\":{\"site\":\"a\"}},\"devices\":[]}";
	const char *inv_b = "{\"gateway\":{\"id\":\"gw-1\",\"attributes\":{\"site\":\"b\"}},\"devices\":[]}";
	char *j = NULL, *jb = NULL, db[128], ca[128], ops_ca[128];
	ferry_status st = {0};
	ferry_trust *other = NULL;

	snprintf(db, sizeof(db), "%s/opened.db", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(ops_ca, sizeof(ops_ca), "%s/operators-ca.pem", dir);
	assert_int_equal(ferry_trust_load(ops_ca, &other, &st), 0);
	assert_int_equal(ferry_jws_sign(inv, strlen(inv), key[0], chain[0], "ferry-report", &j, &st), 0);
	assert_int_equal(ferry_jws_sign(inv_b, strlen(inv_b), key[0], chain[0], "ferry-report", &jb, &st), 0);
	/* opened with the right CA, and recorded */
	fleet *fl = fleet_new();
	fleet_set_trust(fl, trust);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 0);
	fleet_free(fl);
	/* the same bytes under the same anchor: taken, not opened */
	fl = fleet_new();
	fleet_set_trust(fl, other);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 0);
	assert_int_equal(fleet_matching(fl), 1);
	fleet_free(fl);
	/* the same bytes on another gateway's topic: opened (and refused) */
	fl = fleet_new();
	fleet_set_trust(fl, other);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-2/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 1);
	fleet_free(fl);
	fl = fleet_new(); /* (that run forgot j: record it again) */
	fleet_set_trust(fl, trust);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 0);
	fleet_free(fl);
	/* other bytes: opened (and refused by the other CA) */
	fl = fleet_new();
	fleet_set_trust(fl, other);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", jb, strlen(jb));
	assert_int_equal(fleet_refused(fl), 1);
	fleet_free(fl);
	/* that run saw only jb: j was forgotten */
	fl = fleet_new();
	fleet_set_trust(fl, other);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 1);
	fleet_free(fl);
	/* recorded again; another anchor, then an expired certificate: opened */
	fl = fleet_new();
	fleet_set_trust(fl, trust);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 0);
	fleet_free(fl);
	fl = fleet_new();
	fleet_set_trust(fl, other);
	assert_int_equal(fleet_set_cache(fl, db, ops_ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 1);
	fleet_free(fl);
	sqlite3 *h;
	assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "UPDATE opened SET not_after = 1", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	fl = fleet_new();
	fleet_set_trust(fl, other);
	assert_int_equal(fleet_set_cache(fl, db, ca, &st), 0);
	fleet_add(fl, "ferry/v1/gw-1/inventory", j, strlen(j));
	assert_int_equal(fleet_refused(fl), 1);
	fleet_free(fl);
	ferry_trust_free(other);
	free(j);
	free(jb);
}

/* a gateway's outcome: refused; the worst step; `replayed` never counts */
static void test_outcome(void **state)
{
	char reason[33], detail[256];
	follow *f = expect_ab();

	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_WAITING);
	/* the same command again (a runner restarted): the gateway says replayed */
	feed(f, "gw-1", "reply", 0, "{\"jti\":\"j1\",\"update_id\":\"u-1\",\"result\":\"refused\",\"reason\":\"replayed\",\"ts\":1}");
	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_WAITING);
	feed(f, "gw-1", "reply", 0, ACCEPTED);
	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_RUNNING);
	feed(f, "gw-1", "stage", 0, STAGE("a", "allowed", ",\"devices\":[\"d1\",\"d2\"]", 1));
	feed(f, "gw-1", "stage", 0, STAGE("b", "allowed", ",\"devices\":[\"d1\"]", 2));
	feed(f, "gw-1", "stage", 0, STAGE("a", "installed", ",\"device\":\"d1\",\"version\":\"2.0.0\"", 3));
	feed(f, "gw-1", "stage", 0, STAGE("b", "installed", ",\"device\":\"d1\",\"version\":\"2.0.0\"", 4));
	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_RUNNING); /* a on d2 */
	feed(f, "gw-1", "stage", 0, STAGE("a", "failed", ",\"device\":\"d2\",\"reason\":\"install_failed\",\"detail\":\"flash\"", 5));
	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_FAILED);
	assert_string_equal(reason, "install_failed");
	assert_string_equal(detail, "flash");
	assert_int_equal(follow_outcome(f, "gw-1", "u-2", reason, detail), FS_WAITING); /* another update */
	follow_free(f);

	f = expect_ab();
	feed(f, "gw-1", "reply", 0, "{\"jti\":\"j1\",\"update_id\":\"u-1\",\"result\":\"refused\",\"reason\":\"stale_sequence\",\"detail\":\"7\",\"ts\":1}");
	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_REFUSED);
	assert_string_equal(reason, "stale_sequence");
	follow_free(f);

	f = expect_ab(); /* both already there */
	feed(f, "gw-1", "reply", 0, ACCEPTED);
	feed(f, "gw-1", "stage", 0, STAGE("a", "already_installed", ",\"device\":\"d1\",\"version\":\"2.0.0\"", 1));
	feed(f, "gw-1", "stage", 0, STAGE("b", "already_installed", ",\"device\":\"d1\",\"version\":\"2.0.0\"", 2));
	assert_int_equal(follow_outcome(f, "gw-1", "u-1", reason, detail), FS_ALREADY);
	follow_free(f);
}

static void test_campaign_parsing(void **state)
{
	int64_t a, b;
	assert_true(camp_parse_window("22:00-02:30", &a, &b));
	assert_int_equal(a, 22 * 60);
	assert_int_equal(b, 2 * 60 + 30);
	assert_true(camp_in_window(a, b, 23 * 60));
	assert_true(camp_in_window(a, b, 60));
	assert_false(camp_in_window(a, b, 12 * 60));
	assert_false(camp_in_window(a, b, 2 * 60 + 30)); /* the end is outside */
	assert_true(camp_in_window(-1, -1, 5));
	assert_false(camp_parse_window("10:00-10:00", &a, &b));
	assert_false(camp_parse_window("24:00-01:00", &a, &b));
	assert_false(camp_parse_window("9:00-10:00", &a, &b));
	assert_true(camp_parse_time("2026-12-01T10:30Z", &a));
	assert_int_equal(a, 1796121000);
	assert_true(camp_parse_time("2026-12-01T10:30:05Z", &a));
	assert_int_equal(a, 1796121005);
	assert_true(camp_parse_time("1796121000", &a));
	assert_false(camp_parse_time("2026-12-01T10:30", &a)); /* no zone: refused, not guessed */
	assert_false(camp_parse_time("2026-12-01 10:30Z", &a));
	assert_true(camp_parse_count("3", &a, &b));
	assert_int_equal(a, 3);
	assert_int_equal(b, 0);
	assert_true(camp_parse_count("25%", &a, &b));
	assert_int_equal(a, 0);
	assert_int_equal(b, 25);
	assert_false(camp_parse_count("0", &a, &b));
	assert_false(camp_parse_count("101%", &a, &b));
	assert_false(camp_parse_count("-1", &a, &b));
	assert_false(camp_parse_count("3x", &a, &b));
}

/* counts per campaign and per component from targets and stored reports */
static void test_campaign_counts(void **state)
{
	char sd[128];
	ferry_status st = {0};
	camp_db *db = NULL;
	campaign c = {.advance_pct = 100, .win_from = -1, .win_to = -1, .ttl = 60, .attempt = 1, .created = 1};
	json_t *n = NULL;

	snprintf(sd, sizeof(sd), "%s/opstate", dir);
	assert_int_equal(camp_db_open(sd, &db, &st), 0);
	snprintf(c.name, sizeof(c.name), "c1");
	snprintf(c.tag, sizeof(c.tag), "abc");
	c.manifest = strdup("m");
	c.components = json_pack("[s,s]", "a", "b");
	c.images = json_pack("{s:s,s:s}", "a", "00", "b", "11");
	c.where = json_array();
	assert_int_equal(camp_insert(db, &c, &st), 0);
	assert_int_equal(camp_insert(db, &c, &st), FERRY_E_MALFORMED); /* one name, one campaign */
	sqlite3 *h = camp_db_handle(db);
	assert_int_equal(sqlite3_exec(h,
		"INSERT INTO targets(campaign, gateway, batch, attempt, state, added, update_id, reason) VALUES"
		" ('c1','g1',0,1,'installed',1,'u','')," /* both installed */
		" ('c1','g2',0,1,'failed',1,'u','install_failed'),"
		" ('c1','g3',0,1,'pending',1,NULL,''),"
		" ('c1','g4',0,1,'refused',1,'u','downgrade');"
		"INSERT INTO messages(campaign, gateway, update_id, kind, body, component, device, stage, reason) VALUES"
		" ('c1','g1','u','stage','{}','a','d','installed',NULL),"
		" ('c1','g1','u','stage','{}','b','d','installed',NULL),"
		" ('c1','g2','u','stage','{}','a','d','installed',NULL),"
		" ('c1','g2','u','stage','{}','b','d1','installed',NULL),"
		" ('c1','g2','u','stage','{}','b','d2','failed','install_failed');",
		NULL, NULL, NULL), SQLITE_OK);
	/* a target in a state the schema does not know is refused */
	assert_int_not_equal(sqlite3_exec(h, "INSERT INTO targets(campaign, gateway, batch, attempt, state, added)"
					     " VALUES ('c1','g9',0,1,'done',1)", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(camp_counts(db, &c, &n, &st), 0);
	assert_int_equal(json_integer_value(json_object_get(n, "targeted")), 4);
	assert_int_equal(json_integer_value(json_object_get(n, "installed")), 1);
	assert_int_equal(json_integer_value(json_object_get(n, "failed")), 1);
	assert_int_equal(json_integer_value(json_object_get(n, "pending")), 1);
	assert_int_equal(json_integer_value(json_object_get(n, "refused")), 1);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(n, "reasons"), "downgrade")), 1);
	json_t *b = json_object_get(json_object_get(n, "components"), "b");
	json_t *a = json_object_get(json_object_get(n, "components"), "a");
	assert_int_equal(json_integer_value(json_object_get(b, "installed")), 1);
	assert_int_equal(json_integer_value(json_object_get(b, "failed")), 1); /* the worst of its devices */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(b, "reasons"), "install_failed")), 1);
	assert_int_equal(json_integer_value(json_object_get(a, "installed")), 2);
	assert_int_equal(json_integer_value(json_object_get(a, "refused")), 1);
	assert_int_equal(json_integer_value(json_object_get(a, "pending")), 1);
	json_decref(n);
	camp_free(&c);
	assert_int_equal(camp_get(db, "c1", &c, &st), 0);
	assert_string_equal(c.state, "active");
	assert_int_equal(json_array_size(c.components), 2);
	camp_free(&c);
	assert_int_equal(camp_get(db, "c2", &c, &st), FERRY_E_UNKNOWN_UPDATE);
	camp_db_close(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_through_with_settled_component),
		cmocka_unit_test(test_allowed_after_already),
		cmocka_unit_test(test_forgeries_refused),
		cmocka_unit_test(test_fleet_where),
		cmocka_unit_test(test_fleet_many),
		cmocka_unit_test(test_fleet_cache),
		cmocka_unit_test(test_outcome),
		cmocka_unit_test(test_campaign_parsing),
		cmocka_unit_test(test_campaign_counts),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
