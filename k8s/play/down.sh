#!/usr/bin/env bash
# `make k8s-down`: removes what `make k8s-up` started: the pods (podman kube down), their
# volumes (claims, ConfigMaps, emptyDirs), the decoded Secrets, the network and the state
# directory. Then checks that nothing of it is left. The images stay (make images rebuilt
# them only when a source changed); `podman rmi` removes them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
podman_tool=k8s-play
source k8s/images/podman.sh
source k8s/play/common.sh

command -v podman >/dev/null 2>&1 || exit 0

if [[ -e ${state_dir}/play.yaml ]]; then
	pm kube down "${state_dir}/play.yaml" >/dev/null 2>&1 || true
fi
# Pods left by a play that failed halfway are on the network even without play.yaml.
for pod in $(pm pod ps --filter "network=${network}" --format '{{.Name}}' 2>/dev/null); do
	pm pod rm --force --time 10 "${pod}" >/dev/null
done
volumes=()
if [[ -e ${state_dir}/play.yaml ]]; then
	mapfile -t volumes < <(/usr/bin/python3 - "${state_dir}/play.yaml" <<'PY'
import sys, yaml
names = set()
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if not doc:
        continue
    if doc["kind"] in ("PersistentVolumeClaim", "ConfigMap"):
        names.add(doc["metadata"]["name"])
    if doc["kind"] == "Deployment":
        for volume in doc["spec"]["template"]["spec"].get("volumes", []):
            if "emptyDir" in volume:
                names.add(volume["name"])
print("\n".join(sorted(names)))
PY
	)
fi
for volume in "${volumes[@]}"; do
	[[ -n ${volume} ]] || continue
	if pm volume exists "${volume}"; then
		pm volume rm --force "${volume}" >/dev/null
	fi
done
if pm network exists "${network}"; then
	pm network rm --force "${network}" >/dev/null
fi

left=()
[[ -z $(pm pod ps --filter "network=${network}" --format '{{.Name}}' 2>/dev/null) ]] || left+=(pods)
for volume in "${volumes[@]}"; do
	[[ -z ${volume} ]] || ! pm volume exists "${volume}" || left+=("volume ${volume}")
done
! pm network exists "${network}" || left+=("network ${network}")
if ((${#left[@]})); then
	podman_die "still there after k8s-down: ${left[*]}"
fi
rm -rf "${state_dir}"
podman_say "down: no pod, volume or network of the dev overlay is left"
