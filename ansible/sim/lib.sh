# The simulated fleet's topology and its life cycle, sourced by ansible/sim/fleet.sh and
# ansible/sim/test.sh. Needs root (namespaces, nftables), podman (the hosts, hosts.sh),
# wireguard-tools and wireguard-go (installed from Debian when missing), the debug dime-edge
# and dime-origin, and the Ansible virtualenv `make ansible-lint` installs.
# shellcheck shell=bash

source "$(dirname "${BASH_SOURCE[0]}")/hosts.sh"

readonly fleet_dir=${CARGO_TARGET_DIR:-target}/fleet
readonly bin_dir=${DIME_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
readonly wan=dfl-wan
# node: namespace, underlay address, overlay address (none for viewers)
readonly nodes=(origin edge-a edge-b view-a view-b)
declare -Ar underlay=([origin]=198.18.0.1 [edge-a]=198.18.0.11 [edge-b]=198.18.0.12
	[view-a]=198.18.1.10 [view-b]=198.18.2.10)
declare -Ar overlay=([origin]=10.8.0.1 [edge-a]=10.8.0.11 [edge-b]=10.8.0.12)
readonly edges=(edge-a edge-b)
readonly shield_port=30080 edge_admin_port=9090 wg_port=51820
readonly ready_timeout=${DIME_FLEET_READY_TIMEOUT:-120}

fleet_say() { printf 'fleet: %s\n' "$*"; }
fleet_die() {
	printf 'fleet: error: %s\n' "$*" >&2
	exit 1
}

ns() { printf 'dfl-%s' "$1"; }
# Runs a command in a node's namespace.
on() {
	local node=$1
	shift
	ip netns exec "$(ns "${node}")" "$@"
}

fleet_preflight() {
	((EUID == 0)) || fleet_die "needs root: network namespaces, nftables and WireGuard interfaces"
	local missing=() package
	for package in nftables iproute2 curl openssh-client; do
		dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("${package}")
	done
	if ((${#missing[@]})); then
		fleet_say "installing ${missing[*]} (apt)"
		DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 install -y \
			--no-install-recommends "${missing[@]}" >"${fleet_dir}.apt.log" 2>&1 || {
			DEBIAN_FRONTEND=noninteractive apt-get -q update >>"${fleet_dir}.apt.log" 2>&1
			DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 install -y \
				--no-install-recommends "${missing[@]}" >>"${fleet_dir}.apt.log" 2>&1
		} || {
			cat "${fleet_dir}.apt.log" >&2
			fleet_die "apt-get install ${missing[*]} failed (output above)"
		}
	fi
	local binary
	for binary in dime-edge dime-origin; do
		[[ -x ${bin_dir}/${binary} ]] || fleet_die "${bin_dir}/${binary} not found: cargo build -p ${binary}"
	done
}

# Starts NAME in NODE's namespace, in its own session, logging to NODE/NAME.log.
start_in() {
	local node=$1 name=$2
	shift 2
	mkdir -p "${fleet_dir}/${node}"
	ip netns exec "$(ns "${node}")" setsid "$@" >"${fleet_dir}/${node}/${name}.log" 2>&1 </dev/null &
	printf '%s %s %s\n' "$!" "${node}" "${name}" >>"${fleet_dir}/pids"
}

# The pid of NODE's NAME process.
pid_of() {
	awk -v node="$1" -v name="$2" '$2 == node && $3 == name { pid = $1 } END { print pid }' "${fleet_dir}/pids"
}

# --- the network ------------------------------------------------------------------------------

make_network() {
	ip netns add "${wan}"
	ip -n "${wan}" link add wan type bridge
	ip -n "${wan}" link set wan up
	local node
	for node in "${nodes[@]}"; do
		ip netns add "$(ns "${node}")"
		ip link add "u-${node}" netns "${wan}" type veth peer name eth0 netns "$(ns "${node}")"
		ip -n "${wan}" link set "u-${node}" master wan up
		ip -n "$(ns "${node}")" link set lo up
		ip -n "$(ns "${node}")" addr add "${underlay[${node}]}/15" dev eth0
		ip -n "$(ns "${node}")" link set eth0 up
	done
}

# The origin site's underlay rules (the edges' come from the playbook's firewall role): from
# the underlay only WireGuard's UDP; over the overlay only the shield's port. SSH to the gateway
# host comes from the controller in this namespace itself (lo).
make_firewall() {
	on origin nft -f - <<EOF
table inet dime_fleet {
	chain input {
		type filter hook input priority filter; policy drop;
		iif lo accept
		ct state established,related accept
		iifname "eth0" udp dport ${wg_port} accept
		iifname "wg0" ip saddr 10.8.0.0/24 tcp dport ${shield_port} accept
	}
}
EOF
}

# --- the origin site --------------------------------------------------------------------------

start_origin() {
	local dir=${fleet_dir}/origin origin_bin=${bin_dir}/dime-origin
	mkdir -p "${dir}/media" "${dir}/web"
	local database=sqlite://${dir}/web/dime.db
	on origin "${origin_bin}" packager sample --out "${dir}/web/sample.mp4" --duration 20s >"${dir}/setup.log" 2>&1
	on origin "${origin_bin}" web import "${dir}/web/sample.mp4" --db "${database}" \
		--media-root "${dir}/media" --slug sample --title "Sample: test pattern" >>"${dir}/setup.log" 2>&1
	on origin "${origin_bin}" web add-channel --db "${database}" --slug camera --name "Live camera" \
		--stream live/camera/index.m3u8 >>"${dir}/setup.log" 2>&1
	on origin "${origin_bin}" web create-admin --db "${database}" --username admin --generate-password \
		2>>"${dir}/setup.log" | tail -n 1 >"${dir}/admin-password"
	write_edges_file >"${dir}/edges.toml"

	start_in origin streamer-1 "${origin_bin}" streamer --log-format json --root "${dir}/media" --listen 127.0.0.1:8081
	start_in origin streamer-2 "${origin_bin}" streamer --log-format json --root "${dir}/media" --listen 127.0.0.1:8082
	start_in origin packager "${origin_bin}" packager --out "${dir}/media/live" --channel camera \
		--test-pattern --size 640x360 --fps 30 --bitrate 800k --segment 1s --window 6 \
		--health-listen 127.0.0.1:8084
	# The shield reaches the web app from 127.0.0.1 and the edges reach the shield over the
	# overlay: both are trusted to name the viewer in X-Forwarded-For.
	start_in origin web "${origin_bin}" web --listen 127.0.0.1:8083 --db "${database}" \
		--media-base /stream/ --media-root "${dir}/media" --trusted-proxy 127.0.0.1/32 \
		--trusted-proxy 10.8.0.0/24 --edges "${dir}/edges.toml"
}

# The shield listens on the gateway's overlay address: started once the playbook has brought
# the gateway's wg0 up.
start_shield() {
	write_shield_config >"${fleet_dir}/origin/shield.toml"
	start_in origin shield "${bin_dir}/dime-edge" run -c "${fleet_dir}/origin/shield.toml"
}

write_shield_config() {
	cat <<EOF
# The shield of the simulated origin site: the edges' only way in, over the overlay.
[server]
threads = 2
grace_period = "2s"

[listen]
http = ["${overlay[origin]}:${shield_port}"]
admin = "127.0.0.1:9190"

[cache]
memory = "256MiB"

[pools.streamers]
backends = ["127.0.0.1:8081", "127.0.0.1:8082"]
connect_timeout = "1s"
read_timeout = "10s"

[pools.streamers.health_check]
type = "http"
path = "/healthz"
interval = "1s"

[pools.web]
backends = ["127.0.0.1:8083"]

[pools.web.health_check]
type = "http"
path = "/healthz"
interval = "1s"

[[routes]]
name = "stream"
path = "/stream/"
pool = "streamers"
strip_prefix = true

[routes.cache]
mode = "video"
target_duration = "1s"

[[routes]]
name = "web"
path = "/"
pool = "web"
EOF
}

# The web app's fleet: the edges, their regions and the viewers' prefixes.
write_edges_file() {
	cat <<EOF
# The simulated fleet (ansible/sim): two regions, one edge each; format in origin/web/README.md.
default_region = "a"

[poll]
interval = "1s"
timeout = "1s"
fall = 2
rise = 1

[regions.a]
prefixes = ["198.18.1.0/24"]
fallback = ["b"]

[regions.b]
prefixes = ["198.18.2.0/24"]
fallback = ["a"]

[[edges]]
name = "edge-a"
region = "a"
url = "http://${underlay[edge-a]}/stream/"
admin = "http://${overlay[edge-a]}:${edge_admin_port}"

[[edges]]
name = "edge-b"
region = "b"
url = "http://${underlay[edge-b]}/stream/"
admin = "http://${overlay[edge-b]}:${edge_admin_port}"
EOF
}

# --- life cycle -------------------------------------------------------------------------------

fleet_up() {
	mkdir -p "$(dirname "${fleet_dir}")"
	fleet_preflight
	if ip netns list | grep -q '^dfl-'; then
		fleet_die "a simulated fleet exists (ip netns list shows dfl-*): bash ansible/sim/fleet.sh down"
	fi
	rm -rf "${fleet_dir}"
	mkdir -p "${fleet_dir}"
	: >"${fleet_dir}/pids"
	build_host_image
	fleet_say "namespaces and the underlay (198.18.0.0/15)"
	make_network
	make_firewall
	fleet_say "hosts: Debian 12 with systemd and sshd for origin, ${edges[*]} (podman, in their namespaces)"
	start_hosts
	fleet_say "origin site: streamers, packager, web app"
	start_origin
	run_playbook 1
	fleet_say "the shield on ${overlay[origin]}:${shield_port}, behind the gateway's wg0"
	start_shield
	fleet_wait_ready
	fleet_status
}

# Ready: each edge answers /readyz over the overlay from the origin site, and the live playlist
# plays through it from its region's viewers.
fleet_wait_ready() {
	local deadline=$((SECONDS + ready_timeout)) edge region
	for edge in "${edges[@]}"; do
		region=view-${edge#edge-}
		until on origin curl -fs -o /dev/null --max-time 2 "http://${overlay[${edge}]}:${edge_admin_port}/readyz" &&
			on "${region}" curl -fs -o /dev/null --max-time 2 "http://${underlay[${edge}]}/stream/live/camera/index.m3u8"; do
			if ((SECONDS >= deadline)); then
				fleet_logs >&2
				fleet_die "${edge} not ready after ${ready_timeout} s (logs above)"
			fi
			sleep 1
		done
	done
}

fleet_status() {
	local edge
	fleet_say "up: admin password $(cat "${fleet_dir}/origin/admin-password" 2>/dev/null)"
	for edge in "${edges[@]}"; do
		fleet_say "  ${edge}: viewers http://${underlay[${edge}]}/ (from dfl-view-${edge#edge-}), admin http://${overlay[${edge}]}:${edge_admin_port}/ (overlay)"
	done
	fleet_say "  shield: http://${overlay[origin]}:${shield_port}/ (overlay), admin 127.0.0.1:9190 in dfl-origin"
	fleet_say "  run a command on a node: ip netns exec dfl-view-a curl http://${underlay[edge-a]}/"
}

fleet_logs() {
	local log
	for log in "${fleet_dir}"/*/*.log; do
		[[ -e ${log} ]] || continue
		echo "--- ${log} (last 10 lines)"
		tail -n 10 "${log}" | cut -c1-300
	done
}

# Every process in every namespace (wireguard-go included), then the namespaces themselves.
fleet_down() {
	local node namespace pid pids=()
	stop_hosts
	for namespace in $(ip netns list | awk '/^dfl-/ { print $1 }'); do
		mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "${namespace}" 2>/dev/null)
	done
	if [[ -e ${fleet_dir}/pids ]]; then
		mapfile -t -O "${#pids[@]}" pids < <(awk '{ print $1 }' "${fleet_dir}/pids")
	fi
	for pid in "${pids[@]}"; do
		kill -TERM "${pid}" 2>/dev/null || true
	done
	local deadline=$((SECONDS + 10))
	for pid in "${pids[@]}"; do
		while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "${pid}" 2>/dev/null || true
	done
	for namespace in $(ip netns list | awk '/^dfl-/ { print $1 }'); do
		ip netns del "${namespace}"
	done
	local left
	left=$(ip netns list | awk '/^dfl-/ { print $1 }')
	[[ -z ${left} ]] || fleet_die "namespaces left after down: ${left}"
	if command -v podman >/dev/null 2>&1; then
		left=$(hosts_pm ps -a --filter name='^dfl-' --format '{{.Names}}')
		[[ -z ${left} ]] || fleet_die "host containers left after down: ${left}"
	fi
	for pid in "${pids[@]}"; do
		if kill -0 "${pid}" 2>/dev/null && [[ $(cat "/proc/${pid}/stat" 2>/dev/null | awk '{ print $3 }') != Z ]]; then
			fleet_die "process ${pid} still running after down"
		fi
	done
	fleet_say "down: no host, namespace or process of the simulated fleet is left"
}
