#!/usr/bin/env bash
# Power-safety through the real ferryd:
#  1. SIGKILL during a download; after restart the download resumes with an
#     HTTP Range request for the missing tail and the update completes;
#  2. the file server goes away half way; the download completes after it
#     returns, again fetching only the tail;
#  3. SIGKILL during install; after restart the update completes and no
#     component is reported installed twice;
#  4. a power cut during a download, as the next boot finds it: the partial
#     file's bytes past what was made durable are garbage, and the store's
#     record of the boot names another one; only the durable prefix is
#     kept, and the image that installs is the right one.
cd "$(dirname "$0")"
. ../../scripts/world.sh
W_SLOW_RATE=40k
world_up "${1:?usage: resume.sh BUILD_DIR}"
start_ferryd

# bytes nginx sent for PATH with status STATUS, summed
sent() { awk -v p="$1" -v s="$2" '$7 == p && $9 == s { n += $10 } END { print n + 0 }' "$W/nginx/access.log"; }
# installed reports of UPDATE COMPONENT, counted by seq: the outbox sends a
# report again, with its seq, when its acknowledgement was lost in a kill
installed_count() { grep -F "\"update_id\":\"$1\"" "$W/mqtt.log" | grep -F "\"component\":\"$2\"" |
	grep -F '"stage":"installed"' | grep -oE '"seq":[0-9]+' | sort -u | wc -l; }

# --- 1. SIGKILL mid-download
make_update k1 1 1.0.0 1.0.0 400000
# shellcheck disable=SC2046
cmd update.deploy u-k1 --manifest "$W/k1.jws" $(links_for k1 slow/)
wait_mqtt '"update_id":"u-k1","component":"app-bin","stage":"downloading"' 20 8 # some bytes are in
kill9_ferryd
start_ferryd
wait_mqtt '"update_id":"u-k1","component":"app-bin","stage":"installed"' 60
cmp "$W/www/k1-app.bin" "$W/target/app.bin" || fail "k1: wrong app.bin after resume"
[ "$(installed_count u-k1 app-bin)" -eq 1 ] || fail "k1: app-bin reported installed $(installed_count u-k1 app-bin) times"
full=$(sent /slow/k1-app.bin 200)
tail=$(sent /slow/k1-app.bin 206)
[ "$tail" -gt 0 ] || fail "k1: no Range request after restart"
[ "$tail" -lt 400000 ] || fail "k1: the whole file was fetched again ($tail bytes)"
# a killed ferryd's bytes are in the page cache: the next start of the same
# boot keeps them all, made durable or not
again=$((full + tail - 400000))
[ "$again" -le 1048576 ] || fail "k1: $again bytes were fetched twice"
echo "ok: SIGKILL during download resumes with Range ($full + $tail bytes, $again fetched twice)"

# --- 2. the server goes away half way and comes back
make_update k2 2 1.1.0 1.1.0 400000
# shellcheck disable=SC2046
cmd update.deploy u-k2 --manifest "$W/k2.jws" $(links_for k2 slow/)
wait_mqtt '"update_id":"u-k2","component":"app-bin","stage":"downloading"' 20 8
kill -9 "$W_NGINX_PID"; wait "$W_NGINX_PID" 2>/dev/null || true; W_NGINX_PID=
start_nginx
wait_mqtt '"update_id":"u-k2","component":"app-bin","stage":"installed"' 90
cmp "$W/www/k2-app.bin" "$W/target/app.bin" || fail "k2: wrong app.bin"
[ "$(sent /slow/k2-app.bin 206)" -gt 0 ] || fail "k2: the tail was not fetched with Range"
echo "ok: download survives the server going away"

# --- 3. SIGKILL during install (the reload command holds activation open)
stop_ferryd
sed -i "s|        path: $W/target/app.bin|        path: $W/target/app.bin\n        reload: sleep 3|" "$W/ferryd.yaml"
start_ferryd
make_update k3 3 1.2.0 1.2.0 1000
# shellcheck disable=SC2046
cmd update.deploy u-k3 --manifest "$W/k3.jws" $(links_for k3)
wait_mqtt '"update_id":"u-k3","component":"app-bin","stage":"activating"' 30
kill9_ferryd
start_ferryd
wait_mqtt '"update_id":"u-k3","component":"app-bin","stage":"installed"' 30
# app-config comes first in the install order: a second install of it
# would be reported before app-bin's
[ "$(installed_count u-k3 app-bin)" -eq 1 ] || fail "k3: app-bin reported installed $(installed_count u-k3 app-bin) times"
[ "$(installed_count u-k3 app-config)" -eq 1 ] || fail "k3: app-config reported installed $(installed_count u-k3 app-config) times"
cmp "$W/www/k3-app.bin" "$W/target/app.bin" || fail "k3: wrong app.bin"
echo "ok: SIGKILL during install completes once"

# --- 4. a power cut mid-download
make_update k4 4 1.3.0 1.3.0 400000
# shellcheck disable=SC2046
cmd update.deploy u-k4 --manifest "$W/k4.jws" $(links_for k4 slow/)
wait_mqtt '"update_id":"u-k4","component":"app-bin","stage":"downloading"' 20 8
kill9_ferryd
part="$W/state/store/partial/$(sha256sum "$W/www/k4-app.bin" | cut -d' ' -f1)"
size=$(stat -c %s "$part")
[ "$size" -gt 0 ] || fail "k4: no partial file to cut"
# nothing of it was made durable (less than 8 MiB came): all of it may be
# garbage after a power cut, and here it is
head -c "$size" /dev/urandom | dd of="$part" conv=notrunc status=none
echo "an-earlier-boot" > "$W/state/store/.boot"
start_ferryd
wait_mqtt '"update_id":"u-k4","component":"app-bin","stage":"installed"' 60
cmp "$W/www/k4-app.bin" "$W/target/app.bin" || fail "k4: wrong app.bin after the power cut"
grep -F "\"update_id\":\"u-k4\"" "$W/mqtt.log" | grep -qF '"stage":"failed"' && fail "k4: a step failed"
[ "$(awk '$7 == "/slow/k4-app.bin" && $9 == 200' "$W/nginx/access.log" | wc -l)" -eq 2 ] ||
	fail "k4: the image was not fetched again from its durable start"
[ "$(cat "$W/state/store/.boot")" = "$(cat /proc/sys/kernel/random/boot_id)" ] || fail "k4: the boot was not recorded"
echo "ok: after a power cut only the durable prefix of a download is kept"
