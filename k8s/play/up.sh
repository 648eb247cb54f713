#!/usr/bin/env bash
# `make k8s-up`: runs the dev overlay (k8s/overlays/dev) on this machine with `podman kube play`,
# from the same rendered manifests a cluster would get, and waits until the shield serves the
# live channel. What podman does not run (Services, StatefulSets, NetworkPolicies, ...) is
# handled by k8s/play/adapt.py and listed on the way. Then, as an operator would after
# `kubectl apply`, it creates the admin, registers the channel and imports a sample title with
# `dime-origin web` inside the web pod, and prints the URLs.
#   The shield (viewers):  http://127.0.0.1:30080   (its NodePort)
#   Its admin listener:    http://127.0.0.1:30090   (/metrics, /status; like a port-forward)
# Images: `make images` (k8s/images/build.sh) first; make k8s-up does both. `make k8s-down`
# removes everything this started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
podman_tool=k8s-play
source k8s/images/podman.sh
source k8s/play/common.sh

readonly ready_timeout=${DIME_K8S_READY_TIMEOUT:-240}

podman_setup
if pm network exists "${network}" || [[ -e ${state_dir}/play.yaml ]]; then
	podman_die "a dev overlay is already running here (network ${network}): make k8s-down first"
fi
for image in "localhost/dime-edge:${version}" "localhost/dime-origin:${version}" localhost/dime-postgres:15; do
	pm image exists "${image}" || podman_die "image ${image} is missing: make images"
done
command -v kubectl >/dev/null 2>&1 || podman_die "kubectl not found: kubectl 1.32 or later renders the overlay (make deps puts one in .dev/bin)"
/usr/bin/python3 -c 'import yaml' 2>/dev/null || {
	podman_say "installing python3-yaml (apt)"
	DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends python3-yaml >/dev/null
}

mkdir -p "${state_dir}"
bash k8s/secrets.sh
kubectl kustomize k8s/overlays/dev >"${state_dir}/rendered.yaml"
/usr/bin/python3 k8s/play/adapt.py "${state_dir}/rendered.yaml" --out "${state_dir}/play.yaml" \
	--state "${state_dir}/state.json" --secrets "${state_dir}/secrets" --subnet "${subnet}" \
	--publish "shield:9090=${admin_port}"

podman_say "network ${network} (${subnet}): each pod gets its own address, as in a cluster"
pm network create --subnet "${subnet}" "${network}" >/dev/null
mapfile -t ips < <(/usr/bin/python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["ips"]))' "${state_dir}/state.json")
ip_flags=()
for ip in "${ips[@]}"; do ip_flags+=(--ip "${ip}"); done
podman_say "podman kube play ${state_dir}/play.yaml"
if ! pm kube play --network "${network}" "${ip_flags[@]}" "${state_dir}/play.yaml" >"${state_dir}/play.log" 2>&1; then
	cat "${state_dir}/play.log" >&2
	podman_die "podman kube play failed (output above); make k8s-down cleans up"
fi

# emptyDirs are world-writable, as the kubelet makes them. podman's are volumes it fills from
# the image's directory on first start (and from the host's, for a path under the /var/run
# symlink), with their owner: made 0777 here, the container that could not write restarts.
mapfile -t empty_dirs < <(/usr/bin/python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["empty_dirs"]))' "${state_dir}/state.json")
for volume in "${empty_dirs[@]}"; do
	chmod 0777 "$(pm volume inspect "${volume}" --format '{{.Mountpoint}}')"
done

# Every pod has the address adapt.py gave it, or the /etc/hosts entries point nowhere.
while read -r pod ip; do
	infra=$(pm pod inspect "${pod}" --format '{{.InfraContainerID}}')
	got=$(pm inspect "${infra}" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')
	[[ ${got} == "${ip}" ]] || podman_die "pod ${pod} has the address '${got}', not ${ip}: the Services in /etc/hosts would point at the wrong pod"
done < <(/usr/bin/python3 -c 'import json,sys; [print(p["pod"], p["ip"]) for p in json.load(open(sys.argv[1]))["pods"]]' "${state_dir}/state.json")

podman_say "waiting for the shield to be ready and the live channel to play (up to ${ready_timeout} s)"
deadline=$((SECONDS + ready_timeout))
until curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:${admin_port}/readyz" &&
	curl -fs -o /dev/null --max-time 2 "${shield_url}/stream/live/camera/index.m3u8" &&
	curl -fs -o /dev/null --max-time 2 "${shield_url}/healthz"; do
	if ((SECONDS >= deadline)); then
		k8s_play_logs >&2
		podman_die "not ready after ${ready_timeout} s (pods and their last log lines above)"
	fi
	sleep 2
done

# The catalog, as docs/kubernetes.md step 5 does it with kubectl exec.
web_exec() { pm exec web-pod-0-web dime-origin web "$@" --db-url-file /etc/dime/database/url; }
podman_say "creating the admin, the live channel and a sample title (dime-origin web, in the web pod)"
# The password is the last line on stdout (the command's log lines may come before it).
password=$(web_exec create-admin --username admin --generate-password 2>"${state_dir}/setup.log" | tail -n 1) ||
	{ cat "${state_dir}/setup.log" >&2; podman_die "dime-origin web create-admin failed (output above)"; }
[[ ${password} =~ ^[[:alnum:]]{16,}$ ]] || podman_die "dime-origin web create-admin printed no password (got '${password}')"

web_exec add-channel --slug camera --name "Live camera" --stream live/camera/index.m3u8 >/dev/null
pm exec web-pod-0-web dime-origin packager sample --out /tmp/sample.mp4 --duration 20s >/dev/null
web_exec import /tmp/sample.mp4 --media-root /srv/media --slug sample \
	--title "Sample: test pattern" >/dev/null
pm exec web-pod-0-web rm -f /tmp/sample.mp4
curl -fsS -o /dev/null --max-time 5 "${shield_url}/stream/vod/sample/index.m3u8" ||
	podman_die "the sample title does not play through the shield: ${shield_url}/stream/vod/sample/index.m3u8"
printf 'admin %s\n' "${password}" >"${state_dir}/admin"
chmod 600 "${state_dir}/admin"

cat <<EOF
k8s-play: ready: the dev overlay runs in podman pods ($(pm pod ps --filter "network=${network}" --format '{{.Name}}' | sort | tr '\n' ' '))
  Site (through the shield)  ${shield_url}/
  Live channel               ${shield_url}/stream/live/camera/index.m3u8
  VoD title                  ${shield_url}/titles/sample
  Shield metrics / status    http://127.0.0.1:${admin_port}/metrics   http://127.0.0.1:${admin_port}/status
  Admin                      user admin, password ${password} (also in ${state_dir}/admin)
  Shield config (live)       bash k8s/play/edit-config.sh FILE   (replaces edge.toml as the kubelet would)
  Stop                       make k8s-down
EOF
