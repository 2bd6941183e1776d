#!/usr/bin/env bash
# The main job.  Until the daemon lands, this is the operator's half of an
# update, end to end with the real `ferry` tool: make a PKI, sign a manifest
# for two components, sign a deploy command bound to one gateway, and verify
# both exactly as the gateway will -- including the refusals.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
# shellcheck disable=SC2086
ferry_ensure_pkgs $FERRY_BUILD_PKGS

echo "== building"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"${FERRY_JOBS:-2}" --target ferry >/dev/null
FERRY=$PWD/build/cli/ferry

D=$(mktemp -d /tmp/ferry-demo.XXXXXX)
trap 'rm -rf "$D"' EXIT
echo "== ferryd does not exist yet: this demo runs the signing round trip (work dir $D)"

step() { printf '\n-- %s\n' "$*"; }

step "ferry pki init: an organisation CA, signers, a broker certificate and one gateway"
"$FERRY" pki init "$D/pki" --gateway gw-7
ls "$D/pki"

step "two component images and the spec that names them"
head -c 65536 /dev/urandom > "$D/sensor-1.5.2.bin"
printf 'site: hall-2\ninterval: 5\n' > "$D/app.conf"
cat > "$D/update.yaml" <<YAML
sequence: 42
components:
  - name: sensor-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: 1.5.2
    format: mcuboot
    file: sensor-1.5.2.bin
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: 2.0.0
    format: file
    file: app.conf
YAML
cat "$D/update.yaml"

step "ferry manifest sign: sizes and digests are computed from the files"
"$FERRY" manifest sign "$D/update.yaml" --key "$D/pki/manifest-signer.key" \
	--cert "$D/pki/manifest-signer.pem" -o "$D/update.jws"

step "ferry manifest verify: what the gateway will see"
"$FERRY" manifest verify "$D/update.jws" --ca "$D/pki/ca.pem"

step "ferry cmd sign: an update.deploy for gw-7, valid for 10 minutes"
"$FERRY" cmd sign --op update.deploy --gateway gw-7 --update u-42 --manifest "$D/update.jws" \
	--link sensor-mcu=https://127.0.0.1:8443/sensor-1.5.2.bin \
	--link app-config=https://127.0.0.1:8443/app.conf --ttl 600 \
	--key "$D/pki/cmd-signer.key" --cert "$D/pki/cmd-signer.pem" > "$D/deploy.jws"
echo "$(wc -c < "$D/deploy.jws") bytes of compact JWS"

step "ferry cmd verify as gw-7: accepted"
"$FERRY" cmd verify "$D/deploy.jws" --ca "$D/pki/ca.pem" --gateway gw-7 | cut -c1-100

refused() {
	local rc=0
	"$@" >/dev/null 2> "$D/err" || rc=$?
	if [ "$rc" -ne 1 ]; then
		echo "demo: expected a refusal (exit 1), got exit $rc" >&2
		exit 1
	fi
	sed 's/^/  refused: /' "$D/err"
}
step "the same command as another gateway, an hour too late, and tampered with"
refused "$FERRY" cmd verify "$D/deploy.jws" --ca "$D/pki/ca.pem" --gateway gw-8
refused "$FERRY" cmd verify "$D/deploy.jws" --ca "$D/pki/ca.pem" --gateway gw-7 --at $(($(date +%s) + 3600))
# flip the first character of the signature: still valid base64url, wrong signature
awk -F. '{ c = substr($3, 1, 1); printf "%s.%s.%s%s\n", $1, $2, (c == "A" ? "B" : "A"), substr($3, 2) }' \
	"$D/deploy.jws" > "$D/tampered.jws"
refused "$FERRY" cmd verify "$D/tampered.jws" --ca "$D/pki/ca.pem" --gateway gw-7

printf '\n== demo done: signed, verified, and every bad variant refused\n'
