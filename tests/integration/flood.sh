#!/usr/bin/env bash
# A flood of bad commands: 5,000 in one burst, each answered (refused,
# malformed) and none changing anything, with ferryd's resident memory
# growing by no more than 2 MiB; and a command over the 1 MiB limit, which
# is answered without ferryd reading it.
cd "$(dirname "$0")"
. ../../scripts/world.sh
world_up "${1:?usage: flood.sh BUILD_DIR}"
start_ferryd
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$W_FERRYD_PID/status"; }
# one bad command first, so that whatever a first refusal allocates is in
echo "not a command" > "$W/bad"
cmd_raw "$W/bad"
wait_mqtt '"jti":null,"result":"refused","reason":"malformed"' 10
before=$(rss)
n0=$(grep -cF '"jti":null,"result":"refused","reason":"malformed"' "$W/mqtt.log")
seq 1 5000 | sed 's/^/garbage-/' > "$W/burst"
# shellcheck disable=SC2046
mosquitto_pub $(mqtt_opts cloud-cmd) -t "ferry/v1/$W_GW/cmd" -q 1 -l < "$W/burst"
wait_mqtt '"jti":null,"result":"refused","reason":"malformed"' 60 $((n0 + 5000))
after=$(rss)
echo "resident memory: $before KiB before 5000 bad commands, $after KiB after"
if grep -qa __asan_init "$W_BUILD/gateway/ferryd"; then
	echo "(an ASan build keeps freed memory in quarantine: the bound holds for the normal build, checked there)"
else
	[ $((after - before)) -le 2048 ] || fail "ferryd grew by $((after - before)) KiB over 5000 bad commands"
fi
[ "$(sqlite3 "$W/state/journal.db" 'select count(*) from updates')" = 0 ] || fail "a bad command made an update"

# over the size limit: answered malformed, naming the size, without being read
head -c 1200000 /dev/zero | tr '\0' 'A' > "$W/huge"
cmd_raw "$W/huge"
wait_mqtt '"reason":"malformed","detail":"a command of 1200000 bytes is over the limit of 1048576 bytes"' 20
kill -0 "$W_FERRYD_PID" || fail "ferryd died"
echo "ok: 5000 bad commands answered, memory held; an oversized one answered unread"
