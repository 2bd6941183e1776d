#!/usr/bin/env bash
# usb-dfu end to end: the real ferryd with the real usb-dfu plugin, talking
# through the real libusb to a simulated DFU device (tests/sim/dfu_device,
# behind umockdev).  Each scenario starts the device with its model and
# faults, restarts ferryd under umockdev's preload to see it, deploys over
# MQTT, and checks the outcome three ways: the stage reports, the version
# the device runs (from a fresh inventory), and the device's own counters
# (requests it saw, protocol violations, early polls).
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: usbdfu.sh BUILD_DIR}" && pwd)
SIM="$BUILD/tests/sim/dfu_device"
# umockdev's preload goes before ASan's runtime in sanitizer builds
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
W_EXTRA_ADAPTERS="  usb-dfu:
    detach_wait_ms: 3000
    return_wait_ms: 6000
    poll_max_ms: 200
    retries: 2
    transfer_size: 1024
    devices:
      - component: radio-fw
        vendor_id: acme
        class_id: radio-v1
        usb: \"1209:0001\"
        dfu_usb: \"1209:0002\"
        serial: FERRY-SIM-1
      - component: hub-fw
        vendor_id: acme
        class_id: hub-v1
        serial: FERRY-SIM-2
        dfu_usb: \"1209:0002\"
        alt: \"@Internal Flash\"
        version: \"string:4\"
      - component: probe-fw
        vendor_id: acme
        class_id: probe-v1
        port: \"1-3\"
        usb: \"1209:0001\"
        dfu_usb: \"1209:0002\""
world_up "$BUILD"
cp "$BUILD/adapters/usb-dfu.so" "$W/plugins/"

SIM_PID=
stop_sim() {
	[ -n "$SIM_PID" ] && { kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null || true; }
	SIM_PID=
}
trap 'stop_sim; world_down' EXIT

# sim ARGS...: a fresh simulated device; ferryd restarted under its testbed
sim() {
	stop_ferryd
	stop_sim
	rm -f "$W/usb.root" "$W/usb.stats"
	echo "=== dfu_device $*" >> "$W/sim.log"
	"$SIM" --root-file "$W/usb.root" --stats "$W/usb.stats" "$@" >> "$W/sim.log" 2>&1 &
	SIM_PID=$!
	for _ in $(seq 1 100); do [ -s "$W/usb.root" ] && break; sleep 0.1; done
	[ -s "$W/usb.root" ] || fail "the simulated device did not start: $(tail -n 5 "$W/sim.log")"
	W_FERRYD_ENV="LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR=$(cat "$W/usb.root")"
	start_ferryd
}
stat_of() { # the device's counter NAME, current when asked (stats_ask.h)
	local n=$(($(cat "$W/usb.stats.n" 2>/dev/null || echo 0) + 1)) # $(stat_of) runs in a subshell
	echo "$n" > "$W/usb.stats.n"
	echo "$n" > "$W/usb.stats.ask"
	for _ in $(seq 1 300); do grep -qx "answer=$n" "$W/usb.stats" 2>/dev/null && break; sleep 0.1; done
	grep -qx "answer=$n" "$W/usb.stats" || fail "the simulated device did not answer a stats request"
	grep "^$1=" "$W/usb.stats" | cut -d= -f2
}
clean_protocol() { # CONTEXT: the device saw no protocol violation and no early poll
	[ "$(stat_of violations)" = 0 ] || fail "$1: the device counted $(stat_of violations) protocol violations"
	[ "$(stat_of early_polls)" = 0 ] || fail "$1: the adapter polled before bwPollTimeout $(stat_of early_polls) times"
}

seq_no=0
# manifest NAME COMPONENT FORMAT FILE VERSION [CLASS]: a signed manifest $W/NAME.jws
manifest() {
	seq_no=$((seq_no + 1))
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
  - name: $2
    type: firmware
    adapter: usb-dfu
    target: {vendor_id: acme, class_id: ${6:-radio-v1}}
    version: "$5"
    format: $3
    file: $4
    after: [app-config]
YAML
	printf 'rev: %s\n' "$seq_no" > "$W/www/$1-app.conf"
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$1.jws" > /dev/null
}
# plain_image NAME VERSION [SUFFIX-ARGS...]: www/NAME.dfu, the simulator's image with a dfu-suffix suffix
plain_image() {
	local name=$1 v=$2
	shift 2
	"$SIM" --make-image "$v" 30000 "$W/www/$name.dfu" ${MAKE_PID:+--pid $MAKE_PID}
	local bcd
	bcd=$(echo "$v" | awk -F. '{printf "%02d%d%d", $1, $2, $3}')
	dfu-suffix -v 1209 -p 0001 -d "$bcd" "$@" -a "$W/www/$name.dfu" > /dev/null
}
deploy() { # deploy NAME COMPONENT: update.deploy of manifest NAME
	cmd update.deploy "$1" --manifest "$W/$1.jws" --link "app-config=https://127.0.0.1:$W_HTTPS_PORT/$1-app.conf" \
		--link "$2=https://127.0.0.1:$W_HTTPS_PORT/$1.dfu"
}
final_report() { # final_report UPDATE COMPONENT -> its last stage line
	grep -F "\"update_id\":\"$1\",\"component\":\"$2\"" "$W/mqtt.log" | tail -n 1
}
running() { # running COMPONENT: the version the device reports now, via a fresh inventory
	fresh_inventory | grep -oE "\"name\":\"$1\",\"version\":\"[^\"]*\"" | cut -d'"' -f8
}

# --- plain DFU 1.1: detach, re-enumerate, download, manifest, confirm
sim --version 1.0.0
wait_mqtt '{"name":"radio-fw","version":"1.0.0"}' 15
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | tail -n 1 | grep -qF '"usb":"1209:0001"' ||
	fail "inventory lacks the device's USB identity"
plain_image u-1 1.1.0
manifest u-1 radio-fw dfu www/u-1.dfu 1.1.0
deploy u-1 radio-fw
[ "$(outcome u-1 radio-fw)" = installed ] || fail "u-1 did not install: $(final_report u-1 radio-fw)"
[ "$(stages_of u-1 radio-fw)" = "allowed downloading downloaded verifying verified installing activating installed" ] ||
	fail "u-1 stages: $(stages_of u-1 radio-fw)"
final_report u-1 radio-fw | grep -qF '"version":"1.1.0"' || fail "installed report lacks the version read back"
a=$(grep -n '"update_id":"u-1","component":"app-config","stage":"installed"' "$W/mqtt.log" | cut -d: -f1)
b=$(grep -n '"update_id":"u-1","component":"radio-fw","stage":"installing"' "$W/mqtt.log" | head -n 1 | cut -d: -f1)
[ "$a" -lt "$b" ] || fail "components were not installed in order"
[ "$(running radio-fw)" = 1.1.0 ] || fail "the device does not run 1.1.0"
[ "$(stat_of detaches)" = 1 ] || fail "expected one DETACH, the device saw $(stat_of detaches)"
[ "$(stat_of data_bytes)" = 30000 ] || fail "the device received $(stat_of data_bytes) firmware bytes, not 30000"
clean_protocol u-1
echo "ok: plain DFU installed (detach, re-enumeration, download, manifestation, version read back)"

# --- an intolerant device that detaches by itself; its firmware comes back under a new PID
sim --version 1.1.0 --intolerant --will-detach --transfer-size 256
MAKE_PID=0003 plain_image u-2 1.2.0
manifest u-2 radio-fw dfu www/u-2.dfu 1.2.0
deploy u-2 radio-fw
[ "$(outcome u-2 radio-fw)" = installed ] || fail "u-2 did not install: $(final_report u-2 radio-fw)"
[ "$(stat_of resets)" = 1 ] || fail "an intolerant device needs exactly the one reset after manifestation (saw $(stat_of resets))"
grep -q "came back as 1209:0003 (was 1209:0001)" "$W/ferryd.log" || fail "the new PID was not noticed"
[ "$(running radio-fw)" = 1.2.0 ] || fail "the device does not run 1.2.0"
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | tail -n 1 | grep -qF '"usb":"1209:0003"' ||
	fail "inventory does not show the new PID"
clean_protocol u-2
echo "ok: intolerant, WillDetach device installed; found again by serial under its new PID"

# check_fault NAME WANT REASON-OR-- SIM-ARGS...: deploy 2.N.0 to a device running 1.0.0 with a fault on
check_fault() {
	local name=$1 want=$2 reason=$3
	shift 3
	sim --version 1.0.0 "$@"
	faults=$((faults + 1))
	local v="2.$faults.0" got now
	plain_image "u-$name" "$v"
	manifest "u-$name" radio-fw dfu "www/u-$name.dfu" "$v"
	deploy "u-$name" radio-fw
	got=$(outcome "u-$name" radio-fw)
	[ "$got" = "$want" ] || fail "$name: ended $got, wanted $want: $(final_report "u-$name" radio-fw)"
	if [ "$reason" != - ]; then
		final_report "u-$name" radio-fw | grep -qF "\"reason\":\"$reason\"" ||
			fail "$name: reason is not $reason: $(final_report "u-$name" radio-fw)"
	fi
	now=$(running radio-fw)
	if [ "$want" = installed ]; then
		[ "$now" = "$v" ] || fail "$name: the device runs $now, wanted $v"
	else
		[ "$now" = 1.0.0 ] || fail "$name: the device runs $now, wanted its old 1.0.0"
	fi
	echo "ok: fault $name ends $got (device runs $now)"
}
faults=0
check_fault write-error failed install_failed --error-at-block 7:3
final_report u-write-error radio-fw | grep -qF 'errWRITE' || fail "write-error: the detail does not name errWRITE"
check_fault verify-fails failed install_failed --verify-fails
final_report u-verify-fails radio-fw | grep -qF 'errVERIFY' || fail "verify-fails: the detail does not name errVERIFY"
check_fault detach-never failed adapter_error --detach-never
final_report u-detach-never radio-fw | grep -qF 'did not come back in DFU mode' ||
	fail "detach-never: the detail does not say the device never came back"
check_fault stall installed - --stall-at-block 5
grep -q "errSTALLEDPKT.*starting the download again" "$W/ferryd.log" || fail "stall: the download was not started again"
check_fault unplug installed - --unplug-at-block 10 --replug-ms 500
grep -q "block 10 .*starting the download again" "$W/ferryd.log" ||
	fail "unplug: the download was not started again"
check_fault manifest-reset installed - --manifest-reset
grep -q "stopped answering during manifestation" "$W/ferryd.log" || fail "manifest-reset: not judged after return"
# a device that says it needs 4.6 hours per block: the wait is bounded, and
# its real busy time is shorter
check_fault bogus-poll installed - --bogus-poll 16777215 --poll-ms 50
clean_protocol bogus-poll # the real busy time was still waited out
# an intolerant device that stops answering while it manifests: only the
# reset the adapter sends anyway starts the new firmware
check_fault silent-manifest installed - --intolerant --silent-manifest
grep -q "stopped answering during manifestation" "$W/ferryd.log" || fail "silent-manifest: the silence was not seen"

# --- update.cancel while waiting for a device that never comes back in DFU mode
sim --version 1.0.0 --detach-never
plain_image u-cancel-detach 1.5.0
manifest u-cancel-detach radio-fw dfu www/u-cancel-detach.dfu 1.5.0
mark=$(wc -l < "$W/ferryd.log")
deploy u-cancel-detach radio-fw
detached() { tail -n +"$((mark + 1))" "$W/ferryd.log" | grep -q "detached .*; waiting for it in DFU mode"; }
for _ in $(seq 1 200); do detached && break; sleep 0.1; done
detached || fail "u-cancel-detach: the device was not detached"
cmd update.cancel u-cancel-detach
[ "$(outcome u-cancel-detach radio-fw)" = cancelled ] ||
	fail "a cancel during the detach wait was not reported as cancelled: $(final_report u-cancel-detach radio-fw)"
[ "$(running radio-fw)" = 1.0.0 ] || fail "u-cancel-detach: the device does not run its old 1.0.0"
echo "ok: update.cancel while waiting for the device in DFU mode ends cancelled"

# --- refused before any transfer: a wrong CRC, a file for another device
sim --version 1.0.0
plain_image u-crc 3.0.0
printf '\x55' | dd of="$W/www/u-crc.dfu" bs=1 seek=100 conv=notrunc 2> /dev/null
manifest u-crc radio-fw dfu www/u-crc.dfu 3.0.0
deploy u-crc radio-fw
[ "$(outcome u-crc radio-fw)" = failed ] || fail "a file with a bad CRC was not refused"
final_report u-crc radio-fw | grep -qF 'CRC' || fail "u-crc: the detail does not name the CRC"
"$SIM" --make-image 3.0.0 30000 "$W/www/u-vid.dfu"
dfu-suffix -v 0483 -p df11 -a "$W/www/u-vid.dfu" > /dev/null
manifest u-vid radio-fw dfu www/u-vid.dfu 3.0.0
deploy u-vid radio-fw
[ "$(outcome u-vid radio-fw)" = failed ] || fail "a file for another VID:PID was not refused"
final_report u-vid radio-fw | grep -qF 'the file is for 0483:df11' || fail "u-vid: the detail does not name the IDs"
plain_image u-bcd 3.0.0
manifest u-bcd radio-fw dfu www/u-bcd.dfu 3.1.0
deploy u-bcd radio-fw
[ "$(outcome u-bcd radio-fw)" = failed ] || fail "a suffix for another firmware version was not refused"
final_report u-bcd radio-fw | grep -qF "the file's suffix is for firmware 0x0300" || fail "u-bcd: the detail does not say why"
[ "$(stat_of dnloads)" = 0 ] && [ "$(stat_of detaches)" = 0 ] ||
	fail "the device was touched: $(stat_of dnloads) DNLOADs, $(stat_of detaches) DETACHes"
[ "$(running radio-fw)" = 1.0.0 ] || fail "the device does not run its old firmware"
echo "ok: bad CRC, foreign VID:PID and a suffix for another version refused before any transfer"

# --- ferryd killed mid-download: after restart the push starts over from a device left in DFU mode
sim --version 1.0.0 --poll-ms 30
plain_image u-kill 4.0.0
manifest u-kill radio-fw dfu www/u-kill.dfu 4.0.0
deploy u-kill radio-fw
for _ in $(seq 1 300); do
	grep -F '"update_id":"u-kill","component":"radio-fw","stage":"installing"' "$W/mqtt.log" |
		grep -qE '"done":[1-9][0-9]{3}' && break
	sleep 0.1
done
kill9_ferryd
[ "$(stat_of mode)" = dfu ] || fail "u-kill: the device is not in DFU mode after the kill"
start_ferryd
[ "$(outcome u-kill radio-fw)" = installed ] || fail "u-kill did not install after restart"
[ "$(grep -cF '"update_id":"u-kill","component":"radio-fw","stage":"installed"' "$W/mqtt.log")" = 1 ] ||
	fail "u-kill: installed reported more than once"
[ "$(running radio-fw)" = 4.0.0 ] || fail "u-kill: the device does not run 4.0.0"
clean_protocol u-kill
echo "ok: ferryd killed mid-download; the restarted push installed from DFU mode"

# --- a device without a serial number is found again by its port path
sim --version 1.0.0 --serial "" --port 3
wait_mqtt '{"name":"probe-fw","version":"1.0.0"}' 15
plain_image u-port 1.3.0
manifest u-port probe-fw dfu www/u-port.dfu 1.3.0 probe-v1
deploy u-port probe-fw
[ "$(outcome u-port probe-fw)" = installed ] || fail "u-port did not install: $(final_report u-port probe-fw)"
[ "$(running probe-fw)" = 1.3.0 ] || fail "u-port: the device does not run 1.3.0"
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | tail -n 1 | grep -qF '"id":"dfu-1-3"' ||
	fail "u-port: the device is not named by its port"
echo "ok: a device without a serial number, found again by its port path"

# --- update.cancel mid-download: the device is reset out of DFU mode and keeps its firmware
sim --version 1.0.0 --poll-ms 40
plain_image u-cancel 1.4.0
manifest u-cancel radio-fw dfu www/u-cancel.dfu 1.4.0
deploy u-cancel radio-fw
for _ in $(seq 1 300); do
	grep -F '"update_id":"u-cancel","component":"radio-fw","stage":"installing"' "$W/mqtt.log" |
		grep -qE '"done":[1-9][0-9]{3}' && break
	sleep 0.1
done
cmd update.cancel u-cancel
[ "$(outcome u-cancel radio-fw)" = cancelled ] || fail "u-cancel was not cancelled: $(final_report u-cancel radio-fw)"
[ "$(running radio-fw)" = 1.0.0 ] || fail "u-cancel: the device does not run its old 1.0.0"
[ "$(stat_of mode)" = runtime ] || fail "u-cancel: the device was left in DFU mode"
echo "ok: update.cancel mid-download leaves the device on its old firmware"

# --- DfuSe: erase the touched pages, address pointer, blocks, leave; version from a string descriptor
sim --dfuse --serial FERRY-SIM-2 --version 1.0.0 --transfer-size 2048 --erase-stalls 2
wait_mqtt '{"name":"hub-fw","version":"1.0.0"}' 15
"$SIM" --make-image 2.0.10 70000 "$W/www/u-se.bin"
dfuse-pack -b "0x08000000:$W/www/u-se.bin" -D 0x1209:0x0002 "$W/www/u-se.dfu" > /dev/null
manifest u-se hub-fw dfuse www/u-se.dfu 2.0.10 hub-v1
deploy u-se hub-fw
[ "$(outcome u-se hub-fw)" = installed ] || fail "u-se did not install: $(final_report u-se hub-fw)"
[ "$(running hub-fw)" = 2.0.10 ] || fail "the DfuSe device does not run 2.0.10"
# 70000 bytes from 0x08000000: four 16K pages and the 64K page
[ "$(stat_of erases)" = 5 ] || fail "expected 5 page erases, the device saw $(stat_of erases)"
clean_protocol u-se
echo "ok: DfuSe installed (page erase with stalled status polls, address pointer, leave, string version)"

# an element outside the device's memory: refused before anything is erased
"$SIM" --make-image 2.1.0 4096 "$W/www/u-far.bin"
dfuse-pack -b "0x08200000:$W/www/u-far.bin" -D 0x1209:0x0002 "$W/www/u-far.dfu" > /dev/null
manifest u-far hub-fw dfuse www/u-far.dfu 2.1.0 hub-v1
erases=$(stat_of erases)
deploy u-far hub-fw
[ "$(outcome u-far hub-fw)" = failed ] || fail "an element outside the memory was not refused"
final_report u-far hub-fw | grep -qF '"reason":"install_failed"' || fail "u-far: the reason is not install_failed"
final_report u-far hub-fw | grep -qF 'outside the device' || fail "u-far: the detail does not say outside"
[ "$(stat_of erases)" = "$erases" ] || fail "u-far: pages were erased"
[ "$(running hub-fw)" = 2.0.10 ] || fail "u-far: the device does not run 2.0.10 any more"
echo "ok: DfuSe element outside the memory layout refused before any erase"

# two targets: firmware into flash (alternate setting 0) and option bytes
# (setting 1, written without erase); leave goes back to setting 0's memory
"$SIM" --make-image 2.2.0 20000 "$W/www/u-two.bin"
head -c 16 /dev/urandom > "$W/www/u-two.opt"
dfuse-pack -b "0x08000000:$W/www/u-two.bin" -b "0x1FFFC000@1:$W/www/u-two.opt" -D 0x1209:0x0002 "$W/www/u-two.dfu" > /dev/null
manifest u-two hub-fw dfuse www/u-two.dfu 2.2.0 hub-v1
deploy u-two hub-fw
[ "$(outcome u-two hub-fw)" = installed ] || fail "u-two did not install: $(final_report u-two hub-fw)"
[ "$(running hub-fw)" = 2.2.0 ] || fail "u-two: the DfuSe device does not run 2.2.0"
[ "$(stat_of option_bytes)" = 16 ] || fail "u-two: the option bytes were not written ($(stat_of option_bytes))"
clean_protocol u-two
echo "ok: a two-target DfuSe file (flash and option bytes) installed"

# a plain DFU file for a DfuSe bootloader: refused before its first block
plain_image u-dialect 2.3.0
dfu-suffix -D "$W/www/u-dialect.dfu" > /dev/null
dfu-suffix -v 1209 -p 0002 -a "$W/www/u-dialect.dfu" > /dev/null
manifest u-dialect hub-fw dfu www/u-dialect.dfu 2.3.0 hub-v1
dnloads=$(stat_of dnloads)
deploy u-dialect hub-fw
[ "$(outcome u-dialect hub-fw)" = failed ] || fail "a plain file for a DfuSe device was not refused"
final_report u-dialect hub-fw | grep -qF 'speaks DfuSe' || fail "u-dialect: the detail does not name the dialect"
[ "$(stat_of dnloads)" = "$dnloads" ] || fail "u-dialect: the device was sent DNLOAD requests"
[ "$(running hub-fw)" = 2.2.0 ] || fail "u-dialect: the device does not run 2.2.0 any more"
echo "ok: a plain DFU file for a DfuSe bootloader refused before any transfer"
