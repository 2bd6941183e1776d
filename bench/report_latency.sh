#!/usr/bin/env bash
# Benchmark: how late stage reports reach the cloud.  The real ferryd of
# the test world deploys one update with many progress reports: a 64 KiB
# MCUboot image to four simulated serial MCUs at 115200 baud, in parallel,
# and a 32 MiB file to the gateway itself.
#
# Measured: for every stage report, its arrival at a cloud subscriber
# (mosquitto_sub on the same broker: the time it took the message, its
# -F %U) minus the `ts_ms` the gateway put in it when it committed the
# transition.  That is the journal's commit, the signing, the broker and
# the subscriber, on one clock (both ends run on this machine).  Printed: the number of reports
# and p50, p99 and the largest delay of each repetition, and the median of
# the p99s.  Goal: p99 <= 100 ms.
#
# Reference, in the same run: the same subscriber's delay for 200 messages
# published on the same broker by one `mosquitto_pub -l` session, each line
# stamped with the time just before it is written to the client's input:
# what the broker and the subscriber cost without ferryd.
#
# The model leaves out: a broker across a network (here loopback), a
# gateway's slower storage (the journal's fsyncs land on this machine's
# disk).
#
#   bench/report_latency.sh [BUILD_DIR]    FERRY_BENCH_REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
REPS=${FERRY_BENCH_REPS:-5}
SIM="$BUILD/tests/sim/smp_device"
. scripts/world.sh
. bench/lib.sh
W_EXTRA_ADAPTERS="  serial-smp:
    ports:"
for i in 0 1 2 3; do
	W_EXTRA_ADAPTERS="$W_EXTRA_ADAPTERS
      - path: /tmp/PLACEHOLDER/ttyL$i
        vendor_id: acme
        class_id: bench
        component: bench-fw"
done
world_up "$BUILD"
sed -i "s|/tmp/PLACEHOLDER|$W|" "$W/ferryd.yaml"
cp "$BUILD/adapters/serial-smp.so" "$W/plugins/"
declare -a SIM_PID
SUB2=
trap 'kill $SUB2 2>/dev/null; for p in "${SIM_PID[@]}"; do kill "$p" 2>/dev/null || true; done; world_down' EXIT
for i in 0 1 2 3; do
	"$SIM" --link "$W/ttyL$i" --rate 11520 --version 1.0.0 >> "$W/sim$i.log" 2>&1 &
	SIM_PID[$i]=$!
done
for i in 0 1 2 3; do
	for _ in $(seq 1 50); do [ -e "$W/ttyL$i" ] && break; sleep 0.1; done
done
# shellcheck disable=SC2046
mosquitto_sub $(mqtt_opts cloud-2) -t "ferry/v1/$W_GW/stage" -t "ferry/v1/stamp" -q 1 -F '%U %t %p' 2>> "$W/mqtt.err" \
	> >("$W_BUILD/tests/sim/report_lines" --stamped "$W/pki/ca.pem" > "$W/timed.log") &
SUB2=$!
start_ferryd
# the subscriber is in place once a stamp of ours comes back through it
for _ in $(seq 1 100); do
	# shellcheck disable=SC2046
	mosquitto_pub $(mqtt_opts cloud-cmd) -t ferry/v1/stamp -q 1 -m "{\"probe\":1}"
	grep -qF '"probe":1' "$W/timed.log" && break
	sleep 0.1
done

# delays UPDATE: one delay in ms per report of UPDATE
delays() {
	grep -F "\"update_id\":\"$1\"" "$W/timed.log" |
		sed -n 's/^\([0-9.]*\) .*"ts_ms":\([0-9]*\).*/\1 \2/p' | awk '{ printf "%.1f\n", $1 * 1000 - $2 }'
}
# stamped REP: the reference: 200 messages from one mosquitto_pub session,
# each carrying the time just before its line was handed over; the session
# is connected (a first line came through) before the first stamp
stamped() {
	local i
	rm -f "$W/stamp.fifo"
	mkfifo "$W/stamp.fifo"
	# shellcheck disable=SC2046
	mosquitto_pub $(mqtt_opts cloud-cmd) -t ferry/v1/stamp -q 1 -l < "$W/stamp.fifo" &
	local pub=$!
	exec 7> "$W/stamp.fifo"
	echo "{\"ready\":\"$1\"}" >&7
	for _ in $(seq 1 100); do
		grep -qF "\"ready\":\"$1\"" "$W/timed.log" && break
		sleep 0.1
	done
	for i in $(seq 1 200); do
		echo "{\"ref\":\"$1\",\"ts_ms\":$(date +%s%3N)}" >&7
		sleep 0.01
	done
	exec 7>&-
	wait "$pub"
	for _ in $(seq 1 100); do
		[ "$(grep -cF "\"ref\":\"$1\"" "$W/timed.log")" -ge 200 ] && break
		sleep 0.1
	done
	grep -F "\"ref\":\"$1\"" "$W/timed.log" | sed -n 's/^\([0-9.]*\) .*"ts_ms":\([0-9]*\).*/\1 \2/p' |
		awk '{ printf "%.1f\n", $1 * 1000 - $2 }'
}
stats() { # count p50 p99 max of the numbers on stdin
	sort -g | awk '{ v[NR] = $1 } END { i50 = int(NR * 0.50 + 0.5); i99 = int(NR * 0.99 + 0.5);
		if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1; printf "%d %.1f %.1f %.1f\n", NR, v[i50], v[i99], v[NR] }'
}

P99=()
REF99=()
echo "report latency: transition (ts_ms) to arrival at a subscriber, $REPS repetitions"
for r in $(seq 1 "$REPS"); do
	u="lat-$r" v="1.$r.0"
	"$SIM" --make-image "$v" 65536 "$W/www/$u.bin"
	head -c $((32 * 1024 * 1024)) /dev/urandom > "$W/www/$u.app"
	cat > "$W/$u.yaml" <<YAML
sequence: $r
components:
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$v"
    format: file
    file: www/$u.app
  - name: bench-fw
    type: firmware
    adapter: serial-smp
    target: {vendor_id: acme, class_id: bench}
    version: "$v"
    format: mcuboot
    file: www/$u.bin
YAML
	"$W_FERRY" manifest sign "$W/$u.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$u.jws" > /dev/null
	cmd update.deploy "$u" --manifest "$W/$u.jws" --link "bench-fw=https://127.0.0.1:$W_HTTPS_PORT/$u.bin" \
		--link "app-bin=https://127.0.0.1:$W_HTTPS_PORT/$u.app"
	for _ in $(seq 1 6000); do
		[ "$(grep -F "\"update_id\":\"$u\"" "$W/timed.log" | grep -cE '"stage":"(installed|failed|rolled_back|cancelled)"')" -ge 5 ] && break
		sleep 0.1
	done
	n=$(grep -F "\"update_id\":\"$u\"" "$W/timed.log" | grep -cF '"stage":"installed"' || true)
	[ "$n" -eq 5 ] || { echo "bench: $u installed on $n of 5 devices" >&2; exit 1; }
	read -r cnt p50 p99 max < <(delays "$u" | stats)
	read -r rcnt rp50 rp99 rmax < <(stamped "$r" | stats)
	P99+=("$p99")
	REF99+=("$rp99")
	printf '  rep %d: ferryd %3d reports  p50 %6.1f ms  p99 %6.1f ms  max %6.1f ms | reference %d messages  p50 %5.1f  p99 %5.1f  max %5.1f ms\n' \
		"$r" "$cnt" "$p50" "$p99" "$max" "$rcnt" "$rp50" "$rp99" "$rmax"
done
fp=$(printf '%s\n' "${P99[@]}" | median)
rp=$(printf '%s\n' "${REF99[@]}" | median)
echo "  p99, median of the repetitions: ferryd $fp ms, reference $rp ms (goal: ferryd <= 100 ms)"
echo "row: | stage report delay, p99 | $fp ms | mosquitto_pub's stamped messages, $rp ms | - |" \
	"$(printf '%s\n' "${P99[@]}" | sort -g | sed -n '1p;$p' | paste -sd-) ms | <= 100 ms |"
