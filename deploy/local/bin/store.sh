#!/usr/bin/env bash
# Runs one regional store in the foreground: mongod when installed, else FerretDB on SQLite.
# usage: store.sh REGION PORT
set -euo pipefail

region="$1" port="$2"
: "${RUN_DIR:?}"
data="$RUN_DIR/stores/$region"
mkdir -p "$data"

if [[ "${STORE_IMPL:-ferretdb}" == mongod ]]; then
  exec mongod --bind_ip 127.0.0.1 --port "$port" --dbpath "$data" --replSet "$region" \
    --wiredTigerCacheSizeGB 0.25 --quiet
fi

# Immediate transactions take SQLite's single write lock at BEGIN and wait for it (busy_timeout);
# deferred ones that upgrade from read to write under concurrent writers stall the store.
exec "${FERRETDB:?}" \
  --handler=sqlite --sqlite-url="file:$data/?_txlock=immediate" --state-dir="$data" \
  --listen-addr="127.0.0.1:$port" --debug-addr=- --telemetry=disable \
  --log-level="${FERRETDB_LOG_LEVEL:-warn}"
