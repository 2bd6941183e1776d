#!/usr/bin/env bash
# Delta images through the real ferryd and nginx (docs/delta.md): the spec's
# delta_from makes the patch, the gateway fetches only the patch, rebuilds
# the image from the file it has installed and installs it; a patch whose
# base the gateway does not hold is refused with base_missing, or passed
# over for the whole image when the command links that too; a damaged patch
# gives way to the whole image; a link that names no delta is refused.
# For an MCU, the base is the image ferryd last pushed to it, kept in the
# store while the MCU runs it: not once it runs a newer one, nor another
# build of the same version (its image hash tells).  A SIGKILL while the
# patch downloads ends with the image installed and nothing left over.  One
# update to two MCUs on different bases and a gateway file fetches one
# patch for each and nothing else.  A device whose base was lost gets the
# whole image when it is linked; a well-formed patch whose output is not
# the manifest's image fails the update before anything is pushed.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: delta.sh BUILD_DIR}" && pwd)
SIM="$BUILD/tests/sim/smp_device"
W_EXTRA_ADAPTERS=$(serial_smp_conf ttyMCU=sensor-v2=sensor-mcu ttyAUX=aux-v1=aux-mcu)
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$BUILD/adapters/serial-smp.so" "$W/plugins/"
"$SIM" --link "$W/ttyMCU" --version 1.0.0 >> "$W/sim.log" 2>&1 &
SIM_PID=$!
"$SIM" --link "$W/ttyAUX" --version 2.0.0 >> "$W/sim-aux.log" 2>&1 &
AUX_PID=$!
trap 'kill "$SIM_PID" "$AUX_PID" 2>/dev/null; world_down' EXIT
for _ in $(seq 1 50); do [ -e "$W/ttyMCU" ] && [ -e "$W/ttyAUX" ] && break; sleep 0.1; done
start_ferryd
wait_mqtt "ferry/v1/gw-1/inventory" 10
u="https://127.0.0.1:$W_HTTPS_PORT"

# 1.0.0, whole
make_update d1 1 1.0.0 1.0.0 300000
# shellcheck disable=SC2046
cmd update.deploy u-d1 --manifest "$W/d1.jws" $(links_for d1)
[ "$(outcome u-d1 app-bin)" = installed ] || fail "u-d1 did not install"
base=$(sha256sum "$W/www/d1-app.bin" | cut -c1-64)

# spec_for NAME SEQ VERSION FILE FROM: a spec of app-bin with delta_from FROM, signed
spec_for() {
	cat > "$W/$1.yaml" <<YAML
sequence: $2
components:
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$3"
    format: file
    file: $4
    delta_from: [$5]
YAML
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$1.jws" > /dev/null
}

# 1.0.1: a few bytes differ; only the delta is linked
cp "$W/www/d1-app.bin" "$W/www/d2-app.bin"
printf 'version 1.0.1' | dd of="$W/www/d2-app.bin" bs=1 seek=5000 conv=notrunc 2> /dev/null
spec_for d2 2 1.0.1 www/d2-app.bin www/d1-app.bin
patch="$W/www/d2-app.bin.from-${base:0:12}.fdl"
[ -f "$patch" ] || fail "manifest sign did not write the patch beside the image"
psize=$(stat -c %s "$patch")
[ "$psize" -lt 3000 ] || fail "a 13-byte change made a $psize-byte patch"
"$W_FERRY" manifest verify "$W/d2.jws" --ca "$W/pki/ca.pem" > "$W/d2.json"
grep -q "\"base_sha256\": \"$base\"" "$W/d2.json" && grep -q "\"size\": $psize" "$W/d2.json" &&
	grep -q '"format": "ferry-delta-1"' "$W/d2.json" || fail "the manifest's deltas are wrong: $(cat "$W/d2.json")"
cmd update.deploy u-d2 --manifest "$W/d2.jws" --link "app-bin@$base=$u/d2-app.bin.from-${base:0:12}.fdl"
[ "$(outcome u-d2 app-bin)" = installed ] || fail "u-d2 did not install: $(grep -F u-d2 "$W/mqtt.log" | tail -n 3)"
cmp -s "$W/www/d2-app.bin" "$W/target/app.bin" || fail "app.bin is not 1.0.1"
# only the patch crossed the network: its bytes are the download's total
grep -F '"update_id":"u-d2"' "$W/mqtt.log" | grep -F '"stage":"downloading"' |
	grep -q "\"total\":$psize}" || fail "the download was not the $psize-byte patch"
grep -q "u-d2/app-bin: rebuilt from a $psize-byte delta" "$W/ferryd.log" || fail "no rebuild in the log"
psha=$(sha256sum "$patch" | cut -c1-64)
[ ! -e "$W/state/store/$psha" ] && [ ! -e "$W/state/store/partial/$psha" ] || fail "the patch stayed in the store"
echo "ok: a 13-byte change crossed as a $psize-byte delta and installed"

# 1.0.2 from an image the gateway never had: base_missing, and nothing moves
head -c 300000 /dev/urandom > "$W/www/other.bin"
cp "$W/www/d2-app.bin" "$W/www/d3-app.bin"
printf 'version 1.0.2' | dd of="$W/www/d3-app.bin" bs=1 seek=9000 conv=notrunc 2> /dev/null
spec_for d3 3 1.0.2 www/d3-app.bin www/other.bin
other=$(sha256sum "$W/www/other.bin" | cut -c1-64)
cmd update.deploy u-d3 --manifest "$W/d3.jws" --link "app-bin@$other=$u/d3-app.bin.from-${other:0:12}.fdl"
wait_mqtt '"update_id":"u-d3","result":"refused","reason":"base_missing"' 10
grep -F '"update_id":"u-d3","result":"refused"' "$W/mqtt.log" | grep -q "none of the 1 base" ||
	fail "base_missing does not say what is missing"
cmp -s "$W/www/d2-app.bin" "$W/target/app.bin" || fail "a refused update changed app.bin"

# the same with the whole image linked too: the whole image it is
cmd update.deploy u-d4 --manifest "$W/d3.jws" --link "app-bin@$other=$u/d3-app.bin.from-${other:0:12}.fdl" \
	--link "app-bin=$u/d3-app.bin"
[ "$(outcome u-d4 app-bin)" = installed ] || fail "u-d4 did not install"
cmp -s "$W/www/d3-app.bin" "$W/target/app.bin" || fail "app.bin is not 1.0.2"
grep -F '"update_id":"u-d4"' "$W/mqtt.log" | grep -F '"stage":"downloading"' | grep -q '"total":300000}' ||
	fail "u-d4 did not fetch the whole image"
echo "ok: without the base: base_missing, or the whole image when it is linked"

# a damaged patch, with the whole image linked: the whole image
cp "$W/www/d3-app.bin" "$W/www/d5-app.bin"
printf 'version 1.0.3' | dd of="$W/www/d5-app.bin" bs=1 seek=100 conv=notrunc 2> /dev/null
base=$(sha256sum "$W/www/d3-app.bin" | cut -c1-64)
spec_for d5 5 1.0.3 www/d5-app.bin www/d3-app.bin
bad="$W/www/d5-app.bin.from-${base:0:12}.fdl"
# 16 zero bytes: a byte written by chance could be the one already there
head -c 16 /dev/zero | dd of="$bad" bs=1 seek=100 conv=notrunc 2> /dev/null
cmd update.deploy u-d5 --manifest "$W/d5.jws" --link "app-bin@$base=$u/d5-app.bin.from-${base:0:12}.fdl" \
	--link "app-bin=$u/d5-app.bin"
[ "$(outcome u-d5 app-bin)" = installed ] || fail "u-d5 did not install"
cmp -s "$W/www/d5-app.bin" "$W/target/app.bin" || fail "app.bin is not 1.0.3"
grep -q "u-d5/app-bin: the delta did not give the image (SHA-256 of the download differs" "$W/ferryd.log" ||
	fail "the damaged patch was not noticed: $(grep u-d5 "$W/ferryd.log" | tail -n 3)"
echo "ok: a damaged patch gives way to the whole image"

# a link that names no delta of the manifest
cp "$W/www/d5-app.bin" "$W/www/d6-app.bin"
printf 'version 1.0.4' | dd of="$W/www/d6-app.bin" bs=1 seek=200 conv=notrunc 2> /dev/null
spec_for d6 6 1.0.4 www/d6-app.bin www/d5-app.bin
cmd update.deploy u-d6 --manifest "$W/d6.jws" --link "app-bin@$other=$u/x.fdl" --link "app-bin=$u/d6-app.bin"
wait_mqtt '"update_id":"u-d6","result":"refused","reason":"malformed"' 10
grep -F '"update_id":"u-d6","result":"refused"' "$W/mqtt.log" | grep -q "names no delta of component app-bin" ||
	fail "the stray delta link is not named"
echo "ok: a link to a delta the manifest does not list is refused"

# An MCU: 1.1.0 whole, then 1.2.0 as a delta from the image ferryd pushed
# mcu_spec NAME SEQ VERSION [FROM]
mcu_spec() {
	cat > "$W/$1.yaml" <<YAML
sequence: $2
components:
  - name: sensor-mcu
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: sensor-v2}
    version: "$3"
    format: mcuboot
    file: www/$1-mcu.bin
${4:+    delta_from: [$4]}
YAML
	"$W_FERRY" manifest sign "$W/$1.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$1.jws" > /dev/null
}
"$SIM" --make-image 1.1.0 20000 "$W/www/m1-mcu.bin"
mcu_spec m1 7 1.1.0
cmd update.deploy u-m1 --manifest "$W/m1.jws" --link "sensor-mcu=$u/m1-mcu.bin"
[ "$(outcome u-m1 sensor-mcu)" = installed ] || fail "u-m1 did not install"
"$SIM" --make-image 1.2.0 20000 "$W/www/m2-mcu.bin"
mcu_spec m2 8 1.2.0 www/m1-mcu.bin
mbase=$(sha256sum "$W/www/m1-mcu.bin" | cut -c1-64)
[ -f "$W/state/store/$mbase" ] || fail "the image the MCU runs was not kept as its base"
cmd update.deploy u-m2 --manifest "$W/m2.jws" --link "sensor-mcu@$mbase=$u/m2-mcu.bin.from-${mbase:0:12}.fdl"
[ "$(outcome u-m2 sensor-mcu)" = installed ] || fail "u-m2 did not install: $(grep -F u-m2 "$W/mqtt.log" | tail -n 2)"
grep -q "u-m2/sensor-mcu: rebuilt from a [0-9]*-byte delta" "$W/ferryd.log" || fail "u-m2 was not rebuilt from the delta"
wait_mqtt '{"name":"sensor-mcu","version":"1.2.0"}' 15
# once the journal says u-m2's images were let go of, 1.1.0 is gone: the MCU
# was given a newer image, so it is no base any more
wait_pruned u-m2
[ ! -e "$W/state/store/$mbase" ] || fail "the image the MCU no longer runs stayed in the store"
[ -f "$W/state/store/$(sha256sum "$W/www/m2-mcu.bin" | cut -c1-64)" ] || fail "the image the MCU runs was not kept"
echo "ok: an MCU's update rebuilt from the image ferryd last pushed to it"

# the MCU runs 1.2.0 now: the 1.1.0 image is no base any more
"$SIM" --make-image 1.3.0 20000 "$W/www/m3-mcu.bin"
mcu_spec m3 9 1.3.0 www/m1-mcu.bin
cmd update.deploy u-m3 --manifest "$W/m3.jws" --link "sensor-mcu@$mbase=$u/m3-mcu.bin.from-${mbase:0:12}.fdl"
wait_mqtt '"update_id":"u-m3","result":"refused","reason":"base_missing"' 10
echo "ok: an image the MCU no longer runs is no base"

# the MCU runs another build of 1.2.0 than the one ferryd gave it (its
# image hash says so): the kept image is no base for it
kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null || true
rm -f "$W/ttyMCU"
"$SIM" --link "$W/ttyMCU" --version 1.2.0 >> "$W/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 50); do [ -e "$W/ttyMCU" ] && break; sleep 0.1; done
m2base=$(sha256sum "$W/www/m2-mcu.bin" | cut -c1-64)
[ -f "$W/state/store/$m2base" ] || fail "the image ferryd gave the MCU is not kept"
"$SIM" --make-image 1.3.0 20000 "$W/www/m4-mcu.bin"
mcu_spec m4 10 1.3.0 www/m2-mcu.bin
cmd update.deploy u-m4 --manifest "$W/m4.jws" --link "sensor-mcu@$m2base=$u/m4-mcu.bin.from-${m2base:0:12}.fdl"
wait_mqtt '"update_id":"u-m4","result":"refused","reason":"base_missing"' 20
# the same with the whole image linked too: the MCU gets the whole image
cmd update.deploy u-m5 --manifest "$W/m4.jws" --link "sensor-mcu@$m2base=$u/m4-mcu.bin.from-${m2base:0:12}.fdl" \
	--link "sensor-mcu=$u/m4-mcu.bin"
[ "$(outcome u-m5 sensor-mcu)" = installed ] || fail "u-m5 did not install from the whole image"
grep -F '"update_id":"u-m5"' "$W/mqtt.log" | grep -F '"stage":"downloading"' |
	grep -q "\"total\":$(stat -c %s "$W/www/m4-mcu.bin")}" || fail "u-m5 did not fetch the whole image"
wait_mqtt '{"name":"sensor-mcu","version":"1.3.0"}' 15
echo "ok: a kept image whose hash is not the one the MCU runs is no base; with the whole image linked, that goes"

# SIGKILL while the patch is on its way: after the restart the delta is
# fetched and applied again, and nothing of the first try stays
base=$(sha256sum "$W/target/app.bin" | cut -c1-64)
cp "$W/target/app.bin" "$W/www/d7-app.bin"
head -c 150000 /dev/urandom | dd of="$W/www/d7-app.bin" bs=1 seek=100000 conv=notrunc 2> /dev/null
spec_for d7 11 1.0.5 www/d7-app.bin www/d5-app.bin
[ "$(sha256sum "$W/www/d5-app.bin" | cut -c1-64)" = "$base" ] || fail "app.bin is not 1.0.3 before u-d7"
cmd update.deploy u-d7 --manifest "$W/d7.jws" --link "app-bin@$base=$u/slow/d7-app.bin.from-${base:0:12}.fdl"
wait_mqtt '"update_id":"u-d7","component":"app-bin","stage":"downloading"' 20 3 # some of the patch is in
kill9_ferryd
! grep -qF '"update_id":"u-d7","component":"app-bin","stage":"downloaded"' "$W/mqtt.log" ||
	fail "the kill came after the patch was in"
start_ferryd
[ "$(outcome u-d7 app-bin)" = installed ] || fail "u-d7 did not install after the kill"
cmp -s "$W/www/d7-app.bin" "$W/target/app.bin" || fail "app.bin is not 1.0.5 after the kill"
[ "$(grep -c "u-d7/app-bin: rebuilt from a" "$W/ferryd.log")" -eq 1 ] || fail "u-d7 was not rebuilt once"
[ -z "$(find "$W/state/store/partial" -type f)" ] || fail "a partial file stayed: $(ls "$W/state/store/partial")"
echo "ok: SIGKILL while the patch downloads: fetched and applied again after the restart"

# One update, three deltas from three different bases: two MCUs (each runs
# an image ferryd gave it) and the gateway's file.  Only the patches cross.
# (with a seed, successive versions share their payload, as real builds nearly do)
"$SIM" --make-image 1.4.0 20000 "$W/www/t1-mcu.bin" 14
"$SIM" --make-image 2.1.0 24000 "$W/www/t1-aux.bin" 21
mcu_component() { # mcu_component NAME CLASS VERSION FILE [FROM]
	printf '  - name: %s\n    type: firmware\n    adapter: serial-smp\n    target: {vendor_id: acme, class_id: %s}\n' "$1" "$2"
	printf '    version: "%s"\n    format: mcuboot\n    file: %s\n' "$3" "$4"
	[ -z "${5:-}" ] || printf '    delta_from: [%s]\n' "$5"
}
{ echo "sequence: 12"; echo "components:"; mcu_component sensor-mcu sensor-v2 1.4.0 www/t1-mcu.bin
	mcu_component aux-mcu aux-v1 2.1.0 www/t1-aux.bin; } > "$W/t1.yaml"
"$W_FERRY" manifest sign "$W/t1.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/t1.jws" > /dev/null
cmd update.deploy u-t1 --manifest "$W/t1.jws" --link "sensor-mcu=$u/t1-mcu.bin" --link "aux-mcu=$u/t1-aux.bin"
[ "$(outcome u-t1 sensor-mcu)" = installed ] && [ "$(outcome u-t1 aux-mcu)" = installed ] || fail "u-t1 did not install"
"$SIM" --make-image 1.5.0 20000 "$W/www/t2-mcu.bin" 14
"$SIM" --make-image 2.2.0 24000 "$W/www/t2-aux.bin" 21
cp "$W/www/d7-app.bin" "$W/www/t2-app.bin"
printf 'version 1.0.6' | dd of="$W/www/t2-app.bin" bs=1 seek=777 conv=notrunc 2> /dev/null
{ echo "sequence: 13"; echo "components:"
	mcu_component sensor-mcu sensor-v2 1.5.0 www/t2-mcu.bin www/t1-mcu.bin
	mcu_component aux-mcu aux-v1 2.2.0 www/t2-aux.bin www/t1-aux.bin
	printf '  - name: app-bin\n    type: application\n    adapter: self\n    target: {vendor_id: acme, class_id: gateway}\n'
	printf '    version: "1.0.6"\n    format: file\n    file: www/t2-app.bin\n    delta_from: [www/d7-app.bin]\n'
} > "$W/t2.yaml"
"$W_FERRY" manifest sign "$W/t2.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/t2.jws" > /dev/null
links=() total=0
for c in "sensor-mcu t1-mcu.bin t2-mcu.bin" "aux-mcu t1-aux.bin t2-aux.bin" "app-bin d7-app.bin t2-app.bin"; do
	read -r name from to <<< "$c"
	b=$(sha256sum "$W/www/$from" | cut -c1-64)
	links+=(--link "$name@$b=$u/$to.from-${b:0:12}.fdl")
	psize=$(stat -c %s "$W/www/$to.from-${b:0:12}.fdl")
	[ "$psize" -lt "$(stat -c %s "$W/www/$to")" ] || fail "$name: the patch is not smaller than the image"
	eval "size_$(echo "$name" | tr - _)=$psize"
done
cmd update.deploy u-t2 --manifest "$W/t2.jws" "${links[@]}"
for c in sensor-mcu aux-mcu app-bin; do
	[ "$(outcome u-t2 $c)" = installed ] || fail "u-t2: $c did not install: $(grep -F u-t2 "$W/mqtt.log" | tail -n 2)"
	var="size_$(echo "$c" | tr - _)"
	grep -q "u-t2/$c: rebuilt from a ${!var}-byte delta" "$W/ferryd.log" || fail "u-t2: $c was not rebuilt from its delta"
	grep -F "\"update_id\":\"u-t2\",\"component\":\"$c\",\"stage\":\"downloading\"" "$W/mqtt.log" |
		grep -q "\"total\":${!var}}" || fail "u-t2: $c fetched more than its ${!var}-byte patch"
done
cmp -s "$W/www/t2-app.bin" "$W/target/app.bin" || fail "u-t2: app.bin is not 1.0.6"
wait_mqtt '{"name":"sensor-mcu","version":"1.5.0"}' 15
wait_mqtt '{"name":"aux-mcu","version":"2.2.0"}' 15
echo "ok: one update, two MCUs on different bases and a gateway file: one patch each, nothing else fetched"

# A delta that is well formed and is the patch its manifest names, but
# whose output is not the manifest's image (a signer's tool went wrong; the
# manifest is signed by hand with jose and the real signer's key): the
# rebuilt image is checked before anything is pushed, and the update fails
# with digest_mismatch; app.bin is left as it was
cp "$W/www/t2-app.bin" "$W/www/x-app.bin"
cp "$W/www/t2-app.bin" "$W/www/y-app.bin"
printf 'build x' | dd of="$W/www/x-app.bin" bs=1 seek=300 conv=notrunc 2> /dev/null
printf 'build y' | dd of="$W/www/y-app.bin" bs=1 seek=900 conv=notrunc 2> /dev/null
spec_for fx 14 1.0.7 www/x-app.bin www/t2-app.bin
spec_for fy 14 1.0.7 www/y-app.bin www/t2-app.bin
tb=$(sha256sum "$W/www/t2-app.bin" | cut -c1-64)
px="$W/www/x-app.bin.from-${tb:0:12}.fdl" py="$W/www/y-app.bin.from-${tb:0:12}.fdl"
"$W_FERRY" manifest verify "$W/fy.jws" --ca "$W/pki/ca.pem" > "$W/fy.json"
sed -i -e "s/$(sha256sum "$py" | cut -c1-64)/$(sha256sum "$px" | cut -c1-64)/" \
	-e "s/\"size\": $(stat -c %s "$py")\$/\"size\": $(stat -c %s "$px")/" "$W/fy.json"
grep -q "$(sha256sum "$px" | cut -c1-64)" "$W/fy.json" || fail "the forged payload does not name x's patch"
hexblock() { sed -n "/^$2/,/^[^ ]/p" "$1" | grep '^ ' | tr -d ' :\n'; }
b64u() { basenc --base64url -w0 | tr -d '='; }
openssl ec -in "$W/pki/manifest-signer.key" -text -noout 2> /dev/null > "$W/ms.txt"
d=$(hexblock "$W/ms.txt" priv:)
d=$(printf '%064s' "${d: -64}" | tr ' ' 0)
q=$(hexblock "$W/ms.txt" pub:)
printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s","d":"%s","alg":"ES256"}' \
	"$(echo -n "${q:2:64}" | tr a-f A-F | basenc --base16 -d | b64u)" \
	"$(echo -n "${q:66:64}" | tr a-f A-F | basenc --base16 -d | b64u)" \
	"$(echo -n "$d" | tr a-f A-F | basenc --base16 -d | b64u)" > "$W/ms.jwk"
x5c=$(openssl x509 -in "$W/pki/manifest-signer.pem" -outform DER | base64 -w0)
jose jws sig -I "$W/fy.json" -k "$W/ms.jwk" -c -o "$W/forged.jws" \
	-s "{\"protected\":{\"alg\":\"ES256\",\"typ\":\"ferry-manifest\",\"x5c\":[\"$x5c\"]}}" || fail "jose jws sig failed"
cmd update.deploy u-fx --manifest "$W/forged.jws" --link "app-bin@$tb=$u/x-app.bin.from-${tb:0:12}.fdl"
[ "$(outcome u-fx app-bin)" = failed ] || fail "u-fx did not fail: $(grep -F u-fx "$W/mqtt.log" | tail -n 2)"
grep -F '"update_id":"u-fx","component":"app-bin","stage":"failed"' "$W/mqtt.log" |
	grep -qF '"reason":"digest_mismatch","detail":"the rebuilt image has SHA-256' ||
	fail "u-fx: not digest_mismatch naming the rebuilt image"
cmp -s "$W/www/t2-app.bin" "$W/target/app.bin" || fail "u-fx changed app.bin"
! grep -qF '"update_id":"u-fx","component":"app-bin","device":"self","stage":"installing"' "$W/mqtt.log" ||
	fail "u-fx: something was pushed"
[ ! -e "$W/state/store/partial/$(sha256sum "$W/www/y-app.bin" | cut -c1-64)" ] || fail "u-fx: the wrong image stayed"
echo "ok: a delta whose output is not the manifest's image: digest_mismatch, nothing pushed"
