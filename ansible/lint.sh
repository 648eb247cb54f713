#!/usr/bin/env bash
# `make ansible-lint`: proves the edge playbook offline, every step run even when one fails.
#   1. ansible-playbook --syntax-check of edge.yml and render.yml on the example inventory;
#   2. ansible-lint --profile production: zero violations (ansible/.ansible-lint skips nothing);
#   3. render.yml renders every example host's files (edge.toml, certificates, the unit and its
#      drop-in, nftables.conf, wg0.conf) into .dev/ansible/rendered/HOST/ with the roles' own
#      templates;
#   4. tests/check-configs.sh: each rendered edge.toml passes the real `dime-edge check` and
#      listens where the inventory says (admin on the overlay address only);
#   5. tests/check-network.py: each host's wg0.conf is hub and spoke as the inventory says, with
#      no private key in it, and `wg-quick strip` takes it; each edge's nftables.conf passes
#      `nft -c -f`;
#   6. tests/fallback.sh: the gateway's wg0.conf when a run cannot ask every edge: an edge its
#      running interface knows keeps its peer, an edge never set up is left out;
#   7. tests/keys.sh: the overlay role's keys.yml on local stand-in hosts, through --limit runs:
#      keys made on their hosts (0600), outside hosts asked by delegation, a rerun unchanged, a
#      rotation; no private key in any output;
#   8. tests/unit-security.sh: each rendered unit, with its drop-in, scores under 4.0 in
#      `systemd-analyze security --offline=yes`, and the same unit stripped of its hardening
#      does not (the test can fail).
# Installs its Python tools, pinned in requirements.txt, into a virtualenv the first time.
# Environment: DIME_EDGE (a built dime-edge; make passes the debug one), DIME_ANSIBLE_VENV.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly edge=${DIME_EDGE:-${CARGO_TARGET_DIR:-target}/debug/dime-edge}
readonly venv=${DIME_ANSIBLE_VENV:-.dev/ansible-venv}
readonly out=.dev/ansible
readonly inventory=ansible/inventory/example

say() { printf 'ansible-lint: %s\n' "$*"; }
die() {
	printf 'ansible-lint: error: %s\n' "$*" >&2
	exit 1
}

[[ -x ${edge} ]] || die "${edge} not found: build it (cargo build -p dime-edge) or set DIME_EDGE"
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze not found (package systemd): the unit test needs it"

# --- tools ----------------------------------------------------------------------------------

bash .ci/venv.sh ansible/requirements.txt "${venv}" || die "the ansible/requirements.txt virtualenv could not be made (above)"
export PATH=${PWD}/${venv}/bin:${PATH}
# Quiet, and the tools' caches in .dev (ansible/.ansible-lint keeps ansible-lint offline).
export ANSIBLE_NOCOWS=1 ANSIBLE_LOCAL_TEMP=${PWD}/${out}/tmp ANSIBLE_HOME=${PWD}/${out}/home
export XDG_CACHE_HOME=${PWD}/${out}/cache
export DIME_EDGE=${edge}
# The render run reports only what it writes.
export ANSIBLE_DISPLAY_OK_HOSTS=false ANSIBLE_DISPLAY_SKIPPED_HOSTS=false

# The example inventory's HTTPS edge serves the development certificate (as make check-config).
"${edge}" cert generate --out .dev/certs --name localhost --name 127.0.0.1 >/dev/null

# --- steps ----------------------------------------------------------------------------------

passed=0
failed=0
step() {
	local name=$1
	shift
	say "${name}"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		say "FAILED: ${name}"
		return 1
	fi
}

rm -rf "${out}/rendered"
mkdir -p "${out}/tmp" "${out}/home" "${out}/cache"

for playbook in edge.yml render.yml; do
	step "ansible-playbook --syntax-check -i ${inventory} ansible/${playbook}" \
		ansible-playbook --syntax-check -i "${inventory}" "ansible/${playbook}" || true
done

step "ansible-lint --profile production (ansible/)" \
	bash -c 'cd ansible && ansible-lint --profile production --strict' || true

step "ansible-playbook -i ${inventory} ansible/render.yml (into ${out}/rendered)" \
	ansible-playbook -i "${inventory}" ansible/render.yml -e "render_dir=${PWD}/${out}/rendered" || true

step "every rendered edge.toml passes dime-edge check (tests/check-configs.sh)" \
	bash ansible/tests/check-configs.sh "${inventory}" "${out}/rendered" || true

step "every rendered wg0.conf and nftables.conf (tests/check-network.py)" \
	python3 ansible/tests/check-network.py "${inventory}" "${out}/rendered" || true

step "the gateway keeps the peers a run cannot ask (tests/fallback.sh)" \
	bash ansible/tests/fallback.sh "${inventory}" "${out}/fallback" || true

step "WireGuard keys on local stand-in hosts (tests/keys.sh)" \
	bash ansible/tests/keys.sh "${out}/keys" || true

step "every rendered unit's exposure is under 4.0 (tests/unit-security.sh)" \
	bash ansible/tests/unit-security.sh "${out}/rendered" || true

say "${passed} passed, ${failed} failed"
((failed == 0))
