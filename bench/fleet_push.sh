#!/usr/bin/env bash
# Benchmark: one deploy to N simulated serial MCUs at 115200 baud, through
# the real ferryd over MQTT, N = 1, 4 and 16.
#
# Measured: the push time of one update, from the arrival at a cloud
# subscriber of its first `installing` report to that of its last
# `installed` report (download and check, the same for every N, are left
# out).  Printed: for each N the median over the repetitions, and its ratio
# to the N = 1 median, with the min-max of the ratios of each repetition.
#
# Reference: the same deploy to one MCU, measured in the same run; the
# three sizes are interleaved (1, 4, 16, 1, 4, 16, ...) so that drift in the
# machine's load falls on all of them.  Goal: 16 devices <= 1.25x one.
#
# The model leaves out: real UARTs and USB-serial adapters (each MCU is the
# simulator on a pty, full duplex, paced per byte at 11520 bytes/s, its flash
# timed as an nRF52840's), and radio or bus contention between devices.  Each
# N runs its own ferryd (own state directory, config listing only its N
# ports) against the same sixteen simulators, broker and file host, with
# install.parallel at 16 (the default, 8, would push sixteen MCUs in two
# rounds: an operator with sixteen sets it so).
#
#   bench/fleet_push.sh [BUILD_DIR]    FERRY_BENCH_PUSH_BYTES (65536), FERRY_BENCH_REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
BYTES=${FERRY_BENCH_PUSH_BYTES:-65536}
REPS=${FERRY_BENCH_REPS:-5}
SIZES="1 4 16"
SIM="$BUILD/tests/sim/smp_device"
. scripts/world.sh
. bench/lib.sh

ports() { # ports N: the serial-smp section for MCUs 0..N-1
	echo "  serial-smp:"
	echo "    ports:"
	for i in $(seq 0 $(($1 - 1))); do
		printf '      - path: %s/ttyB%d\n        vendor_id: acme\n        class_id: bench\n        component: bench-fw\n' \
			"/tmp/PLACEHOLDER" "$i"
	done
}
world_up "$BUILD"
declare -a SIM_PID
trap 'for p in "${SIM_PID[@]}"; do kill "$p" 2>/dev/null || true; done; world_down' EXIT
cp "$BUILD/adapters/serial-smp.so" "$W/plugins/"
for i in $(seq 0 15); do
	"$SIM" --link "$W/ttyB$i" --rate 11520 --version 1.0.0 >> "$W/sim$i.log" 2>&1 &
	SIM_PID[$i]=$!
done
for n in $SIZES; do
	W_EXTRA_ADAPTERS=$(ports "$n")
	write_config
	sed -e "s|/tmp/PLACEHOLDER|$W|" -e "s|^state_dir: .*|state_dir: $W/state-$n|" "$W/ferryd.yaml" > "$W/ferryd-$n.yaml"
	printf 'install:\n  parallel: 16\n' >> "$W/ferryd-$n.yaml"
	mkdir -p "$W/state-$n"
done
for i in $(seq 0 15); do
	for _ in $(seq 1 50); do [ -e "$W/ttyB$i" ] && break; sleep 0.1; done
done
# shellcheck disable=SC2046
# (reports are signed: report_lines opens them and stamps each with the time it came)
mosquitto_sub $(mqtt_opts cloud-2) -t "ferry/v1/$W_GW/stage" -q 1 -v 2>> "$W/mqtt.err" \
	> >("$W_BUILD/tests/sim/report_lines" --stamp "$W/pki/ca.pem" > "$W/timed.log") &
W_SUB2_PID=$!
trap 'kill $W_SUB2_PID 2>/dev/null; for p in "${SIM_PID[@]}"; do kill "$p" 2>/dev/null || true; done; world_down' EXIT
sleep 0.3

run_one() { # run_one N REP: deploy version 1.REP.N to N MCUs; prints the push time in seconds
	local n=$1 r=$2 u="b-$1-$2" v="1.$2.$1" t0 t1
	cp "$W/ferryd-$n.yaml" "$W/ferryd.yaml"
	start_ferryd
	"$SIM" --make-image "$v" "$BYTES" "$W/www/$u.bin"
	cat > "$W/$u.yaml" <<YAML
sequence: $((r * 100 + n))
components:
  - name: bench-fw
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: bench}
    version: $v
    format: mcuboot
    file: www/$u.bin
YAML
	"$W_FERRY" manifest sign "$W/$u.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$u.jws" > /dev/null
	cmd update.deploy "$u" --manifest "$W/$u.jws" --link "bench-fw=https://127.0.0.1:$W_HTTPS_PORT/$u.bin"
	for _ in $(seq 1 6000); do
		[ "$(grep -F "\"update_id\":\"$u\"" "$W/timed.log" | grep -cE '"stage":"(installed|failed|rolled_back|cancelled)"')" -ge "$n" ] && break
		sleep 0.1
	done
	stop_ferryd
	if [ "$(grep -F "\"update_id\":\"$u\"" "$W/timed.log" | grep -cF '"stage":"installed"')" -ne "$n" ]; then
		echo "bench: $u did not install on all $n MCUs" >&2
		exit 1
	fi
	t0=$(grep -F "\"update_id\":\"$u\"" "$W/timed.log" | grep -F '"stage":"installing"' | head -n 1 | cut -d' ' -f1)
	t1=$(grep -F "\"update_id\":\"$u\"" "$W/timed.log" | grep -F '"stage":"installed"' | tail -n 1 | cut -d' ' -f1)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

declare -A T
for r in $(seq 1 "$REPS"); do
	for n in $SIZES; do
		T[$n,$r]=$(run_one "$n" "$r")
	done
done
echo "serial-smp fleet push: one deploy of a $BYTES-byte image to N MCUs at 115200 baud, $REPS repetitions interleaved"
ref=$(for r in $(seq 1 "$REPS"); do echo "${T[1,$r]}"; done | median)
for n in $SIZES; do
	med=$(for r in $(seq 1 "$REPS"); do echo "${T[$n,$r]}"; done | median)
	ratios=$(for r in $(seq 1 "$REPS"); do awk -v a="${T[$n,$r]}" -v b="${T[1,$r]}" 'BEGIN { print a / b }'; done |
		sort -g)
	printf '  %2d MCUs: %6.1f s (median)  = %.2fx one MCU  (per repetition %.2f-%.2f)\n' "$n" "$med" \
		"$(awk -v a="$med" -v b="$ref" 'BEGIN { print a / b }')" "$(echo "$ratios" | head -n 1)" \
		"$(echo "$ratios" | tail -n 1)"
	[ "$n" = 1 ] || printf 'row: | push to %d serial MCUs (time) | %.1f s | one MCU, %.1f s | %.2f | %.2f-%.2f | <= 1.25 |\n' \
		"$n" "$med" "$ref" "$(awk -v a="$med" -v b="$ref" 'BEGIN { print a / b }')" "$(echo "$ratios" | head -n 1)" \
		"$(echo "$ratios" | tail -n 1)"
done
echo "  goal: 16 MCUs <= 1.25x one MCU"
