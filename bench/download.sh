#!/usr/bin/env bash
# Benchmark: ferryd's download and check of one large image, against what a
# user would script to get the same verified file.
#
# Measured, for an image of FERRY_BENCH_MIB MiB (256) from the test world's
# nginx over HTTPS on loopback, each repetition with a fresh image:
#   - ferryd's download: from the `downloading` report with 0 bytes to the
#     `downloaded` report, by their ts_ms (update.request, then
#     update.download: the phase alone);
#   - ferryd's check: from `verifying` to `verified` (update.check), and
#     ferryd's RSS before and at the end of it (VmHWM, the high-water mark,
#     reset before the check through /proc/PID/clear_refs);
# References, measured in the same run, interleaved with ferryd's, from the
# same server and CA (before each download, ferryd's or curl's, the page
# cache is dropped and the served image read back in, when run as root):
#   - `curl -o FILE` onto the same file system;
#   - `curl -o FILE && openssl dgst -sha256 FILE`;
#   - `openssl dgst -sha256` of the stored image (for the check).
# Printed: medians over FERRY_BENCH_REPS (5) and min-max of the per-
# repetition ratios.  Goals: download >= 1.0x the throughput of curl + dgst
# and >= 0.7x of curl alone; check <= 1.05x openssl dgst; RSS during the
# check grows by less than 1 MiB.
#
# The model leaves out: a network slower than loopback (there the link, not
# the gateway, sets the pace), a gateway's SD card (here the disk is the
# build machine's), and resumption (tests/integration cover it).
#
#   bench/download.sh [BUILD_DIR]    FERRY_BENCH_MIB (256), FERRY_BENCH_REPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
MIB=${FERRY_BENCH_MIB:-256}
REPS=${FERRY_BENCH_REPS:-5}
. scripts/world.sh
. bench/lib.sh
world_up "$BUILD"
start_ferryd

ts_of() { # ts_of UPDATE STAGE [FILTER]: ts_ms of the first such report of app-bin
	# it blocks on the log (tail -f) instead of polling it, so that waiting
	# costs the measured run no CPU
	local l tp
	exec {fd}< <(exec timeout 300 tail -n +1 -f "$W/mqtt.log")
	tp=$!
	l=$(grep -m 1 -E "\"update_id\":\"$1\".*\"stage\":\"(failed\"|$2\".*${3:-})" <&"$fd" || true)
	exec {fd}<&-
	kill "$tp" 2>/dev/null || true
	case "$l" in
	"") fail "no $2 report of $1" ;;
	*'"stage":"failed"'*) fail "$1 failed: $l" ;;
	esac
	echo "$l" | sed 's/.*"ts_ms":\([0-9]*\).*/\1/'
}
# fresh_cache FILE: the same page cache before each measured run: nothing
# dirty, nothing cached but the served image.  Without it a run whose
# writes land in memory the machine has not used before pays for that (on
# a VM, 0.3-0.5 s of extra system time), and which run pays varies.
# Needs root; without it, only the sync.
fresh_cache() {
	sync
	if [ -w /proc/sys/vm/drop_caches ]; then
		echo 1 > /proc/sys/vm/drop_caches
		cat "$1" > /dev/null
	fi
}
url() { echo "https://127.0.0.1:$W_HTTPS_PORT/$1"; }
curl_only() { curl -sS --cacert "$W/pki/ca.pem" -o "$W/curl.out" "$(url "$1")"; }
curl_dgst() { curl -sS --cacert "$W/pki/ca.pem" -o "$W/curl.out" "$(url "$1")" && openssl dgst -sha256 "$W/curl.out"; }
hwm() { awk '/^VmHWM:/ { print $2 }' /proc/"$W_FERRYD_PID"/status; }

declare -a D C CD K O R
for r in $(seq 1 "$REPS"); do
	u="dl-$r"
	head -c $((MIB * 1024 * 1024)) /dev/urandom > "$W/www/$u.bin"
	cat > "$W/$u.yaml" <<YAML
sequence: $r
components:
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "1.$r.0"
    format: file
    file: www/$u.bin
YAML
	"$W_FERRY" manifest sign "$W/$u.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$u.jws" > /dev/null
	fresh_cache "$W/www/$u.bin"
	C[$r]=$(secs curl_only "$u.bin")
	rm -f "$W/curl.out"
	cmd update.request "$u" --manifest "$W/$u.jws"
	ts_of "$u" allowed > /dev/null
	fresh_cache "$W/www/$u.bin"
	cmd update.download "$u" --link "app-bin=$(url "$u.bin")"
	t0=$(ts_of "$u" downloading '"done":0,')
	t1=$(ts_of "$u" downloaded)
	D[$r]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1000 }')
	fresh_cache "$W/www/$u.bin"
	CD[$r]=$(secs curl_dgst "$u.bin")
	rm -f "$W/curl.out"
	echo 5 > /proc/"$W_FERRYD_PID"/clear_refs # resets VmHWM to the RSS now
	h0=$(hwm)
	cmd update.check "$u"
	t0=$(ts_of "$u" verifying)
	t1=$(ts_of "$u" verified)
	h1=$(hwm)
	K[$r]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1000 }')
	R[$r]=$((h1 > h0 ? h1 - h0 : 0))
	stored=$(find "$W/state/store" -name "$(sha256sum "$W/www/$u.bin" | cut -c1-64)*" | head -n 1)
	cat "$stored" > /dev/null # what ferryd's check found cached, the reference finds too
	O[$r]=$(secs openssl dgst -sha256 "$stored")
	cmd update.cancel "$u"
	ts_of "$u" cancelled > /dev/null
	rm -f "$W/www/$u.bin" "$W/curl.out"
	printf '  rep %d: ferryd download %s s, curl %s s, curl + dgst %s s | check %s s, openssl dgst %s s, RSS +%d KiB\n' \
		"$r" "${D[$r]}" "${C[$r]}" "${CD[$r]}" "${K[$r]}" "${O[$r]}" "${R[$r]}"
done

ratios() { # ratios A B: A[r]/B[r] for each repetition, as "min-max"
	local -n a=$1 b=$2
	for r in $(seq 1 "$REPS"); do awk -v x="${a[$r]}" -v y="${b[$r]}" 'BEGIN { print x / y }'; done | sort -g |
		awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'
}
med() { local -n a=$1; printf '%s\n' "${a[@]}" | median; }
md=$(med D) mc=$(med C) mcd=$(med CD) mk=$(med K) mo=$(med O)
echo "download of $MIB MiB, $REPS repetitions interleaved (throughput ratios: reference time / ferryd time)"
printf '  vs curl + openssl dgst: %.2fx (per repetition %s; goal >= 1.0)\n' \
	"$(awk -v a="$mcd" -v b="$md" 'BEGIN { print a / b }')" "$(ratios CD D)"
printf '  vs curl -o FILE alone:  %.2fx (per repetition %s; goal >= 0.7)\n' \
	"$(awk -v a="$mc" -v b="$md" 'BEGIN { print a / b }')" "$(ratios C D)"
printf '  check: %.2fx openssl dgst (time; per repetition %s; goal <= 1.05); RSS grew by at most %d KiB (goal < 1024)\n' \
	"$(awk -v a="$mk" -v b="$mo" 'BEGIN { print a / b }')" "$(ratios K O)" "$(printf '%s\n' "${R[@]}" | sort -g | tail -n 1)"
printf 'row: | download of %d MiB (throughput) | %s s | curl -o FILE + openssl dgst, %s s | %.2f | %s | >= 1.0 |\n' \
	"$MIB" "$md" "$mcd" "$(awk -v a="$mcd" -v b="$md" 'BEGIN { print a / b }')" "$(ratios CD D)"
printf 'row: | download of %d MiB (throughput) | %s s | curl -o FILE, %s s | %.2f | %s | >= 0.7 |\n' \
	"$MIB" "$md" "$mc" "$(awk -v a="$mc" -v b="$md" 'BEGIN { print a / b }')" "$(ratios C D)"
printf 'row: | check of %d MiB (time) | %s s | openssl dgst -sha256, %s s | %.2f | %s | <= 1.05, RSS +< 1 MiB (+%d KiB) |\n' \
	"$MIB" "$mk" "$mo" "$(awk -v a="$mk" -v b="$mo" 'BEGIN { print a / b }')" "$(ratios K O)" \
	"$(printf '%s\n' "${R[@]}" | sort -g | tail -n 1)"
