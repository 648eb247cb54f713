#!/usr/bin/env bash
# Runs Dime's whole platform on localhost for a developer; `make run` builds, then calls this.
#
#   127.0.0.1:8080         dime-edge, config/dev.toml; HTTPS on :8443 with a certificate from a
#                          local CA (.dev/certs, kept across runs); its admin listener is :9090
#   127.0.0.1:8081, :8082  dime-origin streamers over .dev/media (pool `streamers`, /stream/)
#   127.0.0.1:8083         dime-origin web: catalog, players, admin, on .dev/web/dime.db (pool `web`, /)
#   127.0.0.1:8084         dime-origin packager's health and metrics; it writes the live channel
#                          `camera` into .dev/media/live/camera (a V4L2 camera at /dev/video0 when
#                          there is one, a test pattern otherwise)
#   127.0.0.1:8085         the second packager's: the low-latency HLS channel `lowlatency` (a
#                          640x360 test pattern, CMAF with 200 ms parts), .dev/media/live/lowlatency
#
# On every start it generates a sample VoD title (a 20 s test pattern, packaged into HLS by
# `dime-origin web import`), registers the live channel, and creates an admin with a fresh
# random password, which it prints. Both live channels are in the catalog. The ports are those of config/dev.toml; other ports come
# from the environment (the browser test uses them, so it never meets a developer's make run),
# and then the edge runs a copy of config/dev.toml with those ports, written to DIME_DEV_DIR.
#
# Everything it writes is under .dev/ (git-ignored; DIME_DEV_DIR moves it), logs in .dev/logs/.
# Ctrl-C or SIGTERM stops every process it started, then it exits 0. Environment:
#   DIME_BIN_DIR     where dime-edge and dime-origin are (default: target/release)
#   DIME_DEV_DIR     state directory (default: .dev)
#   DIME_LIVE_SIZE   live resolution (default: 1280x720); DIME_LIVE_BITRATE (default: 2500k)
#   DIME_HTTP_PORT   the edge's HTTP port (default: 8080); the streamers, the web app and the
#                    two packagers take the five ports after it
#   DIME_HTTPS_PORT  the edge's HTTPS port (default: 8443); DIME_ADMIN_PORT its admin (9090)
set -euo pipefail

# Braces make bash read the whole file before running it: this script lives for hours, and a
# `git pull` that rewrites it must not change what the running copy executes.
{
# Started in the background by a non-interactive shell (`make run &` in a script, CI), bash
# inherits SIGINT ignored and could not trap it: `kill -INT` would then stop nothing. Start
# again with the default action, so the trap below always works.
sigign=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status 2>/dev/null) || true
if ((0x${sigign:-0} & 0x2)); then
	exec env --default-signal=INT bash "${BASH_SOURCE[0]}" "$@"
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly bin_dir=${DIME_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
readonly dev_dir=${DIME_DEV_DIR:-.dev}
readonly media_dir=${dev_dir}/media web_dir=${dev_dir}/web log_dir=${dev_dir}/logs
readonly database=sqlite://${dev_dir}/web/dime.db
readonly http_port=${DIME_HTTP_PORT:-8080} https_port=${DIME_HTTPS_PORT:-8443}
readonly admin_port=${DIME_ADMIN_PORT:-9090}
readonly edge=127.0.0.1:${http_port} https=127.0.0.1:${https_port} admin=127.0.0.1:${admin_port}
readonly streamers=(127.0.0.1:$((http_port + 1)) 127.0.0.1:$((http_port + 2)))
readonly web=127.0.0.1:$((http_port + 3)) packager=127.0.0.1:$((http_port + 4))
readonly packager_ll=127.0.0.1:$((http_port + 5))
# config/dev.toml names the certificate by this path, whatever DIME_DEV_DIR is; the CA is kept
# across runs, so a browser that trusts it once keeps trusting it.
readonly cert_dir=.dev/certs
readonly live_size=${DIME_LIVE_SIZE:-1280x720} live_bitrate=${DIME_LIVE_BITRATE:-2500k}
readonly ready_timeout=60 stop_timeout=10

say() { printf 'dev-stack: %s\n' "$*"; }
die() {
	printf 'dev-stack: %s\n' "$*" >&2
	exit 1
}

# --- preflight ------------------------------------------------------------------------------

for knob in DIME_HTTP_PORT:"${http_port}":65530 DIME_HTTPS_PORT:"${https_port}":65535 \
	DIME_ADMIN_PORT:"${admin_port}":65535; do
	IFS=: read -r name value most <<<"${knob}"
	[[ ${value} =~ ^[1-9][0-9]*$ ]] && ((value <= most)) ||
		die "${name}=${value}: a port number from 1 to ${most}"
done

for binary in dime-edge dime-origin; do
	[[ -x ${bin_dir}/${binary} ]] ||
		die "${bin_dir}/${binary} not found: build it with make run (or cargo build --release -p ${binary})"
done
command -v curl >/dev/null 2>&1 || die "curl not found: run make deps"

# Two stacks would regenerate the state directory under each other's feet: one at a time. The
# lock goes with this shell (children get the descriptor closed), so a crash never leaves it held.
mkdir -p "${dev_dir}"
exec {lock_fd}>"${dev_dir}/dev-stack.lock"
flock -n "${lock_fd}" ||
	die "another dev stack is running from ${dev_dir}: stop it (Ctrl-C in its terminal) and try again"

# Connecting is the test that matters: a listener on 0.0.0.0 or [::] takes 127.0.0.1 too.
port_in_use() {
	# shellcheck disable=SC2016 # expanded by the inner bash, which gets the address as $1
	timeout 2 bash -c ': <>"/dev/tcp/${1%:*}/${1##*:}"' _ "$1" 2>/dev/null
}
# Names the listening process when ss can see it, e.g. ` (dime-edge, pid 1234)`.
port_owner() {
	local owner
	owner=$(ss -Hltnp "sport = :${1##*:}" 2>/dev/null |
		sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/ (\1, pid \2)/p' | head -n 1) || true
	printf '%s' "${owner}"
}
for address in "${edge}" "${https}" "${admin}" "${streamers[@]}" "${web}" "${packager}" \
	"${packager_ll}"; do
	if port_in_use "${address}"; then
		die "port ${address##*:} on 127.0.0.1 is already in use$(port_owner "${address}"): stop that process (an earlier make run?) and try again"
	fi
done

# The edge's config: config/dev.toml itself on its own ports (edit it and the edge reloads);
# on others, a copy with each of its addresses moved, and the certificate named from here.
edge_config=config/dev.toml
if [[ ${http_port}/${https_port}/${admin_port} != 8080/8443/9090 ]]; then
	edge_config=${dev_dir}/edge.toml
	# Two steps (each address to a mark, each mark to its address), so an address moved onto
	# another's old port is not moved twice.
	marks=() moves=()
	for pair in "8080=${edge}" "8443=${https}" "9090=${admin}" "8081=${streamers[0]}" \
		"8082=${streamers[1]}" "8083=${web}"; do
		grep -q "\"127.0.0.1:${pair%%=*}\"" config/dev.toml ||
			die "config/dev.toml has no \"127.0.0.1:${pair%%=*}\": this script moves its addresses by name"
		marks+=(-e "s/\"127\\.0\\.0\\.1:${pair%%=*}\"/\"@${pair%%=*}@\"/g")
		moves+=(-e "s/\"@${pair%%=*}@\"/\"${pair#*=}\"/g")
	done
	{
		printf '# Written by .ci/dev-stack.sh: config/dev.toml on ports %s, %s and %s.\n' \
			"${http_port}" "${https_port}" "${admin_port}"
		sed "${marks[@]}" config/dev.toml | sed "${moves[@]}" \
			-e "s|\"\\.\\./\\.dev/certs/|\"${PWD}/${cert_dir}/|g"
	} >"${edge_config}"
fi
readonly edge_config

# --- content --------------------------------------------------------------------------------

# Regenerated each run, so a stale or hand-edited tree never outlives a restart.
rm -rf "${media_dir}" "${web_dir}" "${log_dir}"
mkdir -p "${media_dir}/live" "${media_dir}/vod" "${web_dir}" "${log_dir}"

origin=("${bin_dir}/dime-origin")
# One-off setup commands: their output goes to the log, and to the terminal when they fail.
setup() {
	local name=$1 log=${log_dir}/setup.log
	shift
	printf '$ %s\n' "$*" >>"${log}"
	if ! "$@" >>"${log}" 2>&1; then
		tail -n 20 "${log}" >&2
		die "${name} failed (log above, in full in ${log})"
	fi
}

setup "the development certificate" "${bin_dir}/dime-edge" cert generate --out "${cert_dir}" \
	--name localhost --name 127.0.0.1

say "generating and packaging a sample VoD title (about 20 s of work)"
setup "the sample video" "${origin[@]}" packager sample --out "${web_dir}/sample.mp4" --duration 20s
setup "importing the sample title" "${origin[@]}" web import "${web_dir}/sample.mp4" \
	--db "${database}" --media-root "${media_dir}" --slug sample --title "Sample: test pattern" \
	--description "Twenty seconds of test pattern, generated and packaged by make run."
rm -f "${web_dir}/sample.mp4"
setup "registering the live channel" "${origin[@]}" web add-channel --db "${database}" \
	--slug camera --name "Live camera" --stream live/camera/index.m3u8 \
	--description "The packager's live channel: /dev/video0 when present, a test pattern otherwise."
setup "registering the low-latency channel" "${origin[@]}" web add-channel --db "${database}" \
	--slug lowlatency --name "Low-latency test pattern" --stream live/lowlatency/index.m3u8 \
	--description "Low-latency HLS: 1 s segments sent in 200 ms parts as they are encoded."
admin_user='admin'
admin_password=$("${origin[@]}" web create-admin --db "${database}" --username "${admin_user}" \
	--generate-password 2>>"${log_dir}/setup.log" | tail -n 1) ||
	die "creating the admin user failed (see ${log_dir}/setup.log)"

# --- processes ------------------------------------------------------------------------------

pids=()
names=()

# Starts NAME in the background, its output in .dev/logs/NAME.log. In its own session, so a
# Ctrl-C reaches this script alone, which then stops the children in order: otherwise they
# exit on the terminal's SIGINT at the same instant and `wait -n` reports a crash.
# (setsid execs without forking here, a background job not being a group leader: $! stays.)
start() {
	local name=$1
	shift
	setsid "$@" >"${log_dir}/${name}.log" 2>&1 {lock_fd}>&- &
	pids+=("$!")
	names+=("${name}")
}

any_running() {
	local pid
	for pid in "${pids[@]}"; do
		kill -0 "${pid}" 2>/dev/null && return 0
	done
	return 1
}

# SIGTERM to every child, a bounded wait, then SIGKILL for whatever is left.
stop_all() {
	((${#pids[@]} > 0)) || return 0
	local i pid deadline=$((SECONDS + stop_timeout))
	for pid in "${pids[@]}"; do
		kill -TERM "${pid}" 2>/dev/null || true
	done
	while any_running && ((SECONDS < deadline)); do
		sleep 0.1
	done
	for i in "${!pids[@]}"; do
		if kill -0 "${pids[i]}" 2>/dev/null; then
			say "${names[i]} (pid ${pids[i]}) still running ${stop_timeout}s after SIGTERM: killing it"
			kill -KILL "${pids[i]}" 2>/dev/null || true
		fi
	done
	wait "${pids[@]}" 2>/dev/null || true
	pids=()
}

# shellcheck disable=SC2317 # run from a trap
on_exit() {
	# A second Ctrl-C while stopping must not cut the cleanup short.
	trap '' INT TERM
	stop_all
}
# shellcheck disable=SC2317 # run from a trap
on_signal() {
	trap '' INT TERM
	printf '\n'
	say "stopping"
	stop_all
	say "stopped"
	exit 0
}
trap on_exit EXIT
trap on_signal INT TERM

# Stops everything, then says why and shows the end of every log, and exits 1.
fail() {
	trap '' INT TERM
	stop_all
	say "$*" >&2
	tail -n 20 "${log_dir}"/*.log >&2 || true
	exit 1
}

for address in "${streamers[@]}"; do
	start "streamer-${address##*:}" "${origin[@]}" streamer --root "${media_dir}" --listen "${address}"
done
# --device auto: the camera when one answers, else the test pattern (with a warning in its log).
start packager "${origin[@]}" packager --out "${media_dir}/live" --channel camera --device auto \
	--size "${live_size}" --fps 30 --bitrate "${live_bitrate}" --segment 1s --window 6 \
	--health-listen "${packager}"
# Low-latency HLS (--part): CMAF parts of 200 ms, blocking playlist reloads, preload hints.
start packager-ll "${origin[@]}" packager --out "${media_dir}/live" --channel lowlatency \
	--test-pattern --size 640x360 --fps 30 --bitrate 800k --format cmaf --segment 1s \
	--part 200ms --window 6 --health-listen "${packager_ll}"
# The edge reaches the web app from 127.0.0.1: only its X-Forwarded-For names the viewer.
start web "${origin[@]}" web --listen "${web}" --db "${database}" --media-base /stream/ \
	--media-root "${media_dir}" --trusted-proxy 127.0.0.1/32
start edge "${bin_dir}/dime-edge" run -c "${edge_config}"

# Ready means the edge is listening, its pools have healthy backends, and both live channels
# have a playlist the edge can fetch.
deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null --max-time 1 "http://${admin}/readyz" 2>/dev/null &&
	curl -fsS -o /dev/null --max-time 1 "http://${edge}/stream/live/camera/index.m3u8" 2>/dev/null &&
	curl -fsS -o /dev/null --max-time 1 "http://${edge}/stream/live/lowlatency/index.m3u8" 2>/dev/null; do
	for i in "${!pids[@]}"; do
		kill -0 "${pids[i]}" 2>/dev/null ||
			fail "${names[i]} exited during startup; stopped everything. Logs:"
	done
	((SECONDS < deadline)) ||
		fail "not ready after ${ready_timeout}s (edge /readyz and the live playlist); stopped everything. Logs:"
	sleep 0.25
done

cat <<EOF
dev-stack: ready. Open:
  catalog          http://${edge}/   and   https://localhost:${https##*:}/
  VoD title        http://${edge}/titles/sample
  live channel     http://${edge}/live/camera
  low-latency      http://${edge}/live/lowlatency   (LL-HLS; the page shows the latency)
  admin            http://${edge}/admin/  (user ${admin_user}, password ${admin_password})
  live playlist    http://${edge}/stream/live/camera/index.m3u8
  edge metrics     http://${admin}/metrics   readiness http://${admin}/readyz
  edge status      http://${admin}/status
  packager health  http://${packager}/healthz   and   http://${packager_ll}/healthz
  logs             ${log_dir}/
HTTPS uses a local CA, ${cert_dir}/ca.pem: curl --cacert ${cert_dir}/ca.pem https://localhost:${https##*:}/
  To trust it in Chromium: certutil -d sql:\$HOME/.pki/nssdb -A -t C,, -n dime-dev-ca -i ${cert_dir}/ca.pem
  System-wide (Debian): cp ${cert_dir}/ca.pem /usr/local/share/ca-certificates/dime-dev-ca.crt && update-ca-certificates
Ctrl-C stops everything.
EOF

# Wait for a signal; a child that dies on its own takes the stack down with a reason.
exited=
status=0
wait -n -p exited "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
	if [[ ${pids[i]} == "${exited}" ]]; then
		fail "${names[i]} exited unexpectedly (status ${status}); stopped everything. Logs:"
	fi
done
fail "a process exited unexpectedly (status ${status}); stopped everything. Logs:"
}
