#!/usr/bin/env bash
# Benchmark: ferryd at rest.  One ferryd of the test world (the self adapter
# with two files, the plugin directory, keepalive 30 s) connected over TLS
# to the world's mosquitto, with nothing to do.
#
# Measured, over a window of FERRY_BENCH_IDLE_S seconds (60) that starts
# once ferryd is online and has published its inventory:
#   - wake-ups per second: the growth of voluntary + nonvoluntary context
#     switches summed over every thread in /proc/PID/task (a thread that
#     sleeps in poll() or on a condition variable adds none);
#   - RSS, and USS = Private_Clean + Private_Dirty of /proc/PID/smaps_rollup
#     (what ferryd's exit would give back);
#   - the mappings that hold most of the RSS, by file.
# Goals: <= 0.1 wake-ups/s; RSS <= 10 MiB; USS <= 3 MiB.
#
# Reference, measured in the same window: `mosquitto_sub` holding a session
# of its own on the same broker with the same CA and keepalive (an MQTT
# client that is only connected).  Its figures are printed beside ferryd's.
#
# The model leaves out: adapters that watch hardware (serial and USB ports
# are opened only while a device is pushed, so the world's are left out),
# a broker that sends anything while the window runs, and systemd's
# watchdog (off in the shipped unit).
#
#   bench/idle.sh [BUILD_DIR]    FERRY_BENCH_IDLE_S (60)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
WINDOW=${FERRY_BENCH_IDLE_S:-60}
. scripts/world.sh
world_up "$BUILD"
SUB=
trap '[ -n "$SUB" ] && kill "$SUB" 2>/dev/null; world_down' EXIT
start_ferryd
wait_mqtt "ferry/v1/$W_GW/inventory " 30
# shellcheck disable=SC2046
mosquitto_sub $(mqtt_opts cloud) -k 30 -t "ferry/v1/nobody/#" > /dev/null &
SUB=$!

switches() { # switches PID: context switches of every thread so far
	cat /proc/"$1"/task/*/status 2>/dev/null |
		awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }'
}
per_thread() { # per_thread PID: "TID switches" for each thread
	local t
	for t in /proc/"$1"/task/*; do
		awk -v t="${t##*/}" '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print t, s + 0 }' "$t/status"
	done
}
kib() { # kib PID FIELD...: the sum of these smaps_rollup fields, in KiB
	local pid=$1
	shift
	awk -v f=" $* " 'index(f, " " substr($1, 1, length($1) - 1) " ") { s += $2 } END { print s + 0 }' \
		/proc/"$pid"/smaps_rollup
}
top_maps() { # top_maps PID: the eight files whose mappings hold most RSS, with their private part
	awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6 ? $6 : "[anon]") } /^Rss:/ { r[name] += $2 }
		/^Private_(Clean|Dirty):/ { u[name] += $2 }
		END { for (n in r) printf "%8d KiB (private %5d KiB)  %s\n", r[n], u[n], n }' /proc/"$1"/smaps |
		sort -rn | head -n 8
}

# the subscriber is online once the broker lists it; one more keepalive
# and both are at rest
sleep 1
f0=$(switches "$W_FERRYD_PID")
s0=$(switches "$SUB")
per_thread "$W_FERRYD_PID" > "$W/threads0"
sleep "$WINDOW"
f1=$(switches "$W_FERRYD_PID")
per_thread "$W_FERRYD_PID" > "$W/threads1"
s1=$(switches "$SUB")
kill -0 "$W_FERRYD_PID" || fail "ferryd ended during the window"
threads=$(find /proc/"$W_FERRYD_PID"/task -mindepth 1 -maxdepth 1 | wc -l)

rate() { awk -v a="$1" -v b="$2" -v w="$WINDOW" 'BEGIN { printf "%.3f", (b - a) / w }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
fw=$(rate "$f0" "$f1")
sw=$(rate "$s0" "$s1")
frss=$(kib "$W_FERRYD_PID" Rss)
fuss=$(kib "$W_FERRYD_PID" Private_Clean Private_Dirty)
srss=$(kib "$SUB" Rss)
suss=$(kib "$SUB" Private_Clean Private_Dirty)
echo "idle over ${WINDOW} s ($threads threads in ferryd):"
printf '  %-16s %10s %10s %10s\n' "" "wakeups/s" "RSS MiB" "USS MiB"
printf '  %-16s %10s %10s %10s\n' ferryd "$fw" "$(mib "$frss")" "$(mib "$fuss")"
printf '  %-16s %10s %10s %10s\n' mosquitto_sub "$sw" "$(mib "$srss")" "$(mib "$suss")"
echo "  goals: <= 0.1 wakeups/s, RSS <= 10 MiB, USS <= 3 MiB"
echo "row: | ferryd idle, wake-ups per second | $fw | mosquitto_sub holding a session, $sw | - | one ${WINDOW} s window | <= 0.1 |"
echo "row: | ferryd idle, RSS | $(mib "$frss") MiB | mosquitto_sub, $(mib "$srss") MiB | - | one reading | <= 10 MiB |"
echo "row: | ferryd idle, USS | $(mib "$fuss") MiB | mosquitto_sub, $(mib "$suss") MiB | - | one reading | <= 3 MiB |"
echo "  ferryd's threads that woke (thread id: wake-ups in the window):"
join "$W/threads0" "$W/threads1" | awk '$3 > $2 { printf "    %s: %d\n", $1, $3 - $2 }'
echo "  ferryd's largest mappings (private: pages no other process maps, in its USS):"
top_maps "$W_FERRYD_PID" | sed 's/^/  /'
