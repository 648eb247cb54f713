#!/usr/bin/env bash
# The dime-postgres image's first start, killed half-way, then started again on the same volume
# (what a liveness probe does to a slow first start): the second start must end with the
# database the first one was making, and a password login to it must work.
#
#   bash k8s/images/test-postgres.sh        (part of make k8s-test; needs make images)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
podman_tool=test-postgres
source k8s/images/podman.sh

image=localhost/dime-postgres:15
name=dime-test-postgres-$$
work=$(mktemp -d)
cleanup() {
	pm rm -f -t 0 "${name}" >/dev/null 2>&1 || true
	rm -rf "${work}"
}
trap cleanup EXIT

pm image exists "${image}" || podman_die "${image} is missing: run make images first"
# The volume, the Secret and the socket's directory as the pod has them: owned by the
# image's user (UID 10003).
mkdir -p "${work}/data" "${work}/secret" "${work}/run"
printf 'test-password' >"${work}/secret/password"
chown -R 10003:10003 "${work}/data" "${work}/secret" "${work}/run"
run_postgres() {
	pm run -d --name "${name}" --user 10003:10003 \
		-e POSTGRES_USER=dime -e POSTGRES_DB=dime \
		-e POSTGRES_PASSWORD_FILE=/etc/dime/postgres/password \
		-e PGDATA=/var/lib/postgresql/data/pgdata \
		-v "${work}/data:/var/lib/postgresql/data" \
		-v "${work}/secret:/etc/dime/postgres:ro" \
		-v "${work}/run:/var/run/postgresql" --tmpfs /tmp \
		"${image}" >/dev/null
}

# 1. Killed once initdb has written PG_VERSION, before the database is made.
run_postgres
killed=0
for ((i = 0; i < 600; i++)); do
	if [[ -n $(find "${work}/data" -name PG_VERSION -print -quit 2>/dev/null) ]]; then
		pm kill -s KILL "${name}" >/dev/null
		killed=1
		break
	fi
	sleep 0.05
done
((killed)) || podman_die "initdb wrote no PG_VERSION within 30 s: $(pm logs "${name}" 2>&1 | tail -5)"
pm rm -f -t 0 "${name}" >/dev/null
podman_say "first start killed after initdb"

# 2. Started again on the same volume.
run_postgres
for ((i = 0; i < 120; i++)); do
	if pm exec "${name}" pg_isready --quiet --host=127.0.0.1 --username=dime --dbname=dime 2>/dev/null; then
		break
	fi
	if [[ $(pm container inspect -f '{{.State.Running}}' "${name}") != true ]]; then
		pm logs "${name}" >&2 || true
		podman_die "after a first start killed half-way, the second start stopped (its log above)"
	fi
	sleep 0.5
done
# Over TCP with the password, as the web app connects.
got=$(pm exec -e PGPASSWORD=test-password "${name}" psql --no-psqlrc --tuples-only --no-align \
	--host=127.0.0.1 --username=dime --dbname=dime --command='SELECT current_database()' 2>&1) || true
if [[ ${got} != dime ]]; then
	pm logs "${name}" >&2 || true
	podman_die "after a first start killed half-way, the database 'dime' is not there: ${got}"
fi
podman_say "passed: the second start made the database, and a password login to it works"
