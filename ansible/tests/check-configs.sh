#!/usr/bin/env bash
# Every example edge's rendered edge.toml (render.yml wrote RENDERED/HOST/etc/dime/edge.toml and
# RENDERED/HOST/expect.json, the inventory's values for that host) passes the real
# `dime-edge check`, and says what the inventory says: admin on the overlay address only, the
# public listeners, the shield's overlay addresses as the pool, the node's name and region.
# Usage: check-configs.sh INVENTORY RENDERED   (DIME_EDGE: the dime-edge binary)
set -euo pipefail
readonly inventory=${1:?usage: check-configs.sh INVENTORY RENDERED}
readonly rendered=${2:?usage: check-configs.sh INVENTORY RENDERED}
readonly edge=${DIME_EDGE:?DIME_EDGE: the dime-edge binary}

# The edges the inventory lists: each must have been rendered.
mapfile -t hosts < <(ansible-inventory -i "${inventory}" --list |
	python3 -c 'import json, sys
inv = json.load(sys.stdin)
def hosts(group):
    g = inv.get(group, {})
    found = list(g.get("hosts", []))
    for child in g.get("children", []):
        found += hosts(child)
    return found
for host in sorted(set(hosts("edges"))):
    print(host)')
((${#hosts[@]} > 0)) || {
	echo "check-configs: the inventory ${inventory} has no host in group edges" >&2
	exit 1
}

failed=0
for host in "${hosts[@]}"; do
	dir=${rendered}/${host}
	config=${dir}/etc/dime/edge.toml
	if [[ ! -f ${config} ]]; then
		echo "check-configs: ${host}: ${config} was not rendered" >&2
		failed=1
		continue
	fi
	echo "${edge} check -c ${config}"
	"${edge}" check -c "${config}" || failed=1
	python3 "$(dirname "${BASH_SOURCE[0]}")/expect.py" "${config}" "${dir}/expect.json" || failed=1
done
exit "${failed}"
