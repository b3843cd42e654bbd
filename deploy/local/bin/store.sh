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

mkdir -p "$data/ferretdb"
exec "${FERRETDB:?}" \
  --postgresql-url="postgres://postgres@127.0.0.1:$pg_port/postgres" \
  --listen-addr="127.0.0.1:$port" --state-dir="$data/ferretdb" --debug-addr=- \
  --telemetry=disable --no-auth --log-level="${FERRETDB_LOG_LEVEL:-warn}"
