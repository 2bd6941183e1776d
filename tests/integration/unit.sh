#!/usr/bin/env bash
# The shipped systemd unit: systemd-analyze verify finds nothing wrong with
# it, and its exposure score (systemd-analyze security, offline) stays at or
# under 2.5.  The unit's ReadWritePaths covers the example config's targets.
set -euo pipefail
BUILD=$(cd "${1:?usage: unit.sh BUILD_DIR}" && pwd)
SRC=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# the binary as the package installs it is not here: verify the unit as it
# is otherwise, pointing at the built ferryd
sed "s|^ExecStart=/usr/sbin/ferryd |ExecStart=$BUILD/gateway/ferryd |" "$SRC/config/ferryd.service" > "$T/ferryd.service"
out=$(systemd-analyze verify "$T/ferryd.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify says: $out"
score=$(systemd-analyze security --offline=true "$T/ferryd.service" 2>&1 |
	sed -n 's/.*Overall exposure level for ferryd.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || fail "no exposure score"
echo "exposure level of config/ferryd.service: $score (goal <= 2.5)"
awk -v s="$score" 'BEGIN { exit !(s <= 2.5) }' || fail "exposure $score is above 2.5"
for opt in "UMask=0077" "CapabilityBoundingSet=" "SystemCallFilter=@system-service"; do
	grep -qx -- "$opt" "$SRC/config/ferryd.service" || fail "the unit lacks $opt"
done
# every directory the example config installs to is writable in the sandbox
for p in $(sed -n 's/^ *path: \(\/[^ ]*\).*/\1/p' "$SRC/config/ferryd.yaml"); do
	d=$(dirname "$p")
	ok=no
	for w in $(sed -n 's/^ReadWritePaths=//p' "$SRC/config/ferryd.service"); do
		w=${w#-}
		case "$d/" in "$w"/*) ok=yes ;; esac
	done
	[ "$ok" = yes ] || fail "the example installs $p, but the unit does not let ferryd write $d"
done
echo "ok: the unit verifies, scores $score, and covers the example's targets"
