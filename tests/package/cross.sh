#!/usr/bin/env bash
# ferry for a Raspberry Pi, cross-built on this amd64 machine with Debian's
# cross toolchain and the target's multiarch -dev packages, and run under
# qemu-user against the target's own libraries:
#   1. a CMake build for ARCH (cmake/cross.cmake); its unit tests, the
#      bad-input table and the interop tests (the target's `ferry` against
#      this machine's jose and openssl) run under qemu-user;
#   2. dpkg-buildpackage -a ARCH builds ferry and ferry-dev for ARCH:
#      lintian shows no error, every binary is for the target's machine,
#      the simulators stay out;
#   3. the packaged ferryd, under qemu-user, checks the shipped config with
#      the packaged adapters, then deploys a `self` file and a simulated
#      serial MCU (on a pty) through the test world: the real mosquitto and
#      nginx of this machine, driven over MQTT.
# Needs nothing installed but the packages ./test.sh --cross puts in place,
# and a native build (the world's simulators and the operator's `ferry`).
#   tests/package/cross.sh ARCH NATIVE_BUILD_DIR
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
ARCH=${1:?usage: cross.sh arm64|armhf NATIVE_BUILD_DIR}
NATIVE=$(cd "${2:?usage: cross.sh arm64|armhf NATIVE_BUILD_DIR}" && pwd)
case $ARCH in
arm64) qemu=qemu-aarch64 machine=AArch64 ;;
armhf) qemu=qemu-arm machine=ARM ;;
*) echo "cross.sh: ARCH must be arm64 or armhf, not \"$ARCH\"" >&2; exit 2 ;;
esac
multi=$(dpkg-architecture -a "$ARCH" -qDEB_HOST_MULTIARCH 2>/dev/null)
jobs=${FERRY_JOBS:-2}
OUT=$(mktemp -d "/tmp/ferry-cross-$ARCH.XXXXXX")
fail() { echo "FAIL ($ARCH): $*" >&2; exit 1; }
trap 'rm -rf "$OUT"' EXIT

# --- 1. build and test under qemu
B=$SRC/build-$ARCH
echo "== $ARCH: build (cmake/cross.cmake, -Werror)"
cmake -S "$SRC" -B "$B" -DCMAKE_TOOLCHAIN_FILE="$SRC/cmake/cross.cmake" -DFERRY_CROSS_ARCH="$ARCH" \
	-DFERRY_WERROR=ON -DBUILD_TESTING=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$B" -j"$jobs"
readelf -h "$B/gateway/ferryd" | grep -q "Machine: *$machine" || fail "ferryd is not built for $machine"
echo "== $ARCH: unit, bad-input and interop tests under $qemu"
ctest --test-dir "$B" --output-on-failure -j"$jobs"

# --- 2. the packages
echo "== $ARCH: dpkg-buildpackage -a $ARCH (a copy of the tree)"
mkdir "$OUT/src"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard 2>/dev/null |
	xargs -0 cp --parents -t "$OUT/src") ||
	cp -a "$SRC/." "$OUT/src"
rm -rf "$OUT/src/build" "$OUT/src"/build-*
(cd "$OUT/src" && dpkg-buildpackage -a "$ARCH" -b -us -uc > "$OUT/build.log" 2>&1) ||
	fail "dpkg-buildpackage -a $ARCH: $(tail -n 20 "$OUT/build.log")"
DEB=$OUT/ferry_0.1.0_$ARCH.deb
DEV=$OUT/ferry-dev_0.1.0_$ARCH.deb
[ -f "$DEB" ] && [ -f "$DEV" ] || fail "the packages were not built"
for d in "$DEB" "$DEV"; do
	[ "$(dpkg-deb -f "$d" Architecture)" = "$ARCH" ] || fail "$(basename "$d") is not Architecture: $ARCH"
done
lint=$(lintian --tag-display-limit 0 "$OUT/ferry_0.1.0_$ARCH.changes" 2>&1 | grep -v "running with root privileges" || true)
grep -q '^E:' <<< "$lint" && fail "lintian errors: $lint"
echo "lintian: ${lint:-clean}"
R=$OUT/root
dpkg-deb -x "$DEB" "$R"
deb_files=$(dpkg -c "$DEB")
! grep -qE 'smp_device|bluez_sim|dfu_device|dfu-inspect' <<< "$deb_files" || fail "a simulator is in the runtime package"
AD=$R/usr/lib/$multi/ferry/adapters
for f in "$R/usr/sbin/ferryd" "$R/usr/bin/ferry" "$AD/serial-smp.so" "$AD/ble-smp.so" "$AD/usb-dfu.so"; do
	[ -f "$f" ] || fail "not in the package: ${f#"$R"}"
	readelf -h "$f" | grep -q "Machine: *$machine" || fail "${f#"$R"} is not built for $machine"
done
# the plugin dir compiled into the packaged ferryd is the multiarch one
strs=$(strings "$R/usr/sbin/ferryd") # (not piped into grep -q: under pipefail its early exit fails the pipe)
grep -qx "/usr/lib/$multi/ferry/adapters" <<< "$strs" ||
	fail "the packaged ferryd does not look for adapters in /usr/lib/$multi/ferry/adapters"
echo "ok: ferry and ferry-dev for $ARCH; lintian shows no error; every binary is for $machine"

# --- 3. the packaged binaries at work, under qemu
"$qemu" "$R/usr/bin/ferry" pki init "$OUT/pki" --gateway gw-7 > /dev/null ||
	fail "the packaged ferry could not make a PKI"
mkdir -p "$OUT/etc" "$OUT/state"
for f in broker-ca command-ca manifest-ca files-ca; do cp "$OUT/pki/ca.pem" "$OUT/etc/$f.pem"; done
cp "$OUT/pki/gw-gw-7.pem" "$OUT/etc/gateway.pem"
cp "$OUT/pki/gw-gw-7.key" "$OUT/etc/gateway.key"
sed -e "s|/etc/ferry/|$OUT/etc/|g" -e "s|/var/lib/ferry|$OUT/state|" "$R/etc/ferry/ferryd.yaml" > "$OUT/ferryd.yaml"
printf 'plugin_dir: %s\n' "$AD" >> "$OUT/ferryd.yaml"
out=$("$qemu" "$R/usr/sbin/ferryd" --config "$OUT/ferryd.yaml" --check 2>&1) ||
	fail "the packaged ferryd --check on the shipped config: $out"
grep -q "configuration is valid" <<< "$out" || fail "ferryd --check: $out"
echo "ok: the packaged ferryd checks the shipped config with the packaged adapters"

. "$SRC/scripts/world.sh"
W_EXTRA_ADAPTERS="  serial-smp:
    ports:
      - path: /tmp/PLACEHOLDER/ttyMCU
        vendor_id: acme
        class_id: sensor-v2
        component: sensor-fw"
world_up "$NATIVE"
SIM_PID=
trap '{ [ -n "$SIM_PID" ] && kill "$SIM_PID"; } 2>/dev/null || true; world_down; rm -rf "$OUT"' EXIT
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$AD/serial-smp.so" "$W/plugins/"
"$NATIVE/tests/sim/smp_device" --link "$W/ttyMCU" --version 1.0.0 > "$W/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 50); do [ -e "$W/ttyMCU" ] && break; sleep 0.1; done
[ -e "$W/ttyMCU" ] || fail "the simulated MCU did not start"
W_FERRYD=$R/usr/sbin/ferryd W_FERRYD_EXEC=$qemu start_ferryd
make_update c1 1 1.0.0 1.0.0 200000
"$NATIVE/tests/sim/smp_device" --make-image 1.1.0 30000 "$W/www/c1-sensor.bin"
cat >> "$W/c1.yaml" <<YAML
  - name: sensor-fw
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: 1.1.0
    format: mcuboot
    file: www/c1-sensor.bin
    after: [app-bin]
YAML
"$W_FERRY" manifest sign "$W/c1.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/c1.jws" > /dev/null
# shellcheck disable=SC2046
cmd update.deploy u-c1 --manifest "$W/c1.jws" $(links_for c1) \
	--link "sensor-fw=https://127.0.0.1:$W_HTTPS_PORT/c1-sensor.bin"
for c in app-config app-bin sensor-fw; do
	[ "$(outcome u-c1 $c)" = installed ] || fail "u-c1: $c did not install: $(stages_of u-c1 $c)"
done
cmp -s "$W/www/c1-app.bin" "$W/target/app.bin" || fail "u-c1: app.bin differs from the image"
inv=$(fresh_inventory)
grep -qF '{"name":"sensor-fw","version":"1.1.0"}' <<< "$inv" || fail "the inventory does not show sensor-fw 1.1.0: $inv"
echo "ok: the packaged $ARCH ferryd under $qemu installed a file and a serial MCU over MQTT"
