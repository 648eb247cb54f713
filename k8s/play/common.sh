# Sourced by k8s/play/*.sh: where the played dev overlay keeps its state, and its addresses.
# shellcheck shell=bash

readonly state_dir=${CARGO_TARGET_DIR:-target}/k8s-play
# The pods' own network: a private bridge inside this machine, like a cluster's pod network.
readonly network=${DIME_K8S_NETWORK:-dime-k8s}
readonly subnet=${DIME_K8S_SUBNET:-10.89.64.0/24}
readonly shield_port=30080 admin_port=${DIME_K8S_ADMIN_PORT:-30090}
readonly shield_url=http://127.0.0.1:${shield_port}
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
readonly version

# Every pod's state and each container's last lines, for a failure message.
k8s_play_logs() {
	local pods container
	pods=$(pm pod ps --filter "network=${network}" --format '{{.Name}}' 2>/dev/null) || return 0
	pm pod ps --filter "network=${network}" 2>/dev/null || true
	for container in $(for pod in ${pods}; do pm pod inspect "${pod}" --format '{{range .Containers}}{{.Name}} {{end}}'; done); do
		[[ ${container} == *-infra ]] && continue
		echo "--- ${container}: $(pm inspect "${container}" --format '{{.State.Status}}, restarted {{.RestartCount}} times') (last 15 lines)"
		pm logs --tail 15 "${container}" 2>&1 | cut -c1-400 || true
	done
}
