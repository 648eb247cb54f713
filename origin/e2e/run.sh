#!/usr/bin/env bash
# The browser test of the whole platform: starts the stack `make run` starts (debug binaries, a
# smaller live picture, state under target/e2e-stack, its own ports), runs viewer.test.mjs in Debian's Chromium
# through the edge, then stops the stack. `make e2e` runs it; `make test` includes it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export DIME_BIN_DIR=${DIME_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
export DIME_DEV_DIR=${DIME_DEV_DIR:-${CARGO_TARGET_DIR:-target}/e2e-stack}
export DIME_LIVE_SIZE=${DIME_LIVE_SIZE:-640x360} DIME_LIVE_BITRATE=${DIME_LIVE_BITRATE:-800k}
# Ports of its own, so a developer's `make run` (8080-8085, 8443, 9090) can go on beside it:
# the edge on DIME_HTTP_PORT, the streamers, web app and two packagers on the five ports after it.
export DIME_HTTP_PORT=${DIME_HTTP_PORT:-18080} DIME_HTTPS_PORT=${DIME_HTTPS_PORT:-18443}
export DIME_ADMIN_PORT=${DIME_ADMIN_PORT:-19090}
export DIME_EDGE_URL=http://127.0.0.1:${DIME_HTTP_PORT}
export DIME_EDGE_HTTPS_URL=https://localhost:${DIME_HTTPS_PORT}
export DIME_ADMIN_URL=http://127.0.0.1:${DIME_ADMIN_PORT}
readonly ready_timeout=180

say() { printf 'e2e: %s\n' "$*"; }

if [[ ! -d origin/e2e/node_modules/playwright-core ]]; then
	npm ci --prefix origin/e2e --no-audit --no-fund --loglevel=error
fi

mkdir -p "${DIME_DEV_DIR}"
stack_log=${DIME_DEV_DIR}/stack.out
# Emptied here, not only by the background job's redirection: the wait below must never read
# the ready banner of an earlier run in the same directory (a loaded run did, and the browser
# test met a stack that had not started yet).
: >"${stack_log}"
bash .ci/dev-stack.sh >>"${stack_log}" 2>&1 &
stack=$!
# TERM, not INT: while the stack runs a setup command, bash holds an INT until that command
# ends and then carries on if the command did not die of it (a loaded run hung here); TERM
# stops it at once, and once started the stack traps both alike.
stop_stack() {
	kill -TERM "${stack}" 2>/dev/null || true
	wait "${stack}" 2>/dev/null || true
}
trap stop_stack EXIT

show_logs() {
	cat "${stack_log}" >&2
	tail -n 30 "${DIME_DEV_DIR}"/logs/*.log >&2 2>/dev/null || true
}

deadline=$((SECONDS + ready_timeout))
until grep -q '^dev-stack: ready' "${stack_log}"; do
	if ! kill -0 "${stack}" 2>/dev/null; then
		show_logs
		say "the stack did not start (output above)"
		exit 1
	fi
	if ((SECONDS >= deadline)); then
		show_logs
		say "the stack was not ready after ${ready_timeout}s (output above)"
		exit 1
	fi
	sleep 0.5
done
say "stack ready; running the browser test"

# The admin the stack created (its password is in the ready banner) and a clip to upload.
credentials=$(sed -n 's/.*(user \([^,]*\), password \([^)]*\)).*/\1 \2/p' "${stack_log}")
read -r DIME_ADMIN_USER DIME_ADMIN_PASSWORD <<<"${credentials}"
export DIME_ADMIN_USER DIME_ADMIN_PASSWORD
"${DIME_BIN_DIR}/dime-origin" packager sample --out "${DIME_DEV_DIR}/upload.mp4" --duration 4s \
	--size 320x180 >/dev/null
DIME_UPLOAD_FILE=$(realpath "${DIME_DEV_DIR}/upload.mp4")
export DIME_UPLOAD_FILE

# The stack's HTTPS certificate comes from the local CA in .dev/certs (see dev-stack.sh).
export NODE_EXTRA_CA_CERTS=${PWD}/.dev/certs/ca.pem
if ! (cd origin/e2e && node --test --test-concurrency=1 viewer.test.mjs); then
	show_logs
	say "browser test failed (stack logs above)"
	exit 1
fi
