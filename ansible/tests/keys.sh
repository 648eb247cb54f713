#!/usr/bin/env bash
# The overlay role's keys.yml on local stand-in hosts (connection local; each host's key under
# WORK/HOST/), through the --limit cases a fleet meets:
#   1. e2 alone: its key is made (0600), nothing else;
#   2. gw,e1: their keys are made; e2, outside the run, is asked for its public key by
#      delegation; e3, never set up, is left out without failing the run;
#   3. the same run again changes nothing;
#   4. e1's key rotated (overlay_rotate_hosts): a new key for e1, the others unchanged.
# After each run: every public key the controller learnt is `wg pubkey` of that host's key file,
# and no private key appears in the facts or anywhere in the run's verbose output.
# Usage: keys.sh WORK   (needs wg, and root: the key directory is made root-owned)
set -euo pipefail
readonly work=${1:?usage: keys.sh WORK}

if ((EUID != 0)); then
	echo "keys: skipped: the key directories are made root:root, which takes root"
	exit 0
fi
command -v wg >/dev/null 2>&1 || {
	echo "keys: wg not found (apt-get install wireguard-tools)" >&2
	exit 1
}

rm -rf "${work}"
mkdir -p "${work}"
work_abs=$(cd "${work}" && pwd)
cat >"${work}/hosts.yml" <<YAML
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: $(command -v python3)
    overlay_key_path: "${work_abs}/{{ inventory_hostname }}/wg0.key"
  children:
    origin_gateway:
      hosts:
        gw: {overlay_address: 10.8.0.1}
    edges:
      hosts:
        e1: {overlay_address: 10.8.0.11}
        e2: {overlay_address: 10.8.0.12}
        e3: {overlay_address: 10.8.0.13}
YAML

failed=0
fail() {
	echo "keys: $*" >&2
	failed=1
}
playbook=$(dirname "${BASH_SOURCE[0]}")/keys.yml
run=0
# play LIMIT [ARGS...]: runs keys.yml; leaves the recap's changed count in $changed.
play() {
	local limit=$1
	shift
	run=$((run + 1))
	local log=${work}/run${run}.log
	if ! ANSIBLE_ROLES_PATH=$(dirname "${BASH_SOURCE[0]}")/../roles ansible-playbook -v \
		-i "${work}/hosts.yml" "${playbook}" --limit "${limit},localhost" \
		-e "keys_out=${work_abs}/facts${run}.json" "$@" >"${log}" 2>&1; then
		fail "run ${run} (--limit ${limit}) failed: ${log}"
		tail -20 "${log}" >&2
		return 1
	fi
	changed=$(awk '/^(gw|e[0-9]) +:/ { sub("changed=", "", $4); sum += $4 } END { print sum + 0 }' "${log}")
	# Every private key on disk must be absent from everything the run printed or learnt.
	for key in "${work}"/*/wg0.key; do
		if grep -qF -- "$(cat "${key}")" "${log}" "${work}/facts${run}.json"; then
			fail "run ${run}: the private key ${key} shows in the run's output or facts"
		fi
	done
}
# known HOST...: each HOST's learnt key is wg pubkey of its key file, mode 0600.
known() {
	local host want got mode
	for host in "$@"; do
		[[ -f ${work}/${host}/wg0.key ]] || {
			fail "run ${run}: ${host} has no key file"
			continue
		}
		mode=$(stat -c %a "${work}/${host}/wg0.key")
		[[ ${mode} == 600 ]] || fail "run ${run}: ${host}'s key has mode ${mode}, want 600"
		want=$(wg pubkey <"${work}/${host}/wg0.key")
		got=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]] or "")' "${work}/facts${run}.json" "${host}")
		[[ ${got} == "${want}" ]] || fail "run ${run}: ${host}'s public key fact is '${got}', want '${want}'"
	done
}
# unknown HOST...: no key file, no fact.
unknown() {
	local host got
	for host in "$@"; do
		[[ ! -e ${work}/${host}/wg0.key ]] || fail "run ${run}: ${host} got a key it was not asked for"
		got=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]] or "")' "${work}/facts${run}.json" "${host}")
		[[ -z ${got} ]] || fail "run ${run}: ${host} has a public key fact '${got}' without a key"
	done
}

play e2 && { known e2 && unknown gw e1 e3; }
play gw,e1 && { known gw e1 e2 && unknown e3; }
play gw,e1 && { ((changed == 0)) || fail "run ${run}: a second identical run changed ${changed} task(s)"; }
before_gw=$(wg pubkey <"${work}/gw/wg0.key")
before_e1=$(wg pubkey <"${work}/e1/wg0.key")
play e1 -e '{"overlay_rotate_hosts": ["e1"]}' && {
	known gw e1 e2
	[[ $(wg pubkey <"${work}/e1/wg0.key") != "${before_e1}" ]] || fail "run ${run}: e1's key was not rotated"
	[[ $(wg pubkey <"${work}/gw/wg0.key") == "${before_gw}" ]] || fail "run ${run}: gw's key changed with e1's rotation"
}

((failed == 0)) && echo "keys: ${run} runs: keys made on their hosts, outside hosts asked by delegation, rerun unchanged, rotation; no private key in any output"
exit "${failed}"
