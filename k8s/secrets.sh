#!/usr/bin/env bash
# Writes the credentials the kustomize secretGenerator reads: k8s/base/secrets/postgres-password
# and k8s/base/secrets/web-database-url (the same fresh random password in both). The directory
# is git-ignored; nothing secret is ever committed. Keeps existing files, so running it again
# never changes a deployed password; delete the directory to start over.
#   bash k8s/secrets.sh          (make k8s-secrets)
set -euo pipefail

dir=$(dirname "${BASH_SOURCE[0]}")/base/secrets
password_file=${dir}/postgres-password
url_file=${dir}/web-database-url

if [[ -s ${password_file} && -s ${url_file} ]]; then
	exit 0
fi
if [[ -e ${password_file} || -e ${url_file} ]]; then
	echo "k8s/secrets.sh: ${dir} holds one of the two files: delete both to generate a matching pair" >&2
	exit 1
fi

mkdir -p "${dir}"
chmod 700 "${dir}"
# 128 random bits as 32 hex digits: nothing a URL would need to escape.
password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
umask 077
printf '%s' "${password}" >"${password_file}"
printf 'postgres://dime:%s@postgres:5432/dime' "${password}" >"${url_file}"
echo "k8s/secrets.sh: wrote ${password_file} and ${url_file} (git-ignored)"
