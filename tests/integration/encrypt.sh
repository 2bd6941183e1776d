#!/usr/bin/env bash
# Encrypted images through the real ferryd and nginx (docs/encryption.md):
# `ferry manifest sign --encrypt` encrypts the image and keeps its content
# key; `ferry cmd sign --wrap-key-for` wraps the key for this gateway's
# key-agreement certificate (the one its inventory publishes); ferryd
# fetches the ciphertext, unwraps the key, decrypts into its store and
# installs the plaintext.  Refused, with nothing installed: a key wrapped
# for another gateway, a JWE with another algorithm, a ciphertext whose
# chunks were swapped or cut on the file host.  A SIGKILL while ferryd
# decrypts (held there by a full disk) ends, after the restart, with the
# image decrypted once from the start and nothing left over.
# The state dir is a small tmpfs (root, as in CI), so the disk can fill.
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_SLOW_RATE=300k
world_up "${1:?usage: encrypt.sh BUILD_DIR}"
state_on_tmpfs 8m
start_ferryd
u="https://127.0.0.1:$W_HTTPS_PORT"
sodium() { grep -c 'libsodium\.so' /proc/"$W_FERRYD_PID"/maps || true; }
[ "$(sodium)" -eq 0 ] || fail "ferryd maps libsodium before any encrypted image"

# spec_enc NAME SEQ VERSION BYTES: a random image www/NAME-app.bin in an
# encrypted spec, signed to $W/NAME.jws (keys in $W/NAME.jws.keys)
spec_enc() {
	head -c "$4" /dev/urandom > "$W/www/$1-app.bin"
	cat > "$W/$1.yaml" <<YAML
sequence: $2
components:
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$3"
    format: file
    file: www/$1-app.bin
    encrypt: true
YAML
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$1.jws" > /dev/null || fail "$1: manifest sign failed"
}
sha() { sha256sum "$1" | cut -c1-64; }
wrap_for() { echo "--keys $W/$1.jws.keys --wrap-key-for $W/pki/kek-$2.pem"; }

# 1.0.0, encrypted, for this gateway
spec_enc e1 1 1.0.0 300000
ct="$W/www/e1-app.bin.fenc"
[ -f "$ct" ] || fail "manifest sign --encrypt did not write the ciphertext beside the image"
[ "$(stat -c %a "$W/e1.jws.keys")" = 600 ] || fail "the keys file is not mode 0600"
cmp -s "$ct" "$W/www/e1-app.bin" && fail "the .fenc file is the plaintext"
"$W_FERRY" manifest verify "$W/e1.jws" --ca "$W/pki/ca.pem" > "$W/e1.json"
grep -q '"format": "ferry-enc-1"' "$W/e1.json" && grep -q "\"sha256\": \"$(sha "$ct")\"" "$W/e1.json" &&
	grep -q "\"size\": $(stat -c %s "$ct")" "$W/e1.json" && grep -q "\"sha256\": \"$(sha "$W/www/e1-app.bin")\"" "$W/e1.json" ||
	fail "the manifest does not give both digests and sizes: $(cat "$W/e1.json")"
# shellcheck disable=SC2046
cmd update.deploy u-e1 --manifest "$W/e1.jws" --link "app-bin=$u/e1-app.bin.fenc" $(wrap_for e1 gw-1)
[ "$(outcome u-e1 app-bin)" = installed ] || fail "u-e1 did not install: $(grep -F u-e1 "$W/mqtt.log" | tail -n 3)"
cmp -s "$W/www/e1-app.bin" "$W/target/app.bin" || fail "app.bin is not the decrypted image"
grep -F '"update_id":"u-e1"' "$W/mqtt.log" | grep -F '"stage":"downloading"' |
	grep -q "\"total\":$(stat -c %s "$ct")}" || fail "the download was not the ciphertext"
grep -q "u-e1/app-bin: decrypted 300000 bytes into the store" "$W/ferryd.log" || fail "no decryption in the log"
[ "$(sodium)" -gt 0 ] || fail "ferryd decrypted without libsodium mapped"
[ -e "$W/state/store/$(sha "$W/www/e1-app.bin")" ] || fail "the plaintext is not in the store"
[ ! -e "$W/state/store/$(sha "$ct")" ] && [ ! -e "$W/state/store/partial/$(sha "$ct")" ] ||
	fail "the ciphertext stayed in the store"
[ "$(stat -c %a "$W/state/store")" = 700 ] || fail "the store is not 0700"
echo "ok: an encrypted image, its key wrapped for this gateway, decrypted into the store and installed"

# the inventory publishes the certificate keys are wrapped for
pem=$(sed -n '2p' "$W/pki/kek-gw-1.pem")
grep -F "ferry/v1/gw-1/inventory " "$W/mqtt.log" | tail -n 1 | grep -F '"decryption_cert":"-----BEGIN CERTIFICATE-----' |
	grep -qF "$pem" || fail "the inventory has no decryption_cert of kek-gw-1"
echo "ok: the inventory publishes the gateway's key-agreement certificate"

# wrapped for another gateway: refused, nothing moves
spec_enc e2 2 1.0.1 200000
# shellcheck disable=SC2046
cmd update.deploy u-e2 --manifest "$W/e2.jws" --link "app-bin=$u/e2-app.bin.fenc" $(wrap_for e2 gw-2)
wait_mqtt '"update_id":"u-e2","result":"refused","reason":"decrypt_failed"' 10
grep -F '"update_id":"u-e2","result":"refused"' "$W/mqtt.log" | grep -q "wrapped for another key" ||
	fail "decrypt_failed does not say why"
cmp -s "$W/www/e1-app.bin" "$W/target/app.bin" || fail "a refused update changed app.bin"
echo "ok: a key wrapped for another gateway is refused with decrypt_failed"

# a JWE with another algorithm (made by the jose CLI for this gateway's key)
b64u() { xxd -r -p | base64 -w0 | tr '+/' '-_' | tr -d '='; }
pub=$(openssl ec -in "$W/pki/kek-gw-1.key" -noout -text 2>/dev/null | sed -n '/^pub:/,/^ASN1/p' | grep '^ ' | tr -d ' :\n')
printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s"}' "$(echo "${pub:2:64}" | b64u)" "$(echo "${pub:66:64}" | b64u)" \
	> "$W/kek-pub.jwk"
head -c 32 /dev/urandom > "$W/k.bin"
jose jwe enc -I "$W/k.bin" -k "$W/kek-pub.jwk" -i '{"protected":{"enc":"A128GCM"}}' \
	-r '{"header":{"alg":"ECDH-ES+A128KW"}}' -c -o "$W/a128.jwe" || fail "jose jwe enc failed"
cmd update.deploy u-e3 --manifest "$W/e2.jws" --link "app-bin=$u/e2-app.bin.fenc" \
	--wrapped-key "app-bin=$(cat "$W/a128.jwe")"
wait_mqtt '"update_id":"u-e3","result":"refused","reason":"unsupported"' 10
grep -F '"update_id":"u-e3","result":"refused"' "$W/mqtt.log" | grep -q "alg ECDH-ES+A128KW with enc A128GCM" ||
	fail "the refusal does not name the algorithm"
# no key at all for an encrypted component
cmd update.deploy u-e3b --manifest "$W/e2.jws" --link "app-bin=$u/e2-app.bin.fenc"
wait_mqtt '"update_id":"u-e3b","result":"refused","reason":"malformed"' 10
cmp -s "$W/www/e1-app.bin" "$W/target/app.bin" || fail "a refused update changed app.bin"
echo "ok: a JWE with another algorithm, or no key, is refused"

# ciphertexts damaged on the file host: the chunks swapped, the last cut off
chunk=65553 # 65536 bytes and the 17 of each chunk's tag and MAC
spec_enc e4 4 1.0.2 200000
c="$W/www/e4-app.bin.fenc"
part() { dd if="$c" bs=1 skip="$1" count="$2" status=none; } # part OFFSET COUNT
{ part 0 32; part $((32 + chunk)) "$chunk"; part 32 "$chunk"; part $((32 + 2 * chunk)) 999999; } > "$W/www/e4-swapped.fenc"
[ "$(stat -c %s "$W/www/e4-swapped.fenc")" = "$(stat -c %s "$c")" ] || fail "the swap changed the size"
# shellcheck disable=SC2046
cmd update.deploy u-e4 --manifest "$W/e4.jws" --link "app-bin=$u/e4-swapped.fenc" $(wrap_for e4 gw-1)
[ "$(outcome u-e4 app-bin)" = failed ] || fail "u-e4 with swapped chunks did not fail"
grep -F '"update_id":"u-e4"' "$W/mqtt.log" | grep -q '"reason":"digest_mismatch"' || fail "u-e4 failed for another reason"
spec_enc e5 5 1.0.3 200000
dd if="$W/www/e5-app.bin.fenc" of="$W/www/e5-cut.fenc" bs=1 count=$((32 + 3 * chunk)) status=none
# shellcheck disable=SC2046
cmd update.deploy u-e5 --manifest "$W/e5.jws" --link "app-bin=$u/e5-cut.fenc" $(wrap_for e5 gw-1)
[ "$(outcome u-e5 app-bin)" = failed ] || fail "u-e5 with its last chunk cut did not fail"
grep -F '"update_id":"u-e5"' "$W/mqtt.log" | grep -q '"reason":"size_mismatch"' || fail "u-e5 failed for another reason"
cmp -s "$W/www/e1-app.bin" "$W/target/app.bin" || fail "a damaged ciphertext changed app.bin"
! grep -qE "u-e[45]/app-bin: decrypted" "$W/ferryd.log" || fail "a damaged ciphertext was decrypted"
echo "ok: swapped or cut ciphertext is refused before it is decrypted, and nothing is installed"

# SIGKILL while decrypting: the disk fills during the download; room for
# the rest of the ciphertext and part of the plaintext is made, so the
# decryption waits for room; then the kill, the room, the restart
spec_enc e6 6 1.0.4 1500000
ct="$W/www/e6-app.bin.fenc"
mark=$(wc -l < "$W/ferryd.log")
# shellcheck disable=SC2046
cmd update.deploy u-e6 --manifest "$W/e6.jws" --link "app-bin=$u/slow/e6-app.bin.fenc" $(wrap_for e6 gw-1)
wait_mqtt '"update_id":"u-e6","component":"app-bin","stage":"downloading"' 20 3
fill_state
wait_log "waiting for room"
part="$W/state/store/partial/$(sha "$ct")"
[ -f "$part" ] || fail "no partial ciphertext while the download waits"
rest=$(($(stat -c %s "$ct") - $(stat -c %s "$part")))
truncate -s -$((rest + 500000)) "$W/state/filler"
wait_log "u-e6/app-bin: decrypting: "
kill9_ferryd
! grep -qF '"update_id":"u-e6","component":"app-bin","stage":"downloaded"' "$W/mqtt.log" ||
	fail "the kill came after the image was in"
[ -f "$W/state/store/partial/$(sha "$W/www/e6-app.bin")" ] || fail "no half-decrypted image at the kill"
rm -f "$W/state/filler"
start_ferryd
[ "$(outcome u-e6 app-bin)" = installed ] || fail "u-e6 did not install after the kill"
cmp -s "$W/www/e6-app.bin" "$W/target/app.bin" || fail "app.bin is not 1.0.4 after the kill"
[ "$(grep -c "u-e6/app-bin: decrypted" "$W/ferryd.log")" -eq 1 ] || fail "u-e6 was not decrypted once"
for f in "$ct" "$W/www/e6-app.bin"; do
	[ ! -e "$W/state/store/partial/$(sha "$f")" ] || fail "a partial file of u-e6 stayed: $f"
done
[ ! -e "$W/state/store/$(sha "$ct")" ] || fail "the ciphertext of u-e6 stayed in the store"
echo "ok: SIGKILL while decrypting: decrypted again from the start after the restart, nothing left over"

# the operator's way: ferry deploy encrypts, publishes only the ciphertext
# and wraps the key for the decryption_cert gw-1's inventory publishes
printf 'secret: 7\n' > "$W/www/e7.conf"
cat > "$W/e7.yaml" <<YAML
sequence: 7
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: 7.0.0
    format: file
    file: www/e7.conf
    encrypt: true
YAML
"$W_FERRY" deploy "$W/e7.yaml" --gateway gw-1 --update u-e7 > "$W/deploy.out" 2>&1 ||
	fail "ferry deploy of an encrypted spec failed: $(cat "$W/deploy.out")"
cmp -s "$W/www/e7.conf" "$W/target/app.conf" || fail "app.conf is not the decrypted e7.conf"
ct=$(sha "$W/www/e7.conf.fenc")
[ -f "$W/www/files/$ct" ] && ! grep -q "secret: 7" "$W/www/files/$ct" ||
	fail "the file host does not have (only) the ciphertext"
[ ! -e "$W/www/files/$(sha "$W/www/e7.conf")" ] || fail "ferry deploy published the plaintext"
# a gateway whose inventory has no decryption_cert is sent nothing
"$W_FERRY" deploy "$W/e7.yaml" --gateway gw-absent --update u-e8 > "$W/deploy.out" 2>&1 &&
	fail "ferry deploy sent an encrypted update to a gateway without a decryption_cert"
grep -q "gw-absent publishes no decryption_cert" "$W/deploy.out" || fail "deploy does not say why: $(cat "$W/deploy.out")"
echo "ok: ferry deploy encrypts, publishes only ciphertext and wraps the key for each gateway's certificate"
