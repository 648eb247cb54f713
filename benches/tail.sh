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
DOC=${TAIL_DOC:-$ROOT/docs/benchmarks.md}
PAIR_NAME=tail PAIR_PORT_KNOB=TAIL_PORT_BASE
# shellcheck source=benches/pair.sh
source benches/pair.sh

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "TAIL_ROUNDS=$ROUNDS: a whole number of rounds"
[[ $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ ]] || die "TAIL_SECONDS=$SECONDS_PER_RUN: a whole number of seconds"
[[ $RATE =~ ^[1-9][0-9]*$ ]] && ((RATE % CONNS == 0)) ||
	die "TAIL_RATE=$RATE: a whole number of requests a second, a multiple of $CONNS (one rate per connection)"
[[ $NICE =~ ^-?[0-9]+$ ]] || die "TAIL_NICE=$NICE: a priority, -20 to 19"
(($(nproc) >= 2)) || die "needs two cores (the proxy on one, the load on the other); this machine has $(nproc)"

pair_need perf:linux-perf h2load:nghttp2-client nginx:nginx-light curl:curl taskset:util-linux
# perf sched needs the scheduler's trace points; a kernel that hides them says so here.
perf record -q -k CLOCK_MONOTONIC -a -e sched:sched_switch -o /dev/null -- true >/dev/null 2>&1 ||
	die "perf cannot trace the scheduler here (perf record -a -e sched:sched_switch failed; root, and kernel.perf_event_paranoid <= 1, are needed)"
pair_setup
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
rm -rf "$WORK/runs" && mkdir -p "$WORK/runs"
pair_streamer nice -n "$NICE" taskset -c "$LOAD_CPU"

# The proxy's processes: the one started and its children (nginx's worker).
proxy_pids() { { echo "$PROXY_PID"; pgrep -P "$PROXY_PID" || true; } | paste -sd,; }

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
		pair_start "$name" nice -n "$NICE" taskset -c "$PROXY_CPU"
		load 2
		before=$(pair_origin_requests)
		perf record -q -k CLOCK_MONOTONIC -a -e sched:sched_switch -e sched:sched_wakeup \
			-e sched:sched_wakeup_new -e sched:sched_migrate_task -o "$run.perf" \
			-- sleep $((SECONDS_PER_RUN + 1)) >"$run.perf.log" 2>&1 &
		tracer=$!
		sleep 0.3
		# CLOCK_REALTIME (h2load's log) less CLOCK_MONOTONIC (the trace), read together.
		offset=$(python3 -c 'import time; print(time.clock_gettime(time.CLOCK_REALTIME) - time.clock_gettime(time.CLOCK_MONOTONIC))')
		load "$SECONDS_PER_RUN" "$run.h2load"
		wait "$tracer" || die "perf record failed; see $run.perf.log"
		(($(pair_origin_requests) == before)) || die "$name asked the origin during the measured run"
		pids=$(proxy_pids)
		pair_stop
		perf sched timehist -i "$run.perf" >"$run.timehist" 2>"$run.timehist.log" ||
			die "perf sched timehist failed; see $run.timehist.log"
		python3 benches/tail.py run "$name" "$run.h2load" "$run.timehist" "$offset" "$SECONDS_PER_RUN" \
			"$pids" "$STREAMER_PID" >"$run.json"
		rm -f "$run.perf"
		RUNS+=("$run.json")
	done
done

# --- the section --------------------------------------------------------------------------------
rev=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- proxy Cargo.lock | grep -q . && echo " (with uncommitted changes to proxy/)" || true)
section=$(python3 benches/tail.py section "$rev$dirty" "$(date -u '+%Y-%m-%d %H:%M')" "$RATE" "${RUNS[@]}")
pair_section tail "$DOC" "$section"
log "wrote the section to $DOC"
printf '%s\n' "$section" | sed -n '/^| Median/,/^$/p'
