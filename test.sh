#!/usr/bin/env bash
# Runs every test through ctest: first the normal build (warnings are errors),
# then the Debian package (built, installed and run; needs root), then an
# ASan+UBSan build with clang that runs the same tests again plus a short
# libFuzzer run over the command and manifest parsers, then the fleet's
# worker threads under ThreadSanitizer.
#
#   ./test.sh               everything, as CI runs it
#   ./test.sh --fuzz-long   only the fuzz targets (ASan+UBSan), ten minutes each,
#                           printing each one's execution count
#   ./test.sh --busy N      everything N times in a row while two busy loops
#                           (yes > /dev/null) take the CPUs; stops at the
#                           first failure
#   ./test.sh --cross ARCH  only the Raspberry Pi build for ARCH (arm64 or
#                           armhf): cross-built, its unit, bad-input and
#                           interop tests under qemu-user, its packages built
#                           and linted, the packaged ferryd deploying under
#                           qemu (tests/package/cross.sh); the native build
#                           in build/ comes first: the test world runs on it
#
# Everything ends with --cross arm64 and --cross armhf.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
# shellcheck disable=SC2086
ferry_ensure_pkgs $FERRY_BUILD_PKGS $FERRY_TEST_PKGS

jobs=${FERRY_JOBS:-2}
fuzz_seconds=${FERRY_FUZZ_SECONDS:-30}

if [ "${1:-}" = --busy ]; then
	runs=${2:?usage: ./test.sh --busy N}
	yes > /dev/null &
	y1=$!
	yes > /dev/null &
	y2=$!
	trap 'kill $y1 $y2 2>/dev/null' EXIT
	for i in $(seq 1 "$runs"); do
		start=$(date +%s)
		if ! ./test.sh > "test-busy-$i.log" 2>&1; then
			echo "busy run $i of $runs failed after $(($(date +%s) - start)) s: test-busy-$i.log"
			exit 1
		fi
		echo "busy run $i of $runs passed in $(($(date +%s) - start)) s"
	done
	exit 0
fi

# cross ARCH: the Pi packages for ARCH, built and tested (see above)
cross() {
	ferry_ensure_arch "$1"
	# shellcheck disable=SC2046
	ferry_ensure_pkgs $(ferry_cross_pkgs "$1")
	tests/package/cross.sh "$1" build
}

if [ "${1:-}" = --cross ]; then
	arch=${2:?usage: ./test.sh --cross arm64|armhf}
	cmake -S . -B build -DFERRY_WERROR=ON -DBUILD_TESTING=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS=-D_FORTIFY_SOURCE=2 >/dev/null
	cmake --build build -j"$jobs"
	cross "$arch"
	exit 0
fi

if [ "${1:-}" = --fuzz-long ]; then
	CC=clang cmake -S . -B build-asan -DBUILD_TESTING=ON -DFERRY_WERROR=ON -DFERRY_SANITIZE=ON -DFERRY_FUZZ=ON \
		-DFERRY_FUZZ_SECONDS=600 -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-asan -j"$jobs"
	for t in fuzz_fields fuzz_formats fuzz_smp fuzz_dfu; do
		echo "== $t, 600 s"
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			ctest --test-dir build-asan -R "^$t\$" --output-on-failure -V 2>&1 |
			grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|Passed|Failed|ERROR" || true
	done
	exit 0
fi

echo "== build (gcc, -Werror, _FORTIFY_SOURCE=2 as in Debian's package build)"
cmake -S . -B build -DFERRY_WERROR=ON -DBUILD_TESTING=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS=-D_FORTIFY_SOURCE=2 >/dev/null
cmake --build build -j"$jobs"
echo "== tests"
ctest --test-dir build --output-on-failure -j"$jobs"
echo "== the Debian package: built, linted, installed, run as the ferry user, purged"
tests/package/deb.sh build

echo "== build (clang, ASan+UBSan, fuzz targets)"
CC=clang cmake -S . -B build-asan -DBUILD_TESTING=ON -DFERRY_WERROR=ON -DFERRY_SANITIZE=ON -DFERRY_FUZZ=ON \
	-DFERRY_FUZZ_SECONDS="$fuzz_seconds" -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests under ASan+UBSan, then ${fuzz_seconds}s of fuzzing per target"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build-asan --output-on-failure -j"$jobs"
echo "== ThreadSanitizer: the fleet's worker threads (test_operator)"
CC=clang cmake -S . -B build-tsan -DBUILD_TESTING=ON -DFERRY_WERROR=ON -DCMAKE_BUILD_TYPE=Debug \
	-DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
	-DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null
cmake --build build-tsan -j"$jobs" --target test_operator
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/unit/test_operator
echo "== the Raspberry Pi packages, cross-built and tested under qemu-user"
cross arm64
cross armhf
