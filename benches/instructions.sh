#!/usr/bin/env bash
# What one 1 KB cache hit costs dime-edge and nginx, counted rather than timed: the
# instructions each runs in user space per hit (valgrind's callgrind) and the system calls it
# makes per hit (strace -c). Counts do not depend on what else the machine is doing, so this
# runs beside a build or a loaded test run, where `make bench` cannot; it judges a change to
# the hit path in about two minutes. Writes the "Instructions per hit" section of
# docs/benchmarks.md (between its markers, which benches/report.py keeps) and the callgrind
# profiles to target/bench/instructions/.
#
#   bash benches/instructions.sh         (make instructions)
#
# Knobs: INSTR_REQUESTS (hits counted, default 20000), INSTR_PORT_BASE (6 ports from here,
# default 18500), INSTR_DOC (where the section goes).
#
# Both proxies get benches/run.sh's configs (benches/conf/) and the same 1 KB live playlist
# from one dime-origin streamer, over HTTP/1.1 keep-alive, 32 connections (h2load --h1).
# Under callgrind a proxy runs about 50 times slower, so the counts are what matters here, not
# the speed. callgrind counts each byte a `rep movsb` moves as an instruction: the memcpy row is
# mostly bytes copied, which a real core moves far faster than that many instructions.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
REQUESTS=${INSTR_REQUESTS:-20000}
PORT_BASE=${INSTR_PORT_BASE:-18500}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
WORK=$TARGET_DIR/bench/instructions
BIN=$TARGET_DIR/release
DOC=${INSTR_DOC:-$ROOT/docs/benchmarks.md}
SHM=/dev/shm/dime-instructions-$$
PROXY_PORT=$PORT_BASE
STREAMER_PORT=$((PORT_BASE + 2))
URL=http://127.0.0.1:$PROXY_PORT/live/index.m3u8
export PATH=$PATH:/usr/sbin:/sbin

log() { printf '[instructions %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "INSTR_REQUESTS=$REQUESTS: a whole number of requests"

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
for tool in valgrind:valgrind strace:strace h2load:nghttp2-client nginx:nginx-light curl:curl; do
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
		die "127.0.0.1:$p is in use; set INSTR_PORT_BASE"
	fi
done

# --- the playlist, the configs, the certificate ---------------------------------------------
rm -rf "$WORK/media" "$WORK/dime" "$WORK/nginx" "$WORK"/*.out.* && mkdir -p "$WORK"/{media/live,dime,nginx/client_body,certs}
python3 benches/playlist_1k.py "$WORK/media/live/index.m3u8"
[[ -s $WORK/certs/edge.pem ]] ||
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
# One process (callgrind follows no fork): no master, the worker's work done by the first.
render benches/conf/nginx.conf.in "$WORK/nginx/nginx.conf"
sed -i -e 's/^master_process .*/master_process off;/' "$WORK/nginx/nginx.conf"
mkdir -p "$SHM/nginx/cache" "$SHM/nginx/temp"
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"

"$BIN/dime-origin" streamer --root "$WORK/media" --listen "127.0.0.1:$STREAMER_PORT" \
	--playlist-max-age 3600 >"$WORK/streamer.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do
	curl -sf -o /dev/null "http://127.0.0.1:$STREAMER_PORT/live/index.m3u8" && break
	sleep 0.1
done

# --- one proxy --------------------------------------------------------------------------------

# start_proxy NAME [WRAPPER...]: the proxy, under WRAPPER (callgrind), in the background;
# PROXY_PID is its process.
start_proxy() {
	local name=$1
	shift
	case $name in
	dime-edge) env RUST_LOG=info,access=off "$@" "$BIN/dime-edge" run -c "$WORK/dime/dime-edge.toml" \
		>"$WORK/$name.log" 2>&1 & ;;
	nginx) "$@" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
		>"$WORK/$name.log" 2>&1 & ;;
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

load() { # REQUESTS: that many 1 KB hits, 32 connections; fails unless every one is a 200
	local out
	out=$(h2load --h1 -n "$1" -c 32 "$URL")
	grep -q "status codes: $1 2xx" <<<"$out" || die "not every request was a 200: $(grep -E '^(requests|status codes):' <<<"$out")"
}

origin_requests() { grep -c 'path="/live/index.m3u8"' "$WORK/streamer.log" || true; }

declare -A IR MEMCPY SYSCALLS TOP_SYSCALLS
for name in dime-edge nginx; do
	log "$name: callgrind over $REQUESTS hits"
	start_proxy "$name" valgrind --tool=callgrind --instr-atstart=no \
		--callgrind-out-file="$WORK/$name.out.%p"
	load 2000
	before=$(origin_requests)
	callgrind_control -i on "$PROXY_PID" >/dev/null
	load "$REQUESTS"
	callgrind_control -d "$PROXY_PID" >/dev/null
	callgrind_control -i off "$PROXY_PID" >/dev/null
	(($(origin_requests) == before)) || die "$name asked the origin during the counted hits"
	stop_proxy
	profile=$(ls -S "$WORK/$name".out.* | head -1)
	# --auto=no: without it the listing goes on with annotated source, whose call lines
	# ("=> ...memcpy... (32x)") the sum below would count a second time.
	read -r total copy < <(callgrind_annotate --auto=no --threshold=100 "$profile" 2>/dev/null | awk '
		/PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
		/memmove|memcpy/ && /\(/ { gsub(",", "", $1); copy += $1 }
		END { print total + 0, copy + 0 }')
	((total > 0)) || die "no instructions counted for $name ($profile)"
	IR[$name]=$((total / REQUESTS))
	MEMCPY[$name]=$((copy / REQUESTS))
	cp "$profile" "$WORK/$name.callgrind"

	log "$name: strace -c over $REQUESTS hits"
	start_proxy "$name"
	load 2000
	strace -c -f -q -p "$PROXY_PID" -o "$WORK/$name.strace" &
	tracer=$!
	sleep 1
	load "$REQUESTS"
	sleep 0.5
	kill -INT "$tracer"
	wait "$tracer" 2>/dev/null || true
	stop_proxy
	calls=$(awk -v n="$REQUESTS" '$NF == "total" { printf "%.2f", $4 / n }' "$WORK/$name.strace")
	[[ -n $calls ]] || die "strace counted nothing for $name ($WORK/$name.strace)"
	top=$(awk -v n="$REQUESTS" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" && $4 / n >= 0.1 {
			printf "%.2f %s\n", $4 / n, $NF }' "$WORK/$name.strace" | sort -rn |
		awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1 }')
	SYSCALLS[$name]=$calls
	TOP_SYSCALLS[$name]=$top
done

# --- the section --------------------------------------------------------------------------------
rev=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain -- proxy Cargo.lock | grep -q . && echo " (with uncommitted changes to proxy/)" || true)
section=$(
	cat <<EOF
<!-- instructions:begin -->
## Instructions per hit

Counted by \`bash benches/instructions.sh\` (\`make instructions\`) on $(date -u '+%Y-%m-%d %H:%M') UTC,
commit $rev$dirty: $REQUESTS hits on the 1 KB live playlist over HTTP/1.1, 32 connections,
each proxy alone with the configuration \`make bench\` gives it. User-space instructions from
callgrind (the memcpy row is mostly bytes copied: callgrind counts each byte of a \`rep movsb\` as an instruction); system
calls from \`strace -c\`. Counts do not depend on the machine's load, times do: this is the
cost of a hit, not its speed.

| Per 1 KB hit | dime-edge | nginx | dime-edge / nginx |
|---|---:|---:|---:|
| instructions, user space | ${IR[dime-edge]} | ${IR[nginx]} | $(python3 -c "print(f'{${IR[dime-edge]} / ${IR[nginx]}:.2f}×')") |
| … of them in memcpy and memmove | ${MEMCPY[dime-edge]} | ${MEMCPY[nginx]} | |
| … the rest | $((IR[dime-edge] - MEMCPY[dime-edge])) | $((IR[nginx] - MEMCPY[nginx])) | $(python3 -c "print(f'{(${IR[dime-edge]} - ${MEMCPY[dime-edge]}) / (${IR[nginx]} - ${MEMCPY[nginx]}):.2f}×')") |
| system calls | ${SYSCALLS[dime-edge]} | ${SYSCALLS[nginx]} | |

System calls per hit, those made at least once per ten hits: dime-edge ${TOP_SYSCALLS[dime-edge]};
nginx ${TOP_SYSCALLS[nginx]}. The profiles are in \`target/bench/instructions/*.callgrind\`
(\`callgrind_annotate --inclusive=yes\` reads them).
<!-- instructions:end -->
EOF
)
python3 - "$DOC" "$section" <<'EOF'
import sys
path, section = sys.argv[1], sys.argv[2]
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
begin, end = "<!-- instructions:begin -->", "<!-- instructions:end -->"
if begin in text and end in text:
    text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
log "wrote the section to $DOC"
printf '%s\n' "$section" | sed -n '/^| Per/,/^| system/p'
