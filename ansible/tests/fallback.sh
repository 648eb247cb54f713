#!/usr/bin/env bash
# The gateway's wg0.conf when a run cannot ask every edge for its key: render.yml with eu-2 and
# us-1 unknown, and the gateway's running interface holding a key for eu-2's address only.
# eu-2 must keep its peer with the running key (an unreachable edge is not cut off); us-1,
# never set up, must be left out with a comment, and the file must still pass wg-quick strip.
# Usage: fallback.sh INVENTORY OUT
set -euo pipefail
readonly inventory=${1:?usage: fallback.sh INVENTORY OUT}
readonly out=${2:?usage: fallback.sh INVENTORY OUT}
readonly running_key=$(printf 'running-key-of-eu-2-on-gw-1.....' | base64)

rm -rf "${out}"
ansible-playbook -i "${inventory}" "$(dirname "${BASH_SOURCE[0]}")/../render.yml" \
	-e "{\"render_dir\": \"$(pwd)/${out}\", \"render_unknown_hosts\": [\"eu-2\", \"us-1\"],
	     \"render_running_keys\": {\"10.8.0.12/32\": \"${running_key}\"}}" >"${out}.log" 2>&1 || {
	tail -20 "${out}.log" >&2
	exit 1
}
conf=${out}/gw-1/etc/wireguard/wg0.conf
failed=0
grep -qxF "PublicKey = ${running_key}" "${conf}" ||
	{ echo "fallback: ${conf}: eu-2 lost its peer (no PublicKey = ${running_key})" >&2; failed=1; }
grep -qxF "# us-1: no public key yet (not set up, or not reachable and unknown to this interface): left out." "${conf}" ||
	{ echo "fallback: ${conf}: us-1 is not left out with its comment" >&2; failed=1; }
peers=$(grep -c '^\[Peer\]' "${conf}")
((peers == 2)) || { echo "fallback: ${conf}: ${peers} peers, want 2 (eu-1, eu-2)" >&2; failed=1; }
tmp=$(mktemp -d)
cp "${conf}" "${tmp}/wg0.conf"
wg-quick strip "${tmp}/wg0.conf" >/dev/null || { echo "fallback: wg-quick strip refused ${conf}" >&2; failed=1; }
rm -rf "${tmp}"
((failed == 0)) && echo "fallback: eu-2 kept with the running interface's key, us-1 left out"
exit "${failed}"
