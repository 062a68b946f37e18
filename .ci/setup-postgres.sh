#!/usr/bin/env bash
# Installs and starts a local PostgreSQL for the `sql` adapter tests
# (tests/sql.rs), creates a test role and database, and prints the URL the
# tests read as one `KEY=VALUE` line on stdout:
#
#     ONEWINDOW_TEST_POSTGRES_URL=postgres://onewindow_test:...@127.0.0.1:5432/onewindow_test
#
# Everything else goes to stderr. Idempotent: re-running keeps the cluster,
# resets the role's password and prints the line again. Loopback only.
set -euo pipefail

log() { echo "setup-postgres: $*" >&2; }

ROLE=onewindow_test
DB=onewindow_test
PASSWORD=onewindow_test_pw

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

VERSION=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -q "^${VERSION} main$"; then
    log "creating cluster ${VERSION}/main"
    pg_createcluster "${VERSION}" main >&2
fi

STATUS=$(pg_lsclusters -h | awk -v v="${VERSION}" '$1==v && $2=="main" {print $4}')
PORT=$(pg_lsclusters -h | awk -v v="${VERSION}" '$1==v && $2=="main" {print $3}')
if [ "${STATUS}" != "online" ]; then
    log "starting cluster ${VERSION}/main on port ${PORT}"
    # pg_ctlcluster works without systemd (containers); fall back to the service.
    pg_ctlcluster "${VERSION}" main start >&2 || service postgresql start >&2
fi

for _ in $(seq 1 30); do
    if su postgres -c "psql -qAt -p ${PORT} -c 'select 1'" >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qAt -p ${PORT} $*" >&2; }

if ! su postgres -c "psql -qAt -p ${PORT} -c \"select 1 from pg_roles where rolname='${ROLE}'\"" | grep -q 1; then
    log "creating role ${ROLE}"
    psql_admin "-c \"create role ${ROLE} login password '${PASSWORD}'\""
else
    psql_admin "-c \"alter role ${ROLE} login password '${PASSWORD}'\""
fi
if ! su postgres -c "psql -qAt -p ${PORT} -c \"select 1 from pg_database where datname='${DB}'\"" | grep -q 1; then
    log "creating database ${DB}"
    psql_admin "-c \"create database ${DB} owner ${ROLE}\""
fi

echo "ONEWINDOW_TEST_POSTGRES_URL=postgres://${ROLE}:${PASSWORD}@127.0.0.1:${PORT}/${DB}"
