#!/usr/bin/env bash
# The live console through real parts: `ferry console` on a loopback port,
# the real ferryd, mosquitto and the shipped file host, and a headless
# Chromium (tests/sim/cdp_eval: the DevTools protocol on a pipe) that loads
# the page once and is asked what its DOM shows while:
#   - the fleet table lists the gateway's files (no version yet);
#   - `ferry deploy` sends 2.0.0 through the throttled file host: the page's
#     update row shows the download part way (a progress bar between 0 and
#     its end), then the fleet table shows 2.0.0;
#   - a campaign runs: its row ends `done` with 1 installed;
#   - a forged report is counted as refused.
# Also: only loopback addresses are served, a request with a foreign Host is
# refused, the page loads nothing from elsewhere.  FERRY_CONSOLE_SHOT=FILE
# keeps the screenshot (docs/console.png is made so).
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_OPS_SLOW=1
W_SLOW_RATE=100k
world_up "${1:?usage: console.sh BUILD_DIR}"
F=$W_FERRY
start_ferryd
CON_PID= DEPLOY_PID= CHROME_PID=
trap '{ for p in $CON_PID $DEPLOY_PID $CHROME_PID; do kill "$p"; done; } 2>/dev/null || true; world_down' EXIT

# --- only loopback; the page and its headers
rc=0; "$F" console --listen 0.0.0.0:8080 > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q 'is not a loopback ADDRESS:PORT' "$W/out" || fail "a non-loopback --listen was not refused: $(cat "$W/out")"
rc=0; "$F" console --listen 192.168.1.5:8080 > "$W/out" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "a LAN address was not refused"
PORT=$(free_port)
"$F" console --listen "127.0.0.1:$PORT" > "$W/console.out" 2> "$W/console.err" &
CON_PID=$!
for _ in $(seq 1 300); do grep -q "http://127.0.0.1:$PORT/" "$W/console.err" && break; sleep 0.1; done
grep -q "http://127.0.0.1:$PORT/" "$W/console.err" || fail "the console did not start: $(cat "$W/console.err")"
curl -sS -D "$W/headers" -o "$W/page.html" "http://127.0.0.1:$PORT/" || fail "the page did not load"
grep -qi '^content-security-policy: default-src .none.' "$W/headers" || fail "no CSP header: $(cat "$W/headers")"
! grep -Eqi '(src|href)=|@import|url\(' "$W/page.html" || fail "the page refers to something outside it"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: evil.example' "http://127.0.0.1:$PORT/api/state")
[ "$code" = 421 ] || fail "a request with a foreign Host got $code"
echo "ok: the console serves loopback only, refuses a foreign Host, and its page has no outside assets"

# --- one page, asked what it shows
coproc CDP { "$W_BUILD/tests/sim/cdp_eval" "http://127.0.0.1:$PORT/" 1200 900 2> "$W/cdp.err"; }
# bash unsets CDP_PID the moment it reaps the coprocess: keep our own copy
CHROME_PID=$CDP_PID
exec 5>&"${CDP[1]}" 6<&"${CDP[0]}"
read -r -t 60 line <&6 && [ "$line" = '"ready"' ] || fail "chromium did not start: $(cat "$W/cdp.err")"
ask() { # ask JS: its value as JSON
	local v
	echo "$1" >&5
	read -r -t 60 v <&6 || fail "chromium did not answer: $(cat "$W/cdp.err")"
	echo "$v"
}
# until JS evaluates to WANT (bounded; each turn a fresh look at the DOM)
until_page() {
	local what=$1 js=$2 want=$3 i v
	for i in $(seq 1 1200); do
		v=$(ask "$js")
		[ "$v" = "$want" ] && return 0
		sleep 0.1
	done
	fail "the page never showed $what (last: $v)"
}
ver='(() => { const c = document.querySelector("#fleet tr[data-row=\"gw-1/app-bin/self\"] .version"); return c ? c.textContent : null })()'
until_page "the fleet row of app-bin" "$ver" '"-"'
until_page "the live status" 'document.getElementById("status").textContent.startsWith("live")' true
echo "ok: the page renders the fleet table from the retained inventories"

mkdir -p "$W/s"
printf 'rev: 2\n' > "$W/s/app.conf"
head -c 600000 /dev/urandom > "$W/s/app.bin"
cat > "$W/s/spec.yaml" <<YAML
sequence: 5
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "2.0.0"
    format: file
    file: app.conf
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "2.0.0"
    format: file
    file: app.bin
YAML
"$F" deploy "$W/s/spec.yaml" --gateway gw-1 --update u-live > "$W/deploy.out" 2>&1 &
DEPLOY_PID=$!
prog='(() => { const p = document.querySelector("#updates tr[data-row=\"gw-1/u-live/app-bin/\"] progress"); return p ? (p.value > 0 && p.value < p.max ? "part" : p.value >= p.max ? "full" : "none") : null })()'
seen_part=
for _ in $(seq 1 1200); do
	v=$(ask "$prog")
	[ "$v" = '"part"' ] && { seen_part=1; break; }
	[ "$v" = '"full"' ] && break
	sleep 0.1
done
[ -n "$seen_part" ] || fail "the page never showed the download part way (last: $v)"
echo '!screenshot '"$W/console.png" >&5
read -r -t 60 v <&6 && [ "$v" = '"ok"' ] || fail "no screenshot"
wait "$DEPLOY_PID" || fail "the deploy failed: $(cat "$W/deploy.out")"
DEPLOY_PID=
until_page "app-bin 2.0.0 in the fleet table" "$ver" '"2.0.0"'
until_page "the update row installed" \
	'(() => { const s = document.querySelector("#updates tr[data-row=\"gw-1/u-live/app-bin/self\"] .stage"); return s ? s.textContent : null })()' \
	'"installed"'
echo "ok: the page showed the download part way, then installed, then the fleet at 2.0.0"

# --- a campaign, and a forged report
sed -e 's/^sequence: 5$/sequence: 6/' -e 's/"2.0.0"/"2.1.0"/' "$W/s/spec.yaml" > "$W/s/spec21.yaml"
"$F" campaign create site-hall-2 --manifest "$W/s/spec21.yaml" --where site=hall-2 > /dev/null
"$F" campaign run --until-idle > "$W/run.out" 2>&1 || fail "campaign run: $(cat "$W/run.out")"
until_page "the campaign done with 1 installed" \
	'(() => { const r = document.querySelector("#campaigns tr[data-campaign=\"site-hall-2\"]"); return r ? r.querySelector(".state").textContent.split(":")[0] + " " + r.querySelector(".installed").textContent : null })()' \
	'"done 1"'
mosquitto_pub -h 127.0.0.1 -p "$W_OPS_PORT" --cafile "$W/pki/ca.pem" --cert "$W/pki/operator.pem" \
	--key "$W/pki/operator.key" -V mqttv5 -q 1 -t ferry/v1/gw-1/stage \
	-m '{"update_id":"u-live","component":"app-bin","device":"self","stage":"failed","seq":99}'
until_page "the forged report counted" 'document.getElementById("status").textContent.includes("1 message refused")' true
[ "$(ask '(() => { const s = document.querySelector("#updates tr[data-row^=\"gw-1/\"][data-row$=\"/app-bin/self\"] .stage"); return s ? s.textContent : null })()')" = '"installed"' ] ||
	fail "the forged report changed a row"
echo "ok: the page shows the campaign's counts, and refuses a forged report"

head -c 8 "$W/console.png" | od -An -tx1 | grep -q "89 50 4e 47 0d 0a 1a 0a" || fail "the screenshot is not a PNG"
[ -z "${FERRY_CONSOLE_SHOT:-}" ] || cp "$W/console.png" "$FERRY_CONSOLE_SHOT"
kill "$CHROME_PID" 2>/dev/null || true
wait "$CHROME_PID" 2>/dev/null || true
CHROME_PID=
kill "$CON_PID"
wait "$CON_PID" || fail "the console did not stop cleanly on SIGTERM"
CON_PID=
echo "ok: a screenshot of the page mid-download"
