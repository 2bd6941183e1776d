#!/usr/bin/env bash
# Benchmark: `ferry fleet` over N gateways' retained inventories (N =
# 10,000 by default), each signed by its own gateway certificate as ferryd
# signs it, on the real mosquitto of the test world.
#
# Measured: the wall time of `ferry fleet > /dev/null`: connect over TLS,
# subscribe, take every retained inventory and state, open each signed
# report (chain to the CA, ES256 signature, CN against the topic), build and
# print the table.  Goal: within 2 s for 10,000 gateways.  The first run is
# cold; later ones find the reports they opened before in the state dir's
# cache (opened.db: same bytes, same trust anchor, certificate still valid)
# and open only what changed, as an operator's second look does.  Both are
# printed.
#
# Reference, measured in the same run and interleaved with it: the same
# retained messages fetched by `mosquitto_sub -C N` with the same operator
# certificate and nothing checked: what the broker and the network cost.
# Printed: the medians of each over the repetitions, and their ratio.
#
# The model leaves out: a broker on another machine (here it is loopback
# on the same two cores), inventories larger than two devices, and gateways
# coming and going while the table is read.
#
#   bench/fleet_scale.sh [BUILD_DIR]    FERRY_BENCH_GATEWAYS (10000), FERRY_BENCH_REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
N=${FERRY_BENCH_GATEWAYS:-10000}
REPS=${FERRY_BENCH_REPS:-5}
. scripts/world.sh
world_up "$BUILD"
P=$W/pki
echo "== filling the broker with $N gateways' signed inventories"
"$BUILD/bench/fleet_fill" "$N" "$P/ca.pem" "$P/ca.key" 127.0.0.1 "$W_OPS_PORT" "$P/ca.pem" "$P/operator.pem" \
	"$P/operator.key"

secs() { # secs CMD...: wall seconds of CMD, with three decimals
	local t0 t1
	t0=$(date +%s%N)
	"$@" > /dev/null
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}
raw() {
	mosquitto_sub -h 127.0.0.1 -p "$W_OPS_PORT" --cafile "$P/ca.pem" --cert "$P/operator.pem" \
		--key "$P/operator.key" -V mqttv5 -t 'ferry/v1/+/inventory' -C "$N" -W 120
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

fleet_t=()
raw_t=()
for r in $(seq 1 "$REPS"); do
	raw_t+=("$(secs raw)")
	fleet_t+=("$(secs "$W_FERRY" fleet)")
	echo "  rep $r: mosquitto_sub ${raw_t[-1]} s, ferry fleet ${fleet_t[-1]} s"
done
cold=${fleet_t[0]}
rows=$("$W_FERRY" fleet | tail -n 1)
echo "$rows" | grep -q "^$N gateways" || { echo "bench: ferry fleet did not see $N gateways: $rows" >&2; exit 1; }
fm=$(printf '%s\n' "${fleet_t[@]:1}" | median)
rm=$(printf '%s\n' "${raw_t[@]}" | median)
echo "row: | ferry fleet over $N gateways, cold | $cold s | mosquitto_sub alone, $rm s | $(awk -v a="$cold" -v b="$rm" 'BEGIN { printf "%.2f", a / b }') | one run | <= 2 s |"
echo "row: | ferry fleet over $N gateways, warm | $fm s | mosquitto_sub alone, $rm s | $(awk -v a="$fm" -v b="$rm" 'BEGIN { printf "%.2f", a / b }') | $(printf '%s\n' "${fleet_t[@]:1}" | sort -g | sed -n '1p;$p' | paste -sd-) s | <= 2 s |"
echo "fleet_scale: $N gateways: ferry fleet cold $cold s, warm $fm s (median of $((REPS - 1)); goal <= 2 s)," \
	"mosquitto_sub alone $rm s, ratio warm $(awk -v a="$fm" -v b="$rm" 'BEGIN { printf "%.2f", a / b }')x," \
	"cold $(awk -v a="$cold" -v b="$rm" 'BEGIN { printf "%.2f", a / b }')x"
