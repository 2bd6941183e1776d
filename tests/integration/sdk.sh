#!/usr/bin/env bash
# The adapter SDK as a third party meets it: install ferry to a prefix, build
# plugins/template out of tree with nothing but `pkg-config ferry-adapter`,
# load the result into the real ferryd, and deploy an image through it.
cd "$(dirname "$0")"
. ../../scripts/world.sh
BUILD=$(cd "${1:?usage: sdk.sh BUILD_DIR}" && pwd)
P=$(mktemp -d /tmp/ferry-sdk.XXXXXX)
trap 'rm -rf "$P"' EXIT
cmake --install "$BUILD" --prefix "$P/prefix" > /dev/null
[ -f "$P/prefix/include/ferry/adapter.h" ] || fail "SDK header not installed"
cp -r ../../plugins/template "$P/tpl"
PKG_CONFIG_PATH="$P/prefix/lib/pkgconfig" make -s -C "$P/tpl" || fail "template does not build out of tree"
pkg-config --cflags ferry-adapter > /dev/null 2>&1 && fail "test leaks a system-wide SDK" || true

W_EXTRA_ADAPTERS="  template:
    dir: /tmp/PLACEHOLDER
    vendor_id: acme
    class_id: widget
    component: widget-fw"
world_up "$BUILD"
trap 'world_down; rm -rf "$P"' EXIT
mkdir -p "$W/widget"
sed -i "s|/tmp/PLACEHOLDER|$W/widget|" "$W/ferryd.yaml"
cp "$P/tpl/template.so" "$W/plugins/"
start_ferryd
grep -q "adapter template loaded" "$W/ferryd.log" || fail "template adapter not loaded"

head -c 50000 /dev/urandom > "$W/www/widget.bin"
cat > "$W/widget.yaml" <<YAML
sequence: 1
components:
  - name: widget-fw
    type: firmware
    adapter: template
    target: {vendor_id: acme, class_id: widget}
    version: 3.1.0
    format: raw
    file: www/widget.bin
YAML
"$W_FERRY" manifest sign "$W/widget.yaml" --key "$W/pki/manifest-signer.key" --cert "$W/pki/manifest-signer.pem" \
	-o "$W/widget.jws" > /dev/null
cmd update.deploy u-w --manifest "$W/widget.jws" --link "widget-fw=https://127.0.0.1:$W_HTTPS_PORT/widget.bin"
wait_mqtt '"update_id":"u-w","component":"widget-fw","stage":"installed"' 30
cmp "$W/www/widget.bin" "$W/widget/image" || fail "image not delivered through the plugin"
wait_mqtt '{"name":"widget-fw","version":"3.1.0"}' 10
echo "ok: template adapter built out of tree, loaded, and used"
