#!/usr/bin/env bash
# The dime-edge unit each edge gets (rendered by render.yml into the root tree RENDERED/HOST/:
# the unit and its drop-ins under etc/systemd/system) must score under 4.0 in
#   systemd-analyze security --offline=yes --root=ROOT --threshold=40 dime-edge.service
# which exits non-zero above the threshold (exposure × 10). The same unit with its hardening
# stripped must fail that command, so a test that cannot fail is caught too.
# Usage: unit-security.sh RENDERED
set -euo pipefail

readonly rendered=${1:?usage: unit-security.sh RENDERED}
readonly threshold=40 # 4.0
# The sandboxing settings the role relies on; stripping them must push the score over 4.0.
readonly hardening='^(NoNewPrivileges|Protect[A-Za-z]*|Private[A-Za-z]*|Restrict[A-Za-z]*|LockPersonality|MemoryDenyWriteExecute|SystemCall[A-Za-z]*|CapabilityBoundingSet|ProcSubset|UMask)='

failed=0
fail() {
	printf 'unit-security: %s\n' "$*" >&2
	failed=1
}

# exposure ROOT: prints the overall exposure of ROOT's dime-edge.service; exit status of the
# threshold check.
exposure() {
	local root=$1 output status=0
	output=$(systemd-analyze security --offline=yes --root="${root}" --threshold="${threshold}" \
		dime-edge.service 2>&1) || status=$?
	sed -n 's/^→ Overall exposure level for dime-edge.service: \([0-9.]*\).*/\1/p' <<<"${output}"
	return "${status}"
}

shopt -s nullglob
roots=("${rendered}"/*/)
((${#roots[@]} > 0)) || {
	echo "unit-security: nothing rendered under ${rendered} (run render.yml first)" >&2
	exit 1
}

for root in "${roots[@]}"; do
	root=${root%/}
	host=$(basename "${root}")
	# Edges only (the gateway runs no dime-edge); check-configs.sh checks every edge is there.
	[[ -f ${root}/etc/dime/edge.toml ]] || continue
	unit=${root}/etc/systemd/system/dime-edge.service
	[[ -f ${unit} ]] || {
		fail "${host}: ${unit} not rendered"
		continue
	}
	[[ -n $(compgen -G "${root}/etc/systemd/system/dime-edge.service.d/*.conf") ]] ||
		fail "${host}: no drop-in rendered under dime-edge.service.d/"
	if score=$(exposure "${root}"); then
		[[ -n ${score} ]] || fail "${host}: systemd-analyze printed no overall exposure"
		printf 'unit-security: %s: exposure %s (under 4.0)\n' "${host}" "${score}"
	else
		fail "${host}: exposure ${score:-?} is 4.0 or more: systemd-analyze security --offline=yes --root=${root} dime-edge.service"
	fi

	# Mutation: the same unit without its hardening must fail the same command.
	weak=$(mktemp -d)
	cp -r "${root}/." "${weak}/"
	for file in "${weak}/etc/systemd/system/dime-edge.service" "${weak}"/etc/systemd/system/dime-edge.service.d/*.conf; do
		grep -Ev "${hardening}" "${file}" >"${file}.tmp" && mv "${file}.tmp" "${file}"
	done
	if weak_score=$(exposure "${weak}"); then
		fail "${host}: the unit stripped of its hardening still passes (exposure ${weak_score}): the check proves nothing"
	else
		printf 'unit-security: %s: stripped of its hardening: exposure %s, refused as expected\n' "${host}" "${weak_score}"
	fi
	rm -rf "${weak}"
done

exit "${failed}"
