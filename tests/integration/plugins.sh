#!/usr/bin/env bash
# The adapter host refuses broken plugins -- a version it did not offer, a
# missing table, a table lacking operations, a file that is no shared object
# -- each with a log line naming the file and the reason, and ferryd keeps
# running with the adapters that are fine, one of them without a config
# section of its own.
cd "$(dirname "$0")"
. ../../scripts/world.sh
world_up "${1:?usage: plugins.sh BUILD_DIR}"
cp "$W_BUILD"/tests/integration/plugins/bad_*.so "$W/plugins/"
# a good adapter the config has no section for: loaded with an empty section
cp "$W_BUILD/adapters/serial-smp.so" "$W/plugins/"
echo "not an ELF file" > "$W/plugins/garbage.so"
start_ferryd
wait_mqtt "ferry/v1/gw-1/inventory" 10
grep -q "bad_wrong_abi.so refused: it implements ABI 3, this ferryd offers 1 and 2" "$W/ferryd.log" ||
	fail "wrong ABI not refused"
grep -q "bad_no_table.so refused: missing symbol ferry_adapter_table_v1" "$W/ferryd.log" || fail "missing table not refused"
grep -q "bad_half_table.so refused: its table lacks an operation" "$W/ferryd.log" || fail "half table not refused"
grep -q "garbage.so refused:" "$W/ferryd.log" || fail "garbage file not refused"
kill -0 "$W_FERRYD_PID" || fail "ferryd died"
grep -q "adapter serial-smp loaded" "$W/ferryd.log" || fail "an adapter without a config section was not loaded"
grep -F "ferry/v1/gw-1/inventory" "$W/mqtt.log" | grep -qF '"adapter":"self"' || fail "the good adapter is gone"
cmd inventory.refresh u-0
wait_mqtt '"op":"inventory.refresh","result":"accepted"' 10
wait_mqtt "ferry/v1/gw-1/inventory" 10 2
echo "ok: broken plugins refused, ferryd running"
