#!/usr/bin/env bash
# serial-smp end to end: the real ferryd, the real adapter plugin, and a
# simulated MCUboot device on the far end of a pseudo-terminal.  A manifest
# with a `self` file and an MCU image installs both, in order; then each
# fault of the simulator ends installed (after retry or resume) or
# rolled_back with the MCU still on its old image.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: serial.sh BUILD_DIR}" && pwd)
SIM="$BUILD/tests/sim/smp_device"
W_EXTRA_ADAPTERS=$(serial_smp_conf --retries 6 ttyMCU=sensor-v2=sensor-mcu)
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$BUILD/adapters/serial-smp.so" "$W/plugins/"

SIM_PID=
sim() { # sim VERSION [faults...]
	[ -n "$SIM_PID" ] && { kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null || true; }
	"$SIM" --link "$W/ttyMCU" --version "$@" >> "$W/sim.log" 2>&1 &
	SIM_PID=$!
	for _ in $(seq 1 50); do [ -e "$W/ttyMCU" ] && return 0; sleep 0.1; done
	fail "simulator did not start"
}
trap '[ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; world_down' EXIT

seq_no=0
# deploy UPDATE MCU_VERSION: a manifest with app-config (self) and sensor-mcu (serial-smp)
deploy() {
	seq_no=$((seq_no + 1))
	"$SIM" --make-image "$2" 40000 "$W/www/$1-mcu.bin"
	printf 'rev: %s\n' "$seq_no" > "$W/www/$1-app.conf"
	cat > "$W/$1.yaml" <<YAML
sequence: $seq_no
allow_downgrade: true
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "1.$seq_no.0"
    format: file
    file: www/$1-app.conf
  - name: sensor-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2, match: {image: "0"}}
    version: "$2"
    format: mcuboot
    file: www/$1-mcu.bin
    after: [app-config]   # another device: only \`after\` orders it
YAML
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$1.jws" > /dev/null
	cmd update.deploy "$1" --manifest "$W/$1.jws" --link "app-config=https://127.0.0.1:$W_HTTPS_PORT/$1-app.conf" \
		--link "sensor-mcu=https://127.0.0.1:$W_HTTPS_PORT/$1-mcu.bin"
}
running() { # the version the MCU reports now, via a fresh inventory
	fresh_inventory | grep -oE '"name":"sensor-mcu","version":"[^"]*"' |
		cut -d'"' -f8
}

sim 1.0.0
start_ferryd
wait_mqtt '{"name":"sensor-mcu","version":"1.0.0"}' 15
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | grep -qE '"image0_hash":"[0-9a-f]{64}"' ||
	fail "inventory lacks the MCU's image hash"

deploy u-1 1.1.0
[ "$(outcome u-1 sensor-mcu)" = installed ] || fail "u-1 did not install"
[ "$(stages_of u-1 app-config | awk '{print $NF}')" = installed ] || fail "u-1: app-config not installed"
# in order: the self component (named in the MCU's `after`) was installed
# before the MCU's push began
a=$(grep -n '"update_id":"u-1","component":"app-config","stage":"installed"' "$W/mqtt.log" | cut -d: -f1)
b=$(grep -n '"update_id":"u-1","component":"sensor-mcu","stage":"installing"' "$W/mqtt.log" | head -n 1 | cut -d: -f1)
[ "$a" -lt "$b" ] || fail "components were not installed in order"
grep -F '"update_id":"u-1","component":"sensor-mcu","stage":"installed"' "$W/mqtt.log" | grep -qF '"version":"1.1.0"' ||
	fail "installed report lacks the version read back"
wait_mqtt '{"name":"sensor-mcu","version":"1.1.0"}' 10
echo "ok: self + serial-smp installed in order"

check_fault() { # check_fault NAME WANT SIM-ARGS...
	local name=$1 want=$2
	shift 2
	local before
	before=$(running)
	sim "$before" "$@"
	local v="2.$((seq_no + 1)).0"
	deploy "u-$name" "$v"
	local got
	got=$(outcome "u-$name" sensor-mcu)
	[ "$got" = "$want" ] || fail "$name: ended $got, wanted $want"
	local now
	now=$(running)
	if [ "$want" = installed ]; then
		[ "$now" = "$v" ] || fail "$name: MCU runs $now, wanted $v"
	else
		[ "$now" = "$before" ] || fail "$name: MCU runs $now, wanted the old $before"
	fi
	echo "ok: fault $name ends $got (MCU runs $now)"
}
check_fault reset-mid-upload installed --reset-at 20000
check_fault corrupt-frames installed --corrupt-every 7
check_fault drop-responses installed --drop-every 5
check_fault stall installed --stall-ms 2500
# The device resets 250 ms after answering os reset (Zephyr's default), so
# every install above had the old firmware answer first.  Here the first
# reset request is lost: the old firmware keeps answering, and only a
# reset sent again activates the image.
mark=$(wc -l < "$W/ferryd.log")
check_fault lost-reset installed --lose-reset 1
tail -n +"$((mark + 1))" "$W/ferryd.log" | grep -q "os reset got no answer and the old firmware still runs: sending the reset again" ||
	fail "lost-reset: the reset was not sent again"
check_fault refuse-confirm rolled_back --refuse-confirm
check_fault boot-fails rolled_back --boot-fails
grep -F '"update_id":"u-boot-fails","component":"sensor-mcu","stage":"rolled_back"' "$W/mqtt.log" |
	grep -qF '"reason":"version_mismatch"' || fail "boot-fails: reason is not version_mismatch"

# A device whose buffer cannot hold an upload request (os params says
# buf_size 100; it drops longer requests): refused with the reason before any
# upload request, instead of chunks the device would drop.
v=$(running)
sim "$v" --buf-size 100
smark=$(wc -l < "$W/sim.log")
deploy u-smallbuf 2.9.0
[ "$(outcome u-smallbuf sensor-mcu)" = failed ] || fail "u-smallbuf did not fail"
line=$(grep -F '"update_id":"u-smallbuf","component":"sensor-mcu","stage":"failed"' "$W/mqtt.log")
echo "$line" | grep -qF '"reason":"adapter_error"' || fail "u-smallbuf: reason is not adapter_error: $line"
echo "$line" | grep -qF "buf_size 100" || fail "u-smallbuf: detail does not name the device's buffer: $line"
! tail -n +"$((smark + 1))" "$W/sim.log" | grep -q "does not fit in buf_size" ||
	fail "u-smallbuf: requests larger than the device's buffer were sent"
[ "$(running)" = "$v" ] || fail "u-smallbuf: the MCU no longer runs $v"
echo "ok: a device buffer too small for an upload request is refused with the reason"

# The confirm reaches the device and makes the new image permanent, but the
# device answers nothing from then on.  Nobody can tell which image it runs,
# so the report must not claim a rollback: `failed`, saying it is unknown.
v=$(running)
sim "$v" --vanish-on-confirm
smark=$(wc -l < "$W/sim.log")
deploy u-vanish 2.9.1
[ "$(outcome u-vanish sensor-mcu)" = failed ] || fail "u-vanish: ended $(outcome u-vanish sensor-mcu), wanted failed"
tail -n +"$((smark + 1))" "$W/sim.log" | grep -qF "confirmed 2.9.1 permanently, then gone silent" ||
	fail "u-vanish: the fault did not fire"
line=$(grep -F '"update_id":"u-vanish","component":"sensor-mcu","stage":"failed"' "$W/mqtt.log")
echo "$line" | grep -qF "which image it runs is unknown" || fail "u-vanish: the report does not say the state is unknown: $line"
sim 2.9.1 # the device as it was left: the new image, confirmed
[ "$(running)" = 2.9.1 ] || fail "u-vanish: the restarted MCU does not run 2.9.1"
echo "ok: a device lost after its confirm is reported failed with its state unknown, not rolled back"

# ferryd killed mid-upload, restarted: the upload continues from the device's offset.
sim "$(running)" --rate 6000
deploy u-kill 3.0.0
for _ in $(seq 1 300); do
	grep -F '"update_id":"u-kill","component":"sensor-mcu","stage":"installing"' "$W/mqtt.log" |
		grep -qE '"done":[1-9][0-9]{4}' && break
	sleep 0.1
done
kill9_ferryd
start_ferryd
[ "$(outcome u-kill sensor-mcu)" = installed ] || fail "u-kill did not install after restart"
grep -q "holds [1-9][0-9]* bytes already; resuming there" "$W/ferryd.log" || fail "the upload started over"
echo "ok: upload resumed from the device's offset after ferryd was killed"

# An inventory refresh in the middle of an install: discovery must leave the
# port to the session (no reopened tty, no flushed or stolen answers), and
# the inventory still lists the MCU, with the version it ran before.
v=$(running)
sim "$v" --rate 6000
smark=$(wc -l < "$W/sim.log")
mark=$(wc -l < "$W/ferryd.log")
deploy u-busy 3.1.0
for _ in $(seq 1 300); do
	grep -F '"update_id":"u-busy","component":"sensor-mcu","stage":"installing"' "$W/mqtt.log" |
		grep -qE '"done":[1-9][0-9]{4}' && break
	sleep 0.1
done
n=$(grep -cF "ferry/v1/gw-1/inventory " "$W/mqtt.log")
cmd inventory.refresh x
wait_mqtt "ferry/v1/gw-1/inventory " 15 $((n + 1))
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | tail -n 1 |
	grep -qF "{\"name\":\"sensor-mcu\",\"version\":\"$v\"}" ||
	fail "u-busy: the inventory taken mid-install does not list the MCU at $v"
grep -qF '"update_id":"u-busy","component":"sensor-mcu","stage":"installed"' "$W/mqtt.log" &&
	fail "u-busy: the refresh came too late"
[ "$(outcome u-busy sensor-mcu)" = installed ] || fail "u-busy did not install"
! tail -n +"$((smark + 1))" "$W/sim.log" | grep -q "image state read during an upload" ||
	fail "u-busy: discovery talked to the device during the install"
! tail -n +"$((mark + 1))" "$W/ferryd.log" | grep -q "retrying" || fail "u-busy: the install was disturbed"
echo "ok: an inventory refresh mid-install leaves the port to the session and still lists the MCU"

# The MCU is unplugged between check and install: the component waits, and
# the install goes on by itself when the device is back.
v=$(running)
sim "$v"
"$SIM" --make-image 4.0.0 40000 "$W/www/u-wait-mcu.bin"
seq_no=$((seq_no + 1))
cat > "$W/u-wait.yaml" <<YAML
sequence: $seq_no
components:
  - name: sensor-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: 4.0.0
    format: mcuboot
    file: www/u-wait-mcu.bin
YAML
"$W_FERRY" manifest sign "$W/u-wait.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/u-wait.jws" > /dev/null
cmd update.request u-wait --manifest "$W/u-wait.jws"
wait_mqtt '"op":"update.request","update_id":"u-wait","result":"accepted"' 10
cmd update.download u-wait --link "sensor-mcu=https://127.0.0.1:$W_HTTPS_PORT/u-wait-mcu.bin"
wait_mqtt '"update_id":"u-wait","component":"sensor-mcu","stage":"downloaded"' 20
cmd update.check u-wait
wait_mqtt '"update_id":"u-wait","component":"sensor-mcu","stage":"verified"' 20
kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=
cmd update.install u-wait
wait_mqtt '"update_id":"u-wait","component":"sensor-mcu","stage":"waiting"' 20
! grep -F '"update_id":"u-wait"' "$W/mqtt.log" | grep -qF '"stage":"installing"' || fail "installed with no device"
sim "$v"
[ "$(outcome u-wait sensor-mcu)" = installed ] || fail "u-wait did not install once the device was back"
[ "$(stages_of u-wait sensor-mcu)" = "allowed downloading downloaded verifying verified waiting installing activating installed" ] ||
	fail "u-wait stages: $(stages_of u-wait sensor-mcu)"
echo "ok: waiting for an unplugged device, then installed when it came back"
