#!/usr/bin/env bash
# Benchmark: many real ferryd on one broker.  N ferryd processes
# (FERRY_BENCH_FERRYDS, 500), each with its own id, client certificate,
# state directory and self adapter, connect to the test world's mosquitto
# (its config keeps up to 20000 queued messages per client, so no
# subscriber's queue drops a report); each is asked for inventory.refresh,
# then one `ferry deploy` sends all of them a small update (a 1 KiB
# configuration file, fetched from the shipped file host with device-bound
# links).
#
# Measured and printed:
#   - how many instances came online, answered inventory.refresh and
#     reported every stage of the deploy (allowed, downloading, downloaded,
#     verifying, verified, installing, installed): the goal is all N;
#   - memory per instance: RSS and USS (Private_Clean + Private_Dirty of
#     /proc/PID/smaps_rollup), mean and largest, once the deploy is over;
#   - the delay of every stage report, from its ts_ms to its arrival at a
#     cloud subscriber (mosquitto_sub's arrival time, -F %U), p50 and p99;
#   - the wall time of `ferry deploy` to all N.
# Reference, in the same run: the same deploy to one instance (the first),
# before the others start: its report delays and deploy time.
#
# The model leaves out: N machines (here N processes share two cores, so a
# report waits for the CPU more than it would on a gateway), a broker on
# another host, and links slower than loopback.
#
#   bench/ferryd_fleet.sh [BUILD_DIR]    FERRY_BENCH_FERRYDS (500)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
N=${FERRY_BENCH_FERRYDS:-500}
. scripts/world.sh
ids=()
for i in $(seq 1 "$N"); do ids+=("$(printf 'f-%04d' "$i")"); done
W_MORE_GATEWAYS="${ids[*]}"
world_up "$BUILD"
write_operator_config
SUB2=
trap 'kill $SUB2 2>/dev/null; world_down' EXIT
# shellcheck disable=SC2046
mosquitto_sub $(mqtt_opts cloud-2) -t "ferry/v1/+/stage" -t "ferry/v1/+/reply" -q 1 -F '%U %t %p' 2>> "$W/mqtt.err" \
	> >("$W_BUILD/tests/sim/report_lines" --stamped "$W/pki/ca.pem" > "$W/timed.log") &
SUB2=$!

online() { grep -cE "^ferry/v1/f-[0-9]{4}/state \{\"state\":\"online\"\}" "$W/mqtt.log" || true; }
wait_count() { # wait_count FUNCTION WANT SECONDS
	local i
	for i in $(seq 1 $(($3 * 10))); do
		[ "$($1)" -ge "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
mkdir -p "$W/rel"
spec() { # spec SEQ: a 1 KiB configuration file
	head -c 1024 /dev/urandom | base64 | head -c 1024 > "$W/rel/app-$1.conf"
	cat > "$W/rel/spec-$1.yaml" <<YAML
sequence: $1
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "1.$1.0"
    format: file
    file: app-$1.conf
YAML
}
delays() { # delays UPDATE: ms from ts_ms to arrival, one per stage report of UPDATE
	grep -F "\"update_id\":\"$1\"" "$W/timed.log" | grep -F '"stage":"' |
		sed -n 's/^\([0-9.]*\) .*"ts_ms":\([0-9]*\).*/\1 \2/p' | awk '{ printf "%.1f\n", $1 * 1000 - $2 }'
}
pcts() { # p50 p99 of the numbers on stdin
	sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "- -"; exit }
		i = int(NR * 0.5 + 0.5); j = int(NR * 0.99 + 0.5); if (i < 1) i = 1; if (j < 1) j = 1
		printf "%.1f %.1f\n", v[i], v[j] }'
}
deploy() { # deploy SEQ UPDATE GATEWAY...: seconds `ferry deploy` took (fails the bench on a failure)
	local seq=$1 u=$2 t0 t1 args=()
	shift 2
	for g in "$@"; do args+=(--gateway "$g"); done
	t0=$(date +%s%N)
	"$W_FERRY" deploy "$W/rel/spec-$seq.yaml" "${args[@]}" --update "$u" > "$W/$u.out" 2> "$W/$u.err" ||
		fail "ferry deploy $u: $(tail -n 3 "$W/$u.err")"
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", (b - a) / 1e9 }'
}
complete() { # complete UPDATE: instances with every stage of the deploy reported
	grep -F "\"update_id\":\"$1\"" "$W/timed.log" | grep -F '"stage":"' |
		sed -n 's/^[0-9.]* ferry\/v1\/\([^/]*\)\/stage .*"stage":"\([a-z_]*\)".*/\1 \2/p' | sort -u |
		awk '{ s[$1] = s[$1] " " $2 } END { n = 0; for (g in s) { k = 0
			split("allowed downloading downloaded verifying verified installing installed", want, " ")
			for (w in want) if (index(s[g] " ", " " want[w] " ")) k++
			if (k == 7) n++ } print n }'
}

# the reference: one instance alone
start_gateway "${ids[0]}" bench
wait_count online 1 60 || fail "${ids[0]} did not come online"
spec 1
t_one=$(deploy 1 ref "${ids[0]}")
read -r one50 one99 < <(delays ref | pcts)

echo "== starting $((N - 1)) more ferryd"
for g in "${ids[@]:1}"; do start_gateway "$g" bench; done
wait_count online "$N" 600 || echo "bench: only $(online) of $N instances came online" >&2
up=$(online)
for g in "${ids[@]}"; do W_TO=$g cmd inventory.refresh "inv-$g"; done
refreshed() { grep -E '^[0-9.]+ ferry/v1/f-[0-9]{4}/reply ' "$W/timed.log" | grep -cF '"op":"inventory.refresh"' || true; }
wait_count refreshed "$N" 600 || true
inv=$(refreshed)
spec 2
t_all=$(deploy 2 all "${ids[@]}")
# ferry deploy has seen every gateway through; the subscriber may still be
# opening the last reports
complete_all() { complete all; }
wait_count complete_all "$N" 120 || true
done_n=$(complete all)
read -r all50 all99 < <(delays all | pcts)

rss=0 uss=0 maxr=0 maxu=0 n=0
for p in $W_GW_PIDS; do
	[ -r /proc/"$p"/smaps_rollup ] || continue
	read -r r u < <(awk '/^Rss:/ { r = $2 } /^Private_(Clean|Dirty):/ { u += $2 } END { print r, u }' /proc/"$p"/smaps_rollup)
	rss=$((rss + r)) uss=$((uss + u)) n=$((n + 1))
	[ "$r" -le "$maxr" ] || maxr=$r
	[ "$u" -le "$maxu" ] || maxu=$u
done
echo "ferryd fleet on one broker: $N instances"
echo "  online $up, answered inventory.refresh $inv, every stage of the deploy reported $done_n (goal: $N of $N)"
awk -v r="$rss" -v u="$uss" -v n="$n" -v mr="$maxr" -v mu="$maxu" 'BEGIN {
	printf "  memory per instance: RSS %.1f MiB mean (%.1f largest), USS %.1f MiB mean (%.1f largest)\n",
		r / n / 1024, mr / 1024, u / n / 1024, mu / 1024 }'
echo "  stage report delay (ts_ms to the subscriber): p50 $all50 ms, p99 $all99 ms; one instance alone: p50 $one50, p99 $one99 ms"
echo "  ferry deploy to all: $t_all s; to one instance alone: $t_one s"
echo "row: | $N real ferryd on one broker, complete | $done_n of $N | - | - | one run | all |"
echo "row: | $N real ferryd, stage report delay p99 | $all99 ms | one instance alone, $one99 ms | - | one run | - |"
echo "row: | $N real ferryd, memory per instance | USS $(awk -v u="$uss" -v n="$n" 'BEGIN { printf "%.1f", u / n / 1024 }') MiB | - | - | one reading | - |"
[ "$done_n" -eq "$N" ]
