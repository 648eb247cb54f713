#!/usr/bin/env bash
# Where the 1 KB hit's latency tail comes from on this machine. `make bench` reads each
# proxy's p99 with wrk at full load, where a faster proxy also takes more requests; here
# dime-edge and nginx take the same offered load in turn (h2load, HTTP/1.1, 32 connections,
# a fixed rate on each, below either's capacity), every request's latency is logged, and
# `perf sched` traces both cores over the run. benches/tail.py finds the stalls (half the
# connections slow at once) and what else held a core while they lasted. Writes the "Where the
# 1 KB tail comes from" section of docs/benchmarks.md (between its markers, which
# benches/report.py keeps); the logs and traces stay in target/bench/tail/.
#
#   bash benches/tail.sh         (make tail)
#
# Knobs: TAIL_ROUNDS (rounds, each proxy once in each, default 3), TAIL_SECONDS (per measured
# run, default 10), TAIL_RATE (1 KB hits a second offered in all, default 32000, a multiple of
# 32), TAIL_PORT_BASE (6 ports from here, default 18500), TAIL_DOC (where the section goes),
# TAIL_NICE (priority of the proxies, h2load and the origin, default -15 as make bench).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROUNDS=${TAIL_ROUNDS:-3}
SECONDS_PER_RUN=${TAIL_SECONDS:-10}
RATE=${TAIL_RATE:-32000}
PORT_BASE=${TAIL_PORT_BASE:-18500}
if ((EUID == 0)); then NICE=${TAIL_NICE:--15}; else NICE=${TAIL_NICE:-0}; fi
CONNS=32
PROXY_CPU=0
LOAD_CPU=1
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
WORK=$TARGET_DIR/bench/tail
BIN=$TARGET_DIR/release
DOC=${TAIL_DOC:-$ROOT/docs/benchmarks.md}
SHM=/dev/shm/dime-tail-$$
PROXY_PORT=$PORT_BASE
STREAMER_PORT=$((PORT_BASE + 2))
URL=http://127.0.0.1:$PROXY_PORT/live/index.m3u8
export PATH=$PATH:/usr/sbin:/sbin

log() { printf '[tail %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "TAIL_ROUNDS=$ROUNDS: a whole number of rounds"
[[ $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ ]] || die "TAIL_SECONDS=$SECONDS_PER_RUN: a whole number of seconds"
[[ $RATE =~ ^[1-9][0-9]*$ ]] && ((RATE % CONNS == 0)) ||
	die "TAIL_RATE=$RATE: a whole number of requests a second, a multiple of $CONNS (one rate per connection)"
[[ $NICE =~ ^-?[0-9]+$ ]] || die "TAIL_NICE=$NICE: a priority, -20 to 19"
(($(nproc) >= 2)) || die "needs two cores (the proxy on one, the load on the other); this machine has $(nproc)"

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$SHM"
}
trap cleanup EXIT

# --- what it needs --------------------------------------------------------------------------
missing=()
for tool in perf:linux-perf h2load:nghttp2-client nginx:nginx-light curl:curl taskset:util-linux; do
	command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
	((EUID == 0)) || die "missing: ${missing[*]} (apt-get install them, or run as root)"
	log "installing ${missing[*]} (apt)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
fi
log "cargo build --release -p dime-edge -p dime-origin"
cargo build --release -q -p dime-edge -p dime-origin
for p in "$PROXY_PORT" $((PORT_BASE + 1)) "$STREAMER_PORT" $((PORT_BASE + 3)) $((PORT_BASE + 4)) $((PORT_BASE + 5)); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		die "127.0.0.1:$p is in use; set TAIL_PORT_BASE"
	fi
done
# perf sched needs the scheduler's trace points; a kernel that hides them says so here.
perf record -q -k CLOCK_MONOTONIC -a -e sched:sched_switch -o /dev/null -- true >/dev/null 2>&1 ||
	die "perf cannot trace the scheduler here (perf record -a -e sched:sched_switch failed; root, and kernel.perf_event_paranoid <= 1, are needed)"

# --- the playlist, the configs, the certificate ---------------------------------------------
rm -rf "$WORK" && mkdir -p "$WORK"/{media/live,dime,nginx/client_body,certs,runs}
python3 benches/playlist_1k.py "$WORK/media/live/index.m3u8"
"$BIN/dime-edge" cert generate --out "$WORK/certs" --name 127.0.0.1 --name localhost >/dev/null
render() { # TEMPLATE OUT: benches/run.sh's placeholders, filled in for this script
	sed -e "s|@WORK@|$WORK|g" -e "s|@SHM@|$SHM/nginx|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g" \
		-e "s|@ADMIN_PORT@|$((PORT_BASE + 1))|g" -e "s|@STREAMER_PORT@|$STREAMER_PORT|g" \
		-e "s|@SLOW_PORT@|$((PORT_BASE + 3))|g" -e "s|@INVAL_PORT@|$((PORT_BASE + 4))|g" \
		-e "s|@TLS_PORT@|$((PORT_BASE + 5))|g" -e "s|@NGINX_ACCESS_LOG@|off|g" \
		-e "s|@MAX_CONNECTIONS@|1024|g" -e "s|@NOFILE@|4096|g" "$1" >"$2"
}
render benches/conf/dime-edge.toml.in "$WORK/dime/dime-edge.toml"
"$BIN/dime-edge" check -c "$WORK/dime/dime-edge.toml" >/dev/null
render benches/conf/nginx.conf.in "$WORK/nginx/nginx.conf"
mkdir -p "$SHM/nginx/cache" "$SHM/nginx/temp"
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"

nice -n "$NICE" taskset -c "$LOAD_CPU" "$BIN/dime-origin" streamer --root "$WORK/media" \
	--listen "127.0.0.1:$STREAMER_PORT" --playlist-max-age 3600 >"$WORK/streamer.log" 2>&1 &
STREAMER_PID=$!
PIDS+=("$STREAMER_PID")
for ((i = 0; i < 100; i++)); do
	curl -sf -o /dev/null "http://127.0.0.1:$STREAMER_PORT/live/index.m3u8" && break
	sleep 0.1
done

# --- one proxy --------------------------------------------------------------------------------

# start_proxy NAME: the proxy on its core, in the background, once it answers hits;
# PROXY_PID is its process.
start_proxy() {
	local name=$1
	case $name in
	dime-edge)
		nice -n "$NICE" taskset -c "$PROXY_CPU" env RUST_LOG=info,access=off \
			"$BIN/dime-edge" run -c "$WORK/dime/dime-edge.toml" >"$WORK/$name.log" 2>&1 &
		;;
	nginx)
		rm -rf "$SHM/nginx" && mkdir -p "$SHM/nginx/cache" "$SHM/nginx/temp"
		nice -n "$NICE" taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
			-c "$WORK/nginx/nginx.conf" >"$WORK/$name.log" 2>&1 &
		;;
	esac
	PROXY_PID=$!
	PIDS+=("$PROXY_PID")
	local i status
	for ((i = 0; i < 300; i++)); do
		status=$(curl -s -o /dev/null -D - "$URL" 2>/dev/null | tr -d '\r' |
			awk 'tolower($1) == "x-cache-status:" { print $2 }') || true
		[[ $status == HIT ]] && return 0
		kill -0 "$PROXY_PID" 2>/dev/null || die "$name stopped; see $WORK/$name.log"
		sleep 0.2
	done
	die "$name never answered a hit; see $WORK/$name.log"
}

stop_proxy() {
	kill "$PROXY_PID" 2>/dev/null || true
	wait "$PROXY_PID" 2>/dev/null || true
}

# The proxy's processes: the one started and its children (nginx's worker).
proxy_pids() { { echo "$PROXY_PID"; pgrep -P "$PROXY_PID" || true; } | paste -sd,; }

origin_requests() { grep -c 'path="/live/index.m3u8"' "$WORK/streamer.log" || true; }

# load SECONDS [LOG]: the offered rate for SECONDS on h2load's core; fails unless every request
# was a 200.
load() {
	local out
	out=$(nice -n "$NICE" taskset -c "$LOAD_CPU" h2load --h1 -c "$CONNS" --rps $((RATE / CONNS)) -D "$1" \
		${2:+--log-file "$2"} "$URL" 2>&1) || die "h2load failed: $out"
	grep -qE 'status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out" &&
		grep -qE '^requests: .* 0 failed, 0 errored, 0 timeout' <<<"$out" ||
		die "not every request was a 200: $(grep -E '^(requests|status codes):' <<<"$out")"
}

RUNS=()
for ((round = 1; round <= ROUNDS; round++)); do
	for name in dime-edge nginx; do
		run=$WORK/runs/$round-$name
		log "round $round: $name, $RATE hits a second for ${SECONDS_PER_RUN} s"
		start_proxy "$name"
		load 2
		before=$(origin_requests)
		perf record -q -k CLOCK_MONOTONIC -a -e sched:sched_switch -e sched:sched_wakeup \
			-e sched:sched_wakeup_new -e sched:sched_migrate_task -o "$run.perf" \
			-- sleep $((SECONDS_PER_RUN + 1)) >"$run.perf.log" 2>&1 &
		tracer=$!
		sleep 0.3
		# CLOCK_REALTIME (h2load's log) less CLOCK_MONOTONIC (the trace), read together.
		offset=$(python3 -c 'import time; print(time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC))')
		load "$SECONDS_PER_RUN" "$run.h2load"
		wait "$tracer" || die "perf record failed; see $run.perf.log"
		(($(origin_requests) == before)) || die "$name asked the origin during the measured run"
		pids=$(proxy_pids)
		stop_proxy
		perf sched timehist -i "$run.perf" >"$run.timehist" 2>"$run.timehist.log" ||
			die "perf sched timehist failed; see $run.timehist.log"
		python3 benches/tail.py run "$name" "$run.h2load" "$run.timehist" "$offset" "$SECONDS_PER_RUN" \
			"$pids" "$STREAMER_PID" >"$run.json"
		python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print("  p50 %.3f ms, p99 %.3f ms, %d stalls (%d with another task on a core)" % (r["p50_ms"], r["p99_ms"], r["stalls"], r["stalls_with_other_task"]))' "$run.json" >&2
		rm -f "$run.perf"
		RUNS+=("$run.json")
	done
done

# --- the section --------------------------------------------------------------------------------
rev=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- proxy Cargo.lock | grep -q . && echo " (with uncommitted changes to proxy/)" || true)
section=$(python3 benches/tail.py section "$rev$dirty" "$(date -u '+%Y-%m-%d %H:%M')" "$RATE" "${RUNS[@]}")
python3 - "$DOC" "$section" <<'EOF'
import sys
path, section = sys.argv[1], sys.argv[2]
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
begin, end = "<!-- tail:begin -->", "<!-- tail:end -->"
if begin in text and end in text:
    text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
log "wrote the section to $DOC"
printf '%s\n' "$section" | sed -n '/^| Median/,/^$/p'
