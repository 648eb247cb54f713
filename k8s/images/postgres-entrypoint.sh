#!/bin/sh
# The dime-postgres image's entrypoint. On the first start (PGDATA has no PG_VERSION) it
# initialises the cluster: the superuser POSTGRES_USER with the password in
# POSTGRES_PASSWORD_FILE (a mounted Secret; never an environment variable), password
# (scram-sha-256) authentication over TCP, and the database POSTGRES_DB. The cluster is made
# beside PGDATA and moved into place whole, so a start killed half-way (a liveness probe on a
# slow node) is begun again at the next start, never left without its database. Then it runs
# postgres listening on every address of the pod. Any other command runs as given.
set -eu

say() { printf 'dime-postgres: %s\n' "$*" >&2; }

if [ "${1:-postgres}" != postgres ]; then
	exec "$@"
fi
[ "$#" -gt 0 ] && shift

: "${PGDATA:?PGDATA must name the data directory}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-${user}}

if [ ! -s "${PGDATA}/PG_VERSION" ]; then
	password_file=${POSTGRES_PASSWORD_FILE:-}
	if [ -z "${password_file}" ]; then
		say "POSTGRES_PASSWORD_FILE is not set: name the file that holds the superuser's password"
		exit 1
	fi
	if [ ! -r "${password_file}" ] || [ ! -s "${password_file}" ]; then
		say "${password_file} (POSTGRES_PASSWORD_FILE) is missing, unreadable or empty"
		exit 1
	fi
	if [ -d "${PGDATA}" ] && [ -n "$(ls -A "${PGDATA}")" ]; then
		say "${PGDATA} (PGDATA) holds files but no PG_VERSION: not a cluster this image made; move them away or name an empty directory"
		exit 1
	fi
	# What a start killed while initialising left behind: begun again from nothing.
	staging="${PGDATA}.initialising"
	rm -rf "${staging}"
	mkdir -p "${staging}"
	chmod 0700 "${staging}"
	say "initialising ${PGDATA}: superuser ${user}, database ${database}"
	initdb --pgdata="${staging}" --username="${user}" --pwfile="${password_file}" \
		--encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
	# initdb allows the loopback addresses only: the web app connects from its own pod.
	printf '%s\n' '# dime-postgres: password authentication from any address of the cluster' \
		'host all all all scram-sha-256' >>"${staging}/pg_hba.conf"
	pg_ctl --pgdata="${staging}" --options="-c listen_addresses=''" --wait --silent start
	if [ "${database}" != postgres ]; then
		psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --username="${user}" --dbname=postgres \
			--set=database="${database}" <<-'SQL'
			CREATE DATABASE :"database";
		SQL
	fi
	pg_ctl --pgdata="${staging}" --mode=fast --wait --silent stop
	# An empty PGDATA (made by hand, or a mount point's own directory) gives way to the cluster.
	if [ -d "${PGDATA}" ]; then
		rmdir "${PGDATA}" || {
			say "cannot replace the empty directory ${PGDATA} (PGDATA) with the new cluster: make PGDATA a subdirectory of the volume"
			exit 1
		}
	fi
	mv "${staging}" "${PGDATA}"
	say "initialised"
fi

exec postgres -c listen_addresses='*' "$@"
