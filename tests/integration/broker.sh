#!/usr/bin/env bash
# The broker goes away in the middle of an update.  ferryd goes on working,
# keeps its stage reports in the journal's outbox, reconnects by itself when
# the broker is back, and sends what the cloud missed: in the end every
# report of the update has arrived, seq 1..N without a gap.
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_SLOW_RATE=100k
# the broker keeps the cloud watcher's session on disk, as a cloud broker
# would; otherwise what ferryd flushes before the watcher is back is lost
W_MQTT_PERSIST=true
world_up "${1:?usage: broker.sh BUILD_DIR}"
sed -i 's/reconnect_min_ms: 200/reconnect_min_ms: 1500/; s/reconnect_max_ms: 2000/reconnect_max_ms: 3000/' "$W/ferryd.yaml"
start_ferryd
make_update b1 1 1.0.0 1.0.0 600000
# shellcheck disable=SC2046
cmd update.deploy u-b1 --manifest "$W/b1.jws" $(links_for b1 slow/)
wait_mqtt '"update_id":"u-b1","component":"app-bin","stage":"downloading"' 20 2
kill "$W_MQTT_PID"; wait "$W_MQTT_PID" 2>/dev/null || true
kill "$W_SUB_PID" 2>/dev/null || true; wait "$W_SUB_PID" 2>/dev/null || true
# the download finishes and installs while the broker is away: ferryd logs
# each transition as it records it
for _ in $(seq 1 600); do grep -qF "u-b1/app-bin on self: installed" "$W/ferryd.log" && break; sleep 0.1; done
grep -qF "u-b1/app-bin on self: installed" "$W/ferryd.log" || fail "u-b1 did not install while the broker was away"
[ -s "$W/mosquitto.db" ] || fail "the broker kept no session on disk"
mosquitto -c "$W/mosquitto.conf" > "$W/mosquitto.out" 2>&1 &
W_MQTT_PID=$!
wait_port "$W_MQTT_PORT"
watch_mqtt
wait_mqtt '"update_id":"u-b1","component":"app-bin","stage":"installed"' 30
# the outbox goes out in seq order and MQTT keeps one sender's order: every
# report before the last one is here already
seqs=$(grep -F 'ferry/v1/gw-1/stage ' "$W/mqtt.log" | grep -F '"update_id":"u-b1"' |
	sed 's/.*"seq":\([0-9]*\).*/\1/' | sort -n | uniq | tr '\n' ' ')
n=$(echo "$seqs" | wc -w)
last=$(echo "$seqs" | awk '{print $NF}')
[ "$n" -eq "$last" ] || fail "reports missing after reconnect: got $n of $last ($seqs)"
grep -q "disconnected from the broker\|retrying in about" "$W/ferryd.log" || fail "ferryd did not notice the broker going"
[ "$(grep -c "connected to 127.0.0.1" "$W/ferryd.log")" -ge 2 ] || fail "ferryd did not reconnect"
echo "ok: outbox delivered after the broker came back ($n reports)"
