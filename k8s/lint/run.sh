#!/usr/bin/env bash
# `make k8s-lint`: proves the manifests offline, every step run even when one fails.
#   1. kubectl kustomize renders every overlay (into .dev/k8s/rendered/OVERLAY.yaml);
#   2. validate.py: every object against the strict Kubernetes schemas, every error reported;
#   3. checkov (Kubernetes framework, on the rendered YAML, offline): zero failed checks;
#   4. pytest test_k8s.py: the wiring checks on every overlay (the containers' command lines
#      parsed by the real binaries among them), and a mutation test per check.
# Installs its Python tools, pinned in requirements.txt, into a virtualenv the first time.
# Environment: DIME_EDGE (a built dime-edge; make passes the debug one), DIME_ORIGIN (a built
# dime-origin, to check the origins' command lines), DIME_K8S_VENV.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

readonly edge=${DIME_EDGE:-${CARGO_TARGET_DIR:-target}/debug/dime-edge}
# The origins' command lines are checked with this binary when it is built (make test builds
# it); without it those tests are reported as skipped.
readonly origin=${DIME_ORIGIN:-${CARGO_TARGET_DIR:-target}/debug/dime-origin}
readonly venv=${DIME_K8S_VENV:-.dev/k8s-lint-venv}
readonly out=.dev/k8s/rendered
# The oldest Kubernetes release the manifests are meant for, and the newest the pinned
# kubernetes-validate ships schemas for.
readonly versions=(1.32 1.37)

say() { printf 'k8s-lint: %s\n' "$*"; }
die() {
	printf 'k8s-lint: error: %s\n' "$*" >&2
	exit 1
}

command -v kubectl >/dev/null 2>&1 ||
	die "kubectl not found: kubectl 1.32 or later (with kustomize v5) renders the overlays (make deps puts one in .dev/bin)"
[[ -x ${edge} ]] || die "${edge} not found: build it (cargo build -p dime-edge) or set DIME_EDGE"
command -v unshare >/dev/null 2>&1 || die "unshare not found (util-linux): the shield's config check needs it"

# --- tools ----------------------------------------------------------------------------------

bash .ci/venv.sh k8s/lint/requirements.txt "${venv}" || die "the k8s/lint/requirements.txt virtualenv could not be made (above)"
export PATH=${PWD}/${venv}/bin:${PATH}
# checkov offline: no policy download, no package-update check, no platform mapping.
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE
export DIME_EDGE=${edge} DIME_ORIGIN=${origin}

# The secretGenerator's files (git-ignored): generated when missing, kept otherwise.
bash k8s/secrets.sh

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

rm -rf "${out}"
mkdir -p "${out}"
rendered=()
for dir in k8s/overlays/*/; do
	overlay=$(basename "${dir}")
	step "kubectl kustomize k8s/overlays/${overlay}" \
		bash -c 'kubectl kustomize "$1" >"$2"' _ "${dir}" "${out}/${overlay}.yaml" &&
		rendered+=("${out}/${overlay}.yaml")
done

for version in "${versions[@]}"; do
	step "schemas of Kubernetes ${version} (kubernetes-validate --strict)" \
		python k8s/lint/validate.py --version "${version}" "${rendered[@]}" || true
done

step "checkov --framework kubernetes on ${out}" \
	checkov --directory "${out}" --framework kubernetes --skip-download --quiet --compact || true

step "wiring and podman stand-in tests (pytest k8s/lint k8s/play k8s/images)" \
	python -m pytest -q -rs --tb=short -p no:cacheprovider k8s/lint k8s/play k8s/images || true

say "${passed} passed, ${failed} failed"
((failed == 0))
