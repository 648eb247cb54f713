#!/usr/bin/env bash
# Pushes the images `make images` built (localhost/dime-edge, dime-origin, dime-postgres) to a
# registry and prints the kustomize `images:` block that pins each one by the digest the
# registry reported. Paste it into your overlay's kustomization.yaml: the pods then run exactly
# what was pushed, and checkov's CKV_K8S_43 (digest) and CKV_K8S_15 (pull policy) pass.
#   bash k8s/pin-images.sh registry.example.com/dime >>k8s/overlays/prod/images.txt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

registry=${1:?usage: k8s/pin-images.sh REGISTRY (e.g. registry.example.com/dime)}
command -v podman >/dev/null 2>&1 || {
	echo "k8s/pin-images.sh: podman not found (make images builds the images with it)" >&2
	exit 1
}

# The tags k8s/base/kustomization.yaml names: the workspace version, and PostgreSQL's major.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
tag_of() {
	awk -v image="$1" '$2 == "name:" && $3 == image { found = 1 } found && $1 == "newTag:" { gsub(/"/, "", $2); print $2; exit }' \
		k8s/base/kustomization.yaml
}

digests=$(mktemp -d)
trap 'rm -rf "${digests}"' EXIT
echo "images:"
for name in dime-edge dime-origin dime-postgres; do
	tag=$(tag_of "${name}")
	[[ -n ${tag} ]] || tag=${version}
	podman push --digestfile "${digests}/${name}" "localhost/${name}:${tag}" \
		"docker://${registry}/${name}:${tag}" >&2
	printf '  - name: localhost/%s\n    newName: %s/%s\n    digest: %s\n' \
		"${name}" "${registry}" "${name}" "$(cat "${digests}/${name}")"
done
