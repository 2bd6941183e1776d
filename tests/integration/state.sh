#!/usr/bin/env bash
# The state dir: made on the first start (0700); an emptied or replaced
# journal is never taken for a new gateway -- ferryd refuses to start and
# names the damage, and its last accepted manifest sequence survives a
# journal put back; `ferryd --reset-journal` says what is lost and lets the
# next start begin anew.
cd "$(dirname "$0")"
. ../../scripts/world.sh
world_up "${1:?usage: state.sh BUILD_DIR}"
FERRYD="$W_BUILD/gateway/ferryd"
sed -i "s|^state_dir: .*|state_dir: $W/fresh/state|" "$W/ferryd.yaml"
S="$W/fresh/state"

# first start: the state dir does not exist yet
[ ! -e "$W/fresh" ] || fail "the test's state dir exists already"
start_ferryd
[ "$(stat -c %a "$S")" = 700 ] || fail "the state dir was made with mode $(stat -c %a "$S")"
[ -s "$S/journal.id" ] || fail "no journal.id beside the journal"
make_update s5 5 1.0.0 1.0.0 1000
# shellcheck disable=SC2046
cmd update.deploy u-5 --manifest "$W/s5.jws" $(links_for s5)
wait_mqtt '"update_id":"u-5","component":"app-bin","stage":"installed"' 30
stop_ferryd
cp -a "$S" "$W/saved"

refused() { # refused WHAT EXPECTED: ferryd must not start, and must say EXPECTED
	local rc=0
	timeout 20 "$FERRYD" --config "$W/ferryd.yaml" > "$W/refused.out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] || fail "$1: ferryd exited $rc, wanted 1: $(tail -n 3 "$W/refused.out")"
	grep -qF -- "$2" "$W/refused.out" || fail "$1: it said: $(cat "$W/refused.out")"
}

# an emptied journal
: > "$S/journal.db"
rm -f "$S/journal.db-wal" "$S/journal.db-shm"
refused emptied "journal.db is empty, but this state dir was used before"
[ ! -s "$S/journal.db" ] || fail "emptied: the refusal wrote to the journal"
# a missing one
rm -f "$S/journal.db"
refused missing "journal.db is missing, but this state dir was used before"
# another gateway's journal in its place
mkdir -p "$W/other"
sed "s|^state_dir: .*|state_dir: $W/other|" "$W/ferryd.yaml" > "$W/other.yaml"
"$FERRYD" --config "$W/other.yaml" >> "$W/other.log" 2>&1 &
OTHER=$!
for _ in $(seq 1 100); do [ -s "$W/other/journal.id" ] && break; sleep 0.1; done
kill "$OTHER"; wait "$OTHER" 2>/dev/null || true
cp "$W/other/journal.db" "$S/journal.db"
refused replaced "it was replaced"
echo "ok: an emptied, missing or replaced journal stops ferryd, naming the damage"

# the right journal back: it remembers its last sequence
rm -f "$S"/journal.db*
cp -a "$W/saved/." "$S/"
start_ferryd
make_update s3 3 2.0.0 2.0.0 1000
# shellcheck disable=SC2046
cmd update.deploy u-3 --manifest "$W/s3.jws" $(links_for s3)
wait_mqtt '"update_id":"u-3","result":"refused","reason":"stale_sequence"' 10
stop_ferryd
echo "ok: the journal put back keeps its last sequence"

# the way out, saying what is lost
rm -f "$S/journal.db"*
: > "$S/journal.db"
"$FERRYD" --config "$W/ferryd.yaml" --reset-journal > "$W/reset.out" 2>&1 || fail "reset failed: $(cat "$W/reset.out")"
grep -qF "which cannot be read (it is empty): everything it held is lost" "$W/reset.out" ||
	fail "reset did not say what is lost: $(cat "$W/reset.out")"
[ ! -e "$S/journal.id" ] || fail "reset left the identity"
cp -a "$W/saved/." "$S/"
"$FERRYD" --config "$W/ferryd.yaml" --reset-journal > "$W/reset2.out" 2>&1 || fail "reset failed"
grep -qF "the last manifest sequence accepted, 5" "$W/reset2.out" || fail "reset did not name the sequence: $(cat "$W/reset2.out")"
ls "$S"/journal.db.reset-* > /dev/null || fail "the old journal was not kept aside"
start_ferryd
echo "ok: --reset-journal says what is lost, keeps the old journal aside, and the next start is a new one"
