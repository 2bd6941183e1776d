#!/usr/bin/env bash
# Benchmark: the size of ferry-delta-1 patches on real firmware.
#
# For each pair NAME.old.bin / NAME.new.bin in FERRY_BENCH_DELTA_DIR, makes a
# patch with `ferry delta make`, checks that `ferry delta apply` rebuilds the
# new image byte for byte, and prints the patch's size as a share of the new
# image.  Goal: the sum of the patches, as a share of the sum of the new
# images, below what bsdiff makes.
#
# References, measured in the same run on the same pairs: Debian's bsdiff
# (4.3, BSDIFF40 with bzip2) and `zstd -19 --patch-from=OLD` (libzstd's
# long-range matcher with the old image as dictionary).  Sizes are
# deterministic: one run.
#
# The pairs are real firmware from public repositories (successive builds
# of bootloaders and applications for Cortex-M and ESP parts); they are not
# part of this repository.  Any directory of such pairs will do.
#
# The model leaves out: the time and memory to make a patch (the operator's
# machine), images that are encrypted or compressed (a delta of those is
# their whole size; make deltas of plaintext images), and the gateway's
# rebuild time (a few milliseconds per hundred KiB, see the unit tests).
#
#   bench/delta.sh [BUILD_DIR]    FERRY_BENCH_DELTA_DIR (../shared/data/delta)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BUILD=$(cd "${1:-build}" && pwd)
DIR=${FERRY_BENCH_DELTA_DIR:-../shared/data/delta}
if ! ls "$DIR"/*.old.bin > /dev/null 2>&1; then
	echo "delta: no NAME.old.bin/NAME.new.bin pairs in $DIR (set FERRY_BENCH_DELTA_DIR); skipped"
	exit 0
fi
for tool in bsdiff zstd; do
	command -v "$tool" > /dev/null || { echo "delta: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
tn=0 tf=0 tb=0 tz=0
printf '  %-32s %9s %9s %9s %9s\n' pair "new B" ferry bsdiff zstd
for old in "$DIR"/*.old.bin; do
	new=${old%.old.bin}.new.bin
	name=$(basename "${old%.old.bin}")
	"$BUILD/cli/ferry" delta make "$old" "$new" -o "$T/p" > /dev/null
	"$BUILD/cli/ferry" delta apply "$old" "$T/p" -o "$T/rebuilt" > /dev/null
	cmp -s "$T/rebuilt" "$new" || { echo "delta: $name: the rebuilt image differs" >&2; exit 1; }
	bsdiff "$old" "$new" "$T/b"
	zstd -q -19 --patch-from="$old" "$new" -o "$T/z" -f 2> /dev/null
	n=$(stat -c %s "$new") f=$(stat -c %s "$T/p") b=$(stat -c %s "$T/b") z=$(stat -c %s "$T/z")
	printf '  %-32s %9d %8.2f%% %8.2f%% %8.2f%%\n' "$name" "$n" \
		"$(awk -v a="$f" -v b="$n" 'BEGIN { print 100 * a / b }')" \
		"$(awk -v a="$b" -v b="$n" 'BEGIN { print 100 * a / b }')" \
		"$(awk -v a="$z" -v b="$n" 'BEGIN { print 100 * a / b }')"
	tn=$((tn + n)) tf=$((tf + f)) tb=$((tb + b)) tz=$((tz + z))
done
pct() { awk -v a="$1" -v b="$tn" 'BEGIN { printf "%.2f%%", 100 * a / b }'; }
echo "  all: ferry $(pct $tf), bsdiff $(pct $tb), zstd --patch-from $(pct $tz) of $tn bytes; every image rebuilt exactly"
echo "row: | delta patches, $(ls "$DIR"/*.old.bin | wc -l) firmware pairs (size) | $(pct $tf) of the new images | bsdiff, $(pct $tb) | $(ratio $tf $tb) | one run (deterministic) | < 1.0 |"
echo "row: | delta patches, same pairs (size) | $(pct $tf) | zstd -19 --patch-from, $(pct $tz) | $(ratio $tf $tz) | one run (deterministic) | - |"

# a 4 MiB pair from the real ones, repeated end to end
big=$((4 * 1024 * 1024))
while [ "$(stat -c %s "$T/old4" 2> /dev/null || echo 0)" -lt "$big" ]; do
	cat "$DIR"/*.old.bin >> "$T/old4"
	cat "$DIR"/*.new.bin >> "$T/new4"
done
truncate -s "$big" "$T/old4" "$T/new4"
"$BUILD/cli/ferry" delta make "$T/old4" "$T/new4" -o "$T/p4" > /dev/null
bsdiff "$T/old4" "$T/new4" "$T/b4"
rss() { /usr/bin/time -f %M "$@" 2>&1 > /dev/null | tail -n 1; }
frss=$(rss "$BUILD/cli/ferry" delta apply "$T/old4" "$T/p4" -o "$T/out4")
cmp -s "$T/out4" "$T/new4" || { echo "delta: the 4 MiB image was not rebuilt exactly" >&2; exit 1; }
brss=$(rss bspatch "$T/old4" "$T/outb" "$T/b4")
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "  apply, 4 MiB image: peak RSS ferry $(mib "$frss") MiB, bspatch $(mib "$brss") MiB (patch $(stat -c %s "$T/p4") bytes)"
echo "row: | delta apply, 4 MiB image (peak RSS) | $(mib "$frss") MiB | bspatch, $(mib "$brss") MiB | $(ratio "$frss" "$brss") | one run | <= 12 MiB |"
usecs() { local t0 t1; t0=$(date +%s%N); "$@" > /dev/null 2>&1; t1=$(date +%s%N); echo $(((t1 - t0) / 1000)); }
at=() ct=()
for _ in $(seq 1 "${FERRY_BENCH_REPS:-5}"); do
	at+=("$(usecs "$BUILD/cli/ferry" delta apply "$T/old4" "$T/p4" -o "$T/out4")")
	ct+=("$(usecs dd if="$T/new4" of="$T/outc" bs=1M conv=fsync)")
done
am=$(printf '%s\n' "${at[@]}" | median | awk '{ printf "%d", $1 }') cm=$(printf '%s\n' "${ct[@]}" | median | awk '{ printf "%d", $1 }')
rr=()
for i in "${!at[@]}"; do rr+=("$(ratio "${at[$i]}" "${ct[$i]}")"); done
echo "  apply, 4 MiB image: $((am / 1000)) ms, a plain copy $((cm / 1000)) ms (medians)"
echo "row: | delta apply, 4 MiB image (time) | $((am / 1000)) ms | dd conv=fsync of the image, $((cm / 1000)) ms | $(ratio "$am" "$cm") | $(span "${rr[@]}") | - |"
