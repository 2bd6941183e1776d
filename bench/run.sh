#!/usr/bin/env bash
# Runs the benchmarks against a build directory (default: build), each with
# its own output, then prints one table of every figure: what was measured,
# its value, its reference (measured in the same run, interleaved with it),
# the ratio of the medians, the min-max of the per-repetition ratios (or
# how many runs there were), and the goal.  Each benchmark's header says
# what its reference is and what its model leaves out.  FERRY_BENCH_REPS
# (5) sets the repetitions of those that repeat.
set -euo pipefail
B=$(cd "${1:-$(dirname "$0")/../build}" && pwd)
D=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
{
	"$B/bench/smp_goodput" "$B/adapters/serial-smp.so" "$B/tests/sim/smp_device" "${FERRY_BENCH_BYTES:-65536}" \
		"${FERRY_BENCH_REPS:-5}"
	"$B/bench/dfu_goodput" "$B/adapters/usb-dfu.so" "$B/tests/sim/dfu_device" "${FERRY_BENCH_DFU_BYTES:-262144}" \
		"${FERRY_BENCH_REPS:-5}"
	"$D/fleet_push.sh" "$B"
	"$D/download.sh" "$B"
	"$D/idle.sh" "$B"
	"$D/report_latency.sh" "$B"
	"$D/fleet_scale.sh" "$B"
	"$D/campaign_scale.sh" "$B"
	"$D/ferryd_fleet.sh" "$B"
	"$D/delta.sh" "$B"
} 2>&1 | tee "$out"
echo
echo "ferry benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo
echo "| figure | value | reference | ratio | per repetition | goal |"
echo "|---|---|---|---|---|---|"
sed -n 's/^row: //p' "$out"
