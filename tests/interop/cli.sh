#!/usr/bin/env bash
# The `ferry` command as an operator uses it: every subcommand has --help,
# bad arguments exit 2 with a message that names the problem, refused input
# exits 1 with its reason code, and sign/verify round trips hold for both
# formats and both algorithms.
set -euo pipefail
FERRY=${1:?usage: cli.sh PATH/TO/ferry}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect RC PATTERN CMD...: run CMD, check its exit code and that stderr+stdout match PATTERN
expect() {
	local want=$1 pat=$2 rc=0
	shift 2
	"$@" > "$T/out" 2>&1 || rc=$?
	[ "$rc" -eq "$want" ] || fail "$* exited $rc, wanted $want: $(cat "$T/out")"
	grep -qE -- "$pat" "$T/out" || fail "$* did not print /$pat/: $(cat "$T/out")"
}

for sub in "pki init" "manifest sign" "manifest verify" "cmd sign" "cmd verify"; do
	# shellcheck disable=SC2086
	expect 0 "^usage: ferry $sub" "$FERRY" $sub --help
done
expect 0 "usage: ferry COMMAND" "$FERRY" --help
expect 2 "unknown command \"frobnicate\"" "$FERRY" frobnicate
expect 2 "give exactly one DIR" "$FERRY" pki init
expect 2 "malformed: .*gateway id \"bad/id\"" "$FERRY" pki init "$T/x" --gateway bad/id
[ ! -e "$T/x/ca.key" ] || fail "pki init wrote a CA although a gateway id was bad"
# shellcheck disable=SC2046
expect 2 "at most 4096 gateways at once, not 4097" "$FERRY" pki init "$T/y" $(for i in $(seq 1 4097); do echo --gateway "g$i"; done)
[ ! -e "$T/y/ca.key" ] || fail "pki init wrote a CA for more gateways than it takes"

expect 0 "PKI written" "$FERRY" pki init "$T/pki" --gateway gw-1 --gateway gw-2
for f in ca cmd-signer manifest-signer broker gw-gw-1 gw-gw-2; do
	[ -s "$T/pki/$f.pem" ] && [ -s "$T/pki/$f.key" ] || fail "pki init did not write $f"
	[ "$(stat -c %a "$T/pki/$f.key")" = 600 ] || fail "$f.key is not mode 600"
done
openssl verify -x509_strict -CAfile "$T/pki/ca.pem" "$T/pki/gw-gw-1.pem" >/dev/null || fail "gateway cert does not verify"
openssl x509 -in "$T/pki/gw-gw-2.pem" -noout -subject | grep -q "CN *= *gw-2" || fail "gateway CN is not its id"
openssl x509 -in "$T/pki/broker.pem" -noout -ext subjectAltName | grep -q "IP Address:127.0.0.1" ||
	fail "broker cert lacks 127.0.0.1"
expect 2 "already exists" "$FERRY" pki init "$T/pki"

# A manifest with two components, the second installed first because of `after`.
head -c 5000 /dev/urandom > "$T/mcu.bin"
echo "interval: 5" > "$T/app.conf"
cat > "$T/spec.yaml" <<YAML
sequence: 7
allow_downgrade: false
components:
  - name: sensor-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2, match: {image: "0"}}
    version: 1.5.2
    format: mcuboot
    file: mcu.bin
    after: [app-config]
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gw}
    version: "2.0.0"
    format: file
    file: app.conf
YAML
sign=("$FERRY" manifest sign "$T/spec.yaml" --key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem")
expect 0 "signed manifest written" "${sign[@]}" -o "$T/m.jws"
expect 0 "\"size\": 5000" "$FERRY" manifest verify "$T/m.jws" --ca "$T/pki/ca.pem"
expect 2 "--key and --cert" "$FERRY" manifest sign "$T/spec.yaml" -o "$T/x.jws"
expect 1 "key does not belong" "$FERRY" manifest sign "$T/spec.yaml" --key "$T/pki/cmd-signer.key" \
	--cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
sed 's/file: mcu.bin/file: nowhere.bin/' "$T/spec.yaml" > "$T/bad.yaml"
expect 1 "nowhere.bin" "$FERRY" manifest sign "$T/bad.yaml" --key "$T/pki/manifest-signer.key" \
	--cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
sed 's/version: 1.5.2/version: 1.5/' "$T/spec.yaml" > "$T/bad.yaml"
expect 1 "components\[0\]: version \"1.5\"" "$FERRY" manifest sign "$T/bad.yaml" \
	--key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
# a misspelt key is refused with file, line and key, never signed
sed 's/^allow_downgrade: false/atomc: true/' "$T/spec.yaml" > "$T/bad.yaml"
expect 1 "bad.yaml:2: atomc: not a key" "$FERRY" manifest sign "$T/bad.yaml" \
	--key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
sed 's/    version: 1.5.2/    versoin: 1.5.2/' "$T/spec.yaml" > "$T/bad.yaml"
expect 1 "bad.yaml:8: components\[0\].versoin: not a key" "$FERRY" manifest sign "$T/bad.yaml" \
	--key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
sed 's/class_id: sensor-v2, match/class_id: sensor-v2, mtch/' "$T/spec.yaml" > "$T/bad.yaml"
expect 1 "components\[0\].target.mtch: not a key" "$FERRY" manifest sign "$T/bad.yaml" \
	--key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
[ ! -e "$T/x.jws" ] || fail "a refused spec left an output file"
expect 1 "^ferry: malformed: .*3 parts" "$FERRY" manifest verify "$T/spec.yaml" --ca "$T/pki/ca.pem"
"$FERRY" pki init "$T/other" >/dev/null
expect 1 "untrusted_signer" "$FERRY" manifest verify "$T/m.jws" --ca "$T/other/ca.pem"

# Commands: a deploy carrying the manifest and links, then the gateway's view of it.
now=$(date +%s)
csign=("$FERRY" cmd sign --key "$T/pki/cmd-signer.key" --cert "$T/pki/cmd-signer.pem" --gateway gw-1)
"${csign[@]}" --op update.deploy --update u-1 --manifest "$T/m.jws" \
	--link sensor-mcu=https://127.0.0.1:8443/mcu.bin --link app-config=https://127.0.0.1:8443/app.conf > "$T/c.jws"
expect 0 "\"op\": \"update.deploy\"" "$FERRY" cmd verify "$T/c.jws" --ca "$T/pki/ca.pem" --gateway gw-1
expect 1 "wrong_gateway" "$FERRY" cmd verify "$T/c.jws" --ca "$T/pki/ca.pem" --gateway gw-2
expect 1 "expired" "$FERRY" cmd verify "$T/c.jws" --ca "$T/pki/ca.pem" --gateway gw-1 --at $((now + 7200))
"${csign[@]}" --op update.install --update u-1 --nbf $((now + 3600)) > "$T/later.jws"
expect 1 "not_yet_valid" "$FERRY" cmd verify "$T/later.jws" --ca "$T/pki/ca.pem" --gateway gw-1
expect 0 "update.install" "$FERRY" cmd verify "$T/later.jws" --ca "$T/pki/ca.pem" --gateway gw-1 --at $((now + 3600))
expect 1 "unsupported: .*op \"update.reboot\"" "${csign[@]}" --op update.reboot --update u-1
expect 1 "malformed: .*manifest\" is missing" "${csign[@]}" --op update.request --update u-1
expect 1 "unsupported: .*not an https" "${csign[@]}" --op update.download --update u-1 --link a=http://127.0.0.1/a
expect 2 "--ttl: \"soon\"" "${csign[@]}" --op update.cancel --update u-1 --ttl soon
expect 2 "--link wants NAME=URL" "${csign[@]}" --op update.download --update u-1 --link nonsense

# EdDSA: an Ed25519 signer made by openssl, issued by the demo CA.
openssl genpkey -algorithm ED25519 -out "$T/ed.key" 2>/dev/null
openssl req -new -key "$T/ed.key" -subj "/CN=ed signer" -out "$T/ed.csr"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' > "$T/ext.cnf"
openssl x509 -req -in "$T/ed.csr" -CA "$T/pki/ca.pem" -CAkey "$T/pki/ca.key" -CAcreateserial -days 1 \
	-extfile "$T/ext.cnf" -out "$T/ed.pem" 2>/dev/null
"$FERRY" cmd sign --key "$T/ed.key" --cert "$T/ed.pem" --gateway gw-1 --op inventory.refresh > "$T/ed.jws"
hdr=$(cut -d. -f1 "$T/ed.jws")
while [ $((${#hdr} % 4)) -ne 0 ]; do hdr="$hdr="; done
echo -n "$hdr" | basenc --base64url -d | grep -q '"alg":"EdDSA"' || fail "not signed with EdDSA"
expect 0 "inventory.refresh" "$FERRY" cmd verify "$T/ed.jws" --ca "$T/pki/ca.pem" --gateway gw-1
# Deltas: a patch rebuilds the image exactly; the wrong base, a bad patch or
# a too-small limit is refused, and the output file is never written.
head -c 300000 /dev/urandom > "$T/old.bin"
{ head -c 100000 "$T/old.bin"; printf 'a new function'; tail -c +100100 "$T/old.bin"; } > "$T/new.bin"
expect 0 "p.fdl: [0-9]+ bytes, 0\.[0-9]+% of" "$FERRY" delta make "$T/old.bin" "$T/new.bin" -o "$T/p.fdl"
expect 0 "rebuilt.bin: $(stat -c %s "$T/new.bin") bytes, sha256 $(sha256sum "$T/new.bin" | cut -c1-64)" \
	"$FERRY" delta apply "$T/old.bin" "$T/p.fdl" -o "$T/rebuilt.bin"
cmp -s "$T/rebuilt.bin" "$T/new.bin" || fail "the rebuilt image differs"
expect 2 "nothing.bin: No such file" "$FERRY" delta apply "$T/nothing.bin" "$T/p.fdl" -o "$T/x.bin"
cp "$T/old.bin" "$T/other.bin" && head -c 16 /dev/zero | dd of="$T/other.bin" bs=1 seek=5 conv=notrunc 2>/dev/null
! cmp -s "$T/old.bin" "$T/other.bin" || fail "other.bin is old.bin"
expect 1 "digest_mismatch: the base has SHA-256 [0-9a-f]{64}; this delta was made from" \
	"$FERRY" delta apply "$T/other.bin" "$T/p.fdl" -o "$T/x.bin"
expect 1 "size_mismatch: the delta makes a [0-9]+-byte image; at most 1000 allowed" \
	"$FERRY" delta apply "$T/old.bin" "$T/p.fdl" -o "$T/x.bin" --max-size 1000
head -c 120 "$T/p.fdl" > "$T/cut.fdl"
expect 1 "malformed: the (diff|extra) stream runs past the end of the patch" \
	"$FERRY" delta apply "$T/old.bin" "$T/cut.fdl" -o "$T/x.bin"
[ ! -e "$T/x.bin" ] || fail "a refused delta wrote its output"
expect 2 "give two files and -o OUT" "$FERRY" delta make "$T/old.bin" -o "$T/x.fdl"
# Encryption: two components of one file share one ciphertext and one key;
# encrypt with delta_from, or a misspelt encrypt, is refused by name;
# --keys goes with --wrap-key-for, which wants a key-agreement certificate.
head -c 100000 /dev/urandom > "$T/fw.bin"
enc_spec() { # enc_spec EXTRA: two components of fw.bin, the second with EXTRA
	printf 'sequence: 1\ncomponents:\n'
	for n in a b; do
		printf '  - name: %s\n    type: firmware\n    adapter: x\n    target: {vendor_id: v, class_id: %s}\n' "$n" "$n"
		printf '    version: 1.0.0\n    format: raw\n    file: fw.bin\n    encrypt: true\n'
	done
	[ -z "${1:-}" ] || printf '    %s\n' "$1"
}
enc_spec > "$T/enc.yaml"
expect 0 "content keys of its 2 encrypted components written to $T/enc.jws.keys" \
	"$FERRY" manifest sign "$T/enc.yaml" --key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/enc.jws"
"$FERRY" manifest verify "$T/enc.jws" --ca "$T/pki/ca.pem" > "$T/enc.json"
[ "$(grep -c "\"sha256\": \"$(sha256sum "$T/fw.bin.fenc" | cut -c1-64)\"" "$T/enc.json")" = 2 ] ||
	fail "the two components do not name the one ciphertext"
ka=$(grep -o '"a":"[^"]*"' "$T/enc.jws.keys" | cut -d'"' -f4)
kb=$(grep -o '"b":"[^"]*"' "$T/enc.jws.keys" | cut -d'"' -f4)
[ -n "$ka" ] && [ "$ka" = "$kb" ] || fail "the two components have different keys for one ciphertext"
enc_spec "delta_from: [fw.bin]" > "$T/enc2.yaml"
expect 1 "components\[1\]: an encrypted component takes no delta_from" \
	"$FERRY" manifest sign "$T/enc2.yaml" --key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
enc_spec "encrpyt: true" > "$T/enc3.yaml"
expect 1 "enc3.yaml:[0-9]+: components\[1\].encrpyt: not a key of a manifest spec" \
	"$FERRY" manifest sign "$T/enc3.yaml" --key "$T/pki/manifest-signer.key" --cert "$T/pki/manifest-signer.pem" -o "$T/x.jws"
expect 2 "--keys and --wrap-key-for go together" "$FERRY" cmd sign --op update.download --gateway gw-1 --update u \
	--link a=https://h/a --keys "$T/enc.jws.keys" --key "$T/pki/cmd-signer.key" --cert "$T/pki/cmd-signer.pem"
expect 2 "not a key-agreement certificate" "$FERRY" cmd sign --op update.download --gateway gw-1 --update u \
	--link a=https://h/a --keys "$T/enc.jws.keys" --wrap-key-for "$T/pki/gw-gw-1.pem" \
	--key "$T/pki/cmd-signer.key" --cert "$T/pki/cmd-signer.pem"
echo "ok: ferry CLI"
