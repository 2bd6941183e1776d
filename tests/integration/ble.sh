#!/usr/bin/env bash
# ble-smp end to end: the real ferryd with the real serial-smp and ble-smp
# plugins; a private dbus-daemon with a simulated BlueZ on it (the SMP GATT
# service over a simulated MCUboot device), and the serial simulator on a
# pty.  One manifest installs a serial and a BLE component in order; then a
# link lost mid-upload, an unpaired device, a bond the device does not take
# as authenticated, an MTU that changes between connections, a BlueZ
# without AcquireWrite/AcquireNotify, a reset request lost on the way, and
# another client holding the notifications; and the node found by name and
# by its SMP service among strangers that advertise the same.
# The device, like Zephyr, resets 250 ms after answering os reset.  Only unix
# sockets and loopback.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: ble.sh BUILD_DIR}" && pwd)
SMP_SIM="$BUILD/tests/sim/smp_device"
BLE_SIM="$BUILD/tests/sim/bluez_sim"
ADDR=C0:FF:EE:00:00:01
ble_adapters() { # ble_adapters [SELECTOR]: the adapters' config; SELECTOR (address: X, name: Y) picks
	# the BLE node, and without one it is the device that lists the SMP service
	serial_smp_conf --retries 6 ttyMCU=sensor-v2=sensor-mcu
	cat <<YAML

  ble-smp:
    bus: unix:path=/tmp/PLACEHOLDER/bus
    adapter: hci0
    timeout_ms: 1500
    first_timeout_ms: 5000
    reset_wait_ms: 15000
    connect_timeout_ms: 5000
    reset_drop_ms: 3000
    retries: 6
    devices:
YAML
	if [ -n "${1:-}" ]; then
		printf '      - %s\n        vendor_id: acme\n' "$1"
	else
		printf '      - vendor_id: acme\n'
	fi
	printf '        class_id: ble-node\n        component: node-mcu\n'
}
W_EXTRA_ADAPTERS=$(ble_adapters "address: $ADDR")
W_FERRYD_ARGS=--verbose # the scheduler's looks for absent devices are events to wait for
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$BUILD/adapters/serial-smp.so" "$BUILD/adapters/ble-smp.so" "$W/plugins/"

SMP_PID= BLE_PID=
# world_down waits for every child, so the simulators go first
trap '[ -n "$SMP_PID" ] && kill "$SMP_PID" 2>/dev/null; [ -n "$BLE_PID" ] && kill "$BLE_PID" 2>/dev/null;
	world_down' EXIT
# a private bus on which only the simulator may own org.bluez
start_bus

serial_sim() { # serial_sim VERSION [faults...]
	[ -n "$SMP_PID" ] && { kill "$SMP_PID" 2>/dev/null; wait "$SMP_PID" 2>/dev/null || true; }
	"$SMP_SIM" --link "$W/ttyMCU" --version "$@" >> "$W/sim.log" 2>&1 &
	SMP_PID=$!
	for _ in $(seq 1 50); do [ -e "$W/ttyMCU" ] && return 0; sleep 0.1; done
	fail "serial simulator did not start"
}
ble_sim() { # ble_sim VERSION [faults...]: a fresh device and stats file
	[ -n "$BLE_PID" ] && { kill "$BLE_PID" 2>/dev/null; wait "$BLE_PID" 2>/dev/null || true; }
	rm -f "$W/ble.stats"
	echo "--- bluez_sim $*" >> "$W/ble.log"
	"$BLE_SIM" --bus "unix:path=$W/bus" --address "$ADDR" --name node-7 --stats "$W/ble.stats" --version "$@" \
		>> "$W/ble.log" 2>&1 &
	BLE_PID=$!
	for _ in $(seq 1 50); do [ -s "$W/ble.stats" ] && return 0; sleep 0.1; done
	fail "BlueZ simulator did not start: $(tail -n 3 "$W/ble.log")"
}
stat_of() { # stat_of KEY: a count from the BLE simulator, current when asked (stats_ask.h)
	local n=$(($(cat "$W/ble.stats.n" 2>/dev/null || echo 0) + 1)) # $(stat_of) runs in a subshell
	echo "$n" > "$W/ble.stats.n"
	echo "$n" > "$W/ble.stats.ask"
	for _ in $(seq 1 300); do grep -qx "answer=$n" "$W/ble.stats" 2>/dev/null && break; sleep 0.1; done
	grep -qx "answer=$n" "$W/ble.stats" || fail "the BlueZ simulator did not answer a stats request"
	grep -E "^$1=" "$W/ble.stats" | cut -d= -f2
}
disconnected() { # the session ends after the report: wait for the node to see it go
	for _ in $(seq 1 100); do [ "$(stat_of connected)" = 0 ] && return 0; done
	return 1
}

seq_no=0
sign() { # sign NAME: $W/NAME.yaml -> $W/NAME.jws
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$1.jws" > /dev/null
}
component() { # component NAME ADAPTER CLASS VERSION UPDATE
	cat <<YAML
  - name: $1
    type: firmware
    adapter: $2
    target: {vendor_id: acme, class_id: $3, match: {image: "0"}}
    version: "$4"
    format: mcuboot
    file: www/$5-$1.bin
YAML
}
deploy_ble() { # deploy_ble UPDATE VERSION: a manifest with node-mcu alone
	seq_no=$((seq_no + 1))
	"$SMP_SIM" --make-image "$2" 40000 "$W/www/$1-node-mcu.bin"
	{ echo "sequence: $seq_no"; echo "components:"; component node-mcu ble-smp ble-node "$2" "$1"; } > "$W/$1.yaml"
	sign "$1"
	cmd update.deploy "$1" --manifest "$W/$1.jws" --link "node-mcu=https://127.0.0.1:$W_HTTPS_PORT/$1-node-mcu.bin"
}
inventory() { # a fresh inventory line
	fresh_inventory
}
running() { # running COMPONENT: its version in a fresh inventory
	inventory | grep -oE "\"name\":\"$1\",\"version\":\"[^\"]*\"" | cut -d'"' -f8
}
log_mark() { wc -l < "$W/ferryd.log"; }
log_since() { tail -n +"$(($1 + 1))" "$W/ferryd.log"; }

# (a) A serial and a BLE component in one manifest: both installed, in order,
# versions read back, both in the inventory.
serial_sim 1.0.0
ble_sim 1.0.0
start_ferryd
wait_mqtt '{"name":"sensor-mcu","version":"1.0.0"}' 20
wait_mqtt '{"name":"node-mcu","version":"1.0.0"}' 20
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | tail -n 1 | grep -qF "\"address\":\"$ADDR\"" ||
	fail "inventory lacks the BLE device's address"
seq_no=1
"$SMP_SIM" --make-image 1.1.0 40000 "$W/www/u-both-sensor-mcu.bin"
"$SMP_SIM" --make-image 1.1.0 40000 "$W/www/u-both-node-mcu.bin"
{
	echo "sequence: $seq_no"
	echo "components:"
	component sensor-mcu serial-smp sensor-v2 1.1.0 u-both
	component node-mcu ble-smp ble-node 1.1.0 u-both
	echo "    after: [sensor-mcu]"
} > "$W/u-both.yaml"
sign u-both
cmd update.deploy u-both --manifest "$W/u-both.jws" \
	--link "sensor-mcu=https://127.0.0.1:$W_HTTPS_PORT/u-both-sensor-mcu.bin" \
	--link "node-mcu=https://127.0.0.1:$W_HTTPS_PORT/u-both-node-mcu.bin"
[ "$(outcome u-both sensor-mcu)" = installed ] || fail "u-both: sensor-mcu did not install"
[ "$(outcome u-both node-mcu)" = installed ] || fail "u-both: node-mcu did not install"
a=$(grep -n '"update_id":"u-both","component":"sensor-mcu","stage":"installed"' "$W/mqtt.log" | cut -d: -f1)
b=$(grep -n '"update_id":"u-both","component":"node-mcu","stage":"installing"' "$W/mqtt.log" | head -n 1 | cut -d: -f1)
[ "$a" -lt "$b" ] || fail "u-both: node-mcu began before sensor-mcu was installed"
for c in sensor-mcu node-mcu; do
	grep -F "\"update_id\":\"u-both\",\"component\":\"$c\",\"stage\":\"installed\"" "$W/mqtt.log" |
		grep -qF '"version":"1.1.0"' || fail "u-both: $c's installed report lacks the version read back"
done
inv=$(inventory)
echo "$inv" | grep -qF '{"name":"sensor-mcu","version":"1.1.0"}' || fail "inventory: sensor-mcu not at 1.1.0"
echo "$inv" | grep -qF '{"name":"node-mcu","version":"1.1.0"}' || fail "inventory: node-mcu not at 1.1.0"
echo "$inv" | grep -qE '"bonded":"true","link":"bonded-encrypted","image0_hash":"[0-9a-f]{64}"' ||
	fail "inventory: BLE attributes missing: $inv"
[ "$(stat_of violations)" = 0 ] || fail "u-both: a write exceeded MTU - 3"
disconnected || fail "u-both: the node was left connected"
echo "ok: serial-smp and ble-smp installed in order, versions read back, both in the inventory"

# (b) The link drops mid-upload; the device keeps its partial upload, and the
# upload continues from the device's offset after reconnecting.
ble_sim 1.1.0 --disconnect-at 20000
mark=$(log_mark)
deploy_ble u-drop 1.2.0
[ "$(outcome u-drop node-mcu)" = installed ] || fail "u-drop did not install"
[ "$(running node-mcu)" = 1.2.0 ] || fail "u-drop: the device does not run 1.2.0"
grep -q "fault: link lost during the upload" "$W/ble.log" || fail "u-drop: the link was never dropped"
log_since "$mark" | grep -qE "$ADDR: the device holds [1-9][0-9]* bytes already; resuming there" ||
	fail "u-drop: ferryd did not resume from the device's offset"
grep -qE "upload resumed at [1-9][0-9]* \(same sha\)" "$W/ble.log" || fail "u-drop: the device saw no resume"
[ "$(stat_of up_starts)" = 1 ] || fail "u-drop: the upload started over ($(stat_of up_starts) starts)"
[ "$(stat_of up_resumes)" = 1 ] || fail "u-drop: no resume by sha"
[ "$(stat_of up_bytes)" -lt 50000 ] || fail "u-drop: $(stat_of up_bytes) bytes sent for a 40 KB image"
echo "ok: link lost mid-upload, resumed at the device's offset, installed"

# (c) An unpaired device: refused before anything is written.
ble_sim 1.2.0 --unpaired
inventory | grep -qF '"bonded":"false"' || fail "inventory does not show the device as not bonded"
deploy_ble u-unpaired 1.3.0
[ "$(outcome u-unpaired node-mcu)" = failed ] || fail "u-unpaired did not fail"
line=$(grep -F '"update_id":"u-unpaired","component":"node-mcu","stage":"failed"' "$W/mqtt.log")
echo "$line" | grep -qF '"reason":"adapter_error"' || fail "u-unpaired: reason is not adapter_error: $line"
echo "$line" | grep -qE '"detail":"[^"]*not paired[^"]*bonded' || fail "u-unpaired: detail does not say why: $line"
[ "$(stat_of connections)" = 0 ] || fail "u-unpaired: ferryd connected to an unpaired device"
[ "$(stat_of writes)" = 0 ] || fail "u-unpaired: something was written"
[ "$(stat_of up_bytes)" = 0 ] || fail "u-unpaired: something was uploaded"
[ "$(stat_of running)" = 1.2.0 ] || fail "u-unpaired: the device no longer runs 1.2.0"
echo "ok: unpaired device refused with adapter_error, nothing written"

# (c') Bonded, but by a method the device does not take as authenticated:
# BlueZ answers NotPermitted, and the adapter refuses.  The device would
# drop anything written over such a link before the MCU saw it, so what
# counts is what reached BlueZ: no write at all, and no upload request.
ble_sim 1.2.0 --just-works
deploy_ble u-justworks 1.3.0
[ "$(outcome u-justworks node-mcu)" = failed ] || fail "u-justworks did not fail"
line=$(grep -F '"update_id":"u-justworks","component":"node-mcu","stage":"failed"' "$W/mqtt.log")
echo "$line" | grep -qF '"reason":"adapter_error"' || fail "u-justworks: reason is not adapter_error: $line"
echo "$line" | grep -qF 'NotPermitted' || fail "u-justworks: detail lacks BlueZ's answer: $line"
echo "$line" | grep -qF 'not encrypted and authenticated' || fail "u-justworks: detail does not say why: $line"
[ "$(stat_of writes)" = 0 ] || fail "u-justworks: $(stat_of writes) writes reached BlueZ over the refused link"
[ "$(stat_of refused)" = 0 ] || fail "u-justworks: the device refused $(stat_of refused) writes"
[ "$(stat_of upload_requests)" = 0 ] || fail "u-justworks: the adapter sent upload requests"
[ "$(stat_of requests_seen)" = 0 ] || fail "u-justworks: the adapter sent SMP requests"
[ "$(stat_of running)" = 1.2.0 ] || fail "u-justworks: the device no longer runs 1.2.0"
echo "ok: a bond the device does not accept as authenticated is refused"

# (c'') Declared link security: the adapter says what each link gives
# (physical, bonded-encrypted, unauthenticated), the inventory shows it, and
# a component that needs more than a device's link gives is refused with
# link_insecure before anything moves -- unless its image is encrypted for
# the device.  From the manifest (min_link) or the gateway's config.
deploy_min() { # deploy_min UPDATE VERSION EXTRA_YAML [OP]: node-mcu with more keys
	seq_no=$((seq_no + 1))
	"$SMP_SIM" --make-image "$2" 40000 "$W/www/$1-node-mcu.bin"
	{ echo "sequence: $seq_no"; echo "components:"; component node-mcu ble-smp ble-node "$2" "$1"
		[ -n "$3" ] && echo "    $3"; } > "$W/$1.yaml"
	sign "$1"
	if [ "${4:-update.deploy}" = update.deploy ]; then
		cmd update.deploy "$1" --manifest "$W/$1.jws" --link "node-mcu=https://127.0.0.1:$W_HTTPS_PORT/$1-node-mcu.bin"
	else
		cmd "$4" "$1" --manifest "$W/$1.jws"
	fi
}
refused_insecure() { # refused_insecure UPDATE TEXT: refused with link_insecure, naming TEXT; no
	# upload began (admission may read the node's version, as discovery does)
	wait_mqtt "\"update_id\":\"$1\",\"result\":\"refused\",\"reason\":\"link_insecure\"" 20
	grep -F "\"update_id\":\"$1\",\"result\":\"refused\"" "$W/mqtt.log" | grep -qF "$2" ||
		fail "$1: the refusal does not say: $2"
	[ "$(stat_of upload_requests)" = "$uploads" ] || fail "$1: an upload request reached the node"
}
ble_sim 1.2.0 --unpaired # a node that lost its bond
inv=$(inventory)
echo "$inv" | grep -qF '"bonded":"false","link":"unauthenticated"' || fail "inventory: the node's link is not unauthenticated: $inv"
echo "$inv" | grep -qE '"image0_hash":"[0-9a-f]{64}","link":"physical"' ||
	fail "inventory: the serial MCU's link is not physical: $inv"
echo "$inv" | grep -qF '"attributes":{"link":"physical"}' || fail "inventory: the gateway's own files are not on a physical link: $inv"
uploads=$(stat_of upload_requests)
deploy_min u-lostbond 1.3.0 "min_link: bonded-encrypted"
refused_insecure u-lostbond "node-mcu: the link to ble-$(echo "$ADDR" | tr -d :) is unauthenticated"
grep -F '"update_id":"u-lostbond","result":"refused"' "$W/mqtt.log" |
	grep -qF "is unauthenticated; the component needs at least bonded-encrypted (the manifest's min_link)" ||
	fail "u-lostbond: the refusal does not name both links"
[ "$(stat_of running)" = 1.2.0 ] || fail "u-lostbond: the node no longer runs 1.2.0"
ble_sim 1.2.0 # bonded again
inventory > /dev/null
uploads=$(stat_of upload_requests)
deploy_min u-wantwire 1.3.0 "min_link: physical"
refused_insecure u-wantwire "is bonded-encrypted; the component needs at least physical"
# an image encrypted for the device itself goes over any link
deploy_min u-devenc 1.3.0 "min_link: physical
    encrypted_for_device: true"
[ "$(outcome u-devenc node-mcu)" = installed ] || fail "u-devenc did not install"
[ "$(stat_of running)" = 1.3.0 ] || fail "u-devenc: the node does not run 1.3.0"
disconnected || fail "u-devenc: the node was left connected"
# the gateway's own rule, with no min_link in the manifest
stop_ferryd
printf 'min_link:\n  node-mcu: physical\n' >> "$W/ferryd.yaml"
start_ferryd
uploads=$(stat_of upload_requests)
deploy_min u-cfgmin 1.4.0 ""
refused_insecure u-cfgmin "the component needs at least physical (the gateway's min_link)"
# admitted while bonded, the bond lost before the check: failed there, nothing written
stop_ferryd
sed -i '/^min_link:$/,$d' "$W/ferryd.yaml"
start_ferryd
deploy_min u-latelost 1.4.0 "min_link: bonded-encrypted" update.request
wait_mqtt '"update_id":"u-latelost","result":"accepted"' 20
ble_sim 1.3.0 --unpaired
inventory | grep -qF '"link":"unauthenticated"' || fail "u-latelost: the node's link did not change"
uploads=$(stat_of upload_requests)
cmd update.download u-latelost --link "node-mcu=https://127.0.0.1:$W_HTTPS_PORT/u-latelost-node-mcu.bin"
wait_mqtt '"update_id":"u-latelost","component":"node-mcu","stage":"downloaded"' 20
cmd update.check u-latelost
[ "$(outcome u-latelost node-mcu)" = failed ] || fail "u-latelost did not fail"
grep -F '"update_id":"u-latelost","component":"node-mcu","stage":"failed"' "$W/mqtt.log" |
	grep -qF '"reason":"link_insecure"' || fail "u-latelost: not failed with link_insecure"
[ "$(stat_of upload_requests)" = "$uploads" ] && [ "$(stat_of running)" = 1.3.0 ] || fail "u-latelost: the node was touched"
ble_sim 1.3.0
echo "ok: declared link security: in the inventory; a weaker link refused (manifest, config, a bond lost"
echo "    after admission), an image encrypted for the device let through"

# (d) The MTU differs from one connection to the next (247, 23, 247, ...),
# also in the middle of the upload: the upload itself goes on over a
# connection with another MTU, and no write ever exceeds MTU - 3.
ble_sim 1.2.0 --mtu 247,23 --disconnect-at 15000
deploy_ble u-mtu 1.4.0
[ "$(outcome u-mtu node-mcu)" = installed ] || fail "u-mtu did not install"
[ "$(running node-mcu)" = 1.4.0 ] || fail "u-mtu: the device does not run 1.4.0"
[ "$(stat_of violations)" = 0 ] || fail "u-mtu: $(stat_of violations) writes exceeded MTU - 3"
[ "$(stat_of max_write)" = 244 ] || fail "u-mtu: the largest write was $(stat_of max_write), not 247 - 3"
mtus=$(stat_of upload_mtus)
[ "$(echo "$mtus" | tr , '\n' | sort -un | tr '\n' ' ')" = "23 247 " ] ||
	fail "u-mtu: the upload was carried by connections with MTUs $mtus, not both 23 and 247"
[ "$(stat_of up_starts)" = 1 ] || fail "u-mtu: the upload started over"
echo "ok: MTU 247 then 23 between connections, installed, no write over MTU - 3"

# (e) A BlueZ without AcquireWrite/AcquireNotify: WriteValue and StartNotify,
# across a link lost mid-upload and the reset.  BlueZ keeps a bonded device's
# notify session across a drop (and registers it again on the next
# connection): the adapter must end its own session and start afresh, not
# trip over it ("In Progress", "Already notifying").
ble_sim 1.4.0 --no-acquire --mtu 23 --disconnect-at 15000
mark=$(log_mark)
deploy_ble u-old 1.5.0
[ "$(outcome u-old node-mcu)" = installed ] || fail "u-old did not install"
log_since "$mark" | grep -q "writes by WriteValue, notifications by StartNotify" ||
	fail "u-old: the fallback was not used"
grep -q "fault: link lost during the upload" "$W/ble.log" || fail "u-old: the link was never dropped"
[ "$(stat_of link_drops)" -ge 2 ] ||
	fail "u-old: the link dropped $(stat_of link_drops) times, not with the fault and the reset"
[ "$(stat_of up_resumes)" = 1 ] || fail "u-old: the upload did not resume after the drop"
[ "$(stat_of notify_refusals)" = 0 ] || fail "u-old: StartNotify was refused $(stat_of notify_refusals) times"
[ "$(stat_of violations)" = 0 ] || fail "u-old: a write exceeded MTU - 3"
[ "$(stat_of running)" = 1.5.0 ] || fail "u-old: the device does not run 1.5.0"
echo "ok: WriteValue and StartNotify where BlueZ cannot hand out fds, across a drop and a reset"

# (e') The same, but the StopNotify after the drop fails and BlueZ keeps the
# session: on the next connection StartNotify answers "Already notifying" --
# this client's own session, to be ended and started again, not someone
# else's to wait for.
ble_sim 1.5.0 --no-acquire --mtu 23 --disconnect-at 15000 --stop-notify-fails 1
mark=$(log_mark)
deploy_ble u-kept 1.5.1
[ "$(outcome u-kept node-mcu)" = installed ] || fail "u-kept did not install"
grep -q "fault: StopNotify fails" "$W/ble.log" || fail "u-kept: StopNotify never failed"
[ "$(stat_of notify_refusals)" -ge 1 ] || fail "u-kept: StartNotify was never refused"
log_since "$mark" | grep -q "$ADDR: StartNotify: Already notifying: ending this client's earlier session" ||
	fail "u-kept: the adapter did not end its own earlier session"
[ "$(stat_of running)" = 1.5.1 ] || fail "u-kept: the device does not run 1.5.1"
echo "ok: a notify session BlueZ kept for this client is ended and started afresh"

# (f) The reset request is lost on the way: the link does not drop, the old
# firmware keeps answering and lists the new image as pending; the reset is
# sent again, and only then is the image confirmed.
ble_sim 1.5.1 --lose-reset 1
mark=$(log_mark)
deploy_ble u-lostreset 1.6.0
[ "$(outcome u-lostreset node-mcu)" = installed ] || fail "u-lostreset did not install"
log_since "$mark" | grep -q "$ADDR: os reset got no answer and the old firmware still runs: sending the reset again" ||
	fail "u-lostreset: the reset was not sent again"
grep -q "mcu: fault: os reset lost on the way" "$W/ble.log" || fail "u-lostreset: no reset was lost"
[ "$(stat_of running)" = 1.6.0 ] || fail "u-lostreset: the device does not run 1.6.0"
echo "ok: a lost os reset is sent again; installed"

# (g) Another D-Bus client (a monitoring tool) has StartNotify on the SMP
# characteristic, so BlueZ answers AcquireNotify with InProgress for as long
# as it stays: the adapter shares the notifications through StartNotify.
ble_sim 1.6.0 --foreign-notify
mark=$(log_mark)
deploy_ble u-foreign 1.7.0
[ "$(outcome u-foreign node-mcu)" = installed ] || fail "u-foreign did not install"
log_since "$mark" | grep -q "writes by AcquireWrite, notifications by StartNotify" ||
	fail "u-foreign: notifications were not taken through StartNotify"
[ "$(stat_of running)" = 1.7.0 ] || fail "u-foreign: the device does not run 1.7.0"
echo "ok: notifications shared through StartNotify while another client has them"

# (h) The node found by name, then by the SMP service alone, with 40
# strangers nearby that advertise the same name and the SMP service (listed
# before it by BlueZ, and more than the adapter keeps): the bonded node is
# the one listed and updated.
relookup() { # relookup [SELECTOR]: ferryd again, with the BLE node found another way
	stop_ferryd
	W_EXTRA_ADAPTERS=$(ble_adapters "${1:-}")
	write_config
	sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
	start_ferryd
}
lookup_case() { # lookup_case HOW UPDATE FROM TO
	inv=$(inventory)
	echo "$inv" | grep -qF "{\"name\":\"node-mcu\",\"version\":\"$3\"}" ||
		fail "by $1: the inventory does not list node-mcu at $3: $inv"
	echo "$inv" | grep -qF "\"address\":\"$ADDR\"" || fail "by $1: the inventory lists another device: $inv"
	echo "$inv" | grep -qF '"bonded":"false"' && fail "by $1: a stranger is listed: $inv"
	deploy_ble "$2" "$4"
	[ "$(outcome "$2" node-mcu)" = installed ] || fail "by $1: $2 did not install"
	[ "$(stat_of running)" = "$4" ] || fail "by $1: the bonded node does not run $4"
	disconnected || fail "by $1: the node was left connected"
	echo "ok: found by $1 among 40 strangers advertising the same; installed"
}
ble_sim 1.7.0 --decoys 40
relookup "name: node-7"
lookup_case name u-byname 1.7.0 1.8.0
relookup
lookup_case "SMP service" u-byservice 1.8.0 1.9.0

# (i) A serial MCU unplugged between check and install: its component
# waits, and ferryd looks for it every 2 s.  That look must not connect to
# the BLE node: a radio link and a battery are spent on every connection.
seq_no=$((seq_no + 1))
"$SMP_SIM" --make-image 1.2.0 40000 "$W/www/u-serialwait-sensor-mcu.bin"
{ echo "sequence: $seq_no"; echo "components:"; component sensor-mcu serial-smp sensor-v2 1.2.0 u-serialwait; } \
	> "$W/u-serialwait.yaml"
sign u-serialwait
cmd update.request u-serialwait --manifest "$W/u-serialwait.jws"
wait_mqtt '"op":"update.request","update_id":"u-serialwait","result":"accepted"' 20
cmd update.download u-serialwait --link "sensor-mcu=https://127.0.0.1:$W_HTTPS_PORT/u-serialwait-sensor-mcu.bin"
wait_mqtt '"update_id":"u-serialwait","component":"sensor-mcu","stage":"downloaded"' 20
cmd update.check u-serialwait
wait_mqtt '"update_id":"u-serialwait","component":"sensor-mcu","stage":"verified"' 20
kill "$SMP_PID"; wait "$SMP_PID" 2>/dev/null || true; SMP_PID=
cmd update.install u-serialwait
wait_mqtt '"update_id":"u-serialwait","component":"sensor-mcu","stage":"waiting"' 30
before=$(stat_of connections)
# two looks for the absent MCU, each rediscovering its adapter only
looks=$(grep -c "u-serialwait: looking again for the devices of serial-smp" "$W/ferryd.log" || true)
for _ in $(seq 1 300); do
	[ "$(grep -c "u-serialwait: looking again for the devices of serial-smp" "$W/ferryd.log" || true)" -ge $((looks + 2)) ] &&
		break
	sleep 0.1
done
[ "$(grep -c "u-serialwait: looking again for the devices of serial-smp" "$W/ferryd.log" || true)" -ge $((looks + 2)) ] ||
	fail "u-serialwait: ferryd did not look again for the absent MCU"
after=$(stat_of connections)
[ "$after" = "$before" ] || fail "u-serialwait: waiting for the serial MCU connected to the BLE node ($before -> $after)"
serial_sim 1.1.0
[ "$(outcome u-serialwait sensor-mcu)" = installed ] || fail "u-serialwait did not install once the MCU was back"
inv=$(inventory)
echo "$inv" | grep -qF '{"name":"sensor-mcu","version":"1.2.0"}' || fail "u-serialwait: inventory: $inv"
echo "$inv" | grep -qF '{"name":"node-mcu","version":"1.9.0"}' || fail "u-serialwait: inventory lost the node: $inv"
echo "ok: waiting for a serial MCU leaves the BLE node alone; installed when it came back"
