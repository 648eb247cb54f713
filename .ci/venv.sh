#!/usr/bin/env bash
# Installs pinned Python tools into a virtualenv, again only when the requirements file changed
# (its sha256 is kept in the venv): k8s/lint/run.sh, ansible/lint.sh and ansible/sim use it.
#   bash .ci/venv.sh REQUIREMENTS.txt VENV_DIR
set -euo pipefail
requirements=${1:?usage: venv.sh REQUIREMENTS VENV}
venv=${2:?usage: venv.sh REQUIREMENTS VENV}
stamp=${venv}/.requirements.sha256
want=$(sha256sum "${requirements}" | cut -d' ' -f1)
if [[ -x ${venv}/bin/python && $(cat "${stamp}" 2>/dev/null) == "${want}" ]]; then
	exit 0
fi
echo "venv: installing $(grep -v '^#' "${requirements}" | tr '\n' ' ')into ${venv} (PyPI; a few minutes the first time)"
python3 -m venv "${venv}" || {
	echo "venv: error: python3 -m venv failed: apt-get install python3-venv" >&2
	exit 1
}
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -r "${requirements}" || {
	echo "venv: error: pip install -r ${requirements} failed (output above)" >&2
	exit 1
}
printf '%s\n' "${want}" >"${stamp}"
