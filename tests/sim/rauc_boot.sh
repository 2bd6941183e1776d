#!/bin/sh
# A simulated A/B bootloader, as RAUC's `custom` backend sees it
# (bootloader-custom-backend in system.conf), plus the one thing a real
# bootloader does that RAUC does not: boot.  Its state lives in boot.env
# beside this script, like grub's environment block:
#   ORDER     the slots in the order they are tried ("B A")
#   X_OK      1 while slot X may be booted (RAUC's good), 0 once bad
#   X_TRY     1 after one try that the booted system has not yet marked good
# RAUC calls:
#   get-primary             the first slot of ORDER that may be booted
#   set-primary X           X first in ORDER, X_OK=1, X_TRY=0
#   get-state X             good or bad
#   set-state X good|bad    good: X_OK=1, X_TRY=0; bad: X_OK=0
# The test harness calls:
#   boot                    pick the slot to boot, print its bootname: the
#                           first of ORDER with X_OK=1 and X_TRY=0, which
#                           gets X_TRY=1; a slot with a file nobootX beside
#                           this script does not come up: its tries are
#                           spent (X_OK=0, RAUC's bad) and the next one is
#                           tried, so a bad new slot falls back
# Errors go to stderr with exit status 1, as RAUC expects.
set -eu
D=$(cd "$(dirname "$0")" && pwd)
ENV="$D/boot.env"
[ -f "$ENV" ] || printf 'ORDER="A B"\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\n' > "$ENV"
. "$ENV"
echo "$(date +%T) $*" >> "$D/boot.log"
save() {
	printf 'ORDER="%s"\nA_OK=%s\nA_TRY=%s\nB_OK=%s\nB_TRY=%s\n' "$ORDER" "$A_OK" "$A_TRY" "$B_OK" "$B_TRY" > "$ENV.tmp"
	mv "$ENV.tmp" "$ENV"
}
slot() { case "$1" in A|B) ;; *) echo "unknown slot $1" >&2; exit 1 ;; esac; }
get() { eval "echo \$$1_$2"; }
set_() { eval "$1_$2=$3"; }
case "${1:-}" in
get-primary)
	for s in $ORDER; do [ "$(get "$s" OK)" = 1 ] && { echo "$s"; exit 0; }; done
	echo "no slot may be booted" >&2; exit 1 ;;
set-primary)
	slot "$2"
	other=A; [ "$2" = A ] && other=B
	ORDER="$2 $other"; set_ "$2" OK 1; set_ "$2" TRY 0; save ;;
get-state)
	slot "$2"
	[ "$(get "$2" OK)" = 1 ] && echo good || echo bad ;;
set-state)
	slot "$2"
	case "$3" in
	good) set_ "$2" OK 1; set_ "$2" TRY 0 ;;
	bad) set_ "$2" OK 0 ;;
	*) echo "unknown state $3" >&2; exit 1 ;;
	esac
	save ;;
boot)
	for s in $ORDER; do
		[ "$(get "$s" OK)" = 1 ] && [ "$(get "$s" TRY)" = 0 ] || continue
		set_ "$s" TRY 1
		if [ -e "$D/noboot$s" ]; then
			echo "$(date +%T) slot $s does not come up" >> "$D/boot.log"
			set_ "$s" OK 0
			continue
		fi
		save
		echo "$s"
		exit 0
	done
	# every slot tried: the last resort is the first good one
	for s in $ORDER; do [ "$(get "$s" OK)" = 1 ] && [ ! -e "$D/noboot$s" ] && { save; echo "$s"; exit 0; }; done
	echo "nothing boots" >&2; exit 1 ;;
*)
	echo "usage: $0 get-primary|set-primary X|get-state X|set-state X good|bad|boot" >&2; exit 1 ;;
esac
