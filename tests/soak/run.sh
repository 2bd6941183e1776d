#!/usr/bin/env bash
# The kill-9 soak: one update after another, each to three of the gateway's
# own files (self), two serial MCUs and the USB DFU radio, with ferryd killed
# by SIGKILL at random points of each update and started again.  Kill points
# are stage reports, not times: before each update a number K is drawn, and
# ferryd dies right after the update's K-th report has been published.
# After each update has ended, the run is checked:
#   - every device step reported `installed` exactly once (a report the
#     outbox sent again carries the same seq and counts once), and nothing
#     failed, rolled back or was cancelled;
#   - the gateway's files are byte for byte the images; each MCU and the
#     radio run the new version (the simulated MCUboot refuses to boot an
#     image whose hash does not match, so a version that moved means the
#     image arrived whole);
#   - no temp file is left beside a target or in the store's partial/;
#   - SQLite's integrity_check of the journal says ok;
#   - the store holds no more than store.cap.
# It ends with "N of N runs consistent" (exit 1 when fewer).
#
#   tests/soak/run.sh BUILD_DIR [--kills K] [--seed S]
#       about K kills in all (default 20), two per update after a first
#       update that is not killed; S seeds the draws.  A kill point past the
#       update's end is not taken: the count of kills made is printed.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: run.sh BUILD_DIR [--kills K] [--seed S]}" && pwd)
shift
KILLS=20
SEED=$$
while [ $# -gt 0 ]; do
	case "$1" in
	--kills) KILLS=${2:?}; shift 2 ;;
	--seed) SEED=${2:?}; shift 2 ;;
	*) fail "unknown option $1" ;;
	esac
done
PER_RUN=2
RUNS=$(((KILLS + PER_RUN - 1) / PER_RUN + 1)) # the first update counts reports and is not killed
RANDOM=$SEED
SMP_SIM="$BUILD/tests/sim/smp_device"
DFU_SIM="$BUILD/tests/sim/dfu_device"
CAP=2000000
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
echo "soak: $RUNS updates, $PER_RUN kills each, seed $SEED"

W_EXTRA_ADAPTERS="$(serial_smp_conf --retries 6 ttyS0=sensor-v2=sensor-fw ttyS1=sensor-v2=sensor-fw)
  usb-dfu:
    detach_wait_ms: 3000
    return_wait_ms: 6000
    poll_max_ms: 200
    transfer_size: 1024
    devices:
      - component: radio-fw
        vendor_id: acme
        class_id: radio-v1
        serial: ACME-RADIO-7
        usb: \"1209:0001\"
        dfu_usb: \"1209:0002\""
W_STORE_CAP=$CAP
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
sed -i "s|        path: $W/target/app.bin|        path: $W/target/app.bin\n      - name: app-data\n        path: $W/target/app.data|" \
	"$W/ferryd.yaml"
cp "$BUILD/adapters/serial-smp.so" "$BUILD/adapters/usb-dfu.so" "$W/plugins/"

MCU0= MCU1= DFU_PID=
trap 'kill $MCU0 $MCU1 $DFU_PID 2>/dev/null; world_down' EXIT
"$SMP_SIM" --link "$W/ttyS0" --rate 11520 --version 0.1.0 >> "$W/mcu0.log" 2>&1 &
MCU0=$!
"$SMP_SIM" --link "$W/ttyS1" --rate 11520 --version 0.1.0 >> "$W/mcu1.log" 2>&1 &
MCU1=$!
"$DFU_SIM" --root-file "$W/usb.root" --serial ACME-RADIO-7 --version 0.1.0 --poll-ms 5 >> "$W/usb.log" 2>&1 &
DFU_PID=$!
for _ in $(seq 1 100); do [ -e "$W/ttyS0" ] && [ -e "$W/ttyS1" ] && [ -s "$W/usb.root" ] && break; sleep 0.1; done
[ -s "$W/usb.root" ] || fail "the USB radio did not start"
W_FERRYD_ENV="LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR=$(cat "$W/usb.root")"

onlines() { grep -cF "ferry/v1/$W_GW/state {\"state\":\"online\"}" "$W/mqtt.log" || true; }
up() { # start ferryd and wait for this start's own "online"
	local n
	n=$(onlines)
	# shellcheck disable=SC2086
	env $W_FERRYD_ENV "$W_BUILD/gateway/ferryd" --config "$W/ferryd.yaml" >> "$W/ferryd.log" 2>&1 &
	W_FERRYD_PID=$!
	wait_mqtt "ferry/v1/$W_GW/state {\"state\":\"online\"}" 20 $((n + 1))
}
up
wait_mqtt '"id":"dfu-ACME-RADIO-7"' 20

STEPS="app-config/self app-bin/self app-data/self sensor-fw/serial-ttyS0 sensor-fw/serial-ttyS1 radio-fw/dfu-ACME-RADIO-7"
N_STEPS=6
reports() { grep -F "ferry/v1/$W_GW/stage " "$W/mqtt.log" | grep -cF "\"update_id\":\"$1\"" || true; }
ended() { # device steps of UPDATE with an outcome
	grep -F "\"update_id\":\"$1\"" "$W/mqtt.log" | grep -E '"stage":"(installed|failed|rolled_back|cancelled)"' |
		sed 's/.*"component":"\([^"]*\)".*"device":"\([^"]*\)".*/\1 \2/' | sort -u | wc -l
}

make_run() { # make_run R: images and a signed manifest for update u-R, version V
	local r=$1 v=$2
	printf 'run %s\n' "$r" > "$W/www/u-$r-app.conf"
	head -c $((200000 + RANDOM * 4)) /dev/urandom > "$W/www/u-$r-app.bin"
	head -c $((1000 + RANDOM)) /dev/urandom > "$W/www/u-$r-app.data"
	"$SMP_SIM" --make-image "$v" 16000 "$W/www/u-$r-sensor.bin"
	"$DFU_SIM" --make-image "$v" 20000 "$W/www/u-$r-radio.dfu"
	dfu-suffix -v 1209 -p 0001 -d "$(echo "$v" | awk -F. '{printf "%02d%d%d", $1, $2, $3}')" \
		-a "$W/www/u-$r-radio.dfu" > /dev/null
	{
		echo "sequence: $r"
		echo "components:"
		for c in app-config:conf app-bin:bin app-data:data; do
			printf '  - name: %s\n    type: application\n    adapter: self\n' "${c%%:*}"
			printf '    target: {vendor_id: acme, class_id: gateway}\n    version: "%s"\n' "$v"
			printf '    format: file\n    file: www/u-%s-app.%s\n' "$r" "${c#*:}"
		done
		printf '  - name: sensor-fw\n    type: firmware\n    adapter: serial-smp\n'
		printf '    target: {vendor_id: acme, class_id: sensor-v2}\n    version: "%s"\n' "$v"
		printf '    format: mcuboot\n    file: www/u-%s-sensor.bin\n' "$r"
		printf '  - name: radio-fw\n    type: firmware\n    adapter: usb-dfu\n'
		printf '    target: {vendor_id: acme, class_id: radio-v1}\n    version: "%s"\n' "$v"
		printf '    format: dfu\n    file: www/u-%s-radio.dfu\n' "$r"
	} > "$W/u-$r.yaml"
	"$W_FERRY" manifest sign "$W/u-$r.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/u-$r.jws" > /dev/null
}

check_run() { # check_run R V: prints what is wrong, one line each
	local r=$1 v=$2 u="u-$1" step c d n inv
	for step in $STEPS; do
		c=${step%/*} d=${step#*/}
		n=$(grep -F "\"update_id\":\"$u\",\"component\":\"$c\"" "$W/mqtt.log" | grep -F "\"device\":\"$d\"" |
			grep -F '"stage":"installed"' | grep -oE '"seq":[0-9]+' | sort -u | wc -l)
		[ "$n" -eq 1 ] || echo "$c on $d reported installed $n times"
	done
	grep -F "\"update_id\":\"$u\"" "$W/mqtt.log" | grep -E '"stage":"(failed|rolled_back|cancelled)"' |
		sed 's/^/unexpected: /'
	cmp -s "$W/www/$u-app.conf" "$W/target/app.conf" || echo "app.conf differs from its image"
	cmp -s "$W/www/$u-app.bin" "$W/target/app.bin" || echo "app.bin differs from its image"
	cmp -s "$W/www/$u-app.data" "$W/target/app.data" || echo "app.data differs from its image"
	inv=$(fresh_inventory)
	n=$(echo "$inv" | grep -oF "{\"name\":\"sensor-fw\",\"version\":\"$v\"}" | wc -l)
	[ "$n" -eq 2 ] || echo "$n of 2 MCUs run $v"
	echo "$inv" | grep -qF "{\"name\":\"radio-fw\",\"version\":\"$v\"}" || echo "the radio does not run $v"
	n=$(find "$W/target" -name '*.ferry-*' ! -name '*.ferry-version' | wc -l)
	[ "$n" -eq 0 ] && n=$(find "$W/target" -name '*.tmp' | wc -l)
	[ "$n" -eq 0 ] || echo "temp files left: $(find "$W/target" -name '*.ferry-*' ! -name '*.ferry-version' -o -name '*.tmp')"
	n=$(find "$W/state/store/partial" -type f | wc -l)
	[ "$n" -eq 0 ] || echo "partial downloads left: $n"
	n=$(sqlite3 "file:$W/state/journal.db?mode=ro" "PRAGMA integrity_check" 2>&1)
	[ "$n" = ok ] || echo "journal integrity_check: $n"
	n=$(find "$W/state/store" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
	[ "$n" -le "$CAP" ] || echo "the store holds $n bytes, over its cap of $CAP"
}

# the reports an update makes without a kill, to draw kill points from
TOTAL=0
consistent=0
kills=0
for r in $(seq 1 "$RUNS"); do
	v="$((r / 10 + 1)).$((r % 10)).0"
	make_run "$r" "$v"
	# shellcheck disable=SC2046
	cmd update.deploy "u-$r" --manifest "$W/u-$r.jws" \
		--link "app-config=https://127.0.0.1:$W_HTTPS_PORT/u-$r-app.conf" \
		--link "app-bin=https://127.0.0.1:$W_HTTPS_PORT/u-$r-app.bin" \
		--link "app-data=https://127.0.0.1:$W_HTTPS_PORT/u-$r-app.data" \
		--link "sensor-fw=https://127.0.0.1:$W_HTTPS_PORT/u-$r-sensor.bin" \
		--link "radio-fw=https://127.0.0.1:$W_HTTPS_PORT/u-$r-radio.dfu"
	at=0 points=
	for _ in $(seq 1 $PER_RUN); do
		# the first update is not killed: it counts the reports of one
		[ "$TOTAL" -gt 0 ] || break
		at=$((at + 1 + RANDOM % (TOTAL / PER_RUN)))
		for _ in $(seq 1 1200); do
			[ "$(reports "u-$r")" -ge "$at" ] && break
			[ "$(ended "u-$r")" -ge "$N_STEPS" ] && break
			sleep 0.05
		done
		[ "$(ended "u-$r")" -ge "$N_STEPS" ] && break
		kill9_ferryd
		kills=$((kills + 1)) points="$points $(reports "u-$r")"
		up
	done
	for _ in $(seq 1 2400); do [ "$(ended "u-$r")" -ge "$N_STEPS" ] && break; sleep 0.1; done
	[ "$TOTAL" -gt 0 ] || TOTAL=$(reports "u-$r")
	wrong=$(check_run "$r" "$v")
	if [ -z "$wrong" ]; then
		consistent=$((consistent + 1))
		echo "run $r ($v): consistent after $(reports "u-$r") reports"
	else
		echo "run $r ($v): NOT consistent (kill points: ${points:-none}):"
		echo "$wrong" | sed 's/^/    /'
		# what is needed to tell why: the update's last reports, ferryd's
		# last words and the journal's view; the world is kept
		echo "    last reports of u-$r:"
		grep -F "\"update_id\":\"u-$r\"" "$W/mqtt.log" | tail -n 15 | cut -c1-300 | sed 's/^/      /'
		echo "    end of ferryd.log:"
		tail -n 40 "$W/ferryd.log" | cut -c1-300 | sed 's/^/      /'
		echo "    journal:"
		sqlite3 "file:$W/state/journal.db?mode=ro" .dump 2>&1 | grep -vE '^(CREATE|PRAGMA|BEGIN|COMMIT)' |
			grep -F "u-$r" | tail -n 30 | cut -c1-300 | sed 's/^/      /'
		export FERRY_KEEP=1
		echo "    the world is kept in $W"
	fi
done
echo "$kills kills of ferryd (SIGKILL)"
echo "$consistent of $RUNS runs consistent"
[ "$consistent" -eq "$RUNS" ]
