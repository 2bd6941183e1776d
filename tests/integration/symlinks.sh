#!/usr/bin/env bash
# Files ferry creates are created fresh and never written through a symlink,
# through the real ferryd:
#  1. symlinks planted at every name the self adapter uses beside a target
#     (PATH.ferry-new, the version sidecar and its temp file, the trial
#     file's temp file, PATH.ferry-previous) and at the image's partial file
#     in the store: the update installs, the files they point to are
#     unchanged, and no symlink is left; the installed file keeps the mode
#     of the file it replaced;
#  2. a symlink at the target path itself is refused with a reason that
#     says so, and nothing changes;
#  3. with follow_symlink set for that file, the file it points to is
#     installed and the symlink stays; a configured mode is applied.
cd "$(dirname "$0")"
. ../../scripts/world.sh
world_up "${1:?usage: symlinks.sh BUILD_DIR}"
start_ferryd

mkdir -p "$W/victim" "$W/real"
for f in new version vtmp trialtmp prev partial conf; do echo "not ferry's: $f" > "$W/victim/$f"; done
victims() { (cd "$W/victim" && sha256sum -- *); }
before=$(victims)

# --- 1. planted symlinks
make_update s1 1 1.0.0 1.0.0 5000
sha=$(sha256sum "$W/www/s1-app.bin" | cut -d' ' -f1)
echo "the old app.bin" > "$W/target/app.bin"
chmod 0604 "$W/target/app.bin"
ln -s "$W/victim/new" "$W/target/app.bin.ferry-new"
ln -s "$W/victim/version" "$W/target/app.bin.ferry-version"
ln -s "$W/victim/vtmp" "$W/target/app.bin.ferry-version.tmp"
ln -s "$W/victim/trialtmp" "$W/target/app.bin.ferry-trial.tmp"
ln -s "$W/victim/prev" "$W/target/app.bin.ferry-previous"
ln -s "$W/victim/conf" "$W/target/app.conf.ferry-new"
ln -s "$W/victim/partial" "$W/state/store/partial/$sha"
# shellcheck disable=SC2046
cmd update.deploy u-s1 --manifest "$W/s1.jws" $(links_for s1)
[ "$(outcome u-s1 app-bin)" = installed ] || fail "s1: app-bin did not install: $(stages_of u-s1 app-bin)"
[ "$(outcome u-s1 app-config)" = installed ] || fail "s1: app-config did not install"
[ "$(victims)" = "$before" ] || fail "s1: a file a planted symlink pointed to changed"
[ -f "$W/target/app.bin" ] && [ ! -L "$W/target/app.bin" ] || fail "s1: app.bin is not a regular file"
cmp -s "$W/www/s1-app.bin" "$W/target/app.bin" || fail "s1: app.bin differs from the image"
left=$(find "$W/target" "$W/state" -type l)
[ -z "$left" ] || fail "s1: symlinks left: $left"
[ "$(stat -c %a "$W/target/app.bin")" = 604 ] || fail "s1: app.bin lost the mode of the file it replaced"
grep -q "partial/$sha is not a plain file of ours; replaced" "$W/ferryd.log" ||
	fail "s1: the planted partial file was not reported"
echo "ok: symlinks planted beside a target and in the store are removed, never followed"

# --- 2. a symlink at the target path
mv "$W/target/app.conf" "$W/real/app.conf"
ln -s "$W/real/app.conf" "$W/target/app.conf"
real_before=$(sha256sum < "$W/real/app.conf")
make_update s2 2 2.0.0 1.0.0 5000
# shellcheck disable=SC2046
cmd update.deploy u-s2 --manifest "$W/s2.jws" $(links_for s2)
[ "$(outcome u-s2 app-config)" = failed ] || fail "s2: an update through a symlink was not refused"
grep -F '"update_id":"u-s2","component":"app-config"' "$W/mqtt.log" | grep -F '"stage":"failed"' |
	grep -qF "app.conf is a symlink: ferry does not write through one unless" ||
	fail "s2: the failure does not say the target is a symlink"
[ "$(sha256sum < "$W/real/app.conf")" = "$real_before" ] || fail "s2: the file behind the symlink changed"
[ -L "$W/target/app.conf" ] || fail "s2: the symlink itself was replaced"
echo "ok: a symlink at a target path is refused, naming it"

# --- 3. allowed for that file: the file it names is installed
stop_ferryd
sed -i "s|        path: $W/target/app.conf|        path: $W/target/app.conf\n        follow_symlink: true|" "$W/ferryd.yaml"
sed -i "s|        path: $W/target/app.bin|        path: $W/target/app.bin\n        mode: \"0640\"|" "$W/ferryd.yaml"
start_ferryd
make_update s3 3 3.0.0 3.0.0 5000
# shellcheck disable=SC2046
cmd update.deploy u-s3 --manifest "$W/s3.jws" $(links_for s3)
[ "$(outcome u-s3 app-config)" = installed ] || fail "s3: app-config did not install through the allowed symlink"
[ "$(outcome u-s3 app-bin)" = installed ] || fail "s3: app-bin did not install"
cmp -s "$W/www/s3-app.conf" "$W/real/app.conf" || fail "s3: the file the symlink names was not installed"
[ -L "$W/target/app.conf" ] || fail "s3: the symlink was replaced"
[ "$(cat "$W/real/app.conf.ferry-version")" = 3.0.0 ] || fail "s3: the version sidecar is not beside the real file"
[ "$(stat -c %a "$W/target/app.bin")" = 640 ] || fail "s3: app.bin does not have the configured mode 0640"
[ "$(victims)" = "$before" ] || fail "s3: a victim file changed"
echo "ok: follow_symlink installs the file a symlink names; mode sets the installed file's mode"
