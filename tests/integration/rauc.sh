#!/usr/bin/env bash
# The gateway's own system, A/B, through the real RAUC service (Debian's
# rauc 1.8) on a private D-Bus it takes for the system bus, with two
# file-backed slots, the `custom` bootloader backend (a script keeping the
# A/B and boot-try state in a file: tests/sim/rauc_boot.sh) and bundles made
# by `rauc bundle`, signed by a test CA (scripts/rauc.sh).  A "reboot" stops
# ferryd and RAUC, lets the script boot a slot, and starts both again.
#   - a good update: installed only after the new slot booted, marked good,
#     and the inventory shows the new version;
#   - a new slot that does not come up: the bootloader falls back, and the
#     update is rolled_back with what RAUC says;
#   - the health check failing on the new slot: marked bad, rebooted into
#     the old one, rolled_back;
#   - SIGKILL of ferryd while RAUC installs: installed all the same;
#   - all or nothing with a serial MCU: the MCU runs its image on trial, the
#     system goes last, and both are committed once the new system came up
#     after its reboot;
#   - a bundle for another compatible: refused at check, nothing written;
#   - a bundle signed by an unknown key: RAUC's refusal, with its detail.
# Needs root (RAUC mounts bundles through a loop device), as CI has.
cd "$(dirname "$0")"
. ../../scripts/world.sh
. ../../scripts/rauc.sh
BUILD=$(cd "${1:?usage: rauc.sh BUILD_DIR}" && pwd)
[ "$(id -u)" -eq 0 ] || fail "this test needs root: RAUC mounts bundles through a loop device"
SIM="$BUILD/tests/sim/smp_device"
W_EXTRA_ADAPTERS="$(serial_smp_conf ttyMCU=sensor-v2=sensor-mcu)
  rauc:
    bus: unix:path=/tmp/PLACEHOLDER/bus
    vendor_id: acme
    class_id: gateway-os
    component: rootfs
    reboot: touch /tmp/PLACEHOLDER/rauc/reboot-requested
    health: test ! -e /tmp/PLACEHOLDER/rauc/unhealthy"
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$BUILD/adapters/rauc.so" "$BUILD/adapters/serial-smp.so" "$W/plugins/"
"$SIM" --link "$W/ttyMCU" --version 1.0.0 >> "$W/sim.log" 2>&1 &
SIM_PID=$!
trap 'stop_ferryd; rauc_stop; kill "$SIM_PID" 2>/dev/null; world_down' EXIT
for _ in $(seq 1 50); do [ -e "$W/ttyMCU" ] && break; sleep 0.1; done
start_bus
rauc_up
start_ferryd
u="https://127.0.0.1:$W_HTTPS_PORT"
wait_mqtt '"adapter":"rauc"' 20
fresh_inventory | grep -qF '"compatible":"acme-gateway","booted":"rootfs.0","bootname":"A","link":"physical"' ||
	fail "the inventory does not show the system: $(fresh_inventory)"

seq_no=0
# deploy_os UPDATE VERSION BUNDLE: a manifest with the rootfs alone
deploy_os() {
	seq_no=$((seq_no + 1))
	cp "$3" "$W/www/$1.raucb"
	cat > "$W/$1.yaml" <<YAML
sequence: $seq_no
components:
  - name: rootfs
    type: firmware
    adapter: rauc
    target: {vendor_id: acme, class_id: gateway-os}
    version: "$2"
    format: rauc-bundle
    file: www/$1.raucb
YAML
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
		-o "$W/$1.jws" > /dev/null || fail "$1: manifest sign failed"
	cmd update.deploy "$1" --manifest "$W/$1.jws" --link "rootfs=$u/$1.raucb"
}
stage_seen() { grep -F "\"update_id\":\"$1\",\"component\":\"rootfs\",\"stage\":\"$2\",\"device\":\"system\"" "$W/mqtt.log"; }
slot_starts() { head -c 40 "$W/rauc/slot$1.img" | head -n 1; }

# (a) a good update: installed only once the new slot booted and was confirmed
rauc_bundle 2.0.0 "$W/rauc/bundles/2.0.0.raucb"
deploy_os u-good 2.0.0 "$W/rauc/bundles/2.0.0.raucb"
wait_mqtt '"update_id":"u-good","component":"rootfs","stage":"activating","device":"system"' 60
[ "$(slot_starts B)" = "rootfs 2.0.0" ] || fail "u-good: slot B does not hold the new system"
stage_seen u-good installed && fail "u-good: installed before the reboot"
rauc_reboot
[ "$W_RAUC_SLOT" = B ] || fail "u-good: the bootloader booted $W_RAUC_SLOT"
[ "$(outcome u-good rootfs)" = installed ] || fail "u-good did not install: $(grep -F u-good "$W/mqtt.log" | tail -n 2)"
stage_seen u-good installed | grep -qF '"version":"2.0.0"' || fail "u-good: installed without the version read back"
[ "$(boot_state B)" = "1 0" ] || fail "u-good: slot B was not marked good ($(boot_state B))"
grep -qF "Mark(good, booted): rootfs.1" "$W/ferryd.log" || fail "u-good: no Mark(good)"
fresh_inventory | grep -qF '{"name":"rootfs","version":"2.0.0"}' || fail "u-good: the inventory does not show 2.0.0"
echo "ok: a good update: installed after the new slot booted, marked good, 2.0.0 in the inventory"

# (b) the new slot does not come up: the bootloader goes back; rolled_back
rauc_bundle 3.0.0 "$W/rauc/bundles/3.0.0.raucb"
touch "$W/rauc/nobootA"
deploy_os u-noboot 3.0.0 "$W/rauc/bundles/3.0.0.raucb"
wait_mqtt '"update_id":"u-noboot","component":"rootfs","stage":"activating","device":"system"' 60
rauc_reboot
[ "$W_RAUC_SLOT" = B ] || fail "u-noboot: the bootloader did not fall back to B"
[ "$(outcome u-noboot rootfs)" = rolled_back ] || fail "u-noboot was not rolled back"
stage_seen u-noboot rolled_back |
	grep -qF 'the new system did not come up: the gateway booted rootfs.1 (B, version 2.0.0) again; rootfs.0 holds 3.0.0, boot status bad' ||
	fail "u-noboot: the detail does not say what RAUC says: $(stage_seen u-noboot rolled_back)"
[ "$("$W/rauc/boot.sh" get-primary)" = B ] || fail "u-noboot: B is not primary again"
fresh_inventory | grep -qF '{"name":"rootfs","version":"2.0.0"}' || fail "u-noboot: the inventory does not show 2.0.0"
rm -f "$W/rauc/nobootA"
echo "ok: a new slot that does not boot: the bootloader fell back, rolled_back with RAUC's view"

# (c) the new system boots but its health check fails: marked bad, back to
# the old one, rolled_back
rauc_bundle 3.0.1 "$W/rauc/bundles/3.0.1.raucb"
touch "$W/rauc/unhealthy"
deploy_os u-sick 3.0.1 "$W/rauc/bundles/3.0.1.raucb"
wait_mqtt '"update_id":"u-sick","component":"rootfs","stage":"activating","device":"system"' 60
rauc_reboot
[ "$W_RAUC_SLOT" = A ] || fail "u-sick: the new slot A was not booted"
rauc_reboot # the one ferryd asks for to go back
rm -f "$W/rauc/unhealthy"
[ "$W_RAUC_SLOT" = B ] || fail "u-sick: not back on B"
[ "$(outcome u-sick rootfs)" = rolled_back ] || fail "u-sick was not rolled back"
stage_seen u-sick rolled_back | grep -qF '3.0.1 booted rootfs.0, but the health command failed' ||
	fail "u-sick: the detail does not name the health check: $(stage_seen u-sick rolled_back)"
[ "$(boot_state A | cut -d' ' -f1)" = 0 ] || fail "u-sick: slot A was not marked bad"
fresh_inventory | grep -qF '{"name":"rootfs","version":"2.0.0"}' || fail "u-sick: the inventory does not show 2.0.0"
echo "ok: a failed health check on the new system: marked bad, rebooted into the old one, rolled_back"

# (d) a bundle for another system: refused at check, nothing written
rauc_bundle 4.0.0 "$W/rauc/bundles/other.raucb" other-gateway
before=$(sha256sum "$W/rauc/slotA.img")
deploy_os u-other 4.0.0 "$W/rauc/bundles/other.raucb"
[ "$(outcome u-other rootfs)" = failed ] || fail "u-other did not fail"
stage_seen u-other failed | grep -qF 'the bundle is for compatible \"other-gateway\"; this system is \"acme-gateway\"' ||
	fail "u-other: not refused for its compatible: $(stage_seen u-other failed)"
stage_seen u-other installing && fail "u-other: an install began"
[ "$(sha256sum "$W/rauc/slotA.img")" = "$before" ] || fail "u-other: slot A was written"
echo "ok: a bundle for another compatible is refused at check; nothing written"

# (e) a bundle signed by a key RAUC does not trust: its refusal, with the detail
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/rauc/rogue.key" \
	-out "$W/rauc/rogue.pem" -days 30 -subj "/O=rogue/CN=rogue signer" 2> /dev/null
rauc_bundle 4.0.1 "$W/rauc/bundles/rogue.raucb" "" "$W/rauc/rogue.key" "$W/rauc/rogue.pem"
deploy_os u-rogue 4.0.1 "$W/rauc/bundles/rogue.raucb"
[ "$(outcome u-rogue rootfs)" = failed ] || fail "u-rogue did not fail"
stage_seen u-rogue failed | grep -qiE '"reason":"install_failed","detail":"RAUC: [^"]*(signature|verif)' ||
	fail "u-rogue: RAUC's refusal is not the detail: $(stage_seen u-rogue failed)"
[ "$(sha256sum "$W/rauc/slotA.img")" = "$before" ] || fail "u-rogue: slot A was written"
echo "ok: a bundle signed by an unknown key: RAUC's refusal reported with its detail"

# (f) SIGKILL of ferryd while RAUC installs: after the restart it waits for
# RAUC, installs again, and the update ends installed
rauc_bundle 5.0.0 "$W/rauc/bundles/5.0.0.raucb"
deploy_os u-kill 5.0.0 "$W/rauc/bundles/5.0.0.raucb"
wait_mqtt '"update_id":"u-kill","component":"rootfs","stage":"installing","device":"system"' 60
kill9_ferryd
start_ferryd
wait_mqtt '"update_id":"u-kill","component":"rootfs","stage":"activating","device":"system"' 60
rauc_reboot
[ "$W_RAUC_SLOT" = A ] || fail "u-kill: the new slot was not booted"
[ "$(outcome u-kill rootfs)" = installed ] || fail "u-kill did not install after the kill"
[ "$(slot_starts A)" = "rootfs 5.0.0" ] || fail "u-kill: slot A does not hold 5.0.0"
fresh_inventory | grep -qF '{"name":"rootfs","version":"5.0.0"}' || fail "u-kill: the inventory does not show 5.0.0"
echo "ok: SIGKILL of ferryd during the install: installed after the restart"

# (g) all or nothing: a serial MCU and the system.  The MCU goes first and
# runs its new image on trial; the system, which cannot be reverted, goes
# last; after the reboot both are committed
"$SIM" --make-image 1.1.0 20000 "$W/www/u-atomic-mcu.bin"
rauc_bundle 6.0.0 "$W/rauc/bundles/6.0.0.raucb"
cp "$W/rauc/bundles/6.0.0.raucb" "$W/www/u-atomic.raucb"
seq_no=$((seq_no + 1))
cat > "$W/u-atomic.yaml" <<YAML
sequence: $seq_no
atomic: true
components:
  - name: rootfs
    type: firmware
    adapter: rauc
    target: {vendor_id: acme, class_id: gateway-os}
    version: "6.0.0"
    format: rauc-bundle
    file: www/u-atomic.raucb
  - name: sensor-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: "1.1.0"
    format: mcuboot
    file: www/u-atomic-mcu.bin
YAML
"$W_FERRY" manifest sign "$W/u-atomic.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/u-atomic.jws" > /dev/null
cmd update.deploy u-atomic --manifest "$W/u-atomic.jws" --link "rootfs=$u/u-atomic.raucb" \
	--link "sensor-mcu=$u/u-atomic-mcu.bin"
wait_mqtt '"update_id":"u-atomic","component":"rootfs","stage":"activating","device":"system"' 60
grep -F '"update_id":"u-atomic","component":"sensor-mcu","stage":"trial"' "$W/mqtt.log" > /dev/null ||
	fail "u-atomic: the system was activated before the MCU ran its image on trial"
grep -F '"update_id":"u-atomic"' "$W/mqtt.log" | grep -qF '"stage":"installed"' && fail "u-atomic: installed before the reboot"
rauc_reboot
[ "$(outcome u-atomic rootfs)" = installed ] && [ "$(outcome u-atomic sensor-mcu)" = installed ] ||
	fail "u-atomic: not installed on both: $(grep -F u-atomic "$W/mqtt.log" | tail -n 3)"
wait_mqtt '{"name":"sensor-mcu","version":"1.1.0"}' 20
fresh_inventory | grep -qF '{"name":"rootfs","version":"6.0.0"}' || fail "u-atomic: the inventory does not show 6.0.0"
echo "ok: all or nothing with a serial MCU: the system went last, both committed after the new system came up"
