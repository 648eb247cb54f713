#!/usr/bin/env bash
# `make images`: builds Dime's three images with podman, from Debian packages and this
# repository alone:
#   localhost/dime-edge:VERSION     dime-edge (edge and shield), FROM scratch, UID 10001
#   localhost/dime-origin:VERSION   dime-origin (streamer, packager, web app), UID 10002
#   localhost/dime-postgres:15      PostgreSQL 15 from Debian, UID 10003
# VERSION is the workspace's (Cargo.toml), the tag k8s/base/kustomization.yaml names. First the
# base (base.sh: debootstrap, kept once built) and the builder (the base, build tools and the
# host's Rust toolchain; rebuilt when the toolchain changes). Each image is labelled with its
# version, the git revision, the build time and the base image it was built on.
#   bash k8s/images/build.sh [edge|origin|postgres ...]      (default: all three)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
podman_tool=images
source k8s/images/podman.sh

readonly base=${DIME_BASE_IMAGE:-localhost/dime-base:bookworm}
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[[ -n ${version} ]] || podman_die "no [workspace.package] version in Cargo.toml"

wanted=("$@")
((${#wanted[@]})) || wanted=(edge origin postgres)
for name in "${wanted[@]}"; do
	case ${name} in
	edge | origin | postgres) ;;
	*) podman_die "unknown image '${name}': edge, origin or postgres" ;;
	esac
done

readonly log_dir=${CARGO_TARGET_DIR:-target}/images
mkdir -p "${log_dir}"

podman_setup
DIME_BASE_IMAGE=${base} bash k8s/images/base.sh

# The builder carries the host's toolchain: rustup's downloads are out of reach here, and the
# host's is the one `make build` and CI use. Its tag names the toolchain, so a new one rebuilds.
sysroot=$(rustc --print sysroot) || podman_die "rustc is not on PATH: the builder copies the host's Rust toolchain"
rust_version=$(rustc --version | awk '{ print $2 }')
builder=localhost/dime-builder:bookworm-rust${rust_version}
if ! pm image exists "${builder}"; then
	podman_say "building ${builder} (build tools from Debian, Rust ${rust_version} from ${sysroot})"
	pm build --network host --build-arg BASE="${base}" \
		--label org.opencontainers.image.title=dime-builder \
		--label io.dime.rust="${rust_version}" \
		-f "${PWD}/k8s/images/builder.Containerfile" -t "${builder}" "${sysroot}" \
		>"${log_dir}/builder.log" 2>&1 || {
		tail -n 40 "${log_dir}/builder.log" >&2
		podman_die "building ${builder} failed (the last lines above; whole log: ${log_dir}/builder.log)"
	}
fi

revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ ${revision} != unknown ]] && [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
	revision+=-dirty
fi
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
base_id=$(pm image inspect "${base}" --format '{{.Id}}')
base_version=$(pm image inspect "${base}" --format '{{index .Labels "org.opencontainers.image.version"}}')

build() {
	local name=$1 tag=$2 description=$3
	local image=localhost/dime-${name}:${tag} started=${SECONDS}
	podman_say "building ${image}"
	# --network host: the build stage fetches crates from crates.io, the runtime stage Debian
	# packages, through the host's own resolver and proxy settings.
	pm build --network host --layers "${secret[@]}" \
		--build-arg BASE="${base}" --build-arg BUILDER="${builder}" \
		--label org.opencontainers.image.title="dime-${name}" \
		--label org.opencontainers.image.description="${description}" \
		--label org.opencontainers.image.version="${tag}" \
		--label org.opencontainers.image.revision="${revision}" \
		--label org.opencontainers.image.created="${created}" \
		--label org.opencontainers.image.licenses="Apache-2.0" \
		--label org.opencontainers.image.base.name="${base}" \
		--label org.opencontainers.image.base.digest="sha256:${base_id}" \
		--label io.dime.base.debian="${base_version}" \
		--label io.dime.rust="${rust_version}" \
		-f k8s/images/"${name}".Containerfile -t "${image}" . >"${log_dir}/${name}.log" 2>&1 || {
		tail -n 40 "${log_dir}/${name}.log" >&2
		podman_die "building ${image} failed (the last lines above; whole log: ${log_dir}/${name}.log)"
	}
	podman_say "built ${image} in $((SECONDS - started)) s ($(pm image inspect "${image}" --format '{{.Size}}' | numfmt --to=iec))"
}

# The host's CA bundle, lent to the build stage as a secret (see edge.Containerfile).
ca_bundle=${DIME_BUILD_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
secret=()
[[ -s ${ca_bundle} ]] && secret=(--secret "id=ca-bundle,src=${ca_bundle}")

for name in "${wanted[@]}"; do
	case ${name} in
	edge) build edge "${version}" "Dime's edge: the caching reverse proxy for video, and the in-cluster shield" ;;
	origin) build origin "${version}" "Dime's origin: the streamer, the live HLS packager and the web app" ;;
	postgres) build postgres 15 "PostgreSQL 15 from Debian for Dime's web app" ;;
	esac
done
