#!/usr/bin/env bash
# The staged flow through the real ferryd, driven only over MQTT: request,
# download, check, install, each answered on reply, with every stage report
# of both components checked in order; then the inventory shows the new
# versions and the files are in place.  Then update.deploy does it all in one.
cd "$(dirname "$0")"
. ../../scripts/world.sh
world_up "${1:?usage: flow.sh BUILD_DIR}"
start_ferryd
wait_mqtt "ferry/v1/gw-1/inventory" 10
grep -F "ferry/v1/gw-1/inventory" "$W/mqtt.log" | grep -qF '"site":"hall-2"' || fail "inventory lacks the custom attribute"
# at rest ferryd maps none of the libraries it loads on first use
mapped() { awk '{ print $6 }' /proc/"$W_FERRYD_PID"/maps | grep -oE 'lib(curl|yaml-0|sodium)\.so' | sort -u | paste -sd' '; }
[ -z "$(mapped)" ] || fail "ferryd at rest maps $(mapped)"

make_update u1 1 1.0.0 1.0.0
cmd update.request u-1 --manifest "$W/u1.jws"
wait_mqtt '"op":"update.request","update_id":"u-1","result":"accepted"' 10
# links are secrets: one with a password, one with a token
u="https://127.0.0.1:$W_HTTPS_PORT"
cmd update.download u-1 --link "app-config=${u/https:\/\//https://ops:secretpw-4471@}/u1-app.conf" \
	--link "app-bin=$u/u1-app.bin?token=ferry-secret-9d2e"
wait_mqtt '"op":"update.download","update_id":"u-1","result":"accepted"' 10
wait_mqtt '"component":"app-bin","stage":"downloaded"' 30
[ "$(mapped)" = "libcurl.so" ] || fail "after a download ferryd maps '$(mapped)', not libcurl alone"
cmd update.check u-1
wait_mqtt '"component":"app-bin","stage":"verified"' 30
cmd update.install u-1
wait_mqtt '"component":"app-bin","stage":"installed"' 30

for c in app-config app-bin; do
	got=$(stages_of u-1 $c)
	[ "$got" = "allowed downloading downloaded verifying verified installing activating installed" ] ||
		fail "$c stages were: $got"
done
# seq rises by one per report of the update, from 1, with no gaps or repeats
seqs=$(grep -F 'ferry/v1/gw-1/stage ' "$W/mqtt.log" | grep -F '"update_id":"u-1"' |
	sed 's/.*"seq":\([0-9]*\).*/\1/' | sort -n | uniq | tr '\n' ' ')
n=$(echo "$seqs" | wc -w)
[ "$seqs" = "$(seq 1 "$n" | tr '\n' ' ')" ] || fail "seq is not 1..$n: $seqs"
grep -F '"stage":"installed"' "$W/mqtt.log" | grep -F '"component":"app-bin"' | grep -qF '"version":"1.0.0"' ||
	fail "installed report lacks the version read back"
cmp "$W/www/u1-app.bin" "$W/target/app.bin" || fail "app.bin not installed"
cmp "$W/www/u1-app.conf" "$W/target/app.conf" || fail "app.conf not installed"
wait_mqtt '{"name":"app-bin","version":"1.0.0"}' 10
echo "ok: staged flow"
# used links leave no copy in the state dir (the journal, its log, the
# store), nor in the log; the journal's files are ferryd's alone
! grep -rlaE "secretpw-4471|ferry-secret-9d2e" "$W/state" "$W/ferryd.log" ||
	fail "a used download link is still on disk: $(grep -rlaE "secretpw-4471|ferry-secret-9d2e" "$W/state" "$W/ferryd.log")"
for f in "$W"/state/journal.db*; do
	[ "$(stat -c %a "$f")" = 600 ] || fail "$f has mode $(stat -c %a "$f")"
done
echo "ok: no used link left on disk; the journal is 0600"

# A stage asked for out of turn is refused.
make_update u2 2 1.1.0 1.1.0
cmd update.install u-9
wait_mqtt '"update_id":"u-9","result":"refused","reason":"unknown_update"' 10
cmd update.request u-2 --manifest "$W/u2.jws"
wait_mqtt '"op":"update.request","update_id":"u-2","result":"accepted"' 10
cmd update.install u-2
wait_mqtt '"op":"update.install","update_id":"u-2","result":"refused","reason":"wrong_stage"' 10
cmd update.cancel u-2
wait_mqtt '"op":"update.cancel","update_id":"u-2","result":"accepted"' 10
wait_mqtt '"update_id":"u-2","component":"app-bin","stage":"cancelled"' 10
echo "ok: wrong stage and cancel"

# update.deploy: everything in one command.
make_update u3 3 1.2.0 1.2.0
# shellcheck disable=SC2046
cmd update.deploy u-3 --manifest "$W/u3.jws" $(links_for u3)
wait_mqtt '"update_id":"u-3","component":"app-bin","stage":"installed"' 30
for c in app-config app-bin; do
	got=$(stages_of u-3 $c)
	[ "$got" = "allowed downloading downloaded verifying verified installing activating installed" ] ||
		fail "deploy: $c stages were: $got"
done
cmp "$W/www/u3-app.bin" "$W/target/app.bin" || fail "deploy did not install app.bin"
wait_mqtt '{"name":"app-bin","version":"1.2.0"}' 10
echo "ok: deploy"

# Cancel while the worker is downloading: stops where it stands, installs nothing.
make_update u4 4 1.3.0 1.3.0 300000
# shellcheck disable=SC2046
cmd update.deploy u-4 --manifest "$W/u4.jws" $(links_for u4 slow/)
wait_mqtt '"update_id":"u-4","component":"app-bin","stage":"downloading"' 20 2
cmd update.cancel u-4
wait_mqtt '"op":"update.cancel","update_id":"u-4","result":"accepted"' 10
wait_mqtt '"update_id":"u-4","component":"app-bin","stage":"cancelled"' 20
wait_mqtt '"update_id":"u-4","component":"app-config","stage":"cancelled"' 20
cmp "$W/www/u3-app.bin" "$W/target/app.bin" || fail "a cancelled update changed app.bin"
! grep -F '"update_id":"u-4"' "$W/mqtt.log" | grep -qF '"stage":"installing"' || fail "cancelled update installed"
cmd update.cancel u-4
wait_mqtt '"op":"update.cancel","update_id":"u-4","result":"refused","reason":"wrong_stage"' 10
echo "ok: cancel during download"

# Links are secrets: none is left in the journal once used, none was logged.
[ "$(sqlite3 "$W/state/journal.db" 'select count(*) from components where link is not null')" -eq 0 ] ||
	fail "a download link stayed in the journal"
! grep -q "https://" "$W/ferryd.log" || fail "a download link was logged"
echo "ok: links forgotten and never logged"

# A download that trickles stops when the update expires, with that reason,
# and the update ends; then one that outlasts download.deadline.
make_update u5 5 1.4.0 1.4.0 2000000
sed -i "s/^sequence: 5$/sequence: 5\nexpires: $(($(date +%s) + 10))/" "$W/u5.yaml"
"$W_FERRY" manifest sign "$W/u5.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/u5.jws" > /dev/null
# shellcheck disable=SC2046
cmd update.deploy u-5 --manifest "$W/u5.jws" $(links_for u5 slow/)
wait_mqtt '"update_id":"u-5","component":"app-bin","stage":"failed"' 60
grep -F '"update_id":"u-5","component":"app-bin","stage":"failed"' "$W/mqtt.log" |
	grep -qF '"reason":"expired","detail":"stopped at' || fail "u-5: the download did not stop for the expiry"
wait_mqtt '"update_id":"u-5","component":"app-bin","stage":"cancelled","device":"self"' 10
stop_ferryd
sed -i 's/^download:$/download:\n  deadline: 3/' "$W/ferryd.yaml"
start_ferryd
make_update u6 6 1.5.0 1.5.0 2000000
# shellcheck disable=SC2046
cmd update.deploy u-6 --manifest "$W/u6.jws" $(links_for u6 slow/)
wait_mqtt '"update_id":"u-6","component":"app-bin","stage":"failed"' 60
grep -F '"update_id":"u-6","component":"app-bin","stage":"failed"' "$W/mqtt.log" |
	grep -qF 'longer than download.deadline' || fail "u-6: the download did not stop at download.deadline"
echo "ok: downloads stop when the update expires, or at download.deadline"

# Cancel while the file host holds the response back and no byte has come:
# ferryd acts on it then, not once bytes come or the link is given up as
# too slow (low_speed_time is set far past nginx's one-minute hold).
stop_ferryd
sed -i -e '/^  deadline: 3$/d' -e 's/^  low_speed_time: .*/  low_speed_time: 600/' "$W/ferryd.yaml"
start_ferryd
make_update u7 7 1.6.0 1.6.0
u="https://127.0.0.1:$W_HTTPS_PORT"
# the one request /held/ lets straight through this minute
curl -sS --cacert "$W/pki/ca.pem" -o /dev/null "$u/held/u7-app.conf"
cmd update.deploy u-7 --manifest "$W/u7.jws" --link "app-config=$u/u7-app.conf" --link "app-bin=$u/held/u7-app.bin"
wait_file "$W/nginx/error.log" 'delaying request.*zone "held"' 30
cmd update.cancel u-7
wait_mqtt '"update_id":"u-7","component":"app-bin","stage":"cancelled"' 60
held() { awk '$7 == "/held/u7-app.bin" { print $9, $10 }' "$W/nginx/access.log"; }
wait_file "$W/nginx/access.log" '"GET /held/u7-app\.bin ' 30
[ "$(held)" = "499 0" ] || fail "the held request ended as '$(held)', not closed by ferryd before any byte (499 0)"
cmp "$W/www/u3-app.bin" "$W/target/app.bin" || fail "a cancelled update changed app.bin"
echo "ok: cancel while the file host sends nothing"
