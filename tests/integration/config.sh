#!/usr/bin/env bash
# ferryd's config: the annotated example is valid once its files exist, and
# each kind of mistake -- in the YAML, or in a file it names -- stops
# ferryd with exit code 2 and a message naming file, line and key.
set -euo pipefail
FERRYD="${1:?usage: config.sh BUILD_DIR}/gateway/ferryd"
FERRY="$1/cli/ferry"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# the example with a PKI where it expects one, and its dirs under $T
"$FERRY" pki init "$T/pki" --gateway gw-7 > /dev/null
sed -e "s|/etc/ferry/broker-ca.pem|$T/pki/ca.pem|; s|/etc/ferry/gateway.pem|$T/pki/gw-gw-7.pem|" \
	-e "s|/etc/ferry/gateway.key|$T/pki/gw-gw-7.key|; s|/etc/ferry/command-ca.pem|$T/pki/ca.pem|" \
	-e "s|/etc/ferry/manifest-ca.pem|$T/pki/ca.pem|; s|/etc/ferry/files-ca.pem|$T/pki/ca.pem|" \
	-e "s|^state_dir: /var/lib/ferry|state_dir: $T/var/lib/ferry|" \
	-e "s|^# plugin_dir: .*|plugin_dir: $1/adapters|" "$SRC/config/ferryd.yaml" > "$T/example.yaml"
"$FERRYD" --config "$T/example.yaml" --check | grep -q "configuration is valid" ||
	fail "config/ferryd.yaml is not valid with its files in place"
# as shipped, its files are not here: that is what --check says
rc=0
"$FERRYD" --config "$SRC/config/ferryd.yaml" --check > "$T/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -qF "broker.ca: /etc/ferry/broker-ca.pem: No such file or directory" "$T/out" ||
	fail "a missing CA file is not named: $(cat "$T/out")"

# files that are there but wrong
badfile() { # badfile NAME 'sed expression' 'expected message'
	sed "$2" "$T/example.yaml" > "$T/$1.yaml"
	local rc=0
	"$FERRYD" --config "$T/$1.yaml" --check > "$T/out" 2>&1 || rc=$?
	[ "$rc" -eq 2 ] || fail "$1: exit $rc, wanted 2"
	grep -qF -- "$3" "$T/out" || fail "$1: message was: $(cat "$T/out")"
}
echo "not a certificate" > "$T/junk.pem"
"$FERRY" pki init "$T/other" > /dev/null
cal=$(grep -n '^  command_ca:' "$T/example.yaml" | cut -d: -f1)
badfile not-pem "s|^  command_ca: .*|  command_ca: $T/junk.pem|" "holds no PEM certificate"
grep -qF "not-pem.yaml:$cal: trust.command_ca: $T/junk.pem: holds no PEM certificate" "$T/out" ||
	fail "a file with no certificate is not named with file, line and key: $(cat "$T/out")"
badfile wrong-key "s|$T/pki/gw-gw-7.key|$T/other/cmd-signer.key|" "broker.key: $T/other/cmd-signer.key: does not belong to the certificate in broker.cert"
badfile no-key "s|$T/pki/gw-gw-7.key|$T/junk.pem|" "holds no PEM private key"
touch "$T/plainfile"
badfile state-file "s|^state_dir: .*|state_dir: $T/plainfile/state|" "state_dir: $T/plainfile: is not a directory"
mkdir -p "$T/ro" && chmod 0500 "$T/ro"
if [ "$(id -u)" -ne 0 ]; then # root writes anywhere
	badfile state-ro "s|^state_dir: .*|state_dir: $T/ro/state|" "cannot be written"
fi
# the key-agreement key: both files or neither, a pair, for key agreement
sed -e "s|^# decryption:|decryption:|; s|^#   key: /etc/ferry/kek.key|  key: $T/pki/kek-gw-7.key|" \
	-e "s|^#   cert: /etc/ferry/kek.pem|  cert: $T/pki/kek-gw-7.pem|" "$T/example.yaml" > "$T/kek.yaml"
"$FERRYD" --config "$T/kek.yaml" --check | grep -q "configuration is valid" || fail "a decryption section is refused"
badfile kek-half "s|^# decryption:|decryption:|; s|^#   key: /etc/ferry/kek.key|  key: $T/pki/kek-gw-7.key|" \
	"decryption.key: decryption needs both key and cert"
badfile kek-pair "s|^# decryption:|decryption:|; s|^#   key: /etc/ferry/kek.key|  key: $T/pki/gw-gw-7.key|; s|^#   cert: /etc/ferry/kek.pem|  cert: $T/pki/kek-gw-7.pem|" \
	"decryption.key: $T/pki/gw-gw-7.key: does not belong to the certificate in decryption.cert"
badfile kek-tls "s|^# decryption:|decryption:|; s|^#   key: /etc/ferry/kek.key|  key: $T/pki/gw-gw-7.key|; s|^#   cert: /etc/ferry/kek.pem|  cert: $T/pki/gw-gw-7.pem|" \
	"decryption.cert: $T/pki/gw-gw-7.pem: is not a key-agreement certificate"
echo "ok: --check opens every file the config names"

# each adapter's section holds only the keys it declares, with the types and
# ranges it declares, and names a loaded adapter
line() { grep -n -- "$1" "$T/example.yaml" | head -n 1 | cut -d: -f1; }
badfile adapter-typo "s|^    adapter: hci0 |    adaptr: hci0 |" \
	"adapter-typo.yaml:$(line '^    adapter: hci0'): adapters.ble-smp.adaptr: unknown key (not one adapter ble-smp takes)"
badfile adapter-range "s|^    timeout_ms: 3000 |    timeout_ms: 3 |" "adapters.ble-smp.timeout_ms: must be in 50..60000"
badfile adapter-type "s|^    reassembly: true |    reassembly: maybe |" "adapters.ble-smp.reassembly: must be true or false"
badfile self-missing "s|^      - name: app-bin|      - reload: \"true\"|" "adapters.self.files[1].name: required key is missing"
badfile no-adapter "s|^  ble-smp:|  ble-smpp:|" "adapters.ble-smpp: no adapter of that name is loaded"
echo "ok: adapter sections are checked like the main config"

lineof() { grep -n -- "$1" "$SRC/config/ferryd.yaml" | head -n 1 | cut -d: -f1; }
port=$(lineof '^  port: 8883')
gw=$(lineof '^gateway_id:')
# bad NAME 'sed expression' 'expected message'
bad() {
	sed "$2" "$SRC/config/ferryd.yaml" > "$T/$1.yaml"
	local rc=0
	"$FERRYD" --config "$T/$1.yaml" --check > "$T/out" 2>&1 || rc=$?
	[ "$rc" -eq 2 ] || fail "$1: exit $rc, wanted 2"
	grep -qF -- "$3" "$T/out" || fail "$1: message was: $(cat "$T/out")"
}
bad typo 's/^  port: 8883 /  prot: 8883 /' "$T/typo.yaml:$port: broker.prot: unknown key"
bad type 's/^  port: 8883 /  port: eighty /' "$T/type.yaml:$port: broker.port: must be an integer"
bad range 's/^  port: 8883 /  port: 70000 /' "$T/range.yaml:$port: broker.port: must be in 1..65535"
bad missing '/^gateway_id:/d' "$T/missing.yaml: gateway_id: required key is missing"
sign=$(lineof '^  sign: true')
bad sign 's/^  sign: true /  sign: yes-please /' "$T/sign.yaml:$sign: reports.sign: must be true or false"
bad gwid 's/^gateway_id: gw-7/gateway_id: "gw\/7"/' "$T/gwid.yaml:$gw: gateway_id: must contain only [A-Za-z0-9._-]"
bad relative 's|^state_dir: /var/lib/ferry|state_dir: var/lib/ferry|' "state_dir: must be an absolute path"
bad yaml 's/^broker:/broker: [/' "$T/yaml.yaml:"
bad dup 's/^gateway_id: gw-7/gateway_id: gw-7\ngateway_id: gw-8/' "key \"gateway_id\" appears twice"
bad wildcard 's|^# topic_prefix: ferry/v1/gw-7|topic_prefix: ferry/v1/+|' "topic_prefix: must not contain MQTT wildcards"
ml=$(($(lineof '^# min_link:') + 1))
bad minlink 's|^# min_link:|min_link:|; s|^#   node-fw: bonded-encrypted|  node-fw: wired|' \
	"$T/minlink.yaml:$ml: min_link.node-fw: must be physical, bonded-encrypted or unauthenticated"
rc=0; "$FERRYD" --config "$T/nowhere.yaml" > "$T/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "nowhere.yaml" "$T/out" || fail "a missing file is not named (rc=$rc)"
rc=0; "$FERRYD" > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "no --config: exit $rc"
echo "ok: config checks"
