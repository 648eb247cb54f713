#!/usr/bin/env bash
# Runs Dime's whole stack on localhost for a developer; `make run` builds, then calls this.
#
#   127.0.0.1:8080         dime-edge, config/dev.toml; its admin listener is :9090
#   127.0.0.1:8081, :8082  dime-origin streamers over .dev/media (pool `streamers`, /stream/)
#   127.0.0.1:8083         dime-origin streamer over .dev/web (pool `web`, /)
#
# The ports are those of config/dev.toml. Everything it writes is under .dev/ (git-ignored),
# logs in .dev/logs/. Ctrl-C or SIGTERM stops every process it started, then it exits 0.
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

readonly edge_config=config/dev.toml
readonly bin_dir=${CARGO_TARGET_DIR:-target}/release
readonly media_dir=.dev/media web_dir=.dev/web log_dir=.dev/logs
readonly edge=127.0.0.1:8080 admin=127.0.0.1:9090 web=127.0.0.1:8083
readonly streamers=(127.0.0.1:8081 127.0.0.1:8082)
readonly ready_timeout=20 stop_timeout=10

say() { printf 'dev-stack: %s\n' "$*"; }
die() {
	printf 'dev-stack: %s\n' "$*" >&2
	exit 1
}

# --- preflight ------------------------------------------------------------------------------

for binary in dime-edge dime-origin; do
	[[ -x ${bin_dir}/${binary} ]] ||
		die "${bin_dir}/${binary} not found: build it with make run (or cargo build --release -p ${binary})"
done
command -v curl >/dev/null 2>&1 || die "curl not found: run make deps"

# Two stacks would regenerate .dev/ under each other's feet: one at a time. The lock goes
# with this shell (children get the descriptor closed), so a crash never leaves it held.
mkdir -p .dev
exec {lock_fd}>.dev/dev-stack.lock
flock -n "${lock_fd}" ||
	die "another dev stack is running from this checkout: stop it (Ctrl-C in its terminal) and try again"

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
for address in "${edge}" "${admin}" "${streamers[@]}" "${web}"; do
	if port_in_use "${address}"; then
		die "port ${address##*:} on 127.0.0.1 is already in use$(port_owner "${address}"): stop that process (an earlier make run?) and try again"
	fi
done

# --- sample content -------------------------------------------------------------------------

# Synthetic media until the GStreamer packager lands: HLS playlists over MPEG-TS-shaped
# segments, enough to exercise routing, caching and the content types, not to play video.
# Each segment is 188-byte null packets (sync byte 0x47, PID 0x1FFF, payload 0xFF stuffing);
# the first packet's payload names the segment so two segments never share bytes.
ts_packet=$'\x47\x1f\xff\x10'
stuffing=$(printf '%184s' '')
stuffing=${stuffing// /$'\xff'}
ts_packet+=${stuffing}

# Writes FILE: about 512 KiB of null packets, the first one labelled LABEL.
write_segment() {
	local file=$1 label=$2 i
	{
		printf '%s' "${ts_packet:0:4}${label}${stuffing:${#label}}"
		for ((i = 1; i < 2789; i++)); do
			printf '%s' "${ts_packet}"
		done
	} >"${file}"
}

# Writes an HLS playlist (RFC 8216) of COUNT 4-second segments into DIR; TYPE vod or live.
write_stream() {
	local dir=$1 count=$2 type=$3 i
	mkdir -p "${dir}"
	{
		printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n'
		if [[ ${type} == vod ]]; then
			printf '#EXT-X-PLAYLIST-TYPE:VOD\n'
		else
			printf '#EXT-X-MEDIA-SEQUENCE:0\n'
		fi
		for ((i = 0; i < count; i++)); do
			printf '#EXTINF:4.000,\nseg%d.ts\n' "${i}"
			write_segment "${dir}/seg${i}.ts" "Dime dev sample ${dir#"${media_dir}"/} seg${i}"
		done
		# A live playlist has no end: players keep reloading it (RFC 8216 §6.3.4).
		if [[ ${type} == vod ]]; then
			printf '#EXT-X-ENDLIST\n'
		fi
	} >"${dir}/index.m3u8"
}

# Regenerated each run, so a stale or hand-edited tree never outlives a restart.
rm -rf "${media_dir}" "${web_dir}"
mkdir -p "${log_dir}" "${web_dir}"
write_stream "${media_dir}/vod/sample" 5 vod
write_stream "${media_dir}/live/test" 3 live

# The web app lands in a later issue; until then a page of links through the edge. The
# streamer lists no directories, so the page is /index.html rather than /.
cat >"${web_dir}/index.html" <<'HTML'
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Dime (development stack)</title>
</head>
<body>
<h1>Dime development stack</h1>
<p>Placeholder for the web app, which comes in a later issue. Everything below goes through
the edge: <code>/stream/</code> to the streamers, the rest to this web origin.</p>
<ul>
<li><a href="/stream/vod/sample/index.m3u8">VOD playlist</a> (5 synthetic segments)</li>
<li><a href="/stream/vod/sample/seg0.ts">VOD segment 0</a></li>
<li><a href="/stream/live/test/index.m3u8">Live-style playlist</a> (3 segments, no end)</li>
</ul>
<p>Metrics and readiness are on the admin listener, port 9090: <code>/metrics</code>,
<code>/readyz</code>.</p>
</body>
</html>
HTML

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
	start "streamer-${address##*:}" "${bin_dir}/dime-origin" streamer --root "${media_dir}" --listen "${address}"
done
start web "${bin_dir}/dime-origin" streamer --root "${web_dir}" --listen "${web}"
start edge "${bin_dir}/dime-edge" run -c "${edge_config}"

# Ready means the edge is listening and its pools have healthy backends.
deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null --max-time 1 "http://${admin}/readyz" 2>/dev/null; do
	for i in "${!pids[@]}"; do
		kill -0 "${pids[i]}" 2>/dev/null ||
			fail "${names[i]} exited during startup; stopped everything. Logs:"
	done
	((SECONDS < deadline)) ||
		fail "http://${admin}/readyz not ready after ${ready_timeout}s; stopped everything. Logs:"
	sleep 0.25
done

cat <<EOF
dev-stack: ready. Try:
  web page         http://${edge}/index.html
  VOD playlist     http://${edge}/stream/vod/sample/index.m3u8
  live playlist    http://${edge}/stream/live/test/index.m3u8
  metrics          http://${admin}/metrics
  readiness        http://${admin}/readyz
  logs             ${log_dir}/{edge,streamer-8081,streamer-8082,web}.log
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
