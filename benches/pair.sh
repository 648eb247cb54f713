# What benches/instructions.sh and benches/tail.sh share, sourced by both: dime-edge and nginx
# in turn in front of one dime-origin streamer that serves the 1 KB live playlist, each with
# the configuration benches/run.sh gives it (benches/conf/), on 127.0.0.1 ports PORT_BASE to
# PORT_BASE + 5.
#
# The caller sets, before sourcing: PAIR_NAME (its log prefix, and its directory
# target/bench/PAIR_NAME, WORK), PAIR_PORT_KNOB (the variable that moves the ports, for the
# message when one is taken) and PORT_BASE.

TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
WORK=$TARGET_DIR/bench/$PAIR_NAME
BIN=$TARGET_DIR/release
# nginx's cache, in memory as the edge's is.
SHM=/dev/shm/dime-$PAIR_NAME-$$
PROXY_PORT=$PORT_BASE
STREAMER_PORT=$((PORT_BASE + 2))
URL=http://127.0.0.1:$PROXY_PORT/live/index.m3u8
export PATH=$PATH:/usr/sbin:/sbin

log() { printf '[%s %s] %s\n' "$PAIR_NAME" "$(date +%T)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# What the caller started, stopped when it exits.
PIDS=()
pair_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$SHM"
}
trap pair_cleanup EXIT

# pair_need TOOL:PACKAGE...: apt-installs the packages of the tools not on PATH (as root).
pair_need() {
	local tool missing=()
	for tool in "$@"; do
		command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
	done
	((${#missing[@]})) || return 0
	((EUID == 0)) || die "missing: ${missing[*]} (apt-get install them, or run as root)"
	log "installing ${missing[*]} (apt)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install ${missing[*]} failed"
}

# pair_setup: the release build, free ports, the playlist, both configs (checked), the
# certificate. media/, dime/ and nginx/ under WORK start afresh; the certificate is kept.
pair_setup() {
	local p
	log "cargo build --release -p dime-edge -p dime-origin"
	cargo build --release -q -p dime-edge -p dime-origin
	for ((p = PORT_BASE; p <= PORT_BASE + 5; p++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			die "127.0.0.1:$p is in use; set $PAIR_PORT_KNOB"
		fi
	done
	rm -rf "$WORK/media" "$WORK/dime" "$WORK/nginx"
	mkdir -p "$WORK"/{media/live,dime,nginx/client_body,certs} "$SHM/nginx/cache" "$SHM/nginx/temp"
	python3 benches/playlist_1k.py "$WORK/media/live/index.m3u8"
	[[ -s $WORK/certs/edge.pem ]] ||
		"$BIN/dime-edge" cert generate --out "$WORK/certs" --name 127.0.0.1 --name localhost >/dev/null
	pair_render benches/conf/dime-edge.toml.in "$WORK/dime/dime-edge.toml"
	"$BIN/dime-edge" check -c "$WORK/dime/dime-edge.toml" >/dev/null
	pair_render benches/conf/nginx.conf.in "$WORK/nginx/nginx.conf"
}

# pair_render TEMPLATE OUT: benches/run.sh's placeholders, filled in for the caller.
pair_render() {
	sed -e "s|@WORK@|$WORK|g" -e "s|@SHM@|$SHM/nginx|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g" \
		-e "s|@ADMIN_PORT@|$((PORT_BASE + 1))|g" -e "s|@STREAMER_PORT@|$STREAMER_PORT|g" \
		-e "s|@SLOW_PORT@|$((PORT_BASE + 3))|g" -e "s|@INVAL_PORT@|$((PORT_BASE + 4))|g" \
		-e "s|@TLS_PORT@|$((PORT_BASE + 5))|g" -e "s|@NGINX_ACCESS_LOG@|off|g" \
		-e "s|@MAX_CONNECTIONS@|1024|g" -e "s|@NOFILE@|4096|g" "$1" >"$2"
}

# pair_streamer [WRAPPER...]: the origin streamer (under WRAPPER, e.g. taskset), once it
# answers; STREAMER_PID is its process.
pair_streamer() {
	local i
	"$@" "$BIN/dime-origin" streamer --root "$WORK/media" --listen "127.0.0.1:$STREAMER_PORT" \
		--playlist-max-age 3600 >"$WORK/streamer.log" 2>&1 &
	STREAMER_PID=$!
	PIDS+=("$STREAMER_PID")
	for ((i = 0; i < 100; i++)); do
		curl -sf -o /dev/null "http://127.0.0.1:$STREAMER_PORT/live/index.m3u8" && return 0
		sleep 0.1
	done
	die "the streamer never answered; see $WORK/streamer.log"
}

# pair_start NAME [WRAPPER...]: the proxy (dime-edge or nginx, under WRAPPER) in the
# background, once it answers hits; PROXY_PID is its process.
pair_start() {
	local name=$1 i status
	shift
	case $name in
	dime-edge) env RUST_LOG=info,access=off "$@" "$BIN/dime-edge" run -c "$WORK/dime/dime-edge.toml" \
		>"$WORK/$name.log" 2>&1 & ;;
	nginx) "$@" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" \
		>"$WORK/$name.log" 2>&1 & ;;
	*) die "pair_start $name: dime-edge or nginx" ;;
	esac
	PROXY_PID=$!
	PIDS+=("$PROXY_PID")
	for ((i = 0; i < 300; i++)); do
		status=$(curl -s -o /dev/null -D - "$URL" 2>/dev/null | tr -d '\r' |
			awk 'tolower($1) == "x-cache-status:" { print $2 }') || true
		[[ $status == HIT ]] && return 0
		kill -0 "$PROXY_PID" 2>/dev/null || die "$name stopped; see $WORK/$name.log"
		sleep 0.2
	done
	die "$name never answered a hit; see $WORK/$name.log"
}

pair_stop() {
	kill "$PROXY_PID" 2>/dev/null || true
	wait "$PROXY_PID" 2>/dev/null || true
}

# How many times the origin has been asked for the playlist: a hit run must not move it.
pair_origin_requests() { grep -c 'path="/live/index.m3u8"' "$WORK/streamer.log" || true; }

# pair_section NAME DOC TEXT: TEXT (which starts and ends with the <!-- NAME:begin/end -->
# markers) in place of DOC's section NAME, or at DOC's end when it has none yet.
pair_section() {
	python3 - "$@" <<'EOF'
import sys
name, path, section = sys.argv[1:4]
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
if begin in text and end in text:
    text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
}
