#!/usr/bin/env bash
# Runs one regional store's MongoDB-protocol server in the foreground: mongod when installed,
# else FerretDB 2 in front of the region's own PostgreSQL with DocumentDB (postgres.sh).
# usage: store.sh REGION PORT PG_PORT
set -euo pipefail

region="$1" port="$2" pg_port="$3"
: "${RUN_DIR:?}"
data="$RUN_DIR/stores/$region"
mkdir -p "$data"

if [[ "${STORE_IMPL:-ferretdb}" == mongod ]]; then
  exec mongod --bind_ip 127.0.0.1 --port "$port" --dbpath "$data" --replSet "$region" \
    --wiredTigerCacheSizeGB 0.25 --quiet
fi

# Authentication on: clients log in as PostgreSQL roles (postgres.sh makes `regionstore`).
# FerretDB's own connection, with the superuser's password, is read from a file (0600) so the
# password is on no command line.
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set: start the stack with make up}"
mkdir -p "$data/ferretdb"
# Started in any order with the region's PostgreSQL (process-compose has no dependency between
# them, see stores/ferretdb.yaml): wait until it accepts connections, so FerretDB's first
# connections are not refused while it starts or recovers.
pg_isready=("chroot" "${DOCDB_ROOT:?}" /usr/lib/postgresql/18/bin/pg_isready -q -h 127.0.0.1 -p "$pg_port")
if ! "${pg_isready[@]}"; then
  echo "$region: waiting for PostgreSQL on :$pg_port"
  until "${pg_isready[@]}"; do sleep 0.5; done
fi
url_file="$data/ferretdb/postgresql-url"
(umask 077 && printf 'postgres://postgres:%s@127.0.0.1:%s/postgres\n' "$POSTGRES_PASSWORD" "$pg_port" \
  >"$url_file")
exec "${FERRETDB:?}" \
  --postgresql-url-file="$url_file" \
  --listen-addr="127.0.0.1:$port" --state-dir="$data/ferretdb" --debug-addr=- \
  --telemetry=disable --auth --log-level="${FERRETDB_LOG_LEVEL:-warn}"
