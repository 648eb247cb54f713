# Sourced by k8s/images/*.sh and k8s/play/*.sh: installs podman when it is missing and defines
# `pm`, podman with the flags this kind of machine needs.
#
# PODMAN_FLAGS overrides the global flags. The default, `--runtime runc --cgroup-manager=cgroupfs`,
# works on hosts with cgroup v1 controllers (where crun refuses "hybrid mode") and on ordinary
# cgroup v2 hosts alike.
# shellcheck shell=bash

read -r -a podman_flags <<<"${PODMAN_FLAGS:---runtime runc --cgroup-manager=cgroupfs}"

pm() {
	podman "${podman_flags[@]}" "$@"
}

podman_say() { printf '%s: %s\n' "${podman_tool:-podman}" "$*"; }
podman_die() {
	printf '%s: error: %s\n' "${podman_tool:-podman}" "$*" >&2
	exit 1
}

# Installs podman and what it runs with from Debian (no registry image is ever pulled), and
# makes the one setting rootful podman needs in a container sandbox whose RLIMIT_NOFILE cannot
# be raised: containers keep the limit they are given. Writes containers.conf only when the
# file does not exist, so an operator's own settings are never overwritten.
podman_setup() {
	local missing=() package
	for package in podman runc fuse-overlayfs slirp4netns uidmap catatonit \
		golang-github-containernetworking-plugin-dnsname debootstrap; do
		if ! dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("${package}")
		fi
	done
	if ((${#missing[@]})); then
		((EUID == 0)) || podman_die "apt packages missing (${missing[*]}): run as root"
		podman_say "installing ${missing[*]} (apt)"
		local log
		log=$(mktemp)
		if ! DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 install -y \
			--no-install-recommends "${missing[@]}" >"${log}" 2>&1; then
			DEBIAN_FRONTEND=noninteractive apt-get -q update >>"${log}" 2>&1 || true
			DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=120 install -y \
				--no-install-recommends "${missing[@]}" >>"${log}" 2>&1 || {
				cat "${log}" >&2
				podman_die "apt-get install ${missing[*]} failed (output above)"
			}
		fi
		rm -f "${log}"
	fi
	if [[ ! -e /etc/containers/containers.conf ]] && ! (ulimit -n 1048576) 2>/dev/null; then
		((EUID == 0)) || podman_die "/etc/containers/containers.conf is missing and RLIMIT_NOFILE cannot be raised: run as root once"
		mkdir -p /etc/containers
		printf '%s\n' '# Written by Dime (k8s/images/podman.sh): this host cannot raise RLIMIT_NOFILE,' \
			'# so containers keep the limit podman is started with.' \
			'[containers]' 'default_ulimits = []' >/etc/containers/containers.conf
		podman_say "wrote /etc/containers/containers.conf (default_ulimits = [])"
	fi
}
