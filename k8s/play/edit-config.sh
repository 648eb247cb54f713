#!/usr/bin/env bash
# Replaces the shield's edge.toml in the running dev overlay, as the kubelet does when the
# ConfigMap `shield-config` changes: the new file is written beside the old one and renamed
# over it, so the shield (which watches the directory) never reads half a file. Then waits
# until the shield reports the reload on /metrics, applied or rejected.
#   bash k8s/play/edit-config.sh NEW_EDGE.toml
# On a cluster: edit k8s/base/shield/edge.toml, then `kubectl apply -k` (docs/kubernetes.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
podman_tool=k8s-play
source k8s/images/podman.sh
source k8s/play/common.sh

new=${1:?usage: edit-config.sh NEW_EDGE.toml}
[[ -r ${new} ]] || podman_die "${new}: no such file"
directory=$(pm volume inspect shield-config --format '{{.Mountpoint}}' 2>/dev/null) ||
	podman_die "no volume shield-config: is the dev overlay running (make k8s-up)?"

reloads() {
	curl -fsS --max-time 2 "http://127.0.0.1:${admin_port}/metrics" |
		awk -v result="$1" '$1 == "dime_config_reloads_total{result=\"" result "\"}" { print $2 }'
}
applied_before=$(reloads applied)
rejected_before=$(reloads rejected)
cp "${new}" "${directory}/.edge.toml.new"
chmod 0644 "${directory}/.edge.toml.new"
mv -f "${directory}/.edge.toml.new" "${directory}/edge.toml"

deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
	if [[ $(reloads applied) != "${applied_before}" ]]; then
		podman_say "the shield reloaded ${new} (dime_config_reloads_total{result=\"applied\"} ${applied_before:-0} -> $(reloads applied))"
		exit 0
	fi
	if [[ $(reloads rejected) != "${rejected_before}" ]]; then
		pm logs --tail 20 shield-pod-0-shield >&2
		podman_die "the shield rejected ${new} and keeps its old config (its log above)"
	fi
	sleep 0.5
done
podman_die "the shield did not reload within 30 s"
