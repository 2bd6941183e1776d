#!/usr/bin/env bash
# ferryd's config: the annotated example is valid, and each kind of mistake
# stops ferryd with exit code 2 and a message naming file, line and key.
set -euo pipefail
FERRYD="${1:?usage: config.sh BUILD_DIR}/gateway/ferryd"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$FERRYD" --config "$SRC/config/ferryd.yaml" --check | grep -q "configuration is valid" ||
	fail "config/ferryd.yaml is not valid"

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
bad gwid 's/^gateway_id: gw-7/gateway_id: "gw\/7"/' "$T/gwid.yaml:$gw: gateway_id: must contain only [A-Za-z0-9._-]"
bad relative 's|^state_dir: /var/lib/ferry|state_dir: var/lib/ferry|' "state_dir: must be an absolute path"
bad yaml 's/^broker:/broker: [/' "$T/yaml.yaml:"
bad dup 's/^gateway_id: gw-7/gateway_id: gw-7\ngateway_id: gw-8/' "key \"gateway_id\" appears twice"
bad wildcard 's|^# topic_prefix: ferry/v1/gw-7|topic_prefix: ferry/v1/+|' "topic_prefix: must not contain MQTT wildcards"
rc=0; "$FERRYD" --config "$T/nowhere.yaml" > "$T/out" 2>&1 || rc=$?
[ "$rc" -eq 2 ] && grep -q "nowhere.yaml" "$T/out" || fail "a missing file is not named (rc=$rc)"
rc=0; "$FERRYD" > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "no --config: exit $rc"
echo "ok: config checks"
