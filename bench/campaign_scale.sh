#!/usr/bin/env bash
# Benchmark: a campaign over N gateways (N = 500 by default) through the
# real broker of the test world, with `ferry campaign run --until-idle`, in
# batches of 100 that advance at 100%.
#
# The gateways are lightweight (bench/gw_swarm.c): one MQTT client each,
# with its own certificate, that answers each update.deploy at once with a
# signed reply, `allowed`, `installed` and a new signed inventory.  So what
# is measured is the operator's side: choosing the targets from N signed
# inventories, signing and recording N commands, following 3N signed
# messages (each opened: chain, signature, CN) and storing them, the batch
# and threshold rule.  Checked after each run: the campaign is done with N
# installed and the swarm's inventories show the new version.
#
# Reference, measured in the same run and interleaved with it: `ferry
# deploy` of the same kind of update to the same N gateways, which signs,
# publishes and follows the same messages with nothing recorded and no
# batches.  Printed: the medians of each over the repetitions, and their
# ratio.
#
# The model leaves out: real ferryd instances (their downloads and installs
# take the same time either way), gateways that are offline or fail, and a
# broker on another machine.
#
#   bench/campaign_scale.sh [BUILD_DIR]    FERRY_BENCH_CAMPAIGN_GATEWAYS (500), FERRY_BENCH_REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
N=${FERRY_BENCH_CAMPAIGN_GATEWAYS:-500}
REPS=${FERRY_BENCH_REPS:-5}
. scripts/world.sh
. bench/lib.sh
world_up "$BUILD"
P=$W/pki
mkdir -p "$W/swarm"
# one swarm per 250 gateways (gw_swarm.c says why); each prints "ready"
SWARM_PIDS=
trap '{ [ -z "$SWARM_PIDS" ] || kill $SWARM_PIDS; } 2>/dev/null || true; world_down' EXIT
for first in $(seq 0 250 $((N - 1))); do
	count=$((N - first < 250 ? N - first : 250))
	"$BUILD/bench/gw_swarm" "$count" sw- bench "$P/ca.pem" "$P/ca.key" 127.0.0.1 "$W_MQTT_PORT" "$W/swarm" "$first" \
		< /dev/null > "$W/swarm-$first.out" 2> "$W/swarm-$first.err" &
	SWARM_PIDS="$SWARM_PIDS $!"
done
for first in $(seq 0 250 $((N - 1))); do
	for _ in $(seq 1 3000); do grep -qx ready "$W/swarm-$first.out" && break; sleep 0.1; done
	grep -qx ready "$W/swarm-$first.out" || { echo "bench: a swarm did not come up: $(cat "$W/swarm-$first.err")" >&2; exit 1; }
done
echo "== $N lightweight gateways up (site bench)"

gateways=()
for i in $(seq 0 $((N - 1))); do gateways+=(--gateway "$(printf 'sw-%04d' "$i")"); done
mkdir -p "$W/rel"
spec() { # spec SEQ VERSION
	printf 'rev: %s\n' "$2" > "$W/rel/app-$1.conf"
	cat > "$W/rel/spec-$1.yaml" <<YAML
sequence: $1
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$2"
    format: file
    file: app-$1.conf
YAML
}
deploy_t=()
camp_t=()
seq_no=0
for r in $(seq 1 "$REPS"); do
	seq_no=$((seq_no + 1))
	spec "$seq_no" "1.$seq_no.0"
	deploy_t+=("$(secs "$W_FERRY" deploy "$W/rel/spec-$seq_no.yaml" "${gateways[@]}" --json)")
	seq_no=$((seq_no + 1))
	spec "$seq_no" "1.$seq_no.0"
	"$W_FERRY" campaign create "c$r" --manifest "$W/rel/spec-$seq_no.yaml" --where site=bench --batch 100 \
		--stop-at-failures 1 > /dev/null
	camp_t+=("$(secs "$W_FERRY" campaign run --until-idle)")
	status=$("$W_FERRY" campaign status "c$r")
	grep -q "^campaign c$r: done: $N of $N targets installed" <<< "$status" &&
		grep -q "targeted $N, pending 0, in progress 0, installed $N, already installed 0, failed 0" <<< "$status" ||
		{ echo "bench: campaign c$r did not end with $N installed: $status" >&2; exit 1; }
	behind=$("$W_FERRY" fleet --where "component.app-config<1.$seq_no.0" | tail -n 1)
	grep -q "; 0 of $N gateways match" <<< "$behind" ||
		{ echo "bench: the fleet is not all at 1.$seq_no.0: $behind" >&2; exit 1; }
	echo "  rep $r: ferry deploy ${deploy_t[-1]} s, ferry campaign run ${camp_t[-1]} s ($N installed, counts checked)"
done
dm=$(printf '%s\n' "${deploy_t[@]}" | median)
cm=$(printf '%s\n' "${camp_t[@]}" | median)
echo "row: | campaign over $N gateways (time) | $cm s | ferry deploy to the same, $dm s | $(awk -v a="$cm" -v b="$dm" 'BEGIN { printf "%.2f", a / b }') | $(for r in $(seq 0 $((REPS - 1))); do awk -v a="${camp_t[$r]}" -v b="${deploy_t[$r]}" 'BEGIN { printf "%.2f\n", a / b }'; done | sort -g | sed -n '1p;$p' | paste -sd-) | completes, counts right |"
echo "campaign_scale: $N gateways in batches of 100: ferry campaign run $cm s (median of $REPS), ferry deploy" \
	"$dm s, ratio $(awk -v a="$cm" -v b="$dm" 'BEGIN { printf "%.2f", a / b }')x"
