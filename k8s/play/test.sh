#!/usr/bin/env bash
# `make k8s-test`: proves the dev overlay runs. make builds the images first; this script
#   1. starts the overlay in podman pods (k8s/play/up.sh), from the rendered manifests;
#   2. runs the browser test (origin/e2e/viewer.test.mjs, Debian's Chromium) through the
#      shield's NodePort: the catalog, VoD and live play, cache hits at the shield, an admin's
#      upload that viewers then play (the HTTPS test is skipped: the shield serves HTTP);
#   3. runs a short k6 crowd of live and VoD viewers through the shield, with zero errors;
#   4. edits the shield's ConfigMap (a new route) and checks the change is live without a
#      restart: the route answers, the reload is counted, the container is the same;
#   5. takes everything down (k8s/play/down.sh) and checks nothing is left, also on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
podman_tool=k8s-test
source k8s/images/podman.sh
source k8s/play/common.sh

failed=1
finish() {
	local status=$?
	if ((failed)) && [[ -e ${state_dir}/play.yaml ]]; then
		k8s_play_logs >&2 || true
	fi
	bash k8s/play/down.sh || status=1
	if ((status == 0)); then
		podman_say "passed: browser test, k6 and a live config edit through the shield"
	else
		podman_say "FAILED (output above)"
	fi
	exit "${status}"
}
trap finish EXIT

if [[ -e ${state_dir}/play.yaml ]]; then
	podman_say "a dev overlay is already running: taking it down first"
	bash k8s/play/down.sh
fi
bash k8s/play/up.sh
read -r admin_user admin_password <"${state_dir}/admin"
admin_url=http://127.0.0.1:${admin_port}

# --- 2. the browser test ----------------------------------------------------------------------
if [[ ! -d origin/e2e/node_modules/playwright-core ]]; then
	npm ci --prefix origin/e2e --no-audit --no-fund --loglevel=error
fi
# The clip the admin uploads, made by the packager in the web pod itself.
pm exec web-pod-0-web dime-origin packager sample --out /tmp/upload.mp4 --duration 4s --size 320x180 >/dev/null
pm cp web-pod-0-web:/tmp/upload.mp4 "${state_dir}/upload.mp4"
pm exec web-pod-0-web rm -f /tmp/upload.mp4
podman_say "browser test through the shield (${shield_url})"
(
	cd origin/e2e
	# The cluster's packager writes one classic channel; the low-latency one is make run's.
	DIME_EDGE_URL=${shield_url} DIME_ADMIN_URL=${admin_url} DIME_EDGE_HTTPS_URL=none DIME_LL_SLUG=none \
		DIME_ADMIN_USER=${admin_user} DIME_ADMIN_PASSWORD=${admin_password} \
		DIME_UPLOAD_FILE=$(realpath "../../${state_dir}/upload.mp4") \
		node --test --test-concurrency=1 viewer.test.mjs
)

# --- 3. k6 ------------------------------------------------------------------------------------
podman_say "k6: 30 live and 5 VoD viewers for 20 s through the shield"
BASE_URL=${shield_url} bash benches/k6/run.sh --quiet -e BASE_URL="${shield_url}" \
	-e ADMIN_URL="${admin_url}" -e LIVE_VUS=30 -e VOD_VUS=5 -e RAMP=5s -e DURATION=20s \
	-e P95_SEGMENT_MS=1000

# --- 4. a live edit of the shield's ConfigMap -------------------------------------------------
config_dir=$(pm volume inspect shield-config --format '{{.Mountpoint}}')
started_before=$(pm inspect shield-pod-0-shield --format '{{.State.StartedAt}}')
status=$(curl -s -o /dev/null -w '%{http_code}' "${shield_url}/edited/healthz")
[[ ${status} == 404 ]] || podman_die "before the edit, /edited/healthz answered ${status}, not 404"
cp "${config_dir}/edge.toml" "${state_dir}/edge.toml"
cat >>"${state_dir}/edge.toml" <<'EOF'

# Added by k8s/play/test.sh: a live edit of the ConfigMap.
[[routes]]
name = "edited"
path = "/edited/"
pool = "web"
strip_prefix = true
EOF
bash k8s/play/edit-config.sh "${state_dir}/edge.toml"
status=$(curl -s -o /dev/null -w '%{http_code}' "${shield_url}/edited/healthz")
[[ ${status} == 200 ]] || podman_die "after the edit, /edited/healthz answered ${status}, not 200"
started_after=$(pm inspect shield-pod-0-shield --format '{{.State.StartedAt}}')
[[ ${started_after} == "${started_before}" ]] ||
	podman_die "the shield restarted (${started_before} -> ${started_after}); the edit must reload it live"
podman_say "the edited config is live: /edited/healthz 404 -> 200, same shield container"
failed=0
