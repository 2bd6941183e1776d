# The gateway's own A/B system for the demo and the tests, with the real
# RAUC service (sourced after world.sh; needs root: RAUC mounts bundles
# through a loop device).  In $W/rauc:
#   system.conf       two file-backed raw slots, A (rootfs.0) and B
#                     (rootfs.1), the `custom` bootloader backend, a
#                     central status file, the test CA as keyring
#   boot.sh           the simulated bootloader (tests/sim/rauc_boot.sh)
#   ca.pem, ca.key    the bundle signer (self-signed; no key usage, as
#                     RAUC 1.8's CMS check wants)
# RAUC runs on the world's private D-Bus, which it takes for the system bus
# (DBUS_SYSTEM_BUS_ADDRESS); the booted slot is what the simulated boot
# chose (--override-boot-slot).  A "reboot" is: the reboot command ferryd
# runs touches $W/rauc/reboot-requested; rauc_reboot stops ferryd
# (SIGTERM, as a shutdown does) and RAUC, boots, and starts both again.

W_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# rauc_up: slots, certificates and config; RAUC started with slot A booted
# (the world's private bus must be up: start_bus)
rauc_up() {
	local r=$W/rauc
	mkdir -p "$r/mnt" "$r/bundles"
	cp "$W_SRC/tests/sim/rauc_boot.sh" "$r/boot.sh"
	head -c 4194304 /dev/zero > "$r/slotA.img"
	head -c 4194304 /dev/zero > "$r/slotB.img"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$r/ca.key" -out "$r/ca.pem" \
		-days 30 -subj "/O=ferry test/CN=bundle signer" 2> /dev/null || fail "no bundle signer"
	cat > "$r/system.conf" <<CONF
[system]
compatible=${W_RAUC_COMPATIBLE:-acme-gateway}
bootloader=custom
mountprefix=$r/mnt
statusfile=$r/status.raucs

[handlers]
bootloader-custom-backend=$r/boot.sh

[keyring]
path=$r/ca.pem

[slot.rootfs.0]
device=$r/slotA.img
type=raw
bootname=A

[slot.rootfs.1]
device=$r/slotB.img
type=raw
bootname=B
CONF
	W_RAUC_SLOT=A
	rauc_start
}

rauc_start() {
	DBUS_SYSTEM_BUS_ADDRESS="unix:path=$W/bus" rauc --conf="$W/rauc/system.conf" service \
		--override-boot-slot="$W_RAUC_SLOT" >> "$W/rauc/service.log" 2>&1 &
	W_RAUC_PID=$!
	for _ in $(seq 1 100); do
		dbus-send --bus="unix:path=$W/bus" --print-reply --dest=de.pengutronix.rauc / \
			org.freedesktop.DBus.Properties.Get string:de.pengutronix.rauc.Installer string:Operation \
			> /dev/null 2>&1 && return 0
		sleep 0.1
	done
	fail "the RAUC service did not come up: $(tail -n 3 "$W/rauc/service.log")"
}

rauc_stop() {
	[ -n "${W_RAUC_PID:-}" ] && { kill "$W_RAUC_PID" 2>/dev/null; wait "$W_RAUC_PID" 2>/dev/null || true; }
	W_RAUC_PID=
}

# rauc_bundle VERSION OUT [COMPATIBLE [KEY CERT]]: a signed bundle whose
# rootfs image is 2 MiB that starts "rootfs VERSION"
rauc_bundle() {
	local d=$W/rauc/bundles/src-$$-$RANDOM
	mkdir -p "$d"
	{ printf 'rootfs %s\n' "$1"; head -c 2097152 /dev/urandom; } > "$d/rootfs.img"
	printf '[update]\ncompatible=%s\nversion=%s\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n' \
		"${3:-${W_RAUC_COMPATIBLE:-acme-gateway}}" "$1" > "$d/manifest.raucm"
	rm -f "$2"
	rauc bundle --cert="${5:-$W/rauc/ca.pem}" --key="${4:-$W/rauc/ca.key}" "$d" "$2" > "$d.log" 2>&1 ||
		fail "rauc bundle failed: $(tail -n 3 "$d.log")"
}

# rauc_reboot: once ferryd asked for it, the gateway restarts: ferryd and
# RAUC stop, the bootloader picks a slot, both start again
rauc_reboot() {
	for _ in $(seq 1 600); do [ -e "$W/rauc/reboot-requested" ] && break; sleep 0.1; done
	[ -e "$W/rauc/reboot-requested" ] || fail "ferryd did not ask for a reboot"
	rm -f "$W/rauc/reboot-requested"
	stop_ferryd
	rauc_stop
	W_RAUC_SLOT=$("$W/rauc/boot.sh" boot) || fail "the simulated bootloader found nothing to boot"
	echo "$(date +%T) booted $W_RAUC_SLOT" >> "$W/rauc/reboots.log"
	rauc_start
	start_ferryd
}

# boot_state X: the simulated bootloader's view of slot X: "ok try" (1 0: good)
boot_state() {
	(. "$W/rauc/boot.env" && eval "echo \$${1}_OK \$${1}_TRY")
}
