#!/usr/bin/env bash
# Refusals on `reply`, each with its reason, and proof that they change
# nothing: the journal's updates and the store stay as they were.
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_STORE_CAP=${W_STORE_CAP:-200000}
world_up "${1:?usage: refusals.sh BUILD_DIR}"
start_ferryd

snapshot() { (cd "$W/state" && find store -type f | sort; sqlite3 journal.db \
	"select id, state from updates order by id" 2>/dev/null || true) > "$1"; }

refused() { # refused UPDATE REASON
	wait_mqtt "\"update_id\":\"$1\",\"result\":\"refused\",\"reason\":\"$2\"" 10
}

# Install 1.0.0 so there is something to downgrade from.
make_update base 5 1.0.0 1.0.0 1000
# shellcheck disable=SC2046
cmd update.deploy u-base --manifest "$W/base.jws" $(links_for base)
wait_mqtt '"update_id":"u-base","component":"app-bin","stage":"installed"' 30
# the snapshot after the runner let go of u-base's images (the journal says
# when it has), so that only a refused command could change it
wait_pruned u-base
snapshot "$W/before"

make_update down 6 1.0.0 0.9.0 1000
cmd update.request u-down --manifest "$W/down.jws"
refused u-down downgrade

make_update stale 5 2.0.0 2.0.0 1000
cmd update.request u-stale --manifest "$W/stale.jws"
refused u-stale stale_sequence

make_update big 7 2.0.0 2.0.0 400000
cmd update.request u-big --manifest "$W/big.jws"
refused u-big insufficient_space

sed 's/class_id: gateway}/class_id: toaster}/' "$W/base.yaml" | sed 's/^sequence: 5/sequence: 8/' > "$W/nodev.yaml"
"$W_FERRY" manifest sign "$W/nodev.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/nodev.jws" > /dev/null
cmd update.request u-nodev --manifest "$W/nodev.jws"
refused u-nodev no_matching_device

sed 's/adapter: self/adapter: usb-dfu/; s/format: file/format: dfu/' "$W/base.yaml" | sed 's/^sequence: 5/sequence: 9/' > "$W/unsup.yaml"
"$W_FERRY" manifest sign "$W/unsup.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/unsup.jws" > /dev/null
cmd update.request u-unsup --manifest "$W/unsup.jws"
refused u-unsup unsupported

cmd update.check u-base
refused u-base wrong_stage

# Commands that must not be obeyed at all.
cmd update.cancel u-x --jti replay-1
wait_mqtt '"update_id":"u-x","result":"refused","reason":"unknown_update"' 10
cmd_raw "$W/last.jws"
refused u-x replayed

"$W_FERRY" cmd sign --op update.cancel --gateway gw-1 --update u-x --key "$W/pki/cmd-signer.key" \
	--cert "$W/pki/cmd-signer.pem" --nbf 1000000000 --exp 1000000600 > "$W/old.jws"
cmd_raw "$W/old.jws"
wait_mqtt '"jti":null,"result":"refused","reason":"expired"' 10
"$W_FERRY" cmd sign --op update.cancel --gateway gw-1 --update u-x --key "$W/pki/cmd-signer.key" \
	--cert "$W/pki/cmd-signer.pem" --nbf $(( $(date +%s) + 3600 )) --ttl 600 > "$W/later.jws"
cmd_raw "$W/later.jws"
wait_mqtt '"jti":null,"result":"refused","reason":"not_yet_valid"' 10
"$W_FERRY" cmd sign --op update.cancel --gateway gw-2 --update u-x --key "$W/pki/cmd-signer.key" \
	--cert "$W/pki/cmd-signer.pem" > "$W/other.jws"
cmd_raw "$W/other.jws"
wait_mqtt '"jti":null,"result":"refused","reason":"wrong_gateway"' 10
"$W_FERRY" pki init "$W/evil" > /dev/null
"$W_FERRY" cmd sign --op update.cancel --gateway gw-1 --update u-x --key "$W/evil/cmd-signer.key" \
	--cert "$W/evil/cmd-signer.pem" > "$W/evil.jws"
cmd_raw "$W/evil.jws"
wait_mqtt '"jti":null,"result":"refused","reason":"untrusted_signer"' 10
echo "garbage" > "$W/garbage"
cmd_raw "$W/garbage"
wait_mqtt '"jti":null,"result":"refused","reason":"malformed"' 10

snapshot "$W/after"
diff "$W/before" "$W/after" || fail "a refused command changed the journal or the store"
echo "ok: refusals"

# A second gateway's certificate can neither read nor write gw-1's topics.
# shellcheck disable=SC2046
timeout 3 mosquitto_sub $(mqtt_opts gw-2) -t "ferry/v1/gw-1/#" -v -C 1 -W 2 > "$W/spy.out" 2>&1 || true
[ ! -s "$W/spy.out" ] || grep -q "Timed out" "$W/spy.out" || fail "gw-2 read gw-1's topics: $(cat "$W/spy.out")"
"$W_FERRY" cmd sign --op update.cancel --gateway gw-1 --update u-spoof --key "$W/pki/cmd-signer.key" \
	--cert "$W/pki/cmd-signer.pem" > "$W/spoof.jws"
# shellcheck disable=SC2046
mosquitto_pub $(mqtt_opts gw-2) -t "ferry/v1/gw-1/cmd" -q 1 -f "$W/spoof.jws" || true
# shellcheck disable=SC2046
mosquitto_pub $(mqtt_opts gw-2) -t "ferry/v1/gw-1/stage" -q 1 -m '{"forged":true}' || true
mqtt_mark gw-2
! grep -qF "u-spoof" "$W/mqtt.log" || fail "gw-2's message reached gw-1"
! grep -qF "forged" "$W/mqtt.log" || fail "gw-2 published on gw-1's stage topic"
echo "ok: ACLs confine gateways to their own topics"

# A client with gw-2's certificate that asks for client id "gw-1" cannot take
# gw-1's session: the shipped broker config makes the client id the user name
# (the certificate's CN).  Once the impostor is connected and subscribed (it
# receives a message on its own topic), ferryd still answers, and the broker
# never closed gw-1's connection.
# shellcheck disable=SC2046
mosquitto_sub $(mqtt_opts gw-2) -i gw-1 -t "ferry/v1/gw-2/cmd" -q 1 -C 1 > "$W/impostor.out" 2>&1 &
IMP=$!
for _ in $(seq 1 100); do
	# shellcheck disable=SC2046
	mosquitto_pub $(mqtt_opts cloud-cmd) -t "ferry/v1/gw-2/cmd" -q 1 -m ping
	[ -s "$W/impostor.out" ] && break
	sleep 0.1
done
wait "$IMP" 2>/dev/null || true
grep -qx ping "$W/impostor.out" || fail "the impostor never connected: $(cat "$W/impostor.out")"
grep -q "as gw-2 " "$W/mosquitto.log" || fail "the broker did not name the impostor by its certificate"
n=$(grep -cF '"op":"inventory.refresh"' "$W/mqtt.log" || true)
cmd inventory.refresh u-imp
wait_mqtt '"op":"inventory.refresh","result":"accepted"' 10 $((n + 1))
! grep -q "Client gw-1 already connected, closing old connection" "$W/mosquitto.log" ||
	fail "a client with gw-2's certificate knocked gw-1 off the broker"
! grep -qF 'ferry/v1/gw-1/state {"state":"offline"}' "$W/mqtt.log" || fail "gw-1 went offline"
echo "ok: another gateway's certificate cannot take gw-1's client id"
