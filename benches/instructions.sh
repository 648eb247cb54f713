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
DOC=${INSTR_DOC:-$ROOT/docs/benchmarks.md}
PAIR_NAME=instructions PAIR_PORT_KNOB=INSTR_PORT_BASE
# shellcheck source=benches/pair.sh
source benches/pair.sh
[[ $REQUESTS =~ ^[1-9][0-9]*$ ]] || die "INSTR_REQUESTS=$REQUESTS: a whole number of requests"

pair_need valgrind:valgrind strace:strace h2load:nghttp2-client nginx:nginx-light curl:curl
pair_setup
rm -f "$WORK"/*.out.*
# One process (callgrind follows no fork): no master, the worker's work done by the first.
sed -i -e 's/^master_process .*/master_process off;/' "$WORK/nginx/nginx.conf"
nginx -t -q -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
pair_streamer

load() { # REQUESTS: that many 1 KB hits, 32 connections; fails unless every one is a 200
	local out
	out=$(h2load --h1 -n "$1" -c 32 "$URL")
	grep -q "status codes: $1 2xx" <<<"$out" || die "not every request was a 200: $(grep -E '^(requests|status codes):' <<<"$out")"
}

declare -A IR MEMCPY SYSCALLS TOP_SYSCALLS
for name in dime-edge nginx; do
	log "$name: callgrind over $REQUESTS hits"
	pair_start "$name" valgrind --tool=callgrind --instr-atstart=no \
		--callgrind-out-file="$WORK/$name.out.%p"
	load 2000
	before=$(pair_origin_requests)
	callgrind_control -i on "$PROXY_PID" >/dev/null
	load "$REQUESTS"
	callgrind_control -d "$PROXY_PID" >/dev/null
	callgrind_control -i off "$PROXY_PID" >/dev/null
	(($(pair_origin_requests) == before)) || die "$name asked the origin during the counted hits"
	pair_stop
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
	pair_start "$name"
	load 2000
	strace -c -f -q -p "$PROXY_PID" -o "$WORK/$name.strace" &
	tracer=$!
	sleep 1
	load "$REQUESTS"
	sleep 0.5
	kill -INT "$tracer"
	wait "$tracer" 2>/dev/null || true
	pair_stop
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
pair_section instructions "$DOC" "$section"
log "wrote the section to $DOC"
printf '%s\n' "$section" | sed -n '/^| Per/,/^| system/p'
