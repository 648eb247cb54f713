#!/usr/bin/env bash
# Builds the base image every Dime image starts from, from Debian packages alone: no registry
# image is pulled. debootstrap (variant minbase) installs Debian 12 into a directory, apt
# upgrades it from the security suite, and `podman import` turns the directory into
# localhost/dime-base:bookworm. Kept when it exists: FORCE=1 rebuilds it.
#   bash k8s/images/base.sh                     (make images runs it first)
# DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR default to the host's apt sources.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
podman_tool=base
source ./podman.sh

readonly image=${DIME_BASE_IMAGE:-localhost/dime-base:bookworm}

if [[ ${FORCE:-0} != 1 ]] && pm image exists "${image}"; then
	exit 0
fi
podman_setup

# The first deb822 `URIs:` (or sources.list `deb` line) of the host names its mirror.
host_mirror() {
	local pattern=$1
	{
		grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{ print $2 }'
		grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{ print $2 }'
	} | grep -m1 -E "${pattern}" || true
}
mirror=${DEBIAN_MIRROR:-$(host_mirror '/debian/?$')}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(host_mirror '/debian-security/?$')}
security=${security:-http://deb.debian.org/debian-security}

rootfs=$(mktemp -d /var/tmp/dime-base.XXXXXX)
cleanup() { rm -rf "${rootfs}"; }
trap cleanup EXIT
log=${rootfs}.log

podman_say "debootstrap --variant=minbase bookworm from ${mirror} (a few minutes)"
if ! debootstrap --variant=minbase bookworm "${rootfs}" "${mirror}" >"${log}" 2>&1; then
	tail -n 30 "${log}" >&2
	podman_die "debootstrap failed (the last lines above; whole log: ${log})"
fi

cat >"${rootfs}/etc/apt/sources.list" <<SOURCES
deb ${mirror} bookworm main
deb ${mirror} bookworm-updates main
deb ${security} bookworm-security main
SOURCES
# Images are built non-interactively and never need docs or man pages.
cat >"${rootfs}/etc/apt/apt.conf.d/90dime" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
APT
cat >"${rootfs}/etc/dpkg/dpkg.cfg.d/90dime-nodoc" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
cp /etc/resolv.conf "${rootfs}/etc/resolv.conf"
podman_say "apt-get upgrade inside it (security updates)"
if ! chroot "${rootfs}" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
	sh -c 'apt-get -q update && apt-get -q -y upgrade && apt-get clean' >>"${log}" 2>&1; then
	tail -n 30 "${log}" >&2
	podman_die "apt-get upgrade in the new root failed (the last lines above)"
fi
rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin "${rootfs}"/var/log/*.log \
	"${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/*
: >"${rootfs}/etc/resolv.conf"
rm -f "${log}"

created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
debian_version=$(cat "${rootfs}/etc/debian_version")
tar --numeric-owner -C "${rootfs}" -c . | pm import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'CMD ["/bin/bash"]' \
	--change "LABEL org.opencontainers.image.title=dime-base" \
	--change "LABEL org.opencontainers.image.description=Debian ${debian_version} minbase, built by debootstrap from ${mirror}" \
	--change "LABEL org.opencontainers.image.created=${created}" \
	--change "LABEL org.opencontainers.image.version=${debian_version}" \
	--message "debootstrap --variant=minbase bookworm ${mirror}" \
	- "${image}" >/dev/null 2>"${rootfs}.import.log" || { cat "${rootfs}.import.log" >&2; podman_die "podman import failed"; }
rm -f "${rootfs}.import.log"
podman_say "built ${image} (Debian ${debian_version}, $(pm image inspect "${image}" --format '{{.Size}}' | numfmt --to=iec))"
