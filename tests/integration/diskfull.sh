#!/usr/bin/env bash
# A full disk strands nothing, through the real ferryd, with its state dir
# (journal and image store) on a small tmpfs:
#  1. the disk fills during a download: ferryd keeps what arrived, waits for
#     room without failing, and when the filler goes the download resumes
#     and the update installs;
#  2. the disk fills at the very end (the reload command of the file being
#     installed fills it): the journal cannot take `installed`; ferryd keeps
#     it in memory and records it once there is room, without a restart;
#     the file, already running, is never reported failed;
#  3. the disk fills while a delta is rebuilt: the rebuild waits for room;
#     a SIGKILL then, and after the restart it is rebuilt once, from the
#     start, and installed.
# After 1 and 2, every transition was reported once (counted by seq).
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_SLOW_RATE=150k
world_up "${1:?usage: diskfull.sh BUILD_DIR}"
state_on_tmpfs 6m
start_ferryd

once() { # once UPDATE COMPONENT STAGE: reported exactly once (outbox resends share the seq)
	local n
	n=$(grep -F "\"update_id\":\"$1\",\"component\":\"$2\"" "$W/mqtt.log" | grep -F "\"stage\":\"$3\"" |
		grep -oE '"seq":[0-9]+' | sort -u | wc -l)
	[ "$n" -eq 1 ] || fail "$1/$2: $3 reported $n times"
}

# --- 1. full during a download
make_update f1 1 1.0.0 1.0.0 1500000
mark=$(wc -l < "$W/ferryd.log")
# shellcheck disable=SC2046
cmd update.deploy u-f1 --manifest "$W/f1.jws" $(links_for f1 slow/)
wait_mqtt '"update_id":"u-f1","component":"app-bin","stage":"downloading"' 20 3
fill_state
wait_log "waiting for room"
grep -F '"update_id":"u-f1"' "$W/mqtt.log" | grep -qE '"stage":"(failed|cancelled)"' &&
	fail "f1: the update failed while the disk was full"
rm -f "$W/state/filler"
[ "$(outcome u-f1 app-bin)" = installed ] || fail "f1: app-bin did not install once there was room"
[ "$(outcome u-f1 app-config)" = installed ] || fail "f1: app-config did not install"
cmp -s "$W/www/f1-app.bin" "$W/target/app.bin" || fail "f1: app.bin differs from the image"
for c in app-config app-bin; do for s in allowed downloaded verified activating installed; do once u-f1 $c $s; done; done
echo "ok: a disk that fills during a download: the download waits for room and the update installs"

# --- 2. full at the final `installed`
stop_ferryd
sed -i "s|        path: $W/target/app.bin|        path: $W/target/app.bin\n        reload: dd if=/dev/zero of=$W/state/filler bs=64k 2>/dev/null; true|" \
	"$W/ferryd.yaml"
start_ferryd
make_update f2 2 2.0.0 2.0.0 200000
mark=$(wc -l < "$W/ferryd.log")
# shellcheck disable=SC2046
cmd update.deploy u-f2 --manifest "$W/f2.jws" $(links_for f2)
wait_log "app-bin on self installed kept in memory until the journal has room"
grep -F '"update_id":"u-f2"' "$W/mqtt.log" | grep -qE '"stage":"(failed|cancelled|rolled_back)"' &&
	fail "f2: a report of failure while the disk was full"
rm -f "$W/state/filler"
[ "$(outcome u-f2 app-bin)" = installed ] || fail "f2: app-bin was not reported installed once there was room"
wait_log "app-bin on self installed recorded after"
cmp -s "$W/www/f2-app.bin" "$W/target/app.bin" || fail "f2: app.bin differs from the image"
for c in app-config app-bin; do for s in allowed downloaded verified activating installed; do once u-f2 $c $s; done; done
echo "ok: a disk that fills at the final report: installed is kept in memory and recorded once there is room"

# --- 3. full while a delta is rebuilt, then a SIGKILL: admitted first
# (update.request), the disk filled but for room for the patch, then the
# download: the rebuild waits for room; killed there, and restarted with
# room, it fetches and rebuilds again from the start, once
stop_ferryd
sed -i '/reload: dd if=\/dev\/zero/d' "$W/ferryd.yaml"
start_ferryd
base=$(sha256sum "$W/target/app.bin" | cut -c1-64)
{ cat "$W/www/f2-app.bin"; head -c 1300000 /dev/zero; } > "$W/www/f3-app.bin"
cat > "$W/f3.yaml" <<YAML
sequence: 3
components:
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "3.0.0"
    format: file
    file: www/f3-app.bin
    delta_from: [www/f2-app.bin]
YAML
"$W_FERRY" manifest sign "$W/f3.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/f3.jws" > /dev/null
cmd update.request u-f3 --manifest "$W/f3.jws"
wait_mqtt '"update_id":"u-f3","result":"accepted"' 20
fill_state
truncate -s -300000 "$W/state/filler"
mark=$(wc -l < "$W/ferryd.log")
link="app-bin@$base=https://127.0.0.1:$W_HTTPS_PORT/f3-app.bin.from-${base:0:12}.fdl"
cmd update.download u-f3 --link "$link"
wait_log "u-f3/app-bin: rebuilding: "
kill9_ferryd
new=$(sha256sum "$W/www/f3-app.bin" | cut -c1-64)
[ -f "$W/state/store/partial/$new" ] || fail "f3: no half-rebuilt image at the kill"
rm -f "$W/state/filler"
start_ferryd
wait_mqtt '"update_id":"u-f3","component":"app-bin","stage":"downloaded"' 30
cmd update.check u-f3
wait_mqtt '"update_id":"u-f3","component":"app-bin","stage":"verified"' 30
cmd update.install u-f3
[ "$(outcome u-f3 app-bin)" = installed ] || fail "f3: app-bin did not install after the kill"
cmp -s "$W/www/f3-app.bin" "$W/target/app.bin" || fail "f3: app.bin differs from the image"
[ "$(grep -c "u-f3/app-bin: rebuilt from a" "$W/ferryd.log")" -eq 1 ] || fail "f3: not rebuilt once"
[ ! -e "$W/state/store/partial/$new" ] || fail "f3: the partial image stayed"
echo "ok: SIGKILL while a delta is rebuilt on a full disk: rebuilt again from the start after the restart"
