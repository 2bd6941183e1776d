#!/usr/bin/env bash
# Runs a command the way systemd would run a unit's ExecStart=, as far as
# that goes without systemd as PID 1.  The settings are read from the unit
# file itself, so the test follows the unit:
#   User=, Group=, SupplementaryGroups=, UMask=, NoNewPrivileges=yes, an
#   empty CapabilityBoundingSet= (no capabilities at all);
#   ProtectSystem=strict: in a private mount namespace every mount is
#   read-only but /dev, /proc and /sys, the StateDirectory=,
#   RuntimeDirectory=, CacheDirectory=, LogsDirectory= and ReadWritePaths=
#   (ConfigurationDirectory= stays read-only, as under systemd);
#   ProtectHome=yes: /home, /root and /run/user are empty and read-only;
#   PrivateTmp=yes: /tmp and /var/tmp are new and empty.
# Not applied (systemd-analyze security scores them): the system call
# filter, DevicePolicy=, RestrictAddressFamilies=, the other Protect*= and
# Restrict*= settings.
#   unit-sandbox.sh UNIT_FILE CMD [ARGS...]     (as root)
set -euo pipefail
UNIT=${1:?usage: unit-sandbox.sh UNIT_FILE CMD [ARGS...]}
shift
[ "$#" -gt 0 ] || { echo "unit-sandbox.sh: no command" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "unit-sandbox.sh: needs root (a mount namespace)" >&2; exit 2; }

# val KEY: the unit's value for KEY (the last assignment wins; several
# assignments of a list setting are joined)
val() { sed -n "s/^$1=//p" "$UNIT" | tr '\n' ' ' | sed 's/ *$//'; }
last() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }

if [ -z "${FERRY_SANDBOX_INSIDE:-}" ]; then
	export FERRY_SANDBOX_INSIDE=1
	exec unshare --mount --propagation private -- "$0" "$UNIT" "$@"
fi

user=$(last User)
group=$(last Group)
[ -n "$user" ] && [ -n "$group" ] || { echo "unit-sandbox.sh: $UNIT sets no User= and Group=" >&2; exit 2; }
[ "$(last NoNewPrivileges)" = yes ] || { echo "unit-sandbox.sh: $UNIT lacks NoNewPrivileges=yes" >&2; exit 2; }
grep -qx 'CapabilityBoundingSet=' "$UNIT" || { echo "unit-sandbox.sh: $UNIT keeps capabilities" >&2; exit 2; }

# the paths that stay writable
rw=()
for d in $(val StateDirectory); do rw+=("/var/lib/$d"); done
for d in $(val CacheDirectory); do rw+=("/var/cache/$d"); done
for d in $(val LogsDirectory); do rw+=("/var/log/$d"); done
for d in $(val RuntimeDirectory); do rw+=("/run/$d"); done
for p in $(val ReadWritePaths); do
	case $p in
	-*) [ -e "${p#-}" ] && rw+=("${p#-}") ;; # "-": skipped when missing
	*) rw+=("$p") ;;
	esac
done

if [ "$(last ProtectSystem)" = strict ]; then
	# each writable path becomes a mount of its own, so the read-only
	# remounts below leave it alone
	for p in "${rw[@]}"; do mount --bind "$p" "$p"; done
	# every other mount outside /dev, /proc and /sys: read-only (mountinfo
	# field 5 is the mount point, with spaces as \040)
	while read -r mp; do
		mp=$(printf '%b' "$mp")
		case $mp in /dev | /dev/* | /proc | /proc/* | /sys | /sys/*) continue ;; esac
		keep=
		for p in "${rw[@]}"; do [ "$mp" = "$p" ] && keep=1; done
		[ -n "$keep" ] && continue
		mount -o remount,bind,ro "$mp" 2> /dev/null && continue
		[ "$mp" = / ] && { echo "unit-sandbox.sh: / cannot be made read-only" >&2; exit 1; }
		echo "unit-sandbox.sh: note: $mp stays writable (it cannot be remounted)" >&2
	done < <(awk '{ print $5 }' /proc/self/mountinfo)
fi
if [ "$(last ProtectHome)" = yes ]; then
	for p in /home /root /run/user; do [ -d "$p" ] && mount -t tmpfs -o ro,mode=0755 tmpfs "$p"; done
fi
if [ "$(last PrivateTmp)" = yes ]; then
	mount -t tmpfs -o mode=1777 tmpfs /tmp
	[ -d /var/tmp ] && mount -t tmpfs -o mode=1777 tmpfs /var/tmp
fi

groups=$group
for g in $(val SupplementaryGroups); do groups="$groups,$g"; done
umask_=$(last UMask)
exec setpriv --reuid="$user" --regid="$group" --groups="$groups" --no-new-privs --bounding-set=-all \
	--inh-caps=-all -- sh -c "umask ${umask_:-0022}; exec \"\$@\"" sh "$@"
