#!/usr/bin/env bash
# Side-by-side benchmark of dime-edge, nginx and Varnish as in-memory caches in front of one
# dime-origin streamer, all on loopback; the method and the last results are in
# docs/benchmarks.md. `bash benches/run.sh` does everything: installs the peers, builds, makes
# the media, measures, writes docs/benchmarks.md. BENCH_QUICK=1 is a short smoke run that
# writes target/bench/quick/benchmarks.md instead. BENCH_ONLY=invalidation runs only the
# invalidation benchmark (dime-edge alone: no nginx, Varnish or media needed) and writes
# target/bench/invalidation/benchmarks.md; BENCH_ONLY=idle runs only the idle-connection test
# (all three proxies, BENCH_ROUNDS latency pairs each) and writes target/bench/idle/benchmarks.md.
#
# Knobs (environment): BENCH_QUICK, BENCH_ONLY, BENCH_ROUNDS, BENCH_DURATION (seconds per wrk
# run), BENCH_RSS_OBJECTS (4 MiB objects in the memory test), BENCH_INVAL_OBJECTS and
# BENCH_INVAL_POSTS (cached objects and POSTs in the invalidation test, default 10000 and
# 1000), BENCH_INVAL_DURATION (seconds per wrk run in the invalidation test, default 30: the
# POSTs are spread over it), BENCH_PORT_BASE (6 ports from here),
# BENCH_PERF (0: skip the perf profile of dime-edge), BENCH_TAIL (0: skip benches/tail.sh, the
# 1 KB tail at the same offered load, which a full run ends with), BENCH_DOC (where the report goes),
# BENCH_NICE (priority of everything it runs, default -15 as root), BENCH_MAX_OTHER (% of a
# core other processes may use during a wrk run before it is repeated, default 15),
# BENCH_QUIET_WAIT (longest wait, in seconds, for other processes to calm down before a run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCHES=$ROOT/benches

QUICK=${BENCH_QUICK:-0}
# Open files: the idle test's holder and each proxy need one per connection. The soft limit
# goes up to the hard one; the target asks for 100,000 idle connections held, and the full
# run holds as many as fit, leaving 5,000 files for the measured connections, origins and logs.
NOFILE=$(ulimit -Hn)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
ulimit -n "$NOFILE"
IDLE_HOLD_FITS=$(((NOFILE - 5000) / 1000 * 1000))
((IDLE_HOLD_FITS > 100000)) && IDLE_HOLD_FITS=100000
ONLY=${BENCH_ONLY:-}
case $ONLY in
"" | invalidation | idle) ;;
*) echo "BENCH_ONLY=$ONLY: unknown; the parts that run alone are 'invalidation' and 'idle'" >&2; exit 2 ;;
esac
INVAL_OBJECTS=${BENCH_INVAL_OBJECTS:-10000}
INVAL_POSTS=${BENCH_INVAL_POSTS:-1000}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${BENCH_ROUNDS:-1} DURATION=${BENCH_DURATION:-3} RSS_OBJECTS=${BENCH_RSS_OBJECTS:-16}
    IDLE_COUNT=${BENCH_IDLE_COUNT:-1000} IDLE_HOLD=${BENCH_IDLE_HOLD:-2000}
    INVAL_DURATION=${BENCH_INVAL_DURATION:-3}
else
    ROUNDS=${BENCH_ROUNDS:-3} DURATION=${BENCH_DURATION:-10} RSS_OBJECTS=${BENCH_RSS_OBJECTS:-130}
    IDLE_COUNT=${BENCH_IDLE_COUNT:-5000} IDLE_HOLD=${BENCH_IDLE_HOLD:-$IDLE_HOLD_FITS}
    INVAL_DURATION=${BENCH_INVAL_DURATION:-30}
fi
((INVAL_OBJECTS > 2 * INVAL_POSTS)) || {
    echo "BENCH_INVAL_OBJECTS must exceed twice BENCH_INVAL_POSTS (the test POSTs two sets)" >&2
    exit 2
}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
WORK=$TARGET_DIR/bench
BIN=$TARGET_DIR/release
# nginx keeps its cache in files; tmpfs makes that memory too, as the other two use.
SHM=/dev/shm/dime-bench-$$
# Results, logs and profiles of this run; configs and media stay in WORK.
if [[ -n $ONLY ]]; then OUT=$WORK/$ONLY; elif [[ $QUICK == 1 ]]; then OUT=$WORK/quick; else OUT=$WORK/full; fi
if [[ $QUICK == 1 || -n $ONLY ]]; then DOC=${BENCH_DOC:-$OUT/benchmarks.md}; else DOC=${BENCH_DOC:-$ROOT/docs/benchmarks.md}; fi

PORT_BASE=${BENCH_PORT_BASE:-18400}
PROXY_PORT=$PORT_BASE
ADMIN_PORT=$((PORT_BASE + 1))
STREAMER_PORT=$((PORT_BASE + 2))
SLOW_PORT=$((PORT_BASE + 3))
INVAL_PORT=$((PORT_BASE + 4))
TLS_PORT=$((PORT_BASE + 5))
PROXY=http://127.0.0.1:$PROXY_PORT
PROXY_TLS=https://127.0.0.1:$TLS_PORT
# 1 while the proxies run with their access logs on (see logged_round).
LOGGED=0
# nginx and varnishd live in sbin, which a plain user's PATH may lack.
export PATH=$PATH:/usr/sbin:/sbin

# The proxy under test gets one core; the load generator and the origins get the other.
PROXY_CPU=0
LOAD_CPU=1
# Everything the benchmark runs gets a high priority (root only), so that other work on the
# machine takes less from it; and a wrk run during which other processes still used more than
# MAX_OTHER % of a core is repeated, at most twice.
if ((EUID == 0)); then NICE=${BENCH_NICE:--15}; else NICE=0; fi
MAX_OTHER=${BENCH_MAX_OTHER:-15}
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
HZ=$(getconf CLK_TCK)
PROXIES=(dime nginx varnish)
MIB=$((1 << 20))
SLOW_BURST=200

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes: every one this script starts is in PIDS and is stopped on exit, however it ends.

PIDS=()
PROXY_PID=
ORIGIN_PIDS=()

descendants() {
    local child
    for child in $(pgrep -P "$1" || true); do
        echo "$child"
        descendants "$child"
    done
}

# Drops a PID from PIDS once this shell has reaped it (or is about to).
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Start time of a process (clock ticks after boot), to tell it from a later one with its PID.
proc_start() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $20 }'; }

# TERM, up to 10 s for a clean exit, then KILL; then KILL whatever it had forked and left
# behind (only those processes: each is checked by its start time). Forgets the PID.
stop_pid() {
    local pid=$1 kids=() kid i
    forget "$pid"
    if kill -0 "$pid" 2>/dev/null; then
        for kid in $(descendants "$pid"); do kids+=("$kid:$(proc_start "$kid")"); done
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # Reaps it: $pid is this shell's child, so its number cannot be reused before this.
    wait "$pid" 2>/dev/null || true
    for kid in "${kids[@]}"; do
        [[ $(proc_start "${kid%%:*}") == "${kid#*:}" ]] && kill -KILL "${kid%%:*}" 2>/dev/null
    done
    return 0
}

cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    rm -rf "$SHM"
    ((status == 0)) || log "failed (exit $status); logs in $OUT/logs"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPU CMD...: runs CMD pinned to CPU in the background, output in logs/NAME.log.
start() {
    local name=$1 cpu=$2
    shift 2
    nice -n "$NICE" taskset -c "$cpu" "$@" >"$OUT/logs/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

# Waits (at most 20 s) until URL answers with any HTTP status.
wait_http() {
    local url=$1 pid=$2 i
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null -m 1 "$url" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Setup: tools, build, media, origins.

as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
    local try
    export DEBIAN_FRONTEND=noninteractive
    for try in 1 2; do
        if ((APT_UPDATED == 0)); then
            as_root apt-get update -q >"$OUT/logs/apt.log" 2>&1 && APT_UPDATED=1
        fi
        ((APT_UPDATED == 1)) && as_root apt-get install -y -q "$@" >>"$OUT/logs/apt.log" 2>&1 && return 0
        # Most often another apt holds the dpkg lock; wait once for it.
        ((try == 1)) && { log "apt-get failed; retrying once in 15 s"; sleep 15; }
    done
    log "apt-get install $* failed; see $OUT/logs/apt.log"
    return 1
}

install_tools() {
    local missing=()
    if [[ $ONLY != invalidation ]]; then
        command -v nginx >/dev/null || missing+=(nginx-light)
        command -v varnishd >/dev/null || missing+=(varnish)
    fi
    command -v wrk >/dev/null || missing+=(wrk)
    [[ -n $ONLY ]] || command -v h2load >/dev/null || missing+=(nghttp2-client)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v python3 >/dev/null || missing+=(python3)
    command -v pgrep >/dev/null || missing+=(procps)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        if [[ " ${missing[*]} " == *" nginx-light "* ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
            missing=("${missing[@]/nginx-light/nginx}")
        fi
        apt_install "${missing[@]}" || die "cannot install the tools the benchmark needs"
    fi
    if [[ ${BENCH_PERF:-1} == 1 && $QUICK != 1 && -z $ONLY ]] && ! command -v perf >/dev/null; then
        # Optional: the profile of dime-edge in the report. Debian calls it linux-perf.
        apt_install linux-perf || true
    fi
    (($(nproc) >= 2)) || die "needs 2 CPUs: one for the proxy, one for wrk"
}

build() {
    if [[ $ONLY == invalidation ]]; then
        log "cargo build --release -p dime-edge"
        cargo build --release -p dime-edge
        [[ -x $BIN/dime-edge ]] || die "no release binary in $BIN"
        return
    fi
    log "cargo build --release -p dime-edge -p dime-origin"
    cargo build --release -p dime-edge -p dime-origin
    [[ -x $BIN/dime-edge && -x $BIN/dime-origin ]] || die "no release binaries in $BIN"
}

# make_file PATH BYTES: random content, remade only when the size is wrong.
make_file() {
    [[ -f $1 && $(stat -c %s "$1") == "$2" ]] && return 0
    head -c "$2" /dev/urandom >"$1"
}

make_media() {
    local m=$WORK/media i
    mkdir -p "$m/live" "$m/rss"
    python3 "$BENCHES/playlist_1k.py" "$m/live/index.m3u8"
    make_file "$m/live/seg1m.ts" "$MIB"
    make_file "$m/live/seg4m.ts" $((4 * MIB))
    for ((i = 0; i < RSS_OBJECTS; i++)); do
        make_file "$(printf '%s/rss/seg%03d.ts' "$m" "$i")" $((4 * MIB))
    done
}

start_origins() {
    local p
    for p in "$PROXY_PORT" "$ADMIN_PORT" "$STREAMER_PORT" "$SLOW_PORT" "$INVAL_PORT" "$TLS_PORT"; do
        port_free "$p" || die "127.0.0.1:$p is in use; set BENCH_PORT_BASE"
    done
    # Small objects that stay fresh for the whole run, and POSTs it accepts.
    start inval-origin "$LOAD_CPU" python3 "$BENCHES/slow_origin.py" \
        --listen "127.0.0.1:$INVAL_PORT" --delay 0 --size 1024 --max-age 3600
    ORIGIN_PIDS=("$LAST_PID")
    wait_http "http://127.0.0.1:$INVAL_PORT/healthz" "$LAST_PID" ||
        die "invalidation origin did not start; see $OUT/logs/inval-origin.log"
    [[ $ONLY == invalidation ]] && return 0
    # --playlist-max-age: see "Why the playlist is fresh for the whole run" in docs/benchmarks.md.
    start streamer "$LOAD_CPU" "$BIN/dime-origin" streamer --root "$WORK/media" \
        --listen "127.0.0.1:$STREAMER_PORT" --playlist-max-age 3600
    ORIGIN_PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$STREAMER_PORT/live/index.m3u8" "$LAST_PID" ||
        die "dime-origin streamer did not start; see $OUT/logs/streamer.log"
    start slow-origin "$LOAD_CPU" python3 "$BENCHES/slow_origin.py" \
        --listen "127.0.0.1:$SLOW_PORT" --delay 1 --size "$MIB"
    ORIGIN_PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$SLOW_PORT/healthz" "$LAST_PID" ||
        die "slow origin did not start; see $OUT/logs/slow-origin.log"
}

# ---------------------------------------------------------------------------------------------
# The proxies: each starts with an empty cache, pinned to PROXY_CPU.

render() { # render TEMPLATE OUT
    local nginx_log=off
    ((LOGGED == 1)) && nginx_log=$(access_log_of nginx)
    sed -e "s|@WORK@|$WORK|g" -e "s|@SHM@|$SHM/nginx|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g" \
        -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@STREAMER_PORT@|$STREAMER_PORT|g" \
        -e "s|@SLOW_PORT@|$SLOW_PORT|g" -e "s|@INVAL_PORT@|$INVAL_PORT|g" \
        -e "s|@TLS_PORT@|$TLS_PORT|g" -e "s|@NGINX_ACCESS_LOG@|$nginx_log|g" \
        -e "s|@MAX_CONNECTIONS@|$((IDLE_HOLD + 3000))|g" -e "s|@NOFILE@|$NOFILE|g" "$1" >"$2"
}

# Where each proxy writes its access log when LOGGED=1: a file on disk, for all three.
access_log_of() { echo "$WORK/$1/access.log"; }

# The certificate dime-edge and nginx serve HTTPS with (kept between runs).
make_cert() {
    [[ -s $WORK/certs/edge.pem ]] ||
        "$BIN/dime-edge" cert generate --out "$WORK/certs" --name 127.0.0.1 --name localhost >/dev/null
}

start_dime() {
    render "$BENCHES/conf/dime-edge.toml.in" "$WORK/dime/dime-edge.toml"
    "$BIN/dime-edge" check -c "$WORK/dime/dime-edge.toml" >/dev/null
    # The config always names the access log file; RUST_LOG turns the log off, as nginx runs
    # with access_log off and Varnish logs only to memory, unless LOGGED=1.
    local filter=info,access=off
    ((LOGGED == 1)) && filter=info
    start dime "$PROXY_CPU" env RUST_LOG=$filter "$BIN/dime-edge" run -c "$WORK/dime/dime-edge.toml"
}

start_nginx() {
    rm -rf "$SHM/nginx"
    mkdir -p "$SHM/nginx/cache" "$SHM/nginx/temp" "$WORK/nginx/client_body"
    render "$BENCHES/conf/nginx.conf.in" "$WORK/nginx/nginx.conf"
    nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
    start nginx "$PROXY_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
}

start_varnish() {
    rm -rf "$WORK/varnish/n"
    render "$BENCHES/conf/varnish.vcl.in" "$WORK/varnish/bench.vcl"
    local varnishd=(varnishd -F -j none -n "$WORK/varnish/n" -a "127.0.0.1:$PROXY_PORT"
        -T 127.0.0.1:0 -f "$WORK/varnish/bench.vcl" -s malloc,1G
        -p thread_pools=1 -p thread_pool_min=40 -p timeout_idle=60)
    # One thread pool (one core); 40 threads already there for wrk's 32 connections. A
    # connection may wait 60 s for its first request, as dime-edge's header_timeout and nginx's
    # client_header_timeout allow by default (Varnish's default, 5 s, would close the idle test's
    # held connections before its run beside them).
    if ((LOGGED == 0)); then
        start varnish "$PROXY_CPU" "${varnishd[@]}"
        return
    fi
    # Varnish's access log is varnishncsa reading its shared memory log into a file. Started
    # by the shell that then becomes varnishd, it is varnishd's child: pinned to the proxy's
    # core, its CPU counted as the proxy's, stopped with it.
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
    start varnish "$PROXY_CPU" bash -c 'varnishncsa -n "$0" -t off -w "$1" & shift; exec "$@"' \
        "$WORK/varnish/n" "$(access_log_of varnish)" "${varnishd[@]}"
}

start_proxy() {
    local name=$1
    "start_$name"
    PROXY_PID=$LAST_PID
    wait_http "$PROXY/live/index.m3u8" "$PROXY_PID" || die "$name did not start; see $OUT/logs/$name.log"
}

stop_proxy() {
    stop_pid "$PROXY_PID"
    PROXY_PID=
    rm -rf "$SHM/nginx"
    local i
    for ((i = 0; i < 50; i++)); do port_free "$PROXY_PORT" && return 0; sleep 0.1; done
    die "port $PROXY_PORT still in use after stopping the proxy"
}

# Every process of the proxy: nginx master and worker, varnishd manager and child.
proxy_pids() { echo "$PROXY_PID"; descendants "$PROXY_PID"; }

# ---------------------------------------------------------------------------------------------
# Measurements. Results are rows "proxy round scenario metric value" in results.tsv.

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT/results.tsv"; }
note() { printf '%s\n' "$*" >>"$OUT/notes.txt"; log "note: $*"; }

# cache_status URL: "STATUS BYTES X-CACHE-STATUS" of one GET.
cache_status() {
    local headers
    headers=$(curl -s -k -m 30 -o /dev/null -D - -w 'BYTES %{size_download}\n' "$1" | tr -d '\r')
    awk 'NR == 1 { s = $2 } tolower($1) == "x-cache-status:" { c = $2 } $1 == "BYTES" { b = $2 }
         END { print s, b, (c == "" ? "-" : c) }' <<<"$headers"
}

# Fetches URL until it is a HIT (at most 5 tries); records a note when it never is.
warm() {
    local proxy=$1 url=$2 size=$3 i got
    for ((i = 0; i < 5; i++)); do
        got=$(cache_status "$url")
        [[ $got == "200 $size HIT" ]] && return 0
        sleep 0.2
    done
    note "$proxy: $url never became a HIT (last: $got)"
    return 1
}

# Requests for /live/ the streamer has answered so far, from its own access log: the hit runs
# of every proxy are verified at the origin alike.
origin_requests() {
    grep -c 'dime_origin::access.* path="/live/' "$OUT/logs/streamer.log" || true
}

# load_cmd SCENARIO URL CONNECTIONS SECONDS: the load generator's command line. Scenarios whose
# name has `_h2` are HTTP/2 over TLS with h2load (CONNECTIONS connections, 32 streams each);
# the rest HTTP/1.1 with wrk (one request at a time per connection), over TLS for https URLs.
load_cmd() {
    local scenario=$1 url=$2 conns=$3 secs=$4
    if [[ $scenario == *_h2* ]]; then
        echo h2load -t 1 -c "$conns" -m 32 -D "$secs"
    else
        echo wrk -t 1 -c "$conns" -d "${secs}s" --timeout 5s -s "$BENCHES/wrk-report.lua"
    fi
}

# warmup SCENARIO PATH CONNECTIONS: 2 s of the same load, not measured, before a measured run:
# connections (and TLS sessions) open, caches and branch predictors warm.
warmup() {
    local url=$2
    [[ $url == http* ]] || url=$PROXY$url
    # shellcheck disable=SC2046 # load_cmd prints words
    nice -n "$NICE" taskset -c "$LOAD_CPU" $(load_cmd "$1" "$url" "$3" 2) "$url" >/dev/null 2>&1 ||
        die "the warm-up run of $1 failed: $(load_cmd "$1" "$url" "$3" 2) $url"
}

# wrk_run PROXY ROUND SCENARIO PATH BYTES CONNECTIONS: one measured run (PATH on the plain
# listener, or a whole URL), after a warm-up, repeated (at most twice) while other processes on
# the machine took more than MAX_OTHER % of a core.
wrk_run() {
    local proxy=$1 round=$2 scenario=$3 attempt
    warmup "$scenario" "$4" "$6"
    for attempt in 1 2 3; do
        wait_quiet
        wrk_once "$@"
        ((OTHER_PCT <= MAX_OTHER)) && break
        if ((attempt < 3)); then
            log "  $scenario: other processes used $OTHER_PCT % of a core; repeating the run"
        else
            note "$proxy round $round $scenario: other processes used $OTHER_PCT % of a core even on the third try; kept"
        fi
    done
    ((attempt == 1)) || note "$proxy round $round $scenario: run repeated ($attempt attempts) because other processes were busy"
    cat "$OUT/run.tsv" >>"$OUT/results.tsv"
    log "  $scenario: $(awk '{ printf "%s=%s ", $4, $5 }' "$OUT/run.tsv")"
}

# Waits, at most QUIET_WAIT seconds, for a second in which other processes use at most
# MAX_OTHER % of a core; goes on regardless after that.
wait_quiet() {
    local waited ours_before ours_after host_before host_after other
    for ((waited = 0; waited < QUIET_WAIT; waited++)); do
        ours_before=$(($(proxy_ticks) + $(pid_ticks "${ORIGIN_PIDS[@]}"))) host_before=$(host_ticks)
        sleep 1
        ours_after=$(($(proxy_ticks) + $(pid_ticks "${ORIGIN_PIDS[@]}"))) host_after=$(host_ticks)
        other=$(((host_after - host_before - ours_after + ours_before) * 100 / HZ))
        ((other <= MAX_OTHER)) && return 0
        ((waited % 10 == 0)) && log "  waiting for other processes to calm down ($other % of a core)"
    done
    log "  the machine stayed busy for $QUIET_WAIT s; measuring anyway"
}

# h2load_line OUTPUT REQUEST_LOG: "requests duration_us p50_us p99_us errors non2xx" of one
# h2load run, the percentiles from its per-request log (start, status, microseconds).
h2load_line() {
    local requests secs errors
    read -r requests errors < <(awk '/^requests: / { print $2, $10 + $12 + $14 }' "$1") || return 1
    secs=$(awk '/^finished in / { sub(/s,$/, "", $3); print $3 }' "$1")
    [[ -n $requests && -n $secs ]] || return 1
    sort -n -k3,3 "$2" | awk -F'\t' -v n="$requests" -v secs="$secs" -v e="$errors" '
        { d[NR] = $3; if ($2 != 200) bad++ }
        END { if (NR == 0) exit 1
              p50 = d[int((NR - 1) * 0.50) + 1]; p99 = d[int((NR - 1) * 0.99) + 1]
              printf "%d %d %d %d %d %d\n", n, secs * 1e6, p50, p99, e, bad }'
}

wrk_once() {
    local proxy=$1 round=$2 scenario=$3 path=$4 size=$5 conns=$6 out line url
    out=$OUT/logs/load-$proxy-$scenario-$round.txt
    url=$path
    [[ $url == http* ]] || url=$PROXY$path
    local proxy_before proxy_after origins_before origins_after host_before host_after wrk_cpu
    local TIMEFORMAT='%U %S %R' cmd
    read -r -a cmd <<<"$(load_cmd "$scenario" "$url" "$conns" "$DURATION")"
    [[ $scenario == *_h2* ]] && cmd+=(--log-file="$out.requests")
    proxy_before=$(proxy_ticks) origins_before=$(pid_ticks "${ORIGIN_PIDS[@]}")
    host_before=$(host_ticks)
    # `time` gives the load generator's own CPU use: near 100 % means it, not the proxy, was
    # the limit.
    { time nice -n "$NICE" taskset -c "$LOAD_CPU" "${cmd[@]}" "$url" >"$out" 2>&1; } 2>"$out.time" ||
        die "${cmd[0]} failed; see $out"
    proxy_after=$(proxy_ticks) origins_after=$(pid_ticks "${ORIGIN_PIDS[@]}")
    host_after=$(host_ticks)
    wrk_cpu=$(awk '{ printf "%.0f", ($1 + $2) * 100 / $3 }' "$out.time")
    if [[ $scenario == *_h2* ]]; then
        line=$(h2load_line "$out" "$out.requests") || die "cannot read h2load's results in $out"
        rm -f "$out.requests"
    else
        line=$(awk '/^BENCH / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                                print v["requests"], v["duration_us"], v["p50_us"], v["p99_us"], v["errors"], v["non2xx"]
                                found = 1 }
                    END { exit !found }' "$out") || die "no BENCH line in $out"
    fi
    local requests duration_us p50_us p99_us errors non2xx
    read -r requests duration_us p50_us p99_us errors non2xx <<<"$line"
    # Other processes' share: what all user processes used (steal included) minus the proxy's,
    # the origins' and wrk's (wrk's lands in this shell's cutime when it is reaped).
    OTHER_PCT=$(awk -v host=$((host_after - host_before)) \
        -v ours=$((proxy_after - proxy_before + origins_after - origins_before)) \
        -v hz="$HZ" '{ other = host / hz - ours / hz - ($1 + $2); if (other < 0) other = 0
                       printf "%.0f", other * 100 / $3 }' "$out.time")
    awk -v p="$proxy" -v r="$round" -v s="$scenario" -v n="$requests" -v d="$duration_us" \
        -v b="$size" -v p50="$p50_us" -v p99="$p99_us" -v e="$errors" -v w="$wrk_cpu" \
        -v t=$((proxy_after - proxy_before)) -v hz="$HZ" -v o="$OTHER_PCT" 'BEGIN {
            secs = d / 1e6
            printf "%s\t%s\t%s\trps\t%.1f\n", p, r, s, n / secs
            printf "%s\t%s\t%s\tmibps\t%.1f\n", p, r, s, n * b / secs / 1048576
            printf "%s\t%s\t%s\tp50_ms\t%.3f\n", p, r, s, p50 / 1000
            printf "%s\t%s\t%s\tp99_ms\t%.3f\n", p, r, s, p99 / 1000
            printf "%s\t%s\t%s\terrors\t%d\n", p, r, s, e
            cpu = t / hz / secs
            printf "%s\t%s\t%s\tproxy_cpu_pct\t%.0f\n", p, r, s, cpu * 100
            # Per core-second of the proxy: its capacity, also when wrk was the limit.
            if (cpu > 0) {
                printf "%s\t%s\t%s\trps_per_core\t%.1f\n", p, r, s, n / secs / cpu
                printf "%s\t%s\t%s\tmibps_per_core\t%.1f\n", p, r, s, n * b / secs / 1048576 / cpu
            }
            printf "%s\t%s\t%s\twrk_cpu_pct\t%s\n", p, r, s, w
            printf "%s\t%s\t%s\tother_cpu_pct\t%s\n", p, r, s, o
        }' >"$OUT/run.tsv"
    ((errors == 0 && non2xx == 0)) || note "$proxy round $round $scenario: ${cmd[0]} saw $errors errors ($non2xx non-2xx)"
}

# One round of the hit benchmarks for one proxy: fresh start, warm, verify, measure.
hit_round() {
    local proxy=$1 round=$2 before after url
    log "round $round: $proxy"
    start_proxy "$proxy"
    warm "$proxy" "$PROXY/live/index.m3u8" 1024 || true
    warm "$proxy" "$PROXY/live/seg1m.ts" "$MIB" || true
    warm "$proxy" "$PROXY/live/seg4m.ts" $((4 * MIB)) || true
    # Varnish has no TLS of its own (it needs a TLS proxy in front), so no HTTPS rows.
    local tls=0
    [[ $proxy == varnish ]] || tls=1
    if ((tls)); then
        warm "$proxy" "$PROXY_TLS/live/index.m3u8" 1024 || true
        warm "$proxy" "$PROXY_TLS/live/seg1m.ts" "$MIB" || true
    fi
    before=$(origin_requests "$proxy")
    wrk_run "$proxy" "$round" playlist_1k /live/index.m3u8 1024 32
    wrk_run "$proxy" "$round" segment_1m /live/seg1m.ts "$MIB" 8
    wrk_run "$proxy" "$round" segment_4m /live/seg4m.ts $((4 * MIB)) 8
    if ((tls)); then
        wrk_run "$proxy" "$round" playlist_1k_tls "$PROXY_TLS/live/index.m3u8" 1024 32
        wrk_run "$proxy" "$round" segment_1m_tls "$PROXY_TLS/live/seg1m.ts" "$MIB" 8
        wrk_run "$proxy" "$round" playlist_1k_h2 "$PROXY_TLS/live/index.m3u8" 1024 8
    fi
    after=$(origin_requests "$proxy")
    for url in "$PROXY/live/index.m3u8" "$PROXY/live/seg1m.ts" "$PROXY/live/seg4m.ts"; do
        [[ $(cache_status "$url") == *" HIT" ]] || note "$proxy round $round: $url no longer a HIT after the runs"
    done
    if ((tls)); then
        for url in "$PROXY_TLS/live/index.m3u8" "$PROXY_TLS/live/seg1m.ts"; do
            [[ $(cache_status "$url") == *" HIT" ]] || note "$proxy round $round: $url no longer a HIT after the runs"
        done
    fi
    if [[ $before != - && $before != "$after" ]]; then
        note "$proxy round $round: $((after - before)) origin requests during the hit runs (want 0)"
    fi
    stop_proxy
}

# The 1 KB hits again with every proxy writing its access log to a file (LOGGED=1), over
# HTTP/1.1 and, but for Varnish, HTTPS; the log must have a line for each request.
logged_round() {
    local proxy=$1 round=$2 before after lines requests file
    file=$(access_log_of "$proxy")
    log "round $round: $proxy, access log on"
    rm -f "$file"
    LOGGED=1
    start_proxy "$proxy"
    LOGGED=0
    warm "$proxy" "$PROXY/live/index.m3u8" 1024 || true
    [[ $proxy == varnish ]] || warm "$proxy" "$PROXY_TLS/live/index.m3u8" 1024 || true
    before=$(origin_requests "$proxy")
    wrk_run "$proxy" "$round" playlist_1k_log /live/index.m3u8 1024 32
    [[ $proxy == varnish ]] || wrk_run "$proxy" "$round" playlist_1k_tls_log "$PROXY_TLS/live/index.m3u8" 1024 32
    after=$(origin_requests "$proxy")
    if [[ $before != - && $before != "$after" ]]; then
        note "$proxy round $round: $((after - before)) origin requests during the logged hit runs (want 0)"
    fi
    # A logger may lag behind its proxy (varnishncsa reads Varnish's shared memory log): wait,
    # at most 20 s, until the file stops growing.
    local i last=-1
    for ((i = 0; i < 40; i++)); do
        lines=$(wc -l <"$file" 2>/dev/null || echo 0)
        ((lines == last)) && break
        last=$lines
        sleep 0.5
    done
    stop_proxy
    # Every request of the measured runs (and their warm-ups) has its line.
    lines=$(wc -l <"$file" 2>/dev/null || echo 0)
    requests=$(awk -v p="$proxy" -v r="$round" -v d="$DURATION" \
        '$1 == p && $2 == r && $3 ~ /_log$/ && $4 == "rps" { n += $5 * d } END { printf "%d", n }' "$OUT/results.tsv")
    record "$proxy" "$round" playlist_1k_log log_lines "$lines"
    ((requests > 0 && lines * 100 >= requests * 99)) ||
        note "$proxy round $round: the access log has $lines lines for about $requests measured requests"
    rm -f "$file"
}

# 200 concurrent requests for one cold 1 MiB object behind a 1 s origin.
coalesce() {
    local proxy=$1 path json count
    path=/slow/$proxy-$$-$(date +%s)/seg.ts
    log "coalescing: $proxy, $SLOW_BURST concurrent cold requests"
    start_proxy "$proxy"
    json=$(taskset -c "$LOAD_CPU" python3 "$BENCHES/client.py" burst -n "$SLOW_BURST" "$PROXY$path")
    sleep 0.5
    count=$(curl -s -m 5 "http://127.0.0.1:$SLOW_PORT/count?path=$path")
    echo "$proxy $json" >>"$OUT/burst.txt"
    record "$proxy" 1 coalesce origin_requests "$count"
    record "$proxy" 1 coalesce ok "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status"].get("200", 0))' "$json")"
    record "$proxy" 1 coalesce slowest_s "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["slowest_s"])' "$json")"
    log "  origin requests: $count; clients: $json"
    stop_proxy
}

# Memory after caching RSS_OBJECTS distinct 4 MiB objects (each fetched twice).
memory() {
    local proxy=$1 urls=() i pass json rss pss shm cached hits
    log "memory: $proxy, $RSS_OBJECTS x 4 MiB"
    for ((i = 0; i < RSS_OBJECTS; i++)); do urls+=("$(printf '%s/rss/seg%03d.ts' "$PROXY" "$i")"); done
    start_proxy "$proxy"
    sleep 1
    record "$proxy" 1 memory idle_rss_mib "$(rss_kib | awk '{ printf "%.1f", $1 / 1024 }')"
    for pass in 1 2; do
        json=$(taskset -c "$LOAD_CPU" python3 "$BENCHES/client.py" fetch -w 4 "${urls[@]}")
        echo "$proxy pass $pass $json" >>"$OUT/memory.txt"
    done
    hits=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["cache"].get("HIT", 0))' "$json")
    ((hits == RSS_OBJECTS)) || note "$proxy: only $hits of $RSS_OBJECTS objects were HITs on the second pass"
    sleep 1
    read -r rss pss < <(rss_kib)
    shm=0
    [[ $proxy == nginx ]] && shm=$(du -sk "$SHM/nginx" | awk '{ print $1 }')
    cached=$((RSS_OBJECTS * 4 * 1024))
    record "$proxy" 1 memory rss_mib "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')"
    record "$proxy" 1 memory pss_mib "$(awk -v k="$pss" 'BEGIN { printf "%.1f", k / 1024 }')"
    record "$proxy" 1 memory tmpfs_mib "$(awk -v k="$shm" 'BEGIN { printf "%.1f", k / 1024 }')"
    record "$proxy" 1 memory cached_mib $((cached / 1024))
    record "$proxy" 1 memory overhead_pct "$(awk -v m=$((rss + shm)) -v c="$cached" 'BEGIN { printf "%.1f", (m - c) * 100 / c }')"
    record "$proxy" 1 memory second_pass_hits "$hits"
    if [[ $proxy == dime ]]; then
        curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics" | grep -E '^dime_cache_(objects|size_bytes|evictions)' \
            >"$OUT/dime-cache-metrics.txt" || true
    fi
    log "  rss $((rss / 1024)) MiB, tmpfs $((shm / 1024)) MiB, cached $((cached / 1024)) MiB"
    stop_proxy
}

# json_field NAME JSON: one top-level field of a JSON object.
json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[2])[sys.argv[1]])' "$1" "$2"; }

# idle PROXY: what idle viewer connections cost the proxy's memory (IDLE_COUNT HTTP/1.1
# connections, then IDLE_COUNT / 2 HTTP/2 over TLS ones, each before and after one request on
# it), and the p99 of 1 KB hits with IDLE_HOLD idle connections held beside them against the
# p99 without: ROUNDS pairs, each run alone just before the one beside, since one p99 of a
# 10 s run moves by tens of percent between runs on a shared host.
idle() {
    local proxy=$1 json pids round
    log "idle connections: $proxy"
    start_proxy "$proxy"
    warm "$proxy" "$PROXY/live/index.m3u8" 1024 || true
    read -r -a pids <<<"$(proxy_pids | tr '\n' ' ')"
    json=$(taskset -c "$LOAD_CPU" python3 "$BENCHES/idle.py" memory --url "$PROXY" --path /live/index.m3u8 \
        --count "$IDLE_COUNT" --pids "${pids[@]}") || die "idle.py failed against $proxy"
    echo "$proxy h1 $json" >>"$OUT/idle.txt"
    record "$proxy" 1 idle h1_idle_kib "$(json_field idle_kib "$json")"
    record "$proxy" 1 idle h1_after_request_kib "$(json_field after_request_kib "$json")"
    if [[ $proxy != varnish ]]; then
        warm "$proxy" "$PROXY_TLS/live/index.m3u8" 1024 || true
        json=$(taskset -c "$LOAD_CPU" python3 "$BENCHES/idle.py" memory --url "$PROXY_TLS" --h2 \
            --path /live/index.m3u8 --count $((IDLE_COUNT / 2)) --pids "${pids[@]}") ||
            die "idle.py --h2 failed against $proxy"
        echo "$proxy h2 $json" >>"$OUT/idle.txt"
        record "$proxy" 1 idle h2_idle_kib "$(json_field idle_kib "$json")"
        record "$proxy" 1 idle h2_after_request_kib "$(json_field after_request_kib "$json")"
    fi
    for ((round = 1; round <= ROUNDS; round++)); do idle_latency "$proxy" "$round"; done
    stop_proxy
}

# idle_latency PROXY ROUND: one pair of 1 KB hit runs, alone and beside IDLE_HOLD idle
# connections; the RSS with them held is recorded once, in round 1.
idle_latency() {
    local proxy=$1 round=$2 fifo held
    wrk_run "$proxy" "$round" playlist_1k_alone /live/index.m3u8 1024 32
    # The held connections come from a process whose stdin is a pipe: closing it lets them go.
    fifo=$OUT/idle-hold.fifo
    rm -f "$fifo" && mkfifo "$fifo"
    taskset -c "$LOAD_CPU" python3 "$BENCHES/idle.py" hold --url "$PROXY" --count "$IDLE_HOLD" \
        <"$fifo" >"$OUT/idle-hold.txt" 2>&1 &
    local hold_pid=$!
    PIDS+=("$hold_pid")
    exec {hold_fd}>"$fifo"
    for ((held = 0; held < 120; held++)); do
        grep -q '^held' "$OUT/idle-hold.txt" && break
        kill -0 "$hold_pid" 2>/dev/null || die "idle.py hold ended: $(cat "$OUT/idle-hold.txt")"
        sleep 1
    done
    grep -q '^held' "$OUT/idle-hold.txt" || die "idle.py hold did not open $IDLE_HOLD connections in 120 s"
    ((round == 1)) && record "$proxy" 1 idle held_rss_mib "$(rss_kib | awk '{ printf "%.1f", $1 / 1024 }')"
    wrk_run "$proxy" "$round" playlist_1k_beside_idle /live/index.m3u8 1024 32
    exec {hold_fd}>&-
    wait "$hold_pid" || true
    forget "$hold_pid"
    rm -f "$fifo"
    # Held means held through the run: a proxy that closed some (a header timeout) measured
    # its hits beside fewer, and closing them was work done during the run.
    local closed
    closed=$(sed -n 's/^closed //p' "$OUT/idle-hold.txt")
    [[ -n $closed ]] || die "idle.py hold did not say how many connections were closed: $(cat "$OUT/idle-hold.txt")"
    record "$proxy" "$round" idle held_closed "$closed"
    ((closed == 0)) || note "$proxy round $round: the proxy closed $closed of the $IDLE_HOLD held idle connections before the run beside them ended"
}

# dime-edge's dime_cache_objects gauge.
dime_objects() {
    curl -s -m 5 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^dime_cache_objects / { print $2 }'
}

# inval_run ROUND SCENARIO: one measured 1 KiB hit run of the invalidation test, not repeated
# (a repeat would need its POSTs again); a disturbed run is marked in the report.
inval_run() {
    local DURATION=$INVAL_DURATION
    wait_quiet
    wrk_once dime "$1" "$2" /inval/hot 1024 32
    cat "$OUT/run.tsv" >>"$OUT/results.tsv"
    ((OTHER_PCT <= MAX_OTHER)) || note "dime round $1 $2: other processes used $OTHER_PCT % of a core"
    log "  $2: $(awk '{ printf "%s=%s ", $4, $5 }' "$OUT/run.tsv")"
}

# inval_posts_during ROUND SCENARIO URL: a hit run while INVAL_POSTS POSTs to URL ({i} from 0)
# are spread over it; the POST client's outcome is recorded under SCENARIO.
inval_posts_during() {
    local round=$1 scenario=$2 url=$3 over post_pid json
    # The POSTs start half a second into the wrk run and end before it does.
    over=$(awk -v d="$INVAL_DURATION" 'BEGIN { printf "%.2f", d * 0.8 }')
    taskset -c "$LOAD_CPU" python3 "$BENCHES/client.py" post -n "$INVAL_POSTS" --over "$over" --delay 0.5 \
        "$url" >"$OUT/posts-$scenario-$round.json" &
    post_pid=$!
    PIDS+=("$post_pid")
    inval_run "$round" "$scenario"
    wait "$post_pid" || die "the POST client failed; see $OUT/posts-$scenario-$round.json"
    forget "$post_pid"
    json=$(cat "$OUT/posts-$scenario-$round.json")
    echo "dime $scenario $json" >>"$OUT/invalidation.txt"
    record dime "$round" "$scenario" posts_ok "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status"].get("200", 0))' "$json")"
    record dime "$round" "$scenario" posts_elapsed_s "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["elapsed_s"])' "$json")"
}

# inval_cpu_per_post ROUND NAME URL [FIRST]: INVAL_POSTS POSTs to URL ({i} from FIRST) one after another with nothing
# else running; records the edge's CPU time per POST, in microseconds.
inval_cpu_per_post() {
    local before after
    before=$(proxy_ticks)
    taskset -c "$LOAD_CPU" python3 "$BENCHES/client.py" post -n "$INVAL_POSTS" --over 0 --first "${4:-0}" "$3" >>"$OUT/invalidation.txt" ||
        die "the POST client failed; see $OUT/invalidation.txt"
    after=$(proxy_ticks)
    record dime "$1" invalidation "$2" "$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$INVAL_POSTS" \
        'BEGIN { printf "%.1f", t / hz / n * 1e6 }')"
}

# Hits on one 1 KiB object while INVAL_OBJECTS objects are cached: before, during INVAL_POSTS
# POSTs the origin accepts, each of which invalidates one cached object (RFC 9111 §4.4), during
# as many POSTs to URLs that are not cached (the control: the same proxying, nothing to
# invalidate), during as many POSTs sent straight to the origin (the second control: the load
# side's share, no POST through the edge; the three rotate in order between rounds), and after. Then the edge's CPU time
# per invalidating POST with few and with many objects cached: invalidation must cost a lookup,
# not a scan that grows with the cache. dime-edge only: nginx and Varnish do not invalidate on
# POST without extra configuration.
invalidation() {
    local round=$1 json objects after_posts got
    log "invalidation round $round: $INVAL_OBJECTS cached objects, $INVAL_POSTS POSTs"
    start_proxy dime
    # A small cache first: INVAL_POSTS objects, each POSTed once.
    json=$(taskset -c "$LOAD_CPU" python3 "$BENCHES/client.py" fetch -w 8 -n "$INVAL_POSTS" "$PROXY/inval/small{i}")
    echo "dime fill-small $json" >>"$OUT/invalidation.txt"
    record dime "$round" invalidation objects_small "$(dime_objects)"
    inval_cpu_per_post "$round" post_cpu_us_small "$PROXY/inval/small{i}"
    json=$(taskset -c "$LOAD_CPU" python3 "$BENCHES/client.py" fetch -w 8 -n "$INVAL_OBJECTS" "$PROXY/inval/obj{i}")
    echo "dime fill $json" >>"$OUT/invalidation.txt"
    warm dime "$PROXY/inval/hot" 1024 || true
    objects=$(dime_objects)
    record dime "$round" invalidation objects_cached "$objects"
    ((${objects:-0} > INVAL_OBJECTS)) || note "dime round $round: only $objects objects cached before the POSTs (want $INVAL_OBJECTS + 1)"
    inval_run "$round" inval_before
    # The second control sends the same POSTs straight to the origin, past the edge: what the
    # POST client and the origin cost the edge's hits from the other core, with no POST in it.
    local direct="http://127.0.0.1:$INVAL_PORT/inval/direct{i}"
    case $((round % 3)) in
    1)
        inval_posts_during "$round" inval_during "$PROXY/inval/obj{i}"
        inval_posts_during "$round" inval_control "$PROXY/inval/uncached{i}"
        inval_posts_during "$round" inval_direct "$direct"
        ;;
    2)
        inval_posts_during "$round" inval_control "$PROXY/inval/uncached{i}"
        inval_posts_during "$round" inval_direct "$direct"
        inval_posts_during "$round" inval_during "$PROXY/inval/obj{i}"
        ;;
    *)
        inval_posts_during "$round" inval_direct "$direct"
        inval_posts_during "$round" inval_during "$PROXY/inval/obj{i}"
        inval_posts_during "$round" inval_control "$PROXY/inval/uncached{i}"
        ;;
    esac
    inval_run "$round" inval_after
    # Every POSTed object is gone, the rest and the hot object stay.
    after_posts=$(dime_objects)
    record dime "$round" invalidation objects_after_posts "$after_posts"
    ((${after_posts:-0} == ${objects:-0} - INVAL_POSTS)) ||
        note "dime round $round: $after_posts objects after $INVAL_POSTS POSTs, from $objects (want $((objects - INVAL_POSTS)))"
    got=$(cache_status "$PROXY/inval/obj0")
    [[ $got == *" MISS" ]] || note "dime round $round: /inval/obj0 after its POST: $got (want a MISS)"
    # The next INVAL_POSTS objects, one after another, in the large cache.
    inval_cpu_per_post "$round" post_cpu_us_large "$PROXY/inval/obj{i}" "$INVAL_POSTS"
    got=$(cache_status "$PROXY/inval/obj$((2 * INVAL_POSTS))")
    [[ $got == *" HIT" ]] || note "dime round $round: /inval/obj$((2 * INVAL_POSTS)), never POSTed: $got (want a HIT)"
    stop_proxy
}

# pid_ticks PID...: CPU time (clock ticks, user + system, all threads) used so far.
pid_ticks() {
    local pid t=0 v
    for pid in "$@"; do
        # Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
        v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

proxy_ticks() {
    local pids
    mapfile -t pids < <(proxy_pids)
    pid_ticks "${pids[@]}"
}

# CPU time (clock ticks) all user processes have used, the exited ones included, plus steal.
# A reaped process's time moves into its parent's cutime/cstime, so the sum of
# utime + stime + cutime + cstime over all processes grows by exactly the CPU they used.
# Kernel threads (children of kthreadd, pid 2) are left out: on loopback, ksoftirqd carries
# much of the benchmark's own traffic.
host_ticks() {
    local tasks steal
    tasks=$({ cat /proc/[0-9]*/stat 2>/dev/null || true; } |
        awk '{ sub(/.*\) /, ""); if ($2 != 2 && $2 != 0) t += $12 + $13 + $14 + $15 } END { print t + 0 }')
    steal=$(awk '$1 == "cpu" { print $9 }' /proc/stat)
    echo $((tasks + steal))
}

# "RSS PSS" in KiB, summed over the proxy's processes.
rss_kib() {
    local pid rss=0 pss=0 r p
    for pid in $(proxy_pids); do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        p=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        rss=$((rss + ${r:-0})) pss=$((pss + ${p:-0}))
    done
    echo "$rss $pss"
}

# Where dime-edge spends its core while serving hits, sampled outside the measured runs.
profile_dime() {
    [[ ${BENCH_PERF:-1} == 1 && $QUICK != 1 ]] && command -v perf >/dev/null || return 0
    local scenario url conns secs=$((DURATION < 8 ? DURATION : 8))
    start_proxy dime
    warm dime "$PROXY/live/index.m3u8" 1024 || true
    warm dime "$PROXY/live/seg4m.ts" $((4 * MIB)) || true
    for scenario in playlist_1k playlist_1k_h2 segment_4m; do
        case $scenario in
        playlist_1k) url=$PROXY/live/index.m3u8 conns=32 ;;
        playlist_1k_h2) url=$PROXY_TLS/live/index.m3u8 conns=8 ;;
        segment_4m) url=$PROXY/live/seg4m.ts conns=8 ;;
        esac
        log "perf: dime-edge serving $scenario"
        # shellcheck disable=SC2046 # load_cmd prints words
        taskset -c "$LOAD_CPU" $(load_cmd "$scenario" "$url" "$conns" $((secs + 2))) "$url" >/dev/null 2>&1 &
        local wrk_pid=$!
        PIDS+=("$wrk_pid")
        sleep 1
        if perf record -e cpu-clock -F 999 -g -p "$PROXY_PID" -o "$OUT/perf-$scenario.data" -- sleep "$secs" \
            >"$OUT/logs/perf-record.log" 2>&1; then
            perf report -i "$OUT/perf-$scenario.data" --no-children --stdio -g none --percent-limit 0.8 \
                -F overhead,dso,sym 2>/dev/null | grep -v -e '^#' -e '^$' | sed 's/[[:space:]]*$//' |
                head -25 >"$OUT/perf-$scenario.txt" || true
            # Every symbol, for the report's time-by-component table.
            perf report -i "$OUT/perf-$scenario.data" --no-children --stdio -g none --percent-limit 0 \
                -F overhead,dso,sym 2>/dev/null | grep -v -e '^#' -e '^$' >"$OUT/perf-$scenario-all.txt" || true
        else
            log "perf record failed; see $OUT/logs/perf-record.log"
        fi
        wait "$wrk_pid" || true
        forget "$wrk_pid"
    done
    stop_proxy
}

machine() {
    local f=$OUT/machine.txt
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- proxy origin 2>/dev/null || echo ' (+ uncommitted changes)')"
        echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        echo "cores=$(nproc)"
        echo "kernel=$(uname -sr)"
        echo "os=$(awk -F= '$1 == "PRETTY_NAME" { gsub(/"/, "", $2); print $2 }' /etc/os-release 2>/dev/null)"
        echo "memory=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
        echo "dime=$("$BIN/dime-edge" --version 2>/dev/null | head -1)"
        echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
        echo "varnish=$(varnishd -V 2>&1 | head -1 | sed 's/^varnishd (\(varnish-[^ ]*\).*/\1/')"
        echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
        echo "h2load=$(h2load --version 2>/dev/null | head -1)"
        echo "nice=$NICE"
        echo "max_other=$MAX_OTHER"
        echo "quick=$QUICK"
        echo "rounds=$ROUNDS"
        echo "duration=$DURATION"
        echo "rss_objects=$RSS_OBJECTS"
        echo "idle_count=$IDLE_COUNT"
        echo "idle_hold=$IDLE_HOLD"
        echo "nofile=$NOFILE"
        echo "inval_objects=$INVAL_OBJECTS"
        echo "inval_posts=$INVAL_POSTS"
        echo "inval_duration=$INVAL_DURATION"
        echo "only=$ONLY"
    } >"$f"
}

# ---------------------------------------------------------------------------------------------

main() {
    local started=$SECONDS round proxy
    mkdir -p "$WORK/dime" "$WORK/nginx" "$WORK/varnish"
    # Each run starts from an empty results directory; a smoke run keeps its own, so it never
    # erases what the last full run measured.
    rm -rf "$OUT"
    mkdir -p "$OUT/logs"
    touch "$OUT/notes.txt"
    install_tools
    build
    if [[ $ONLY != invalidation ]]; then
        log "making the media in $WORK/media"
        make_media
        make_cert
    fi
    machine
    start_origins
    echo "start $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
    if [[ -n $ONLY ]]; then
        if [[ $ONLY == invalidation ]]; then
            for ((round = 1; round <= ROUNDS; round++)); do invalidation "$round"; done
        else
            for proxy in "${PROXIES[@]}"; do idle "$proxy"; done
        fi
        echo "end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
        echo "elapsed=$((SECONDS - started))" >>"$OUT/machine.txt"
        python3 "$BENCHES/report.py" --only "$ONLY" "$OUT" "$DOC"
        log "report written to $DOC (took $((SECONDS - started)) s)"
        return
    fi

    # Round-robin, so a slow minute of the machine hurts all three alike.
    for ((round = 1; round <= ROUNDS; round++)); do
        for proxy in "${PROXIES[@]}"; do hit_round "$proxy" "$round"; done
        for proxy in "${PROXIES[@]}"; do logged_round "$proxy" "$round"; done
    done
    for proxy in "${PROXIES[@]}"; do coalesce "$proxy"; done
    for proxy in "${PROXIES[@]}"; do memory "$proxy"; done
    for proxy in "${PROXIES[@]}"; do idle "$proxy"; done
    for ((round = 1; round <= ROUNDS; round++)); do invalidation "$round"; done
    echo "end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
    profile_dime

    echo "elapsed=$((SECONDS - started))" >>"$OUT/machine.txt"
    python3 "$BENCHES/report.py" "$OUT" "$DOC"
    log "report written to $DOC (took $((SECONDS - started)) s)"
    # The p99 beside nginx's at the same offered load, and what made the tail (its own section).
    if [[ $QUICK != 1 && ${BENCH_TAIL:-1} == 1 ]]; then
        log "benches/tail.sh: the 1 KB tail at the same offered load"
        TAIL_DOC=$DOC TAIL_NICE=$NICE TAIL_PORT_BASE=$((PORT_BASE + 100)) bash "$BENCHES/tail.sh"
    fi
}

main "$@"
