#!/usr/bin/env bash
# Runs the benchmarks against a build directory (default: build).
set -euo pipefail
B=$(cd "${1:-$(dirname "$0")/../build}" && pwd)
"$B/bench/smp_goodput" "$B/adapters/serial-smp.so" "$B/tests/sim/smp_device" "${FERRY_BENCH_BYTES:-65536}"
"$B/bench/dfu_goodput" "$B/adapters/usb-dfu.so" "$B/tests/sim/dfu_device" "${FERRY_BENCH_DFU_BYTES:-262144}"
"$(dirname "$0")/fleet_push.sh" "$B"
"$(dirname "$0")/download.sh" "$B"
"$(dirname "$0")/idle.sh" "$B"
"$(dirname "$0")/report_latency.sh" "$B"
"$(dirname "$0")/fleet_scale.sh" "$B"
"$(dirname "$0")/campaign_scale.sh" "$B"
"$(dirname "$0")/ferryd_fleet.sh" "$B"
