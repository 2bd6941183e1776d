# Sourced by demo.sh and test.sh: make sure the Debian packages ferry needs are
# installed.  As root it installs what is missing; otherwise it prints the one
# apt-get line to run and stops, so nothing half-works.

# The libraries ferry links, as -dev packages.
FERRY_LIB_PKGS="libjose-dev libjansson-dev libssl-dev libyaml-dev libsqlite3-dev libcurl4-openssl-dev
	libmosquitto-dev libsystemd-dev libcbor-dev libusb-1.0-0-dev libmicrohttpd-dev liblzma-dev libdivsufsort-dev libsodium-dev"
# Needed to build ferry and ferryd.
FERRY_BUILD_PKGS="cmake make pkg-config gcc libc6-dev $FERRY_LIB_PKGS"
# Needed by the tests: cmocka, the jose and openssl CLIs as oracles, clang with
# its sanitizer and libFuzzer runtimes for the fuzz run, and the real servers
# the integration scenarios run ferryd against, dfu-util's file tools,
# umockdev, which puts the simulated USB DFU device behind the real libusb,
# dbus-daemon, which carries the private bus of the BLE scenario, curl,
# which fetches device-bound links with each gateway's certificate,
# systemd for systemd-analyze, which checks the shipped unit, debhelper
# and lintian, which build and check the Debian package, chromium, the
# browser the console test renders its page in, and RAUC's service with
# squashfs-tools, which make and install the gateway's system bundles.
FERRY_TEST_PKGS="libcmocka-dev jose openssl clang libclang-rt-14-dev mosquitto mosquitto-clients nginx-light sqlite3 dfu-util
	libumockdev-dev umockdev dbus systemd debhelper lintian git curl chromium rauc rauc-service squashfs-tools"

ferry_missing_pkgs() {
	local p missing=""
	for p in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
			missing="$missing $p"
		fi
	done
	echo "${missing# }"
}

ferry_ensure_pkgs() {
	local missing
	missing=$(ferry_missing_pkgs "$@")
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "ferry: missing Debian packages; install them with:" >&2
		echo "  sudo apt-get install -y $missing" >&2
		exit 1
	fi
	echo "ferry: installing $missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# ferry_cross_pkgs ARCH: what a cross build for ARCH (arm64, armhf) and its
# tests under qemu-user need: Debian's cross toolchain, the target's pkg-config
# and the target's -dev packages beside this machine's (multiarch).
ferry_cross_pkgs() {
	local p out="crossbuild-essential-$1 qemu-user binutils pkgconf:$1 libcmocka-dev:$1"
	for p in $FERRY_LIB_PKGS; do out="$out $p:$1"; done
	echo "$out"
}

# ferry_ensure_arch ARCH: dpkg knows ARCH as a foreign architecture (as root
# it is added; the next install fetches its package lists).
ferry_ensure_arch() {
	local foreign
	foreign=$(dpkg --print-foreign-architectures)
	grep -qx "$1" <<< "$foreign" && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "ferry: the $1 architecture is not enabled; enable it with:" >&2
		echo "  sudo dpkg --add-architecture $1 && sudo apt-get update" >&2
		exit 1
	fi
	dpkg --add-architecture "$1"
	apt-get update -qq
}
