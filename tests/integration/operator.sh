#!/usr/bin/env bash
# The operator's side through real parts: `ferry pki init` writes the
# operator's certificate and operator.yaml; the operator's tools reach the
# broker only on its operator listener; `ferry deploy` signs a spec,
# publishes its images on the file host, sends the command and follows the
# real ferryd's reports to the end, with exit codes that say how it ended;
# `ferry watch` follows the same reports beside it; Ctrl-C at a terminal
# offers update.cancel and sends it.
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_OPS_SLOW=1 # the file host throttles /slow/: a download lasts long enough to interrupt
W_SLOW_RATE=100k
world_up "${1:?usage: operator.sh BUILD_DIR}"
F=$W_FERRY
start_ferryd
WATCH_PID=
DEPLOY_PID=
trap '{ [ -n "$WATCH_PID" ] && kill "$WATCH_PID"; [ -n "$DEPLOY_PID" ] && kill "$DEPLOY_PID"; } 2>/dev/null || true; world_down' EXIT

# --- operator identity and the broker's two listeners
for f in operators-ca.pem operators-ca.key operator.pem operator.key operator.yaml; do
	[ -s "$W/pki/$f" ] || fail "ferry pki init did not write $f"
done
[ "$(stat -c %a "$W/pki/operator.yaml")" = 600 ] || fail "operator.yaml holds the link secret: it must be 0600"
openssl x509 -in "$W/pki/operator.pem" -noout -subject | grep -q "CN *= *@operator" || fail "the operator CN is not @operator"
ops="-h 127.0.0.1 --cafile $W/pki/ca.pem -V mqttv5 -q 1 -t ferry/v1/probe -m x"
mosquitto_pub $ops -p "$W_OPS_PORT" --cert "$W/pki/operator.pem" --key "$W/pki/operator.key" ||
	fail "the operator cannot publish on the operator listener"
# shellcheck disable=SC2086
! mosquitto_pub $ops -p "$W_OPS_PORT" --cert "$W/pki/gw-gw-2.pem" --key "$W/pki/gw-gw-2.key" 2>/dev/null ||
	fail "a gateway certificate was let in on the operator listener"
# shellcheck disable=SC2086
! mosquitto_pub $ops -p "$W_MQTT_PORT" --cert "$W/pki/operator.pem" --key "$W/pki/operator.key" 2>/dev/null ||
	fail "the operator certificate was let in on the gateway listener"
echo "ok: the operator's certificate works on the operator listener only, and no gateway's does"

# operator.yaml is read strictly
sed 's/^  host: 127.0.0.1/  hots: 127.0.0.1/' "$W/pki/operator.yaml" > "$W/bad-op.yaml"
rc=0; "$F" watch --config "$W/bad-op.yaml" > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "bad-op.yaml:4: broker.hots: not a key of operator.yaml" "$W/out" ||
	fail "a misspelt key in operator.yaml was not refused by name (rc $rc): $(cat "$W/out")"
{ cat "$W/pki/operator.yaml"; echo "files.link_secret: 0123456789abcdef0123"; } > "$W/dotted.yaml"
rc=0; "$F" fleet --config "$W/dotted.yaml" > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "dotted.yaml:[0-9]*: files.link_secret: write it as nested keys" "$W/out" ||
	fail "a dotted key in operator.yaml was not refused (rc $rc): $(cat "$W/out")"
rc=0; FERRY_OPERATOR_CONFIG=$W/nowhere.yaml "$F" watch > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "nowhere.yaml" "$W/out" || fail "a missing operator config was not named: $(cat "$W/out")"
echo "ok: operator.yaml: a misspelt key is refused with file, line and key"

# --- deploy from a spec, followed to the end (plain lines: not a terminal)
# spec DIR SEQ VERSION BYTES: a spec with app-config and app-bin in DIR
spec() {
	mkdir -p "$W/$1"
	printf 'rev: %s\n' "$2" > "$W/$1/app.conf"
	head -c "$4" /dev/urandom > "$W/$1/app.bin"
	cat > "$W/$1/spec.yaml" <<YAML
sequence: $2
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$3"
    format: file
    file: app.conf
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$3"
    format: file
    file: app.bin
YAML
}
# watch runs beside deploy: two tools of one operator at once
"$F" watch --json --update u-1 > "$W/watch.out" 2> "$W/watch.err" &
WATCH_PID=$!
for _ in $(seq 1 100); do grep -q "following" "$W/watch.err" && break; sleep 0.1; done
grep -q "following" "$W/watch.err" || fail "ferry watch did not start: $(cat "$W/watch.err")"
spec s1 1 1.1.0 300000
rc=0; "$F" deploy "$W/s1/spec.yaml" --gateway gw-1 --update u-1 > "$W/d1.out" 2> "$W/d1.err" || rc=$?
[ "$rc" = 0 ] || fail "deploy u-1 exited $rc: $(cat "$W/d1.err") $(tail "$W/d1.out")"
grep -q "u-1 installed everywhere" "$W/d1.err" || fail "deploy u-1 did not say it ended: $(cat "$W/d1.err")"
for c in app-config app-bin; do
	grep -qE "^gw-1 u-1 $c self installed 1.1.0$" "$W/d1.out" || fail "deploy u-1 showed no $c installed: $(cat "$W/d1.out")"
	grep -qE "^gw-1 u-1 $c - allowed to self$" "$W/d1.out" || fail "deploy u-1 showed no $c allowed"
done
cmp -s "$W/s1/app.bin" "$W/target/app.bin" || fail "u-1: app.bin is not the spec's file"
cmp -s "$W/s1/app.bin" "$W/www/files/$(sha256sum "$W/s1/app.bin" | cut -d' ' -f1)" ||
	fail "deploy did not publish app.bin on the file host under its sha256"
# the watcher saw what deploy saw, as JSON
for _ in $(seq 1 100); do [ "$(grep -c '"stage":"installed"' "$W/watch.out")" -ge 2 ] && break; sleep 0.1; done
[ "$(grep -c '"stage":"installed"' "$W/watch.out")" = 2 ] || fail "watch saw $(grep -c installed "$W/watch.out") installs"
grep -q '"gateway":"gw-1"' "$W/watch.out" && grep -q '"type":"reply"' "$W/watch.out" ||
	fail "watch --json lacks the gateway or the reply: $(head -n 3 "$W/watch.out")"
kill "$WATCH_PID"
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=
echo "ok: deploy signed, published, sent and followed u-1 to installed (exit 0); watch followed it beside"

# --- device-bound links: the shipped file host config, the hash made here
# with openssl exactly as config/nginx-ferry.conf describes it
sha=$(sha256sum "$W/s1/app.bin" | cut -d' ' -f1)
secret=$(sed -n 's/^  link_secret: //p' "$W/pki/operator.yaml")
link() { # link GW EXPIRES [SHA]
	local path="/files/${3:-$sha}" h
	h=$(printf '%s' "$2$path$1 $secret" | openssl md5 -binary | openssl base64 | tr '+/' '-_' | tr -d '=')
	echo "https://127.0.0.1:$W_FILES_PORT$path?md5=$h&expires=$2"
}
fetch() { # fetch GW URL: the HTTP status when GW's certificate fetches URL
	curl -s -o /dev/null -w '%{http_code}' --cacert "$W/pki/ca.pem" --cert "$W/pki/gw-$1.pem" \
		--key "$W/pki/gw-$1.key" "$2" || true
}
later=$(($(date +%s) + 3600))
[ "$(fetch gw-1 "$(link gw-1 $later)")" = 200 ] || fail "gw-1's own link was refused"
[ "$(fetch gw-2 "$(link gw-1 $later)")" = 403 ] || fail "gw-2 fetched gw-1's link"
[ "$(fetch gw-1 "$(link gw-1 $later | sed "s/expires=$later/expires=$((later + 1))/")")" = 403 ] ||
	fail "a link with a changed expiry was not refused"
[ "$(fetch gw-1 "$(link gw-1 1000)")" = 410 ] || fail "an expired link did not answer 410"
[ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/pki/ca.pem" "$(link gw-1 $later)" || true)" = 400 ] ||
	fail "a fetch without a client certificate was not refused"
# the link deploy put in u-1's command is the one computed here
cmdjws=$(grep -F "ferry/v1/gw-1/cmd " "$W/mqtt.log" | head -n 1 | cut -d' ' -f2)
payload=$(cut -d. -f2 <<< "$cmdjws" | tr '_-' '/+')
while [ $((${#payload} % 4)) != 0 ]; do payload="$payload="; done
sent=$(base64 -d <<< "$payload" | sed -n 's/.*"app-bin":"\([^"]*\)".*/\1/p')
exp=$(sed -n 's/.*expires=\([0-9]*\)$/\1/p' <<< "$sent")
[ -n "$exp" ] && [ "$sent" = "$(link gw-1 "$exp")" ] || fail "deploy's link ($sent) is not the documented one"
echo "ok: links: the right gateway 200, another gateway 403, changed 403, expired 410, no certificate 400"

# --- the same versions again: every device already runs them
rc=0; "$F" deploy "$W/s1/spec.yaml" --gateway gw-1 --update u-1b --json > "$W/d1b.out" 2> "$W/d1b.err" || rc=$?
[ "$rc" = 1 ] && grep -q stale_sequence "$W/d1b.err" ||
	fail "a deploy with a used sequence was not refused with stale_sequence (rc $rc): $(cat "$W/d1b.err")"
sed -i 's/^sequence: 1$/sequence: 2/' "$W/s1/spec.yaml"
rc=0; "$F" deploy "$W/s1/spec.yaml" --gateway gw-1 --update u-2 --json > "$W/d2.out" 2> "$W/d2.err" || rc=$?
[ "$rc" = 0 ] || fail "deploy u-2 (nothing to do) exited $rc: $(cat "$W/d2.err")"
[ "$(grep -c '"stage":"already_installed"' "$W/d2.out")" = 2 ] ||
	fail "deploy u-2 did not end on two already_installed: $(cat "$W/d2.out")"
while read -r line; do
	jq_ok=$(printf '%s' "$line" | grep -c '^{.*"gateway":"gw-1".*}$' || true)
	[ "$jq_ok" = 1 ] || fail "deploy --json printed a line that is not a report object: $line"
done < "$W/d2.out"
echo "ok: a used sequence is refused (exit 1, reason printed); a deploy with nothing to do ends at once (exit 0)"

# --- a failed download: exit 1 with the reason
spec s3 3 1.3.0 2000
rc=0; "$F" deploy "$W/s3/spec.yaml" --gateway gw-1 --update u-3 \
	--link "app-bin=https://127.0.0.1:$W_HTTPS_PORT/files/no-such-image" > "$W/d3.out" 2> "$W/d3.err" || rc=$?
[ "$rc" = 1 ] || fail "deploy u-3 with a dead link exited $rc"
grep -q "app-bin.*download_failed" "$W/d3.out" || fail "deploy u-3 did not show download_failed: $(cat "$W/d3.out")"
grep -q "gw-1: app-config/self cancelled" "$W/d3.err" || fail "deploy u-3's summary lacks the cancelled step: $(cat "$W/d3.err")"
cmp -s "$W/s1/app.bin" "$W/target/app.bin" || fail "u-3 changed app.bin although it failed"
echo "ok: a failed download ends deploy with exit 1 and what failed"

# --- through ferryd: an expired link and another gateway's link fail the download, named
spec s5 5 1.5.0 2000
sha5=$(sha256sum "$W/s5/app.bin" | cut -d' ' -f1)
cp "$W/s5/app.bin" "$W/www/files/$sha5"
rc=0; "$F" deploy "$W/s5/spec.yaml" --gateway gw-1 --update u-5 --link "app-bin=$(link gw-1 1000 "$sha5")" \
	> "$W/d5.out" 2> "$W/d5.err" || rc=$?
[ "$rc" = 1 ] && grep -q "app-bin - failed download_failed: HTTP 410: the link has expired" "$W/d5.out" ||
	fail "an expired link did not fail u-5 naming the expiry (rc $rc): $(cat "$W/d5.out")"
sed -i 's/^sequence: 5$/sequence: 6/' "$W/s5/spec.yaml"
rc=0; "$F" deploy "$W/s5/spec.yaml" --gateway gw-1 --update u-6 --link "app-bin=$(link gw-2 $later "$sha5")" \
	> "$W/d6.out" 2> "$W/d6.err" || rc=$?
[ "$rc" = 1 ] && grep -q "app-bin - failed download_failed: HTTP 403: the file host refused the link" "$W/d6.out" ||
	fail "gw-2's link did not fail u-6 with 403 (rc $rc): $(cat "$W/d6.out")"
cmp -s "$W/s1/app.bin" "$W/target/app.bin" || fail "a refused link changed app.bin"
echo "ok: through ferryd, an expired link fails download_failed (HTTP 410, expired) and another gateway's gets 403"

# --- Ctrl-C at a terminal: deploy asks, the answer y sends update.cancel
spec s4 7 1.4.0 3000000
mkfifo "$W/tty-in"
exec 7<> "$W/tty-in" # held open: script reads the answer from it
script -qfec "$F deploy $W/s4/spec.yaml --gateway gw-1 --update u-4" /dev/null < "$W/tty-in" > "$W/d4.out" 2>&1 &
SCRIPT_PID=$!
for _ in $(seq 1 300); do grep -q "downloading" "$W/d4.out" && break; sleep 0.1; done
grep -q "downloading" "$W/d4.out" || fail "deploy u-4 showed no download: $(cat "$W/d4.out")"
grep -q $'\033\[2K' "$W/d4.out" && grep -qE '\[#*\.+\] +[0-9]+%' "$W/d4.out" ||
	fail "deploy on a terminal drew no live line with a progress bar"
pkill -INT -f "^$F deploy $W/s4/spec.yaml" || fail "no deploy u-4 to interrupt"
for _ in $(seq 1 100); do grep -q "\[y/N\]" "$W/d4.out" && break; sleep 0.1; done
grep -q "send update.cancel for u-4 to 1 gateway? \[y/N\]" "$W/d4.out" || fail "Ctrl-C did not ask: $(tail -c 500 "$W/d4.out")"
echo y >&7
rc=0; wait "$SCRIPT_PID" || rc=$?
exec 7>&-
[ "$rc" = 1 ] || fail "deploy u-4, cancelled, exited $rc: $(tail -c 800 "$W/d4.out")"
[ "$(outcome u-4 app-bin)" = cancelled ] || fail "u-4: app-bin was not cancelled: $(stages_of u-4 app-bin)"
grep -q '"op":"update.cancel","update_id":"u-4","result":"accepted"' "$W/mqtt.log" || fail "no update.cancel reached gw-1"
cmp -s "$W/s1/app.bin" "$W/target/app.bin" || fail "the cancelled u-4 changed app.bin"
echo "ok: Ctrl-C on a terminal asked, sent update.cancel, and deploy followed it to cancelled (exit 1)"

# --- signed reports: what gw-1 publishes is a JWS that the jose CLI
# verifies, given the key of the certificate in its x5c, once openssl has
# checked that certificate against the CA and its CN is gw-1
b64url() { basenc --base64url -w0 | tr -d '='; }
hexblock() { sed -n "/^$2/,/^[^ ]/p" "$1" | grep '^ ' | tr -d ' :\n'; }
unb64url() { local p; p=$(tr '_-' '/+'); while [ $((${#p} % 4)) != 0 ]; do p="$p="; done; base64 -d <<< "$p"; }
# shellcheck disable=SC2046
raw=$(mosquitto_sub $(mqtt_opts cloud-2) -t ferry/v1/gw-1/inventory -C 1 -W 10)
[[ "$raw" == eyJ* ]] || fail "gw-1's inventory on the broker is not a JWS: ${raw:0:80}"
header=$(cut -d. -f1 <<< "$raw" | unb64url)
grep -q '"typ":"ferry-report"' <<< "$header" || fail "the report's header lacks typ ferry-report: $header"
sed -n 's/.*"x5c":\["\([^"]*\)".*/\1/p' <<< "$header" | base64 -d > "$W/rep.der"
openssl x509 -inform DER -in "$W/rep.der" -out "$W/rep.pem"
openssl verify -CAfile "$W/pki/ca.pem" "$W/rep.pem" > /dev/null || fail "the report's certificate does not chain to the CA"
openssl x509 -in "$W/rep.pem" -noout -subject | grep -q "CN *= *gw-1" || fail "the report's certificate is not gw-1's"
openssl x509 -in "$W/rep.pem" -pubkey -noout | openssl ec -pubin -text -noout 2>/dev/null > "$W/rep.txt"
pub=$(hexblock "$W/rep.txt" pub:)
x=$(echo -n "${pub:2:64}" | tr a-f A-F | basenc --base16 -d | b64url)
y=$(echo -n "${pub:66:64}" | tr a-f A-F | basenc --base16 -d | b64url)
printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s","alg":"ES256"}' "$x" "$y" > "$W/rep.jwk"
printf '%s' "$raw" | jose jws ver -i - -k "$W/rep.jwk" -O "$W/rep.json" || fail "jose does not verify gw-1's report"
grep -q '"gateway":{"id":"gw-1"' "$W/rep.json" || fail "jose's payload is not gw-1's inventory"
echo "ok: gw-1's inventory is a JWS that openssl and the jose CLI verify, signed by gw-1's certificate"

# sign_as GW JSON: a report signed with GW's key and certificate, by the jose CLI
sign_as() {
	local priv pub d x y x5c
	openssl ec -in "$W/pki/gw-$1.key" -text -noout 2>/dev/null > "$W/k.txt"
	priv=$(hexblock "$W/k.txt" priv:)
	pub=$(hexblock "$W/k.txt" pub:)
	priv=${priv: -64}
	d=$(echo -n "$priv" | tr a-f A-F | basenc --base16 -d | b64url)
	x=$(echo -n "${pub:2:64}" | tr a-f A-F | basenc --base16 -d | b64url)
	y=$(echo -n "${pub:66:64}" | tr a-f A-F | basenc --base16 -d | b64url)
	printf '{"kty":"EC","crv":"P-256","x":"%s","y":"%s","d":"%s","alg":"ES256"}' "$x" "$y" "$d" > "$W/k.jwk"
	x5c=$(openssl x509 -in "$W/pki/gw-$1.pem" -outform DER | base64 -w0)
	printf '%s' "$2" > "$W/k.json"
	jose jws sig -I "$W/k.json" -k "$W/k.jwk" -c -o - \
		-s "{\"protected\":{\"alg\":\"ES256\",\"typ\":\"ferry-report\",\"x5c\":[\"$x5c\"]}}"
}
# ops_pub TOPIC PAYLOAD [-r]: publish as the operator role
ops_pub() {
	mosquitto_pub -h 127.0.0.1 -p "$W_OPS_PORT" --cafile "$W/pki/ca.pem" --cert "$W/pki/operator.pem" \
		--key "$W/pki/operator.key" -V mqttv5 -q 1 -t "$1" -m "$2" ${3:-}
}

# --- a forged report on gw-1's topic, published by the operator role
# (which may write there): plain JSON, and one signed by gw-2.  Every
# consumer refuses both: the test world's log, watch, deploy and fleet.
spec s8 8 1.8.0 1500000
"$F" watch --update u-8 > "$W/w8.out" 2> "$W/w8.err" &
WATCH_PID=$!
for _ in $(seq 1 100); do grep -q "following" "$W/w8.err" && break; sleep 0.1; done
"$F" deploy "$W/s8/spec.yaml" --gateway gw-1 --update u-8 > "$W/d8.out" 2> "$W/d8.err" &
DEPLOY_PID=$!
for _ in $(seq 1 300); do grep -q "app-bin - downloading" "$W/d8.out" && break; sleep 0.1; done
grep -q "app-bin - downloading" "$W/d8.out" || fail "deploy u-8 did not start downloading: $(cat "$W/d8.err")"
forged='{"update_id":"u-8","component":"app-bin","stage":"failed","device":"self","seq":900,"ts":1,"reason":"adapter_error","detail":"forged"}'
ops_pub ferry/v1/gw-1/stage "$forged"
ops_pub ferry/v1/gw-1/stage "$(sign_as gw-2 "$forged")"
rc=0; wait "$DEPLOY_PID" || rc=$?
DEPLOY_PID=
[ "$rc" = 0 ] || fail "deploy u-8 took a forged report: exit $rc: $(cat "$W/d8.err")"
grep -q "refused a message on ferry/v1/gw-1/stage: malformed: an unsigned message" "$W/d8.err" &&
	grep -q "refused a message on ferry/v1/gw-1/stage: wrong_gateway: signed by \"gw-2\", not by gw-1" "$W/d8.err" &&
	grep -q "2 messages refused" "$W/d8.err" || fail "deploy did not refuse and count both forgeries: $(cat "$W/d8.err")"
! grep -q forged "$W/d8.out" || fail "deploy showed a forged report"
for _ in $(seq 1 100); do [ "$(grep -c "refused a message" "$W/w8.err")" -ge 2 ] && break; sleep 0.1; done
[ "$(grep -c "refused a message on ferry/v1/gw-1/stage" "$W/w8.err")" = 2 ] || fail "watch did not refuse both: $(cat "$W/w8.err")"
! grep -q forged "$W/w8.out" || fail "watch showed a forged report"
kill "$WATCH_PID"
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=
[ "$(grep -c '^ferry/v1/gw-1/stage !refused' "$W/mqtt.log")" = 2 ] || fail "the test world's log took a forged report"
[ "$(outcome u-8 app-bin)" = installed ] || fail "u-8 did not install"
echo "ok: forged reports on gw-1's topic (unsigned; signed by gw-2) are refused and counted by deploy, watch and the log"

# --- the fleet table from retained inventories and states
# gw-2 as a gateway that is away: its last inventory, signed by it (older
# app-config, another site), and its will; an inventory on gw-3's topic
# signed by gw-2
inv2='{"gateway":{"id":"gw-2","ferryd":"0.1.0","attributes":{"arch":"aarch64","site":"hall-3"}},"devices":[{"id":"self","adapter":"self","components":[{"name":"app-config","version":"1.0.0"},{"name":"app-bin","version":null}],"present":true},{"id":"serial-ttyS1","adapter":"serial-smp","components":[{"name":"sensor-fw","version":"2.0.0"}],"present":false}],"ts":1}'
# shellcheck disable=SC2046
mosquitto_pub $(mqtt_opts gw-2) -r -q 1 -t ferry/v1/gw-2/inventory -m "$(sign_as gw-2 "$inv2")"
# shellcheck disable=SC2046
mosquitto_pub $(mqtt_opts gw-2) -r -q 1 -t ferry/v1/gw-2/state -m '{"state":"offline"}'
ops_pub ferry/v1/gw-3/inventory "$(sign_as gw-2 "${inv2//gw-2/gw-3}")" -r
"$F" fleet > "$W/fleet.out" 2> "$W/fleet.err" || fail "ferry fleet failed: $(cat "$W/fleet.err")"
grep -qE '^gw-1 +online +self +app-bin +1\.8\.0$' "$W/fleet.out" || fail "fleet lacks gw-1's app-bin 1.8.0: $(cat "$W/fleet.out")"
grep -qE '^gw-2 +offline +self +app-config +1\.0\.0 \* *$' "$W/fleet.out" ||
	fail "fleet does not mark gw-2's older app-config: $(cat "$W/fleet.out")"
grep -qE '^gw-2 +offline +serial-ttyS1 \(absent\) +sensor-fw +2\.0\.0 *$' "$W/fleet.out" ||
	fail "fleet does not show gw-2's absent MCU: $(cat "$W/fleet.out")"
grep -q "^2 gateways (1 online, 1 offline), 3 devices, 5 components, 2 behind the newest version" "$W/fleet.out" ||
	fail "fleet's count line: $(tail -n 1 "$W/fleet.out")"
grep -q "refused a message on ferry/v1/gw-3/inventory: wrong_gateway" "$W/fleet.err" && grep -q "1 message refused" "$W/fleet.err" ||
	fail "fleet took gw-3's inventory signed by gw-2: $(cat "$W/fleet.err")"
"$F" fleet --where site=hall-3 > "$W/f2.out"
[ "$(grep -c '^gw-' "$W/f2.out")" = 3 ] && ! grep -q '^gw-1' "$W/f2.out" && grep -qE '^gw-2 .* hall-3 *$' "$W/f2.out" ||
	fail "fleet --where site=hall-3: $(cat "$W/f2.out")"
grep -q "; 1 of 2 gateways match" "$W/f2.out" || fail "fleet --where does not count the matches: $(tail -n 1 "$W/f2.out")"
"$F" fleet --where 'component.app-bin<1.1.0' --where state=offline --json > "$W/f3.out"
grep -q '"gateway": "gw-2"' "$W/f3.out" && ! grep -q '"gateway": "gw-1"' "$W/f3.out" ||
	fail "fleet --where component.app-bin<1.1.0 (an unknown version is older): $(cat "$W/f3.out")"
"$F" fleet --where 'component.app-bin>=1.1.0' --where arch=x86_64 > "$W/f4.out"
grep -q '^gw-1' "$W/f4.out" && ! grep -q '^gw-2' "$W/f4.out" || fail "fleet --where app-bin>=1.1.0: $(cat "$W/f4.out")"
rc=0; "$F" fleet --where 'component.app-bin<one' > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "app-bin<one" "$W/out" || fail "a bad --where was not refused by name: $(cat "$W/out")"
rc=0; "$F" fleet --where 'site<hall' > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "an attribute compared with < was not refused"
echo "ok: ferry fleet: versions across gateways, the old ones marked, --where by attribute, state and version"
