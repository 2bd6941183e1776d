# Sourced by demo.sh and each integration scenario: a small world on loopback made of real
# parts -- a PKI from `ferry pki init`, mosquitto with TLS, client
# certificates and per-gateway ACLs, nginx serving images over HTTPS, and the
# real ferryd -- plus helpers to act as the cloud with mosquitto_pub/sub.
#
# Usage: . lib/world.sh; world_up BUILD_DIR; ...; (world_down runs on exit)
set -euo pipefail

W_GW=gw-1

fail() {
	echo "FAIL: $*" >&2
	if [ -n "${W:-}" ]; then
		echo "--- ferryd log (tail)" >&2
		tail -n 40 "$W/ferryd.log" >&2 2>/dev/null || true
		echo "--- MQTT (tail)" >&2
		grep -v "/cmd " "$W/mqtt.log" 2>/dev/null | tail -n 40 >&2 || true
	fi
	exit 1
}

# A free TCP port on 127.0.0.1 (nothing answers on it now).
free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$(( (RANDOM % 20000) + 30000 ))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	fail "no free port"
}

# wait_port PORT [PID]: until something listens on the port; returns 1 at
# once when process PID has exited (a port taken meanwhile, say)
wait_port() {
	for _ in $(seq 1 600); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
			return 1
		fi
		sleep 0.1
	done
	fail "nothing listens on 127.0.0.1:$1"
}

# The broker runs the shipped listener config (config/mosquitto-ferry.conf
# and its ACL), with the test's paths and a port on 127.0.0.1, so that what
# the tests show about the broker holds for what users install.
start_broker() {
	local root attempt
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	for attempt in 1 2 3; do
		W_MQTT_PORT=$(free_port)
		W_OPS_PORT=$(free_port)
		[ "$W_OPS_PORT" != "$W_MQTT_PORT" ] || continue
		write_broker_config "$root"
		mosquitto -c "$W/mosquitto.conf" > "$W/mosquitto.out" 2>&1 &
		W_MQTT_PID=$!
		wait_port "$W_MQTT_PORT" "$W_MQTT_PID" && wait_port "$W_OPS_PORT" "$W_MQTT_PID" && return 0
		echo "the broker did not start on port $W_MQTT_PORT (attempt $attempt): $(tail -n 2 "$W/mosquitto.out")" >&2
	done
	fail "the broker did not start"
}

write_broker_config() {
	local root=$1
	# the shipped ACL, plus the test's other cloud identities: with
	# use_username_as_clientid, two clients of one certificate would take
	# each other's place, so the watcher, the command sender and an extra
	# subscriber each have their own
	cp "$root/config/mosquitto-ferry.acl" "$W/acl"
	printf '\nuser cloud-cmd\ntopic readwrite ferry/v1/#\nuser cloud-2\ntopic readwrite ferry/v1/#\n' >> "$W/acl"
	{
		echo "user $(id -un)"
		echo "persistence ${W_MQTT_PERSIST:-false}"
		echo "persistence_location $W/"
		echo "log_dest file $W/mosquitto.log"
		echo "log_type error"
		echo "log_type warning"
		echo "log_type notice"
		echo "max_queued_messages 20000" # the test's watcher must miss nothing of a burst
		sed -e "s|^acl_file .*|acl_file $W/acl|" -e "s|^listener 8883$|listener $W_MQTT_PORT 127.0.0.1|" \
			-e "s|^listener 8884$|listener $W_OPS_PORT 127.0.0.1|" \
			-e "s|^cafile /etc/mosquitto/ferry/ca.pem$|cafile $W/pki/ca.pem|" \
			-e "s|^cafile /etc/mosquitto/ferry/operators-ca.pem$|cafile $W/pki/operators-ca.pem|" \
			-e "s|^certfile .*|certfile $W/pki/broker.pem|" \
			-e "s|^keyfile .*|keyfile $W/pki/broker.key|" "$root/config/mosquitto-ferry.conf"
	} > "$W/mosquitto.conf"
	grep -q "^listener $W_MQTT_PORT 127.0.0.1$" "$W/mosquitto.conf" || fail "the shipped broker config has no listener 8883"
	grep -q "^listener $W_OPS_PORT 127.0.0.1$" "$W/mosquitto.conf" || fail "the shipped broker config has no listener 8884"
	! grep -q "^cafile /etc" "$W/mosquitto.conf" || fail "a cafile of the shipped broker config was not placed"
}

# start_nginx: on W_HTTPS_PORT when it is set (a restart), else on a free port
start_nginx() {
	local fixed=${W_HTTPS_PORT:-} attempt
	for attempt in 1 2 3; do
		W_HTTPS_PORT=${fixed:-$(free_port)}
		[ -n "$fixed" ] || W_FILES_PORT=$(free_port)
		[ "$W_FILES_PORT" != "$W_HTTPS_PORT" ] || continue
		write_nginx_config
		nginx -c "$W/nginx.conf" -e "$W/nginx/error.log" > "$W/nginx.out" 2>&1 &
		W_NGINX_PID=$!
		wait_port "$W_HTTPS_PORT" "$W_NGINX_PID" && wait_port "$W_FILES_PORT" "$W_NGINX_PID" && return 0
		echo "nginx did not start on port $W_HTTPS_PORT (attempt $attempt): $(tail -n 2 "$W/nginx/error.log")" >&2
		[ -z "$fixed" ] || break
	done
	fail "nginx did not start"
}

write_nginx_config() {
	mkdir -p "$W/www" "$W/nginx"
	local user_line=""
	[ "$(id -u)" -eq 0 ] && user_line="user root;" # workers must read the test's private files
	cat > "$W/nginx.conf" <<CONF
$user_line
daemon off;
master_process off; # one process, so a test can kill the server outright
worker_processes 1;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 512; }
http {
	access_log $W/nginx/access.log;
	client_body_temp_path $W/nginx/body;
	proxy_temp_path $W/nginx/proxy;
	fastcgi_temp_path $W/nginx/fastcgi;
	uwsgi_temp_path $W/nginx/uwsgi;
	scgi_temp_path $W/nginx/scgi;
	# /held/: one request a minute goes through at once, the next waits
	# (sending nothing) until its turn: a file host that stalls
	limit_req_zone \$server_port zone=held:64k rate=1r/m;
	server {
		listen 127.0.0.1:$W_HTTPS_PORT ssl;
		ssl_certificate $W/pki/broker.pem;
		ssl_certificate_key $W/pki/broker.key;
		root $W/www;
		location /slow/ { limit_rate ${W_SLOW_RATE:-20k}; alias $W/www/; }
		location /held/ { limit_req zone=held burst=5; alias $W/www/; }
	}
	include $W/nginx-ferry.conf;
}
CONF
	# the shipped file host (config/nginx-ferry.conf: client certificates,
	# device-bound links) on W_FILES_PORT, with the operator's link secret;
	# throttled when W_OPS_SLOW is set
	local root secret
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	secret=$(sed -n 's/^  link_secret: \([0-9a-f]*\)$/\1/p' "$W/pki/operator.yaml")
	[ -n "$secret" ] || fail "no link_secret in operator.yaml"
	sed -e "s|^\tlisten 8443 ssl;|\tlisten 127.0.0.1:$W_FILES_PORT ssl;|" \
		-e "s|/etc/nginx/ferry/files.pem|$W/pki/broker.pem|" -e "s|/etc/nginx/ferry/files.key|$W/pki/broker.key|" \
		-e "s|/etc/nginx/ferry/ca.pem|$W/pki/ca.pem|" -e "s| LINK_SECRET\"| $secret\"|" \
		-e "s|^\troot /srv/ferry;|\troot $W/www;${W_OPS_SLOW:+ limit_rate ${W_SLOW_RATE:-20k};}|" \
		"$root/config/nginx-ferry.conf" > "$W/nginx-ferry.conf"
	grep -q "listen 127.0.0.1:$W_FILES_PORT ssl;" "$W/nginx-ferry.conf" && grep -q "root $W/www;" "$W/nginx-ferry.conf" &&
		! grep -v '^ *#' "$W/nginx-ferry.conf" | grep -q "LINK_SECRET\|/etc/nginx" ||
		fail "config/nginx-ferry.conf has another shape"
}

stop_nginx() {
	[ -n "${W_NGINX_PID:-}" ] && kill "$W_NGINX_PID" 2>/dev/null && wait "$W_NGINX_PID" 2>/dev/null || true
	W_NGINX_PID=
}

# ferryd's config; self installs files under $W/target.
# write_config [DIR ID SITE]: another gateway's, in DIR (self only)
write_config() {
	local d=${1:-$W} gw=${2:-$W_GW} site=${3:-hall-2} extra=${W_EXTRA_ADAPTERS:-}
	[ $# -eq 0 ] || extra=
	mkdir -p "$d/state" "$d/target" "$d/plugins"
	cat > "$d/ferryd.yaml" <<YAML
gateway_id: $gw
broker:
  host: 127.0.0.1
  port: $W_MQTT_PORT
  ca: $W/pki/ca.pem
  cert: $W/pki/gw-$gw.pem
  key: $W/pki/gw-$gw.key
  reconnect_min_ms: 200
  reconnect_max_ms: 2000
trust:
  command_ca: $W/pki/ca.pem
  manifest_ca: $W/pki/ca.pem
  clock_skew: 60
state_dir: $d/state
store:
  cap: ${W_STORE_CAP:-0}
download:
  ca: $W/pki/ca.pem
  connect_timeout: 5
  low_speed_bytes: 100
  low_speed_time: 10
  retries: ${W_DL_RETRIES:-8}
  retry_delay_ms: 300
plugin_dir: $d/plugins
decryption:
  key: $W/pki/kek-$gw.key
  cert: $W/pki/kek-$gw.pem
adapters:
  self:
    vendor_id: acme
    class_id: gateway
    files:
      - name: app-config
        path: $d/target/app.conf
      - name: app-bin
        path: $d/target/app.bin${W_APP_BIN_RELOAD:+
        reload: $W_APP_BIN_RELOAD}
$extra
attributes:
  site: $site
YAML
}

# start_gateway ID SITE: another gateway of the PKI, self adapter only, with
# its journal and files in $W/gws/ID (W_APP_BIN_RELOAD: app-bin's reload
# command)
start_gateway() {
	write_config "$W/gws/$1" "$1" "$2"
	"$W_BUILD/gateway/ferryd" --config "$W/gws/$1/ferryd.yaml" >> "$W/gws/$1/ferryd.log" 2>&1 &
	W_GW_PIDS="${W_GW_PIDS:-} $!"
}

# W_FERRYD_ENV: NAME=VALUE words for ferryd's environment (the USB DFU
# scenario runs it under umockdev's preload); W_FERRYD_ARGS: more arguments
# (--verbose); W_FERRYD: another ferryd binary, run through W_FERRYD_EXEC
# (the cross test runs a packaged arm64 ferryd under qemu-aarch64).
start_ferryd() {
	# shellcheck disable=SC2086
	env ${W_FERRYD_ENV:-} ${W_FERRYD_EXEC:-} "${W_FERRYD:-$W_BUILD/gateway/ferryd}" --config "$W/ferryd.yaml" \
		${W_FERRYD_ARGS:-} >> "$W/ferryd.log" 2>&1 &
	W_FERRYD_PID=$!
	wait_mqtt "ferry/v1/$W_GW/state {\"state\":\"online\"}" 30
}

stop_ferryd() {
	[ -n "${W_FERRYD_PID:-}" ] && kill "$W_FERRYD_PID" 2>/dev/null && wait "$W_FERRYD_PID" 2>/dev/null || true
	W_FERRYD_PID=
}

kill9_ferryd() {
	kill -9 "$W_FERRYD_PID" 2>/dev/null || true
	wait "$W_FERRYD_PID" 2>/dev/null || true
	W_FERRYD_PID=
}

# mosquitto client options for a certificate name in the PKI
mqtt_opts() {
	echo "-h 127.0.0.1 -p $W_MQTT_PORT --cafile $W/pki/ca.pem --cert $W/pki/gw-$1.pem --key $W/pki/gw-$1.key -V mqttv5"
}

watch_session() {
	[ "${W_MQTT_PERSIST:-false}" = true ] && echo "-c -i cloud-watch -x 3600"
	true
}

watch_mqtt() {
	# with W_MQTT_PERSIST=true the watcher keeps a session on the broker, so
	# what is published while it is away waits for it
	# gateways sign what they publish: report_lines opens each signed report
	# as every consumer does and logs the JSON it carries (or "!refused ...")
	# shellcheck disable=SC2046
	mosquitto_sub $(mqtt_opts cloud) $(watch_session) -t "ferry/v1/#" -v -q 1 2>> "$W/mqtt.err" \
		> >("$W_BUILD/tests/sim/report_lines" "$W/pki/ca.pem" >> "$W/mqtt.log") &
	W_SUB_PID=$!
	# subscribed once a probe of ours comes back through it
	local probe="probe-$RANDOM$RANDOM" i
	for i in $(seq 1 100); do
		# shellcheck disable=SC2046
		mosquitto_pub $(mqtt_opts cloud-cmd) -t "ferry/v1/probe" -q 1 -m "$probe" 2>/dev/null || true
		grep -qF "ferry/v1/probe $probe" "$W/mqtt.log" 2>/dev/null && return 0
		sleep 0.1
	done
	fail "the MQTT watcher did not subscribe"
}

# mqtt_mark CLIENT: publish a marker as CLIENT on its own state topic and wait
# for it: whatever CLIENT published before (and the broker delivered or
# refused) is in the MQTT log by then
mqtt_mark() {
	local m="mark-$RANDOM$RANDOM"
	# shellcheck disable=SC2046
	mosquitto_pub $(mqtt_opts "$1") -t "ferry/v1/$1/state" -q 1 -m "$m"
	wait_mqtt "ferry/v1/$1/state $m" 20
}

# wait_mqtt FIXED-STRING SECONDS [COUNT]: until the MQTT log holds COUNT (1) lines with it
wait_mqtt() {
	local n=${3:-1} i
	for i in $(seq 1 $(($2 * 10))); do
		[ "$(grep -cF -- "$1" "$W/mqtt.log" 2>/dev/null || true)" -ge "$n" ] && return 0
		sleep 0.1
	done
	fail "no MQTT message containing: $1"
}

# wait_pruned UPDATE: until the journal says the runner let go of the
# update's images (it prunes after an update ends), up to 30 s
wait_pruned() {
	for _ in $(seq 1 300); do
		[ "$(sqlite3 "file:$W/state/journal.db?mode=ro" "select pruned from updates where id = '$1'" 2>/dev/null)" = 1 ] &&
			return 0
		sleep 0.1
	done
	fail "$1's images were not let go of"
}

# fresh_inventory: ask for an inventory and print the one that answers.
# ferryd replies to inventory.refresh after it has published the inventory,
# so the reply marks the end of that discovery (an inventory published after
# an install may come in between, and must not be taken for the answer).
fresh_inventory() {
	local n
	n=$(grep -cF '"op":"inventory.refresh"' "$W/mqtt.log" || true)
	cmd inventory.refresh "x$RANDOM"
	wait_mqtt '"op":"inventory.refresh"' 20 $((n + 1))
	awk -v k=$((n + 1)) -v t="ferry/v1/$W_GW/inventory " \
		'index($0, t) == 1 { inv = $0 } index($0, "\"op\":\"inventory.refresh\"") { if (++c == k) { print inv; exit } }' \
		"$W/mqtt.log"
}

# sign and publish a command: cmd OP UPDATE [extra ferry cmd sign args...]
cmd() {
	local op=$1 upd=$2
	shift 2
	"$W_FERRY" cmd sign --op "$op" --gateway "${W_TO:-$W_GW}" --update "$upd" --key "$W/pki/cmd-signer.key" \
		--cert "$W/pki/cmd-signer.pem" --ttl 600 "$@" > "$W/last.jws"
	# shellcheck disable=SC2046
	mosquitto_pub $(mqtt_opts cloud-cmd) -t "ferry/v1/${W_TO:-$W_GW}/cmd" -q 1 -f "$W/last.jws"
}

# publish a raw payload as a command
cmd_raw() {
	# shellcheck disable=SC2046
	mosquitto_pub $(mqtt_opts cloud-cmd) -t "ferry/v1/$W_GW/cmd" -q 1 -f "$1"
}

# Stage reports of one update/component, in order: "stage stage ..."
stages_of() {
	grep -F "ferry/v1/$W_GW/stage " "$W/mqtt.log" | grep -F "\"update_id\":\"$1\"" |
		grep -F "\"component\":\"$2\"" | sed 's/.*"stage":"\([a-z_]*\)".*/\1/' | uniq | tr '\n' ' ' | sed 's/ $//'
}

# outcome UPDATE COMPONENT: the component's final stage (installed, failed,
# rolled_back, cancelled), waited for up to 90 s, or "timeout"
outcome() {
	local s
	for _ in $(seq 1 900); do
		s=$(grep -F "\"update_id\":\"$1\",\"component\":\"$2\"" "$W/mqtt.log" |
			grep -oE '"stage":"(installed|failed|rolled_back|cancelled)"' | head -n 1 | cut -d'"' -f4)
		[ -n "$s" ] && { echo "$s"; return; }
		sleep 0.1
	done
	echo timeout
}

# make_update NAME SEQ VERSION_CONFIG VERSION_BIN [BIN_BYTES]: images in www, a signed manifest $W/NAME.jws
make_update() {
	local name=$1 seq=$2 vc=$3 vb=$4 bytes=${5:-300000}
	printf 'interval: %s\n' "$seq" > "$W/www/$name-app.conf"
	head -c "$bytes" /dev/urandom > "$W/www/$name-app.bin"
	cat > "$W/$name.yaml" <<YAML
sequence: $seq
components:
  - name: app-config
    type: configuration
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$vc"
    format: file
    file: www/$name-app.conf
  - name: app-bin
    type: application
    adapter: self
    target: {vendor_id: acme, class_id: gateway}
    version: "$vb"
    format: file
    file: www/$name-app.bin
YAML
	"$W_FERRY" manifest sign "$W/$name.yaml" --key "$W/pki/manifest-signer.key" \
		--cert "$W/pki/manifest-signer.pem" -o "$W/$name.jws" > /dev/null
}

links_for() {
	echo "--link app-config=https://127.0.0.1:$W_HTTPS_PORT/${2:-}$1-app.conf --link app-bin=https://127.0.0.1:$W_HTTPS_PORT/${2:-}$1-app.bin"
}

# A private session-type D-Bus on a unix socket, $W/bus, standing in for
# the system bus: the BLE scenario and the demo put a simulated BlueZ on it.
start_bus() {
	cat > "$W/dbus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$W/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="org.bluez"/>
    <allow own="de.pengutronix.rauc"/>
  </policy>
</busconfig>
CONF
	dbus-daemon --config-file="$W/dbus.conf" --nofork > "$W/dbus.log" 2>&1 &
	W_DBUS_PID=$!
	for _ in $(seq 1 50); do [ -S "$W/bus" ] && return 0; sleep 0.1; done
	fail "dbus-daemon did not start"
}

world_down() {
	stop_ferryd
	[ -n "${W:-}" ] && mountpoint -q "$W/state" 2>/dev/null && umount "$W/state"
	local p
	for p in ${W_GW_PIDS:-}; do kill "$p" 2>/dev/null || true; done
	[ -n "${W_DBUS_PID:-}" ] && kill "$W_DBUS_PID" 2>/dev/null || true
	[ -n "${W_SUB_PID:-}" ] && kill "$W_SUB_PID" 2>/dev/null || true
	stop_nginx
	[ -n "${W_MQTT_PID:-}" ] && kill "$W_MQTT_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	if [ -n "${W:-}" ] && [ -z "${FERRY_KEEP:-}" ]; then rm -rf "$W"; fi
}

# serial_smp_conf [--retries N] PORT=CLASS=COMPONENT...: the serial-smp
# section for W_EXTRA_ADAPTERS, with the tests' timings, one port per
# simulated MCU on $W/PORT (the caller replaces /tmp/PLACEHOLDER with $W
# after world_up).  No newline at the end, so more sections can follow.
serial_smp_conf() {
	local retries="" spec port class comp
	[ "${1:-}" = --retries ] && { retries=$2; shift 2; }
	printf '  serial-smp:\n    timeout_ms: 700\n    first_timeout_ms: 3000\n    reset_wait_ms: 8000\n'
	[ -n "$retries" ] && printf '    retries: %s\n' "$retries"
	printf '    ports:'
	for spec in "$@"; do
		IFS== read -r port class comp <<< "$spec"
		printf '\n      - path: /tmp/PLACEHOLDER/%s\n        vendor_id: acme\n        class_id: %s\n        component: %s' \
			"$port" "$class" "$comp"
	done
}

# state_on_tmpfs SIZE: the gateway's state dir (journal, image store) on a
# tmpfs of SIZE, so a test can fill its disk; root only, as in CI.
# world_down unmounts it once ferryd has stopped.
state_on_tmpfs() {
	mount -t tmpfs -o "size=$1,mode=0700" ferry-state "$W/state" ||
		fail "cannot mount a tmpfs for the state dir (this test needs root, as CI has)"
}

# fill_state: fills the state dir's file system, with $W/state/filler
fill_state() { dd if=/dev/zero of="$W/state/filler" bs=64k 2>/dev/null || true; sync; }

# wait_log TEXT: ferryd logged TEXT after line $mark of ferryd.log (set
# mark=$(wc -l < "$W/ferryd.log") before what should log it)
wait_log() {
	for _ in $(seq 1 300); do
		tail -n +"$((mark + 1))" "$W/ferryd.log" | grep -qF -- "$1" && return 0
		sleep 0.1
	done
	fail "ferryd did not log: $1"
}

# wait_file FILE ERE SECONDS: until a line of FILE (from its first) matches
# the extended regex ERE, for at most SECONDS; it blocks on the file
# (tail -F) instead of polling it
wait_file() {
	local fd tp found=1
	exec {fd}< <(exec timeout "$3" tail -n +1 -F "$1" 2> /dev/null)
	tp=$!
	grep -m 1 -qE -- "$2" <&"$fd" && found=0
	exec {fd}<&-
	kill "$tp" 2> /dev/null || true
	[ "$found" = 0 ] || fail "no line of $1 matched: $2"
}

world_up() {
	W_BUILD=$(cd "$1" && pwd)
	W_FERRY=$W_BUILD/cli/ferry
	W=$(mktemp -d /tmp/ferry-it.XXXXXX)
	trap world_down EXIT
	# W_MORE_GATEWAYS: more gateway ids to make certificates for
	local more=() g
	for g in ${W_MORE_GATEWAYS:-}; do more+=(--gateway "$g"); done
	"$W_FERRY" pki init "$W/pki" --gateway "$W_GW" --gateway gw-2 --gateway cloud --gateway cloud-cmd \
		--gateway cloud-2 "${more[@]}" > /dev/null
	start_broker
	start_nginx
	write_config
	write_operator_config
	watch_mqtt
}

# The operator's config that `ferry pki init` wrote, pointed at this world:
# the operator listener's port, and the shipped file host serving
# $W/www/files (throttled when W_OPS_SLOW is set).  FERRY_OPERATOR_CONFIG names it for
# every `ferry` command the scenario runs.
write_operator_config() {
	mkdir -p "$W/www/files"
	sed -i -e "s|^  port: 8884 |  port: $W_OPS_PORT |" \
		-e "s|^  base_url: https://127.0.0.1:8443/files/|  base_url: https://127.0.0.1:$W_FILES_PORT/files/|" \
		-e "s|^  dir: $W/pki/files |  dir: $W/www/files |" "$W/pki/operator.yaml"
	grep -q "port: $W_OPS_PORT " "$W/pki/operator.yaml" && grep -q "dir: $W/www/files " "$W/pki/operator.yaml" ||
		fail "operator.yaml from ferry pki init has another shape: $(cat "$W/pki/operator.yaml")"
	export FERRY_OPERATOR_CONFIG=$W/pki/operator.yaml
}
