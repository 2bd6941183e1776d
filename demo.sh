#!/usr/bin/env bash
# The main job: an end-to-end deployment on this machine, driven as an
# operator drives it.  It builds ferry, makes a PKI (with the operator's
# certificate and operator.yaml), starts mosquitto (TLS, client certificates,
# per-gateway ACLs, an operator listener) and nginx (HTTPS) on 127.0.0.1 and
# five simulated MCUs (three identical sensor boards running MCUboot +
# mcumgr, each on a pseudo-terminal; the same behind a simulated BlueZ on a
# private D-Bus; a USB DFU device behind libusb through umockdev), starts
# ferryd for gateway gw-1 and shows the fleet with `ferry fleet`.  Then
# `ferry deploy` signs an all-or-nothing spec with five components -- two
# files of the gateway's own, the sensor firmware (for all three boards), the
# BLE node's and the radio's -- puts the images on the file host, sends it as
# one update.deploy and follows every stage live until all eight device steps
# are installed; while it downloads, a second `ferry deploy` sends an update
# to a fourth MCU (a display) and it runs beside.  Two more gateways (gw-2 at
# gw-1's site, gw-3 at another) run ferryd with only their own files, and
# `ferry campaign` rolls a config file out to every gateway of gw-1's site,
# one batch at a time.  A last `ferry deploy` sends the next build of the 2 MB
# application as a delta from the one gw-1 runs (the spec's delta_from):
# only the patch crosses the network.  Then an encrypted configuration file:
# the file host gets only ciphertext, and its key, wrapped for gw-1's
# key-agreement certificate, travels in gw-1's command.  As root, last, the
# gateway's own system: a RAUC bundle into the other slot of two, a
# simulated reboot, and `installed` once the new system came up.  `ferry
# fleet` shows the new versions, and everything it started is stopped.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
# shellcheck disable=SC2086
ferry_ensure_pkgs $FERRY_BUILD_PKGS mosquitto mosquitto-clients nginx-light openssl libumockdev-dev umockdev dfu-util dbus curl \
	rauc rauc-service squashfs-tools

echo "== building"
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build build-demo -j"${FERRY_JOBS:-2}" >/dev/null

. scripts/world.sh
W_SLOW_RATE=${FERRY_DEMO_RATE:-200k}
W_OPS_SLOW=1 # the file host throttles what ferry deploy publishes, so progress can be seen
W_EXTRA_ADAPTERS="  serial-smp:
    ports:
      - path: /tmp/PLACEHOLDER/ttyMCU0
        vendor_id: acme
        class_id: sensor-v2
        component: sensor-mcu
      - path: /tmp/PLACEHOLDER/ttyMCU1
        vendor_id: acme
        class_id: sensor-v2
        component: sensor-mcu
      - path: /tmp/PLACEHOLDER/ttyMCU2
        vendor_id: acme
        class_id: sensor-v2
        component: sensor-mcu
      - path: /tmp/PLACEHOLDER/ttyMCU3
        vendor_id: acme
        class_id: display-v1
        component: display-mcu
  usb-dfu:
    devices:
      - component: radio-fw
        vendor_id: acme
        class_id: radio-v1
        serial: ACME-RADIO-7
        dfu_usb: \"1209:0002\"
  ble-smp:
    bus: unix:path=/tmp/PLACEHOLDER/bus
    devices:
      - address: C0:FF:EE:00:00:07
        vendor_id: acme
        class_id: ble-node
        component: node-mcu"
# the gateway's own system, A/B through the real RAUC service: RAUC mounts
# bundles through a loop device, which takes root
DEMO_RAUC=
if [ "$(id -u)" -eq 0 ]; then
	DEMO_RAUC=1
	W_EXTRA_ADAPTERS="$W_EXTRA_ADAPTERS
  rauc:
    bus: unix:path=/tmp/PLACEHOLDER/bus
    vendor_id: acme
    class_id: gateway-os
    component: rootfs
    reboot: touch /tmp/PLACEHOLDER/rauc/reboot-requested"
fi
W_MORE_GATEWAYS=gw-3
world_up build-demo
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp build-demo/adapters/serial-smp.so build-demo/adapters/usb-dfu.so build-demo/adapters/ble-smp.so \
	build-demo/adapters/rauc.so "$W/plugins/"
# A private D-Bus on a unix socket stands in for the system bus, and a
# simulated BlueZ on it serves a bonded BLE node (MCUboot + mcumgr over GATT).
start_bus
build-demo/tests/sim/bluez_sim --bus "unix:path=$W/bus" --address C0:FF:EE:00:00:07 --name node-7 --version 3.0.0 \
	--stats "$W/ble.stats" > "$W/ble-sim.log" 2>&1 &
BLE_PID=$!
SIM_PIDS=
for i in 0 1 2; do
	build-demo/tests/sim/smp_device --link "$W/ttyMCU$i" --version 1.4.0 --rate 11520 > "$W/sim$i.log" 2>&1 &
	SIM_PIDS="$SIM_PIDS $!"
done
build-demo/tests/sim/smp_device --link "$W/ttyMCU3" --version 0.9.0 --rate 11520 > "$W/sim3.log" 2>&1 &
SIM_PIDS="$SIM_PIDS $!"
build-demo/tests/sim/dfu_device --root-file "$W/usb.root" --serial ACME-RADIO-7 --version 2.0.0 --poll-ms 15 \
	> "$W/usb-sim.log" 2>&1 &
USB_PID=$!
CONSOLE_PID=
trap 'kill $SIM_PIDS $USB_PID $BLE_PID $CONSOLE_PID 2>/dev/null; [ -z "$DEMO_RAUC" ] || rauc_stop; world_down' EXIT
if [ -n "$DEMO_RAUC" ]; then
	. scripts/rauc.sh
	rauc_up
	echo "== the gateway's own system: two A/B slots under the real RAUC service (on the private D-Bus), booted from A"
else
	echo "== (not root: the gateway's own A/B system through RAUC is left out; RAUC mounts bundles through a loop device)"
fi
for _ in $(seq 1 50); do
	[ -e "$W/ttyMCU0" ] && [ -e "$W/ttyMCU1" ] && [ -e "$W/ttyMCU2" ] && [ -e "$W/ttyMCU3" ] && [ -s "$W/usb.root" ] &&
		[ -s "$W/ble.stats" ] &&
		break
	sleep 0.1
done
echo "== three identical simulated sensor MCUs on $W/ttyMCU0..2 (ptys at 115200 baud), running firmware 1.4.0"
echo "== a simulated display MCU on $W/ttyMCU3, running firmware 0.9.0"
echo "== simulated USB DFU radio ACME-RADIO-7 (1209:0001, DFU mode 1209:0002), running firmware 2.0.0"
echo "== simulated BLE node C0:FF:EE:00:00:07 (bonded, behind a simulated BlueZ), running firmware 3.0.0"
# ferryd's libusb sees the simulated USB bus through umockdev's preload
W_FERRYD_ENV="LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR=$(cat "$W/usb.root")"
echo "== broker on 127.0.0.1:$W_MQTT_PORT (TLS; operators on $W_OPS_PORT), file host on https://127.0.0.1:$W_FILES_PORT"
echo "   (client certificates, links bound to one gateway), work dir $W"
start_ferryd
echo "== ferryd is up for gateway $W_GW (site hall-2), with its MCUs"
# two more gateways with only their own files: gw-2 at the same site, gw-3 at another
start_gateway gw-2 hall-2
start_gateway gw-3 hall-3
wait_mqtt "ferry/v1/gw-2/inventory " 30
wait_mqtt "ferry/v1/gw-3/inventory " 30
echo "== ferryd is up for gateways gw-2 (site hall-2) and gw-3 (site hall-3)"
CONSOLE_PORT=${FERRY_DEMO_CONSOLE_PORT:-$(free_port)}
"$W_FERRY" console --listen "127.0.0.1:$CONSOLE_PORT" > "$W/console.log" 2>&1 &
CONSOLE_PID=$!
for _ in $(seq 1 100); do grep -q "http://" "$W/console.log" && break; sleep 0.1; done
echo "== ferry console: open http://127.0.0.1:$CONSOLE_PORT/ to watch the fleet, the campaign and every update live"

make_update demo 1 1.0.0 1.0.0 2000000
build-demo/tests/sim/smp_device --make-image 1.5.0 60000 "$W/www/demo-mcu.bin"
build-demo/tests/sim/smp_device --make-image 3.1.0 30000 "$W/www/demo-node.bin"
build-demo/tests/sim/dfu_device --make-image 2.1.0 60000 "$W/www/demo-radio.dfu"
dfu-suffix -v 1209 -p 0001 -d 0210 -a "$W/www/demo-radio.dfu" > /dev/null
sed -i 's/^sequence: 1$/sequence: 1\natomic: true   # all or nothing: every device runs the update, or none keeps it/' "$W/demo.yaml"
cat >> "$W/demo.yaml" <<YAML
  - name: sensor-mcu          # no match: it goes to every sensor-v2 board
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: 1.5.0
    format: mcuboot
    file: www/demo-mcu.bin
  - name: node-mcu
    type: firmware
    adapter: ble-smp
    target: {vendor_id: acme, class_id: ble-node}
    version: 3.1.0
    format: mcuboot
    file: www/demo-node.bin
    min_link: bonded-encrypted   # never over a radio link without a bond (docs/adapters.md)
  - name: radio-fw
    type: firmware
    adapter: usb-dfu
    target: {vendor_id: acme, class_id: radio-v1}
    version: 2.1.0
    format: dfu
    file: www/demo-radio.dfu
YAML
# the first inventory that lists every MCU with its version
for _ in $(seq 1 300); do
	inv=$(grep -F "ferry/v1/$W_GW/inventory " "$W/mqtt.log" | tail -n 1 || true)
	[ "$(grep -oF '{"name":"sensor-mcu","version":"1.4.0"}' <<< "$inv" | wc -l)" -eq 3 ] &&
		grep -qF '{"name":"radio-fw","version":"2.0.0"}' <<< "$inv" &&
		grep -qF '{"name":"node-mcu","version":"3.0.0"}' <<< "$inv" &&
		grep -qF '{"name":"display-mcu","version":"0.9.0"}' <<< "$inv" && break
	sleep 0.1
done
echo "== the fleet before, as the operator sees it (ferry fleet, from the retained inventories):"
"$W_FERRY" fleet | sed 's/^/  /'
echo "== each device's link, as its adapter declares it (the inventory's link attribute):"
grep -oE '"id":"[^"]*","adapter":"[^"]*"|"link":"[a-z-]*"' <<< "$inv" | paste -d' ' - - |
	sed -E 's/"id":"([^"]*)","adapter":"([^"]*)" "link":"([a-z-]*)"/  \1 (\2): \3/'

# A second, small update for the display, sent while u-demo is under way: it
# goes to a device u-demo does not hold, so it runs beside it.
build-demo/tests/sim/smp_device --make-image 1.0.0 20000 "$W/www/display.bin"
cat > "$W/display.yaml" <<YAML
sequence: 2
components:
  - name: display-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: display-v1}
    version: 1.0.0
    format: mcuboot
    file: www/display.bin
YAML
(
	wait_mqtt '"update_id":"u-demo","component":"app-bin","stage":"downloading"' 60
	"$W_FERRY" deploy "$W/display.yaml" --gateway "$W_GW" --update u-display > "$W/display.out" 2>&1
) &
DISPLAY_PID=$!
echo "== ferry deploy: signs the all-or-nothing spec (app-config 1.0.0, app-bin 1.0.0 (2 MB), sensor-mcu 1.5.0 for"
echo "   the three sensor boards, node-mcu 3.1.0, radio-fw 2.1.0, which cannot revert and so goes last), puts the"
echo "   images on the file host, sends update.deploy u-demo and follows every report to the end; once u-demo"
echo "   downloads, a second ferry deploy sends u-display (display-mcu 1.0.0), which runs beside it"
rc=0
"$W_FERRY" deploy "$W/demo.yaml" --gateway "$W_GW" --update u-demo || rc=$?
rc2=0
wait "$DISPLAY_PID" || rc2=$?
echo "== ferry deploy u-display (beside it):"
grep -vE ' (downloading|installing) [0-9]+/' "$W/display.out" | sed 's/^/  /'
[ "$rc" = 0 ] && [ "$rc2" = 0 ] || { echo "demo: an update did not install everywhere; see $W/ferryd.log" >&2; exit 1; }
# where u-demo stood when u-display ended
at=$(grep -nF '"update_id":"u-display","component":"display-mcu","stage":"installed"' "$W/mqtt.log" | head -n 1 | cut -d: -f1)
was=$(head -n "$at" "$W/mqtt.log" | grep -F 'ferry/v1/'"$W_GW"'/stage ' | grep -F '"update_id":"u-demo"' | tail -n 1 |
	sed 's/.*"component":"\([^"]*\)".*"stage":"\([^"]*\)".*/\1 \2/')
echo "== u-display was installed while u-demo stood at: $was"

[ "$(grep -F '"update_id":"u-demo"' "$W/mqtt.log" | grep -cF '"stage":"installed"')" -eq 7 ] ||
	{ echo "demo: timed out waiting for the update" >&2; exit 1; }
cmp -s "$W/www/demo-app.bin" "$W/target/app.bin" || { echo "demo: app.bin on disk differs" >&2; exit 1; }

for _ in $(seq 1 100); do
	[ "$(grep -F "ferry/v1/$W_GW/inventory " "$W/mqtt.log" | tail -n 1 |
		grep -oF '{"name":"sensor-mcu","version":"1.5.0"}' | wc -l)" -eq 3 ] && break
	sleep 0.1
done
wait_mqtt '{"name":"radio-fw","version":"2.1.0"}' 10
wait_mqtt '{"name":"node-mcu","version":"3.1.0"}' 10
wait_mqtt '{"name":"display-mcu","version":"1.0.0"}' 10
# A campaign: the site's new config file to every gateway at hall-2, one
# gateway at a time, stopping at the first failure.
printf 'rev: 1.1\n' > "$W/www/site.conf"
cat > "$W/site.yaml" <<YAML
sequence: 3
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: 1.1.0
    format: file
    file: www/site.conf
YAML
echo "== ferry campaign create hall-2-config --where site=hall-2 --batch 1 --stop-at-failures 1 (app-config 1.1.0):"
"$W_FERRY" campaign create hall-2-config --manifest "$W/site.yaml" --where site=hall-2 --batch 1 \
	--stop-at-failures 1 | sed 's/^/  /'
echo "== ferry campaign run --until-idle: sends each batch when the one before installed, and ends when all have:"
"$W_FERRY" campaign run --until-idle 2>/dev/null | sed 's/^/  /'
echo "== ferry campaign status hall-2-config:"
"$W_FERRY" campaign status hall-2-config | sed 's/^/  /'
[ "$("$W_FERRY" campaign list | awk '$1 == "hall-2-config" { print $2, $3, $6 }')" = "done 2 2" ] ||
	{ echo "demo: the campaign did not install on both hall-2 gateways" >&2; exit 1; }
for _ in $(seq 1 100); do
	[ "$("$W_FERRY" fleet --where component.app-config=1.1.0 | tail -n 1 | grep -o '2 of 3 gateways match')" ] && break
	sleep 0.1
done
# the next app-bin differs from the installed one in a few bytes: the spec's
# delta_from makes a patch, and the gateway fetches that instead of 2 MB
# (docs/delta.md)
cp "$W/www/demo-app.bin" "$W/www/demo-app-1.0.1.bin"
printf 'build 1.0.1' | dd of="$W/www/demo-app-1.0.1.bin" bs=1 seek=4096 conv=notrunc 2> /dev/null
cat > "$W/app-1.0.1.yaml" <<YAML
sequence: 4
components:
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: 1.0.1
    format: file
    file: www/demo-app-1.0.1.bin
    delta_from: [www/demo-app.bin]   # the gateway rebuilds 1.0.1 from the 1.0.0 it runs
YAML
echo "== ferry deploy app-bin 1.0.1, with delta_from the 1.0.0 the gateway runs:"
"$W_FERRY" deploy "$W/app-1.0.1.yaml" --gateway "$W_GW" --update u-delta 2>&1 | sed 's/^/  /'
cmp -s "$W/target/app.bin" "$W/www/demo-app-1.0.1.bin" || { echo "demo: app.bin is not 1.0.1" >&2; exit 1; }
# gw-1 publishes its inventory after the install: the fleet shows 1.0.1 once it has
for _ in $(seq 1 100); do
	"$W_FERRY" fleet --where component.app-bin=1.0.1 | tail -n 1 | grep -q '1 of 3 gateways match' && break
	sleep 0.1
done
patch=$(stat -c %s "$W"/www/demo-app-1.0.1.bin.from-*.fdl)
echo "== app-bin 1.0.1 is installed: the gateway fetched a $patch-byte delta, not the 2000000-byte image, and"
echo "   rebuilt the image from the file it runs, checked against the signed manifest"
# an encrypted image: ferry deploy encrypts it, puts only the ciphertext on
# the file host and wraps its key for the certificate gw-1's inventory
# publishes (docs/encryption.md)
printf 'rev: 2.0\nsecret: only gw-1 reads this\n' > "$W/www/secret.conf"
cat > "$W/secret.yaml" <<YAML
sequence: 5
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: 2.0.0
    format: file
    file: www/secret.conf
    encrypt: true                    # the file host and the network see only ciphertext
YAML
echo "== ferry deploy app-config 2.0.0, encrypted, its key wrapped for gw-1 alone:"
"$W_FERRY" deploy "$W/secret.yaml" --gateway "$W_GW" --update u-secret 2>&1 | sed 's/^/  /'
cmp -s "$W/target/app.conf" "$W/www/secret.conf" || { echo "demo: app.conf is not 2.0.0" >&2; exit 1; }
ct=$(sha256sum "$W/www/secret.conf.fenc" | cut -c1-64)
grep -q "secret: only gw-1" "$W/www/files/$ct" && { echo "demo: the file host has the plaintext" >&2; exit 1; }
for _ in $(seq 1 100); do
	"$W_FERRY" fleet --where component.app-config=2.0.0 | tail -n 1 | grep -q '1 of 3 gateways match' && break
	sleep 0.1
done
echo "== app-config 2.0.0 is installed: the file host served $(stat -c %s "$W/www/files/$ct") bytes of ciphertext"\
" (files/${ct:0:12}...), and gw-1 decrypted them into its store"
# the gateway's own system, A/B through RAUC: installed into the other slot,
# a reboot, and `installed` only once the new system came up and was
# marked good (adapters/rauc/README.md)
if [ -n "$DEMO_RAUC" ]; then
	rauc_bundle 2.0.0 "$W/www/gateway-os-2.0.0.raucb"
	cat > "$W/os.yaml" <<YAML
sequence: 6
components:
  - name: rootfs
    type: firmware
    adapter: rauc
    target: {vendor_id: acme, class_id: gateway-os}
    version: 2.0.0
    format: rauc-bundle
    file: www/gateway-os-2.0.0.raucb
YAML
	echo "== ferry deploy rootfs 2.0.0, the gateway's own system (a RAUC bundle): RAUC writes slot B, the gateway reboots:"
	("$W_FERRY" deploy "$W/os.yaml" --gateway "$W_GW" --update u-os 2>&1 | sed -u 's/^/  /') &
	DEPLOY_PID=$!
	rauc_reboot
	echo "  == [reboot: ferryd and RAUC stopped, the bootloader booted slot $W_RAUC_SLOT, both started again; ferryd asks"
	echo "     RAUC which slot booted, marks it good, and only then reports installed]"
	wait "$DEPLOY_PID" || { echo "demo: the system update did not install" >&2; exit 1; }
	for _ in $(seq 1 100); do
		"$W_FERRY" fleet --where component.rootfs=2.0.0 | tail -n 1 | grep -q '1 of 3 gateways match' && break
		sleep 0.1
	done
fi
state=$(curl -s "http://127.0.0.1:$CONSOLE_PORT/api/state" || true)
echo "== the console's picture (GET /api/state): $(grep -o '"name":"hall-2-config","state":"[a-z]*"' <<< "$state" | head -n 1),"\
" $(grep -o '"stage":"installed"' <<< "$state" | wc -l) update rows installed"
echo "== the fleet after (ferry fleet):"
"$W_FERRY" fleet | sed 's/^/  /'
left=$("$W_FERRY" fleet --where 'component.sensor-mcu<1.5.0' | tail -n 1)
echo "== gateways with a sensor board below 1.5.0 (ferry fleet --where 'component.sensor-mcu<1.5.0'): $left"
echo "== done: five components on seven devices, all or nothing, a second update beside it, a campaign over"
echo "   the gateways of one site, a delta update, an encrypted one${DEMO_RAUC:+ and an A/B system update}; stopping"
echo "   ferryd, the MCUs, ${DEMO_RAUC:+RAUC, }D-Bus, nginx and mosquitto"
