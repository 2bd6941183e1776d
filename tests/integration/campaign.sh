#!/usr/bin/env bash
# Campaigns through real parts: twenty real ferryd instances in two
# attribute groups (site north and south), the broker and the shipped file
# host.
#   - a one-shot campaign over the north gateways, in batches of four that
#     advance only when the whole batch installed; one gateway's install
#     fails (its reload command refuses), and the campaign stops at its
#     threshold with the rest never sent; the south gateways get nothing;
#   - retry-failed sends the failed one a newer manifest; `ferry campaign
#     run` is killed (SIGKILL) while the batches go on and started again: it
#     finishes, and no gateway got two commands for one step;
#   - a continuous campaign over the south gateways picks up a gateway
#     started later, refuses a forged report, and is cancelled;
#   - a window that excludes now holds every command; bad input is refused
#     by name.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: campaign.sh BUILD_DIR}" && pwd)
N=20
gws=""
for i in $(seq 1 $((N + 1))); do gws="$gws $(printf 'gw-%02d' "$i")"; done
W_MORE_GATEWAYS=$gws
world_up "$BUILD"
F=$W_FERRY
RUN_PID=
trap '{ [ -z "$RUN_PID" ] || kill "$RUN_PID" 2>/dev/null; world_down; } || true' EXIT

# gw_up ID SITE: a ferryd of its own (scripts/world.sh), whose app-bin reload
# command fails while $W/gws/ID/broken exists, and holds the install (the
# device is busy applying it) while $W/gws/ID/hold exists
gw_up() {
	local d=$W/gws/$1
	W_APP_BIN_RELOAD="test ! -e $d/broken && while [ -e $d/hold ]; do sleep 0.05; done" start_gateway "$1" "$2"
	grep -q "reload: test ! -e $d/broken" "$W/gws/$1/ferryd.yaml" || fail "no reload command in $1's config"
}
for i in $(seq 1 $N); do
	id=$(printf 'gw-%02d' "$i")
	gw_up "$id" "$([ "$i" -le 10 ] && echo north || echo south)"
done
for i in $(seq 1 $N); do
	wait_mqtt "$(printf 'ferry/v1/gw-%02d/inventory ' "$i")" 60
done
echo "ok: $N gateways up"

mkdir -p "$W/rel"
printf 'rev: 2\n' > "$W/rel/app.conf"
head -c 20000 /dev/urandom > "$W/rel/app.bin"
cat > "$W/rel/spec.yaml" <<YAML
sequence: 10
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "2.0.0"
    format: file
    file: app.conf
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "2.0.0"
    format: file
    file: app.bin
YAML

# status NAME KEY: a count from `ferry campaign status --json`
count() {
	"$F" campaign status "$1" --json | sed -n "s/^  \"$2\": \\([0-9]*\\),*$/\\1/p" | head -n 1
}
count_is() { # count_is NAME KEY N
	[ "$(count "$1" "$2")" = "$3" ]
}
state_of() {
	"$F" campaign status "$1" --json | sed -n 's/^ "state": "\([a-z]*\)",*$/\1/p'
}
# wait_for DESCRIPTION COMMAND...: until COMMAND succeeds (bounded)
wait_for() {
	local what=$1 i
	shift
	for i in $(seq 1 1200); do
		"$@" && return 0
		sleep 0.1
	done
	fail "never: $what"
}
b64url() { # decode base64url without padding
	local s
	s=$(tr '_-' '/+')
	while [ $((${#s} % 4)) -ne 0 ]; do s="$s="; done
	base64 -d <<< "$s"
}
cmds_to() { # distinct update.deploy commands on the wire to gateway $1
	local c n=0
	for c in $(grep "^ferry/v1/$1/cmd " "$W/mqtt.log" | sort -u | cut -d' ' -f2); do
		cut -d. -f2 <<< "$c" | b64url | grep -q '"op":"update.deploy"' && n=$((n + 1))
	done
	echo "$n"
}
updates_of() { # updates in gateway $1's journal whose id starts with $2
	sqlite3 "$W/gws/$1/state/journal.db" "select count(*) from updates where id like '$2.%'"
}

# --- bad input is refused by name, and changes nothing
bad() { # bad WHAT EXPECTED-TEXT ARGS...: exit 2 (RC) and the text on stderr
	local what=$1 text=$2 rc=0
	shift 2
	"$F" campaign "$@" > "$W/out" 2>&1 || rc=$?
	[ "$rc" = "${RC:-2}" ] && grep -qF -- "$text" "$W/out" || fail "$what was not refused (rc $rc): $(cat "$W/out")"
}
bad "a bad name" 'is not a campaign name' create 'no/slash' --manifest "$W/rel/spec.yaml"
bad "a bad condition" '--where: "site~north"' create c1 --manifest "$W/rel/spec.yaml" --where 'site~north'
bad "a bad window" '--window wants HH:MM-HH:MM' create c1 --manifest "$W/rel/spec.yaml" --window 25:00-01:00
bad "a bad threshold" '--stop-at-failures wants N or P%' create c1 --manifest "$W/rel/spec.yaml" --stop-at-failures 0
bad "a bad start" '--start wants' create c1 --manifest "$W/rel/spec.yaml" --start tomorrow
sed 's/^sequence: 10$/sequense: 10/' "$W/rel/spec.yaml" > "$W/rel/typo.yaml"
RC=1 bad "a misspelt spec key" 'typo.yaml:1: sequense: not a key of a manifest spec' create c1 --manifest "$W/rel/typo.yaml"
bad "an unknown campaign" 'no campaign named nothing' status nothing
[ "$("$F" campaign list --json)" = "[]" ] || fail "a refused create left a campaign: $("$F" campaign list)"
echo "ok: bad names, conditions, windows, thresholds, start times and spec keys are refused by name"

# --- a one-shot campaign over north, batches of 4; gw-03 fails; stop at 1 failure
touch "$W/gws/gw-03/broken"
"$F" campaign create north --manifest "$W/rel/spec.yaml" --where site=north --batch 4 --advance-at 100% \
	--stop-at-failures 1 > "$W/create.out" || fail "campaign create failed: $(cat "$W/create.out")"
bad "a second campaign of one name" 'a campaign named north exists already' create north --manifest "$W/rel/spec.yaml"
"$F" campaign run --until-idle > "$W/run1.out" 2> "$W/run1.err" ||
	fail "campaign run failed: $(cat "$W/run1.err")"
[ "$(state_of north)" = stopped ] || fail "north did not stop at its threshold: $("$F" campaign status north)"
grep -q "^north gw-03 rolled_back install_failed: reload command for app-bin failed" "$W/run1.out" || fail "gw-03's failure was not shown: $(cat "$W/run1.out")"
[ "$(count north targeted)" = 10 ] && [ "$(count north installed)" = 3 ] && [ "$(count north rolled_back)" = 1 ] &&
	[ "$(count north pending)" = 6 ] || fail "north's counts after the stop: $("$F" campaign status north)"
"$F" campaign status north > "$W/status.out"
grep -q "install_failed 1" "$W/status.out" && grep -q "gw-03 rolled_back install_failed" "$W/status.out" &&
	grep -q "component app-bin:" "$W/status.out" || fail "status does not name the failure: $(cat "$W/status.out")"
for i in $(seq 5 $N); do
	id=$(printf 'gw-%02d' "$i")
	[ "$(cmds_to "$id")" = 0 ] || fail "$id got a command (batch 2 must wait for batch 1; south is not targeted)"
done
[ "$(cat "$W/gws/gw-03/target/app.bin" 2>/dev/null)" = "" ] || fail "gw-03 kept the image its reload refused"
cmp -s "$W/rel/app.bin" "$W/gws/gw-01/target/app.bin" || fail "gw-01 did not get app.bin"
echo "ok: batch 1 installed on 3 and rolled back on gw-03; the campaign stopped at 1 failure; batch 2 and south got nothing"

# --- retry-failed; SIGKILL the runner while batch 2 installs; no step sent twice
rm "$W/gws/gw-03/broken"
touch "$W/gws/gw-05/hold" # gw-05 is still applying app-bin when the runner is killed
"$F" campaign retry-failed north > "$W/retry.out" || fail "retry-failed: $(cat "$W/retry.out")"
grep -q "1 gateway to try again with manifest sequence 11 (attempt 2)" "$W/retry.out" ||
	fail "retry-failed said: $(cat "$W/retry.out")"
"$F" campaign run > "$W/run2.out" 2> "$W/run2.err" &
RUN_PID=$!
wait_for "gw-05 applying app-bin" grep -q '^ferry/v1/gw-05/stage .*"component":"app-bin","stage":"activating"' "$W/mqtt.log"
kill -9 "$RUN_PID"
wait "$RUN_PID" 2>/dev/null || true
RUN_PID=
sent_before=$(grep -c " sent " "$W/run2.out" || true)
# what a runner killed between the broker's delivery and its own record
# loses: here, every report it had of gw-05.  The next runner learns them
# again from gw-05 (update.status).
lost=gw-05
sqlite3 "$W/pki/operator-state/campaigns.db" "delete from messages where campaign = 'north' and gateway = '$lost'"
[ "$(sqlite3 "$W/pki/operator-state/campaigns.db" "select state from targets where gateway = 'gw-05'")" != installed ] ||
	fail "gw-05 ended before the runner was killed"
rm "$W/gws/gw-05/hold"
"$F" campaign run --until-idle > "$W/run3.out" 2> "$W/run3.err" ||
	fail "campaign run after SIGKILL failed: $(cat "$W/run3.err")"
[ "$(state_of north)" = done ] && [ "$(count north installed)" = 10 ] && [ "$(count north rolled_back)" = 0 ] ||
	fail "north did not finish after the restart: $("$F" campaign status north)"
for i in $(seq 1 10); do
	id=$(printf 'gw-%02d' "$i")
	want=1
	[ "$id" = gw-03 ] && want=2
	[ "$(cmds_to "$id")" = "$want" ] || fail "$id got $(cmds_to "$id") distinct commands, not $want"
	[ "$(updates_of "$id" north)" = "$want" ] || fail "$id ran $(updates_of "$id" north) updates, not $want"
	cmp -s "$W/rel/app.bin" "$W/gws/$id/target/app.bin" || fail "$id does not run app.bin 2.0.0"
done
for i in $(seq 11 $N); do
	[ "$(cmds_to "$(printf 'gw-%02d' "$i")")" = 0 ] || fail "a south gateway got a north command"
done
"$F" fleet --where site=north --where component.app-bin=2.0.0 > "$W/fleet.out"
grep -q "10 of 20 gateways match" "$W/fleet.out" || fail "the fleet does not show north on 2.0.0: $(cat "$W/fleet.out")"
grep -q "^ferry/v1/$lost/reply .*\"op\":\"update.status\",\"update_id\":\"north\.[0-9a-f]*\.2\",\"result\":\"accepted\"" "$W/mqtt.log" ||
	fail "the restarted runner did not ask $lost where its update stands"
echo "ok: retry-failed finished north; killed after $sent_before sends and restarted (with $lost's reports lost), no gateway got a step twice"

# --- a continuous campaign picks up a gateway started later; a forged report is refused
"$F" campaign create south --manifest "$W/rel/spec.yaml" --where site=south --continuous > /dev/null
"$F" campaign run > "$W/run4.out" 2> "$W/run4.err" &
RUN_PID=$!
wait_for "south installed on 10" count_is south installed 10
gw_up gw-21 south
wait_for "gw-21 was picked up and installed" count_is south installed 11
[ "$(count south targeted)" = 11 ] || fail "south targets: $("$F" campaign status south)"
# a report in gw-11's name, unsigned, from the operator's own certificate
uid=$(sqlite3 "$W/pki/operator-state/campaigns.db" "select update_id from targets where campaign = 'south' and gateway = 'gw-11'")
[ -n "$uid" ] || fail "no update id for gw-11 in campaigns.db"
mosquitto_pub -h 127.0.0.1 -p "$W_OPS_PORT" --cafile "$W/pki/ca.pem" --cert "$W/pki/operator.pem" \
	--key "$W/pki/operator.key" -V mqttv5 -q 1 -t ferry/v1/gw-11/stage \
	-m "{\"update_id\":\"$uid\",\"component\":\"app-bin\",\"device\":\"self\",\"stage\":\"failed\",\"seq\":99,\"reason\":\"install_failed\"}"
wait_for "the runner refused the forged report" grep -q "refused a message on ferry/v1/gw-11/stage" "$W/run4.err"
[ "$(count south failed)" = 0 ] || fail "a forged report changed the campaign: $("$F" campaign status south)"
"$F" campaign cancel south > /dev/null
[ "$(state_of south)" = cancelled ] || fail "south was not cancelled"
kill "$RUN_PID"
wait "$RUN_PID" || fail "campaign run did not end cleanly on SIGTERM"
RUN_PID=
echo "ok: a continuous campaign picked up gw-21 when it appeared; a forged report was refused"

# --- a window that excludes now holds the commands; pause and resume
now_h=$(date +%H)
from=$(printf '%02d:00' $(((10#$now_h + 6) % 24)))
to=$(printf '%02d:00' $(((10#$now_h + 7) % 24)))
sed 's/^sequence: 10$/sequence: 20/' "$W/rel/spec.yaml" > "$W/rel/spec20.yaml"
"$F" campaign create later --manifest "$W/rel/spec20.yaml" --where site=south --window "$from-$to" > /dev/null
"$F" campaign run > "$W/run5.out" 2> "$W/run5.err" &
RUN_PID=$!
wait_for "the window held the commands" grep -q "^later holds its commands until $from" "$W/run5.out"
[ "$(count later pending)" = 11 ] || fail "later's targets: $("$F" campaign status later)"
"$F" campaign pause later > /dev/null && [ "$(state_of later)" = paused ] || fail "pause"
bad "pausing a paused campaign" 'later is paused' pause later
"$F" campaign resume later > /dev/null && [ "$(state_of later)" = active ] || fail "resume"
"$F" campaign cancel later > /dev/null
wait_for "later's targets were cancelled" count_is later cancelled 11
kill "$RUN_PID"
wait "$RUN_PID" || true
RUN_PID=
for i in $(seq 11 21); do
	id=$(printf 'gw-%02d' "$i")
	[ "$(updates_of "$id" later)" = 0 ] || fail "$id got a command outside the window"
done
"$F" campaign list > "$W/list.out"
grep -q "^north  *done  *10 " "$W/list.out" && grep -q "^south  *cancelled  *11 " "$W/list.out" &&
	grep -q "^later  *cancelled  *11 " "$W/list.out" || fail "campaign list: $(cat "$W/list.out")"
echo "ok: a window held every command; pause, resume and cancel"

# --- an encrypted campaign: the file host gets only ciphertext, and each
# command carries the content key wrapped for its gateway's decryption_cert;
# a gateway that publishes none (gw-10, restarted without its decryption
# section) is refused as a target, with the reason, and gets nothing
pkill -f "$W/gws/gw-10/ferryd.yaml"
for _ in $(seq 1 100); do pgrep -f "$W/gws/gw-10/ferryd.yaml" > /dev/null || break; sleep 0.1; done
sed -i '/^decryption:/,+2d' "$W/gws/gw-10/ferryd.yaml"
n10=$(grep -c "^ferry/v1/gw-10/inventory " "$W/mqtt.log" || true)
"$W_BUILD/gateway/ferryd" --config "$W/gws/gw-10/ferryd.yaml" >> "$W/gws/gw-10/ferryd.log" 2>&1 &
W_GW_PIDS="${W_GW_PIDS:-} $!"
wait_mqtt "ferry/v1/gw-10/inventory " 30 $((n10 + 1))
grep "^ferry/v1/gw-10/inventory " "$W/mqtt.log" | tail -n 1 | grep -q decryption_cert &&
	fail "gw-10 still publishes a decryption_cert"
printf 'rev: 3\nsecret: north only\n' > "$W/rel/secret.conf"
cat > "$W/rel/secret.yaml" <<YAML
sequence: 30
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "3.0.0"
    format: file
    file: secret.conf
    encrypt: true
YAML
"$F" campaign create secret --manifest "$W/rel/secret.yaml" --where site=north > /dev/null ||
	fail "an encrypted campaign was not created"
[ "$(sqlite3 "$W/pki/operator-state/campaigns.db" "select keys is not null from campaigns where name = 'secret'")" = 1 ] ||
	fail "the campaign keeps no content key"
"$F" campaign run --until-idle > "$W/run6.out" 2> "$W/run6.err" || fail "run: $(cat "$W/run6.err")"
[ "$(count secret installed)" = 9 ] && [ "$(count secret refused)" = 1 ] ||
	fail "secret: $("$F" campaign status secret)"
grep -q "^secret gw-10 refused: unsupported: gw-10 publishes no decryption_cert" "$W/run6.out" ||
	fail "gw-10's refusal does not say why: $(cat "$W/run6.out")"
for i in $(seq 1 9); do
	id=$(printf 'gw-%02d' "$i")
	cmp -s "$W/rel/secret.conf" "$W/gws/$id/target/app.conf" || fail "$id's app.conf is not the decrypted file"
done
[ "$(updates_of gw-10 secret)" = 0 ] || fail "gw-10 got a command"
[ ! -e "$W/www/files/$(sha256sum "$W/rel/secret.conf" | cut -c1-64)" ] || fail "the plaintext was published"
[ -e "$W/www/files/$(sha256sum "$W/rel/secret.conf.fenc" | cut -c1-64)" ] || fail "the ciphertext was not published"
echo "ok: an encrypted campaign: each key wrapped for its gateway; one without a decryption_cert refused"
