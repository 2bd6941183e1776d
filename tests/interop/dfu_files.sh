#!/usr/bin/env bash
# DFU files made by dfu-util's own tools are read as they mean: dfu-suffix
# for plain DFU 1.1, dfuse-pack for ST's DfuSe container.  A wrong CRC, a
# file for another VID/PID and a container whose sizes do not add up are
# refused, each with a reason, before any device would be touched.
set -euo pipefail
INSPECT=${1:?usage: dfu_files.sh PATH/TO/dfu-inspect}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
refused() { # refused PATTERN ARGS...
	local pat=$1 rc=0
	shift
	"$INSPECT" "$@" > "$T/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -q "refused: .*$pat" "$T/out" || fail "$* not refused with /$pat/: $(cat "$T/out")"
}

head -c 5000 /dev/urandom > "$T/fw.bin"
cp "$T/fw.bin" "$T/fw.dfu"
dfu-suffix -v 0483 -p df11 -d 0200 -a "$T/fw.dfu" > /dev/null
dfu-suffix -c "$T/fw.dfu" > /dev/null # dfu-util agrees the file is sound
"$INSPECT" "$T/fw.dfu" --device 0483:df11 > "$T/out" || fail "a dfu-suffix file is refused: $(cat "$T/out")"
grep -q "suffix: vid 0483 pid df11 device 0200 dfu 0100 .* payload 5000" "$T/out" || fail "suffix misread: $(cat "$T/out")"
refused "the file is for 0483:df11, the device is 1234:5678" "$T/fw.dfu" --device 1234:5678
# one payload byte changed: the CRC no longer fits
cp "$T/fw.dfu" "$T/bad.dfu"
printf '\x00\x01\x02' | dd of="$T/bad.dfu" bs=1 seek=100 conv=notrunc 2> /dev/null
cmp -s "$T/fw.dfu" "$T/bad.dfu" && printf '\xff\xfe\xfd' | dd of="$T/bad.dfu" bs=1 seek=100 conv=notrunc 2> /dev/null
refused "CRC" "$T/bad.dfu"
refused "no DFU suffix" "$T/fw.bin"
# VID 0xFFFF in the suffix fits any device
cp "$T/fw.bin" "$T/any.dfu"
dfu-suffix -v ffff -p ffff -a "$T/any.dfu" > /dev/null
"$INSPECT" "$T/any.dfu" --device 1234:5678 > /dev/null || fail "a wildcard suffix was refused"
echo "ok: dfu-suffix files"

# dfu-prefix: the prefixes a TI Stellaris or NXP LPC bootloader reads are
# recognised and stay in the payload that is sent
cp "$T/fw.bin" "$T/lm.dfu"
dfu-prefix -s 0x2000 -a "$T/lm.dfu" > /dev/null
dfu-suffix -v 1cbe -p 00ff -a "$T/lm.dfu" > /dev/null
"$INSPECT" "$T/lm.dfu" --device 1cbe:00ff > "$T/out" || fail "a dfu-prefix Stellaris file is refused: $(cat "$T/out")"
grep -q "prefix: TI Stellaris, address 0x00002000" "$T/out" || fail "Stellaris prefix misread: $(cat "$T/out")"
grep -q "payload 5008" "$T/out" || fail "the Stellaris prefix is not part of the payload: $(cat "$T/out")"
cp "$T/fw.bin" "$T/lpc.dfu"
dfu-prefix -L -a "$T/lpc.dfu" > /dev/null
dfu-suffix -a "$T/lpc.dfu" > /dev/null
"$INSPECT" "$T/lpc.dfu" > "$T/out" || fail "a dfu-prefix LPC file is refused: $(cat "$T/out")"
grep -q "prefix: NXP LPC" "$T/out" || fail "LPC prefix misread: $(cat "$T/out")"
grep -q "payload 5016" "$T/out" || fail "the LPC prefix is not part of the payload: $(cat "$T/out")"
"$INSPECT" "$T/fw.dfu" > "$T/out"
! grep -q "prefix:" "$T/out" || fail "a file without a prefix was read as having one"
echo "ok: dfu-prefix files"

head -c 3000 /dev/urandom > "$T/a.bin"
head -c 1024 /dev/urandom > "$T/b.bin"
dfuse-pack -b "0x08000000:$T/a.bin" -b "0x08010000:$T/b.bin" -D 0x0483:0xdf11 "$T/fw.dfuse" > /dev/null
"$INSPECT" "$T/fw.dfuse" --device 0483:df11 > "$T/out" || fail "a dfuse-pack file is refused: $(cat "$T/out")"
grep -q "dfu 011a" "$T/out" || fail "not read as DfuSe"
grep -q "target 0 element 0: 0x08000000 3000 bytes" "$T/out" || fail "element 0 misread: $(cat "$T/out")"
grep -q "target 0 element 1: 0x08010000 1024 bytes" "$T/out" || fail "element 1 misread: $(cat "$T/out")"
# cut the container short and give it a fresh, valid suffix: the prefix's
# size no longer matches
cp "$T/fw.dfuse" "$T/short.dfuse"
dfu-suffix -D "$T/short.dfuse" > /dev/null
truncate -s -100 "$T/short.dfuse"
dfu-suffix -v 0483 -p df11 -S 011a -a "$T/short.dfuse" > /dev/null
refused "DfuSe prefix says" "$T/short.dfuse"
# a plain binary with a DfuSe suffix has no prefix
cp "$T/fw.bin" "$T/noprefix.dfu"
dfu-suffix -v 0483 -p df11 -S 011a -a "$T/noprefix.dfu" > /dev/null
refused "no DfuSe v1 prefix" "$T/noprefix.dfu"
echo "ok: dfuse-pack files"
