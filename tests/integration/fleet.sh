#!/usr/bin/env bash
# Many subdevices at once, through the real ferryd over MQTT: eight
# simulated serial MCUs of one class (MCUboot + mcumgr on ptys, paced like a
# 115200-baud UART), a bonded BLE node behind a simulated BlueZ, and a USB
# DFU radio behind libusb (umockdev).  One component goes to all eight MCUs.
#   - a deploy to all ten devices: every device named in its reports, each
#     image fetched once, the MCUs pushed at the same time;
#   - the same all-or-nothing: every revertible device on trial before the
#     radio (which cannot revert) is touched, then all committed;
#   - all-or-nothing with one MCU whose new image never boots: every device
#     back on its old image;
#   - ferryd killed (SIGKILL) mid-push, mid-trial and mid-commit, and once
#     mid-push without atomic (with the radio's download cut): each resumes
#     and ends all installed, with no device reported installed twice;
#   - two MCUs of one class on different versions; one of them picked by
#     `match`; a match no device has refused; an unplugged MCU waited for.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: fleet.sh BUILD_DIR}" && pwd)
SMP_SIM="$BUILD/tests/sim/smp_device"
BLE_SIM="$BUILD/tests/sim/bluez_sim"
DFU_SIM="$BUILD/tests/sim/dfu_device"
N=8
# umockdev's preload goes before ASan's runtime in sanitizer builds
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

ports=()
for i in $(seq 0 $((N - 1))); do ports+=("ttyS$i=sensor-v2=sensor-fw"); done
W_EXTRA_ADAPTERS="$(serial_smp_conf --retries 6 "${ports[@]}")
  ble-smp:
    bus: unix:path=/tmp/PLACEHOLDER/bus
    timeout_ms: 1500
    first_timeout_ms: 5000
    reset_wait_ms: 15000
    connect_timeout_ms: 5000
    reset_drop_ms: 3000
    retries: 6
    devices:
      - address: C0:FF:EE:00:00:07
        vendor_id: acme
        class_id: ble-node
        component: node-mcu
  usb-dfu:
    detach_wait_ms: 3000
    return_wait_ms: 6000
    poll_max_ms: 200
    transfer_size: 1024
    devices:
      - component: radio-fw
        vendor_id: acme
        class_id: radio-v1
        serial: ACME-RADIO-7
        usb: \"1209:0001\"
        dfu_usb: \"1209:0002\""
W_SLOW_RATE=8k # the throttled path: a download lasts seconds, so two overlap for sure
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$BUILD/adapters/serial-smp.so" "$BUILD/adapters/ble-smp.so" "$BUILD/adapters/usb-dfu.so" "$W/plugins/"

declare -a MCU_PID
BLE_PID= DFU_PID=
stop_sims() {
	for p in "${MCU_PID[@]}" $BLE_PID $DFU_PID; do kill "$p" 2>/dev/null || true; done
}
trap 'stop_sims; world_down' EXIT

mcu() { # mcu I VERSION [faults...]: (re)start MCU I
	local i=$1
	shift
	if [ -n "${MCU_PID[$i]:-}" ]; then
		kill "${MCU_PID[$i]}" 2>/dev/null || true
		wait "${MCU_PID[$i]}" 2>/dev/null || true
	fi
	rm -f "$W/ttyS$i"
	echo "=== smp_device $i $*" >> "$W/mcu$i.log"
	"$SMP_SIM" --link "$W/ttyS$i" --rate 11520 --version "$@" >> "$W/mcu$i.log" 2>&1 &
	MCU_PID[$i]=$!
	for _ in $(seq 1 50); do [ -e "$W/ttyS$i" ] && return 0; sleep 0.1; done
	fail "MCU $i did not start"
}
unplug() { # unplug I: MCU I gone, its port with it
	kill "${MCU_PID[$1]}" 2>/dev/null || true
	wait "${MCU_PID[$1]}" 2>/dev/null || true
	MCU_PID[$1]=
	rm -f "$W/ttyS$1"
}

start_bus
"$BLE_SIM" --bus "unix:path=$W/bus" --address C0:FF:EE:00:00:07 --name node-7 --version 3.0.0 \
	--stats "$W/ble.stats" >> "$W/ble.log" 2>&1 &
BLE_PID=$!
"$DFU_SIM" --root-file "$W/usb.root" --serial ACME-RADIO-7 --version 2.0.0 --poll-ms 5 >> "$W/usb.log" 2>&1 &
DFU_PID=$!
for i in $(seq 0 $((N - 1))); do mcu "$i" 1.0.0; done
for _ in $(seq 1 100); do [ -s "$W/usb.root" ] && [ -s "$W/ble.stats" ] && break; sleep 0.1; done
[ -s "$W/usb.root" ] || fail "the USB radio did not start"
W_FERRYD_ENV="LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR=$(cat "$W/usb.root")"
start_ferryd
wait_mqtt '"id":"serial-ttyS7"' 20

seq_no=0
# deploy UPDATE SENSOR_V NODE_V RADIO_V [atomic] [MATCH_PORT]: one manifest for the ten devices
# (NODE_V/RADIO_V "-" leaves that component out)
# (with SLOW=slow/ the images come through the file host's throttled path)
deploy() {
	local u=$1 sv=$2 nv=$3 rv=$4 atomic=${5:-false} match=${6:-} links base
	base="https://127.0.0.1:$W_HTTPS_PORT/${SLOW:-}"
	seq_no=$((seq_no + 1))
	"$SMP_SIM" --make-image "$sv" 16000 "$W/www/$u-sensor.bin"
	links="--link sensor-fw=$base$u-sensor.bin"
	{
		echo "sequence: $seq_no"
		echo "atomic: $atomic"
		echo "components:"
		echo "  - name: sensor-fw"
		echo "    type: firmware"
		echo "    adapter: serial-smp"
		if [ -n "$match" ]; then
			echo "    target: {vendor_id: acme, class_id: sensor-v2, match: {port: $match}}"
		else
			echo "    target: {vendor_id: acme, class_id: sensor-v2}"
		fi
		echo "    version: $sv"
		echo "    format: mcuboot"
		echo "    file: www/$u-sensor.bin"
		if [ "$nv" != - ]; then
			"$SMP_SIM" --make-image "$nv" 12000 "$W/www/$u-node.bin"
			links="$links --link node-mcu=$base$u-node.bin"
			printf '  - name: node-mcu\n    type: firmware\n    adapter: ble-smp\n'
			printf '    target: {vendor_id: acme, class_id: ble-node}\n    version: %s\n' "$nv"
			printf '    format: mcuboot\n    file: www/%s-node.bin\n' "$u"
		fi
		if [ "$rv" != - ]; then
			"$DFU_SIM" --make-image "$rv" 20000 "$W/www/$u-radio.dfu"
			dfu-suffix -v 1209 -p 0001 -d "$(echo "$rv" | awk -F. '{printf "%02d%d%d", $1, $2, $3}')" \
				-a "$W/www/$u-radio.dfu" > /dev/null
			links="$links --link radio-fw=$base$u-radio.dfu"
			printf '  - name: radio-fw\n    type: firmware\n    adapter: usb-dfu\n'
			printf '    target: {vendor_id: acme, class_id: radio-v1}\n    version: %s\n' "$rv"
			printf '    format: dfu\n    file: www/%s-radio.dfu\n' "$u"
		fi
	} > "$W/$u.yaml"
	"$W_FERRY" manifest sign "$W/$u.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$u.jws" > /dev/null
	# shellcheck disable=SC2086
	cmd update.deploy "$u" --manifest "$W/$u.jws" $links
}

# step_outcome UPDATE COMPONENT DEVICE: a device step's outcome, waited for
step_outcome() {
	local s
	for _ in $(seq 1 1200); do
		s=$(grep -F "\"update_id\":\"$1\",\"component\":\"$2\"" "$W/mqtt.log" | grep -F "\"device\":\"$3\"" |
			grep -oE '"stage":"(installed|already_installed|failed|rolled_back|cancelled)"' | head -n 1 |
			cut -d'"' -f4)
		[ -n "$s" ] && { echo "$s"; return; }
		sleep 0.1
	done
	echo timeout
}
# line of the first report matching all the fixed strings given
first_line() {
	local f="$W/mqtt.log"
	grep -nF "\"update_id\":\"$1\"" "$f" | grep -F "\"stage\":\"$2\"" | grep -F "${3:-}" | head -n 1 | cut -d: -f1
}
last_line() {
	grep -nF "\"update_id\":\"$1\"" "$W/mqtt.log" | grep -F "\"stage\":\"$2\"" | grep -F "${3:-}" | tail -n 1 |
		cut -d: -f1
}
count() { # count UPDATE STAGE [FIXED]: reports of that stage
	grep -F "\"update_id\":\"$1\"" "$W/mqtt.log" | grep -F "\"stage\":\"$2\"" | grep -cF "${3:-}" || true
}
wait_count() { # wait_count UPDATE STAGE N [FIXED]
	for _ in $(seq 1 1200); do
		[ "$(count "$1" "$2" "${4:-}")" -ge "$3" ] && return 0
		sleep 0.1
	done
	fail "$1: fewer than $3 $2 reports"
}
all_outcomes() { # all_outcomes UPDATE WANT [radio WANT] [node WANT]: every MCU step ends WANT
	local u=$1 want=$2 i got
	for i in $(seq 0 $((N - 1))); do
		got=$(step_outcome "$u" sensor-fw "serial-ttyS$i")
		[ "$got" = "$want" ] || fail "$u: serial-ttyS$i ended $got, wanted $want"
	done
}
versions() { # the MCUs' versions, as a fresh inventory lists them, one line
	fresh_inventory | grep -oE '"name":"sensor-fw","version":"[^"]*"' | cut -d'"' -f8 | tr '\n' ' '
}
one_each() { # one_each UPDATE STAGE: no device got STAGE twice (a re-send of the same seq is not another)
	local dup
	dup=$(grep -F "\"update_id\":\"$1\"" "$W/mqtt.log" | grep -F "\"stage\":\"$2\"" |
		sed -E 's/.*"device":"([^"]*)","seq":([0-9]*).*/\1 \2/' | sort -u | cut -d' ' -f1 | uniq -d)
	[ -z "$dup" ] || fail "$1: $2 reported twice for $dup"
}

# --- one deploy, ten devices, not atomic
SLOW=slow/ deploy u-1 1.1.0 3.1.0 2.1.0
all_outcomes u-1 installed
[ "$(step_outcome u-1 node-mcu ble-C0FFEE000007)" = installed ] || fail "u-1: the BLE node did not install"
[ "$(step_outcome u-1 radio-fw dfu-ACME-RADIO-7)" = installed ] || fail "u-1: the radio did not install"
allowed=$(grep -F '"update_id":"u-1","component":"sensor-fw","stage":"allowed"' "$W/mqtt.log")
[ "$(echo "$allowed" | grep -oE '"serial-ttyS[0-9]"' | wc -l)" = "$N" ] || fail "u-1: allowed lists $allowed"
[ "$(count u-1 downloaded '"component":"sensor-fw"')" = 1 ] || fail "u-1: sensor-fw downloaded more than once"
grep -F "\"update_id\":\"u-1\",\"component\":\"sensor-fw\",\"stage\":\"downloaded\"" "$W/mqtt.log" | grep -qF '"device"' &&
	fail "u-1: a download report names a device"
[ "$(grep -c 'GET /slow/u-1-sensor.bin' "$W/nginx/access.log")" = 1 ] ||
	fail "u-1: the sensor image was fetched more than once"
# two images at once (download.parallel 2), the third once one of them is in
s_in=$(last_line u-1 downloading '"sensor-fw"') n_in=$(last_line u-1 downloading '"node-mcu"')
[ "$(first_line u-1 downloading '"node-mcu"')" -lt "$s_in" ] &&
	[ "$(first_line u-1 downloading '"sensor-fw"')" -lt "$n_in" ] || fail "u-1: two images were not fetched at once"
[ "$(first_line u-1 downloading '"radio-fw"')" -gt "$(( s_in < n_in ? s_in : n_in ))" ] ||
	fail "u-1: three images were fetched at once"
for i in $(seq 0 $((N - 1))); do
	for st in installing activating installed; do
		[ "$(count u-1 "$st" "\"device\":\"serial-ttyS$i\"")" -ge 1 ] || fail "u-1: no $st report names serial-ttyS$i"
	done
done
# pushed at the same time: MCU 0's push and MCU 7's overlap
[ "$(first_line u-1 installing '"serial-ttyS7"')" -lt "$(last_line u-1 installing '"serial-ttyS0"')" ] &&
	[ "$(first_line u-1 installing '"serial-ttyS0"')" -lt "$(last_line u-1 installing '"serial-ttyS7"')" ] ||
	fail "u-1: the MCUs were not pushed at the same time"
[ "$(versions)" = "1.1.0 1.1.0 1.1.0 1.1.0 1.1.0 1.1.0 1.1.0 1.1.0 " ] || fail "u-1: the MCUs run $(versions)"
one_each u-1 installed
echo "ok: one deploy to 8 MCUs, a BLE node and a USB radio; each image fetched once, the MCUs pushed at once"

# --- all or nothing, success
deploy u-2 1.2.0 3.2.0 2.2.0 true
all_outcomes u-2 installed
[ "$(step_outcome u-2 node-mcu ble-C0FFEE000007)" = installed ] || fail "u-2: the BLE node did not install"
[ "$(step_outcome u-2 radio-fw dfu-ACME-RADIO-7)" = installed ] || fail "u-2: the radio did not install"
[ "$(count u-2 trial)" = 9 ] || fail "u-2: $(count u-2 trial) trial reports, wanted 9 (8 MCUs and the node)"
radio_start=$(first_line u-2 installing '"radio-fw"')
[ "$(last_line u-2 trial)" -lt "$radio_start" ] || fail "u-2: the radio was pushed before every device was on trial"
[ "$(first_line u-2 installed '"sensor-fw"')" -gt "$(first_line u-2 installed '"radio-fw"')" ] ||
	fail "u-2: a revertible device was committed before the radio came up"
[ "$(versions)" = "1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 " ] || fail "u-2: the MCUs run $(versions)"
one_each u-2 installed
echo "ok: all or nothing: nine devices on trial, then the radio, then every commit"

# --- all or nothing, one MCU's image never boots: everything goes back
mcu 5 1.2.0 --boot-fails
deploy u-3 1.3.0 3.3.0 2.3.0 true
[ "$(step_outcome u-3 sensor-fw serial-ttyS5)" = rolled_back ] || fail "u-3: the failing MCU was not rolled back"
grep -F '"update_id":"u-3","component":"sensor-fw","stage":"rolled_back","device":"serial-ttyS5"' "$W/mqtt.log" |
	grep -qF '"reason":"version_mismatch"' || fail "u-3: the failing MCU's reason is not version_mismatch"
for i in 0 1 2 3 4 6 7; do
	got=$(step_outcome u-3 sensor-fw "serial-ttyS$i")
	[ "$got" = rolled_back ] || [ "$got" = cancelled ] || fail "u-3: serial-ttyS$i ended $got"
done
got=$(step_outcome u-3 node-mcu ble-C0FFEE000007)
[ "$got" = rolled_back ] || [ "$got" = cancelled ] || fail "u-3: the node ended $got"
[ "$(step_outcome u-3 radio-fw dfu-ACME-RADIO-7)" = cancelled ] || fail "u-3: the radio was touched"
[ "$(count u-3 installed)" = 0 ] || fail "u-3: something was reported installed"
[ "$(count u-3 installing '"radio-fw"')" = 0 ] || fail "u-3: the radio was pushed"
[ "$(versions)" = "1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 1.2.0 " ] || fail "u-3: the MCUs run $(versions)"
fresh_inventory | grep -qF '{"name":"node-mcu","version":"3.2.0"}' || fail "u-3: the node left 3.2.0"
fresh_inventory | grep -qF '{"name":"radio-fw","version":"2.2.0"}' || fail "u-3: the radio left 2.2.0"
mcu 5 1.2.0
echo "ok: all or nothing with one image that does not boot: every device back on its old image"

# --- SIGKILL mid-push, mid-trial and mid-commit (all or nothing), then mid-push (not)
kill_at() { # kill_at UPDATE STAGE N [FIXED]: SIGKILL once N such reports are in, then restart
	wait_count "$1" "$2" "$3" "${4:-}"
	kill9_ferryd
	start_ferryd
}
cat "$W"/mcu*.log > "$W/before-u4.log"
deploy u-4 1.4.0 3.4.0 2.4.0 true
kill_at u-4 installing 12 '"sensor-fw"'
kill_at u-4 trial 4
all_outcomes u-4 installed
[ "$(step_outcome u-4 node-mcu ble-C0FFEE000007)" = installed ] || fail "u-4: the node did not install"
[ "$(step_outcome u-4 radio-fw dfu-ACME-RADIO-7)" = installed ] || fail "u-4: the radio did not install"
one_each u-4 installed
one_each u-4 trial
[ "$(cat "$W"/mcu*.log | grep -c "upload resumed at")" -gt "$(grep -c "upload resumed at" "$W/before-u4.log")" ] ||
	fail "u-4: no MCU resumed its upload after the kill"
deploy u-5 1.5.0 - - true
kill_at u-5 installed 2 '"sensor-fw"'
all_outcomes u-5 installed
one_each u-5 installed
deploy u-6 1.6.0 3.6.0 2.6.0
kill_at u-6 installing 3 '"radio-fw"'
all_outcomes u-6 installed
[ "$(step_outcome u-6 node-mcu ble-C0FFEE000007)" = installed ] || fail "u-6: the node did not install"
[ "$(step_outcome u-6 radio-fw dfu-ACME-RADIO-7)" = installed ] || fail "u-6: the radio did not install"
one_each u-6 installed
[ "$(versions)" = "1.6.0 1.6.0 1.6.0 1.6.0 1.6.0 1.6.0 1.6.0 1.6.0 " ] || fail "after the kills the MCUs run $(versions)"
fresh_inventory | grep -qF '{"name":"radio-fw","version":"2.6.0"}' || fail "after the kills the radio is not on 2.6.0"
echo "ok: SIGKILL mid-push, mid-trial and mid-commit: resumed, every device installed once"

# --- two MCUs of one class on different versions; one picked by match
mcu 2 1.7.0
[ "$(versions)" = "1.6.0 1.6.0 1.7.0 1.6.0 1.6.0 1.6.0 1.6.0 1.6.0 " ] || fail "MCU 2 does not run 1.7.0: $(versions)"
deploy u-7 1.7.0 - -
[ "$(step_outcome u-7 sensor-fw serial-ttyS2)" = already_installed ] || fail "u-7: MCU 2 was not already_installed"
for i in 0 1 3 4 5 6 7; do
	[ "$(step_outcome u-7 sensor-fw "serial-ttyS$i")" = installed ] || fail "u-7: serial-ttyS$i did not install"
done
[ "$(count u-7 installing '"serial-ttyS2"')" = 0 ] || fail "u-7: MCU 2 was pushed again"
deploy u-8 1.8.0 - - false ttyS5
[ "$(step_outcome u-8 sensor-fw serial-ttyS5)" = installed ] || fail "u-8: ttyS5 did not install"
[ "$(count u-8 installing)" -ge 1 ] && [ "$(count u-8 installing '"serial-ttyS5"')" = "$(count u-8 installing)" ] ||
	fail "u-8: a device other than ttyS5 was pushed"
[ "$(versions)" = "1.7.0 1.7.0 1.7.0 1.7.0 1.7.0 1.8.0 1.7.0 1.7.0 " ] || fail "u-8: the MCUs run $(versions)"
deploy u-9 1.9.0 - - false ttyS99
wait_mqtt '"update_id":"u-9","result":"refused","reason":"no_matching_device"' 20
[ "$(count u-9 allowed)" = 0 ] || fail "u-9: a refused update was reported"
echo "ok: devices of one class on different versions; one picked by match; an unknown match refused"

# --- an unplugged MCU is waited for; the others go on
unplug 3
deploy u-10 2.0.0 - -
for i in 0 1 2 4 5 6 7; do
	[ "$(step_outcome u-10 sensor-fw "serial-ttyS$i")" = installed ] || fail "u-10: serial-ttyS$i did not install"
done
wait_mqtt '"update_id":"u-10","component":"sensor-fw","stage":"waiting","device":"serial-ttyS3"' 20
mcu 3 1.7.0
[ "$(step_outcome u-10 sensor-fw serial-ttyS3)" = installed ] || fail "u-10: the replugged MCU did not install"
echo "ok: an unplugged MCU waited for while the others installed; installed once it came back"
