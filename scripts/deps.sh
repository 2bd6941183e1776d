# Sourced by demo.sh and test.sh: make sure the Debian packages ferry needs are
# installed.  As root it installs what is missing; otherwise it prints the one
# apt-get line to run and stops, so nothing half-works.

# Needed to build ferry and ferryd.
FERRY_BUILD_PKGS="cmake make pkg-config gcc libc6-dev libjose-dev libjansson-dev libssl-dev libyaml-dev
	libsqlite3-dev libcurl4-openssl-dev libmosquitto-dev libsystemd-dev libcbor-dev libusb-1.0-0-dev"
# Needed by the tests: cmocka, the jose and openssl CLIs as oracles, clang with
# its sanitizer and libFuzzer runtimes for the fuzz run, and the real servers
# the integration scenarios run ferryd against, dfu-util's file tools,
# umockdev, which puts the simulated USB DFU device behind the real libusb,
# dbus-daemon, which carries the private bus of the BLE scenario,
# systemd for systemd-analyze, which checks the shipped unit, and debhelper
# and lintian, which build and check the Debian package.
FERRY_TEST_PKGS="libcmocka-dev jose openssl clang libclang-rt-14-dev mosquitto mosquitto-clients nginx-light sqlite3 dfu-util
	libumockdev-dev umockdev dbus systemd debhelper lintian git"

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
