#!/usr/bin/env bash
# The `make k8s-cluster-*` targets: the overlay on a real local cluster, kind or k3s, in four
# steps (docs/kubernetes.md#a-local-cluster). Neither can run on Dime's build machines (no
# Docker engine, no systemd, no kernel modules); `make k8s-test` proves the manifests here with
# podman instead.
#   bash k8s/cluster.sh create    kind: a one-node cluster from k8s/cluster/kind.yaml
#                                 k3s: checks the k3s server is running (install it first)
#   bash k8s/cluster.sh copy      the three images into the cluster's container runtime
#   bash k8s/cluster.sh start     credentials, kubectl apply -k, rollouts, admin and channel
#   bash k8s/cluster.sh clean     kubectl delete -k, then (kind) the cluster itself
# CLUSTER=kind (default) or k3s; OVERLAY=dev (default) or camera.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly cluster=${CLUSTER:-kind} overlay=${OVERLAY:-dev} name=dime
version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
readonly images=("localhost/dime-edge:${version}" "localhost/dime-origin:${version}" localhost/dime-postgres:15)

say() { printf 'k8s-cluster: %s\n' "$*"; }
die() {
	printf 'k8s-cluster: error: %s\n' "$*" >&2
	exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

case ${cluster} in
kind | k3s) ;;
*) die "CLUSTER=${cluster}: kind or k3s" ;;
esac
[[ -d k8s/overlays/${overlay} ]] || die "OVERLAY=${overlay}: no k8s/overlays/${overlay}"

kube() {
	if [[ ${cluster} == kind ]]; then
		kubectl --context "kind-${name}" "$@"
	else
		k3s kubectl "$@"
	fi
}

create() {
	if [[ ${cluster} == kind ]]; then
		need kind "install kind (https://kind.sigs.k8s.io) and Docker or podman"
		if kind get clusters 2>/dev/null | grep -qx "${name}"; then
			say "kind cluster ${name} exists"
		else
			kind create cluster --config k8s/cluster/kind.yaml --wait 120s
		fi
	else
		need k3s "install k3s on this node first (docs/kubernetes.md)"
		k3s kubectl get nodes >/dev/null || die "the k3s server does not answer: systemctl start k3s"
		say "k3s answers: $(k3s kubectl get nodes --no-headers | wc -l) node(s)"
	fi
}

copy() {
	need podman "make images builds the images with podman"
	local image archive
	archive=$(mktemp --suffix=.tar)
	trap 'rm -f "${archive}"' RETURN
	for image in "${images[@]}"; do
		podman image exists "${image}" || die "${image} is missing: make images"
		rm -f "${archive}"
		podman save --format docker-archive -o "${archive}" "${image}"
		if [[ ${cluster} == kind ]]; then
			kind load image-archive "${archive}" --name "${name}"
		else
			k3s ctr images import "${archive}" >/dev/null
		fi
		say "copied ${image}"
	done
}

start() {
	bash k8s/secrets.sh
	kube apply -k "k8s/overlays/${overlay}"
	local workload
	for workload in statefulset/postgres deploy/streamers deploy/packager-camera deploy/web deploy/shield; do
		kube -n dime rollout status "${workload}" --timeout=5m
	done
	local web=(kube -n dime exec deploy/web -- dime-origin web)
	if password=$("${web[@]}" create-admin --db-url-file /etc/dime/database/url --username admin \
		--generate-password 2>/dev/null | tail -n 1); then
		say "admin: user admin, password ${password}"
	else
		say "admin: kept (it exists already)"
	fi
	"${web[@]}" add-channel --db-url-file /etc/dime/database/url --slug camera --name "Live camera" \
		--stream live/camera/index.m3u8 >/dev/null 2>&1 || say "channel camera: kept (it exists already)"
	say "ready: the shield's NodePort is 30080 on every node (kind: http://127.0.0.1:30080/)"
}

clean() {
	kube delete -k "k8s/overlays/${overlay}" --ignore-not-found --wait=true || true
	if [[ ${cluster} == kind ]] && command -v kind >/dev/null 2>&1; then
		kind delete cluster --name "${name}"
	fi
}

case ${1:-} in
create | copy | start | clean) "$1" ;;
*) die "usage: k8s/cluster.sh create|copy|start|clean" ;;
esac
