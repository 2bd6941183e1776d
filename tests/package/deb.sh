#!/usr/bin/env bash
# The Debian package, built and installed on this machine (as root; it
# changes the system: a user, /etc/ferry, /var/lib/ferry, /opt/acme, and
# removes them again):
#   1. dpkg-buildpackage -b builds ferry and ferry-dev; lintian reports no
#      error; the simulators are not in the runtime package;
#   2. the package installs: the ferry user (in dialout and plugdev), its
#      0700 state dir, the unit, the udev rules, the adapters in the
#      multiarch dir; the unit verifies and its exposure score is printed;
#      ferryd --check passes on the shipped config once a PKI is in place;
#   3. ferryd runs as the ferry user, in the unit's sandbox as far as it
#      goes without systemd (unit-sandbox.sh: no new privileges, no
#      capabilities, umask 077, dialout and plugdev only, a read-only system
#      but for its state dir and ReadWritePaths, a private /tmp), against
#      the test world, and deploys to a `self` file under a path the unit
#      allows (/opt/acme) and to a serial MCU on a pty the ferry user may
#      open through dialout;
#   4. removing the package leaves /etc/ferry and the state dir; purging
#      removes them (with the keys put there).
#   tests/package/deb.sh BUILD_DIR    (BUILD_DIR: a build with the simulators)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: deb.sh BUILD_DIR}" && pwd)
[ "$(id -u)" = 0 ] || { echo "deb.sh installs a package: run it as root" >&2; exit 1; }
OUT=$(mktemp -d /tmp/ferry-deb.XXXXXX)
fail() { echo "FAIL: $*" >&2; exit 1; }
cleanup() {
	[ -n "${FERRYD_PID:-}" ] && kill "$FERRYD_PID" 2>/dev/null || true
	[ -n "${MCU_PID:-}" ] && kill "$MCU_PID" 2>/dev/null || true
	dpkg --purge ferry ferry-dev > /dev/null 2>&1 || true
	rm -rf /opt/acme /srv/ferry-probe "$OUT"
	userdel ferry 2>/dev/null || true
}
trap cleanup EXIT

# --- 1. build and lint
echo "== dpkg-buildpackage -b (a copy of the tree, so the checkout stays clean)"
mkdir "$OUT/src"
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard 2>/dev/null |
	xargs -0 cp --parents -t "$OUT/src") ||
	cp -a "$SRC/." "$OUT/src"
(cd "$OUT/src" && dpkg-buildpackage -b -us -uc > "$OUT/build.log" 2>&1) ||
	fail "dpkg-buildpackage: $(tail -n 20 "$OUT/build.log")"
arch=$(dpkg --print-architecture)
DEB=$OUT/ferry_0.1.0_${arch}.deb
DEV=$OUT/ferry-dev_0.1.0_${arch}.deb
[ -f "$DEB" ] && [ -f "$DEV" ] || fail "the packages were not built"
lint=$(lintian --tag-display-limit 0 "$OUT/ferry_0.1.0_${arch}.changes" 2>&1 | grep -v "running with root privileges" || true)
grep -q '^E:' <<< "$lint" && fail "lintian errors: $lint"
echo "lintian: ${lint:-clean}"
# (listings in variables: with pipefail, grep -q ending early fails the pipe)
deb_files=$(dpkg -c "$DEB")
dev_files=$(dpkg -c "$DEV")
! grep -qE 'smp_device|bluez_sim|dfu_device|dfu-inspect' <<< "$deb_files" || fail "a simulator is in the runtime package"
grep -q 'usr/include/ferry/adapter.h' <<< "$dev_files" || fail "ferry-dev lacks the SDK header"
# the libraries ferry loads on first use (the _SONAME defines) are not seen
# by dpkg-shlibdeps: each must be named in Depends
depends=$(dpkg-deb -f "$DEB" Depends)
sonames=$(grep -rhoE '_SONAME "[^"]+"' "$SRC/gateway" "$SRC/manifests" | cut -d'"' -f2)
[ -n "$sonames" ] || fail "no _SONAME define found in the sources"
for so in $sonames; do
	pkg=$(dpkg -S "/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/$so" | cut -d: -f1)
	grep -qE "(^|, )$pkg( |,|$)" <<< "$depends" || fail "ferry loads $so (from $pkg), not in Depends: $depends"
done
echo "ok: built; lintian shows no error; the simulators stay out; Depends names $(echo $sonames)"

# --- 2. install
dpkg --purge ferry ferry-dev > /dev/null 2>&1 || true
apt-get install -y -q "$DEB" "$DEV" > "$OUT/install.log" 2>&1 || fail "install: $(tail -n 20 "$OUT/install.log")"
multi=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
for f in /usr/sbin/ferryd /usr/bin/ferry /lib/systemd/system/ferryd.service /lib/udev/rules.d/70-ferry-usb-dfu.rules \
	/etc/ferry/ferryd.yaml "/usr/lib/$multi/ferry/adapters/serial-smp.so" "/usr/lib/$multi/ferry/adapters/usb-dfu.so" \
	"/usr/lib/$multi/ferry/adapters/ble-smp.so" "/usr/lib/$multi/pkgconfig/ferry-adapter.pc"; do
	[ -e "$f" ] || fail "not installed: $f"
done
id ferry > /dev/null || fail "no ferry user"
groups=$(id -nG ferry)
for g in dialout plugdev; do grep -qw "$g" <<< "$groups" || fail "the ferry user is not in $g"; done
[ "$(stat -c '%U %a' /var/lib/ferry)" = "ferry 700" ] || fail "state dir: $(stat -c '%U %a' /var/lib/ferry)"
grep -qF /etc/ferry/ferryd.yaml /var/lib/dpkg/info/ferry.conffiles || fail "ferryd.yaml is not a conffile"
out=$(systemd-analyze verify /lib/systemd/system/ferryd.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify says: $out"
score=$(systemd-analyze security --offline=true /lib/systemd/system/ferryd.service 2>&1 |
	sed -n 's/.*Overall exposure level for ferryd.service: \([0-9.]*\).*/\1/p')
echo "exposure level of the installed ferryd.service: $score"
[ -n "$score" ] || fail "no exposure score"
# the shipped config, with a PKI where it expects one
/usr/bin/ferry pki init "$OUT/pki" --gateway gw-1 > /dev/null # the packaged tool (fortified, as built)
install -m 0644 "$OUT/pki/ca.pem" /etc/ferry/broker-ca.pem
install -m 0644 "$OUT/pki/ca.pem" /etc/ferry/command-ca.pem
install -m 0644 "$OUT/pki/ca.pem" /etc/ferry/manifest-ca.pem
install -m 0644 "$OUT/pki/ca.pem" /etc/ferry/files-ca.pem
install -m 0644 "$OUT/pki/gw-gw-1.pem" /etc/ferry/gateway.pem
install -m 0640 -g ferry "$OUT/pki/gw-gw-1.key" /etc/ferry/gateway.key
out=$(runuser -u ferry -- /usr/sbin/ferryd --config /etc/ferry/ferryd.yaml --check 2>&1) ||
	fail "ferryd --check on the shipped config: $out"
grep -q "configuration is valid" <<< "$out" || fail "ferryd --check: $out"
echo "ok: installed: user, groups, state dir, unit (exposure $score), udev rules; the shipped config checks"

# --- 3. run as the ferry user against the test world
. "$SRC/scripts/world.sh"
W_SLOW_RATE=200k
world_up "$BUILD"
trap 'cleanup; world_down' EXIT
mkdir -p /opt/acme
chown ferry:ferry /opt/acme
"$BUILD/tests/sim/smp_device" --link "$W/ttyS0" --rate 11520 --version 1.0.0 > "$W/mcu.log" 2>&1 &
MCU_PID=$!
for _ in $(seq 1 50); do [ -e "$W/ttyS0" ] && break; sleep 0.1; done
tty=$(readlink -f "$W/ttyS0")
chgrp dialout "$tty"
chmod 0660 "$tty"
ln -sf "$tty" /opt/acme/ttyMCU # the ferry user cannot enter the world's dir
install -d -m 0755 /etc/ferry/test
cp "$W/pki/ca.pem" "$W/pki/gw-$W_GW.pem" /etc/ferry/test/
install -m 0640 -g ferry "$W/pki/gw-$W_GW.key" /etc/ferry/test/
cat > /etc/ferry/test/ferryd.yaml <<YAML
gateway_id: $W_GW
broker: {host: 127.0.0.1, port: $W_MQTT_PORT, ca: /etc/ferry/test/ca.pem, cert: /etc/ferry/test/gw-$W_GW.pem,
         key: /etc/ferry/test/gw-$W_GW.key, reconnect_min_ms: 200, reconnect_max_ms: 2000}
trust: {command_ca: /etc/ferry/test/ca.pem, manifest_ca: /etc/ferry/test/ca.pem}
state_dir: /var/lib/ferry
download: {ca: /etc/ferry/test/ca.pem}
adapters:
  self:
    vendor_id: acme
    class_id: gateway
    files:
      - name: app-config
        path: /opt/acme/app.conf
      - name: app-bin
        path: /opt/acme/bin.app
  serial-smp:
    ports:
      - path: /opt/acme/ttyMCU
        vendor_id: acme
        class_id: sensor-v2
        component: sensor-fw
YAML
# the unit's sandbox, as far as it goes without systemd (unit-sandbox.sh
# reads it from the installed unit): its user and groups, no new
# privileges, no capabilities at all, its umask, a read-only system but for
# the state dir and ReadWritePaths, no home dirs, a private /tmp
UNIT=/lib/systemd/system/ferryd.service
SANDBOX=$SRC/tests/package/unit-sandbox.sh
# a dir the ferry user owns, outside the unit's writable paths: writable
# without the sandbox, read-only within it
install -d -o ferry -g ferry /srv/ferry-probe
setpriv --reuid=ferry --regid=ferry --init-groups touch /srv/ferry-probe/a || fail "the ferry user cannot write its own dir"
"$SANDBOX" "$UNIT" touch /srv/ferry-probe/b 2> /dev/null && fail "the sandbox lets ferryd write outside its paths"
"$SANDBOX" "$UNIT" sh -c 'touch /var/lib/ferry/probe /opt/acme/probe && rm /var/lib/ferry/probe /opt/acme/probe' ||
	fail "the sandbox keeps ferryd from its state dir or /opt/acme"
[ -z "$("$SANDBOX" "$UNIT" find /tmp /root -mindepth 1)" ] || fail "the sandbox's /tmp or /root is not empty"
"$SANDBOX" "$UNIT" /usr/sbin/ferryd --config /etc/ferry/test/ferryd.yaml >> "$W/ferryd.log" 2>&1 &
FERRYD_PID=$!
wait_mqtt "ferry/v1/$W_GW/state {\"state\":\"online\"}" 20
[ "$(readlink "/proc/$FERRYD_PID/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] ||
	fail "ferryd does not run in a mount namespace of its own"
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$FERRYD_PID/status")
caps=$(awk '/^CapEff:/ { print $2 }' "/proc/$FERRYD_PID/status")
nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$FERRYD_PID/status")
[ "$uid" = "$(id -u ferry)" ] || fail "ferryd does not run as the ferry user (uid $uid)"
[ "$caps" = 0000000000000000 ] && [ "$nnp" = 1 ] || fail "ferryd has capabilities $caps, no_new_privs $nnp"
make_update p1 1 1.0.0 1.0.0 100000
"$BUILD/tests/sim/smp_device" --make-image 1.1.0 16000 "$W/www/p1-sensor.bin"
cat >> "$W/p1.yaml" <<YAML
  - name: sensor-fw
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: 1.1.0
    format: mcuboot
    file: www/p1-sensor.bin
YAML
"$W_FERRY" manifest sign "$W/p1.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/p1.jws" > /dev/null
# shellcheck disable=SC2046
cmd update.deploy u-p1 --manifest "$W/p1.jws" $(links_for p1) \
	--link "sensor-fw=https://127.0.0.1:$W_HTTPS_PORT/p1-sensor.bin"
for c in app-config app-bin sensor-fw; do
	[ "$(outcome u-p1 $c)" = installed ] || fail "u-p1: $c did not install as the ferry user: $(stages_of u-p1 $c)"
done
cmp -s "$W/www/p1-app.bin" /opt/acme/bin.app || fail "u-p1: /opt/acme/bin.app differs"
[ "$(stat -c %U /opt/acme/bin.app)" = ferry ] || fail "u-p1: the installed file is not the ferry user's"
[ "$(stat -c %a /var/lib/ferry/journal.db)" = 600 ] || fail "the journal is not 0600"
kill "$FERRYD_PID"
wait "$FERRYD_PID" 2>/dev/null || true
FERRYD_PID=
echo "ok: ferryd as the ferry user, unprivileged, installed a file under /opt/acme and an MCU on a dialout pty"

# --- 4. remove keeps config and state; purge removes them
dpkg --remove ferry-dev ferry > "$OUT/remove.log" 2>&1 || fail "remove: $(cat "$OUT/remove.log")"
[ -f /etc/ferry/ferryd.yaml ] || fail "remove took /etc/ferry/ferryd.yaml"
[ -f /var/lib/ferry/journal.db ] || fail "remove took the state dir"
[ ! -e /usr/sbin/ferryd ] || fail "remove left ferryd"
dpkg --purge ferry ferry-dev > "$OUT/purge.log" 2>&1 || fail "purge: $(cat "$OUT/purge.log")"
[ ! -e /etc/ferry ] || fail "purge left /etc/ferry: $(ls -A /etc/ferry)"
[ ! -e /var/lib/ferry ] || fail "purge left /var/lib/ferry"
echo "ok: remove keeps /etc/ferry and /var/lib/ferry; purge removes them"
