#!/usr/bin/env bash
# Benchmark: `ferry fleet` over N gateways' retained inventories (N =
# 10,000 by default), each signed by its own gateway certificate as ferryd
# signs it, on the real mosquitto of the test world.
#
# Measured: the wall time of `ferry fleet > /dev/null`: connect over TLS,
# subscribe, take every retained inventory and state, open each signed
# report (chain to the CA, ES256 signature, CN against the topic), build and
# print the table.  Goal: within 2 s for 10,000 gateways.  Each repetition
# runs it cold (the state dir's cache removed first: every report opened, as
# on an operator's first look) and then warm (the cache, opened.db, holds
# what the cold run opened: same bytes, same trust anchor, certificate
# still valid, so only what changed is opened, as on a second look).  Both
# are printed.
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
. bench/lib.sh
world_up "$BUILD"
P=$W/pki
echo "== filling the broker with $N gateways' signed inventories"
"$BUILD/bench/fleet_fill" "$N" "$P/ca.pem" "$P/ca.key" 127.0.0.1 "$W_OPS_PORT" "$P/ca.pem" "$P/operator.pem" \
	"$P/operator.key"

raw() {
	mosquitto_sub -h 127.0.0.1 -p "$W_OPS_PORT" --cafile "$P/ca.pem" --cert "$P/operator.pem" \
		--key "$P/operator.key" -V mqttv5 -t 'ferry/v1/+/inventory' -C "$N" -W 120
}

cache=$(sed -n 's/^state_dir: //p' "$P/operator.yaml")/opened.db
[ -n "$cache" ] || { echo "bench: no state_dir in operator.yaml" >&2; exit 1; }
cold_t=()
warm_t=()
raw_t=()
for r in $(seq 1 "$REPS"); do
	raw_t+=("$(secs raw)")
	rm -f "$cache" "$cache-wal" "$cache-shm"
	cold_t+=("$(secs "$W_FERRY" fleet)")
	[ -s "$cache" ] || { echo "bench: the cold run left no cache at $cache" >&2; exit 1; }
	warm_t+=("$(secs "$W_FERRY" fleet)")
	echo "  rep $r: mosquitto_sub ${raw_t[-1]} s, ferry fleet cold ${cold_t[-1]} s, warm ${warm_t[-1]} s"
done
rows=$("$W_FERRY" fleet | tail -n 1)
echo "$rows" | grep -q "^$N gateways" || { echo "bench: ferry fleet did not see $N gateways: $rows" >&2; exit 1; }
cm=$(printf '%s\n' "${cold_t[@]}" | median)
fm=$(printf '%s\n' "${warm_t[@]}" | median)
rm=$(printf '%s\n' "${raw_t[@]}" | median)
echo "row: | ferry fleet over $N gateways, cold | $cm s | mosquitto_sub alone, $rm s | $(ratio "$cm" "$rm") | $(span "${cold_t[@]}") s | <= 2 s |"
echo "row: | ferry fleet over $N gateways, warm | $fm s | mosquitto_sub alone, $rm s | $(ratio "$fm" "$rm") | $(span "${warm_t[@]}") s | <= 2 s |"
echo "fleet_scale: $N gateways: ferry fleet cold $cm s ($(span "${cold_t[@]}") s), warm $fm s ($(span "${warm_t[@]}") s);" \
	"medians of $REPS; goal <= 2 s; mosquitto_sub alone $rm s, ratio cold $(ratio "$cm" "$rm")x, warm $(ratio "$fm" "$rm")x"
