#!/bin/bash
# One region's store in one container, the stand-in for a MongoDB replica set: PostgreSQL 18 with
# DocumentDB, and FerretDB 2 in front of it on 27017 (the port a mongod member listens on). The
# container ends when either process does, so Docker's restart policy restarts the pair.
#
# Logins, from the same Docker secrets as the MongoDB members: `root` (mongo_root_password, a
# PostgreSQL superuser: the tests make and drop databases) and `regionstore` (store_password,
# DocumentDB's read-write role, for the services). FerretDB's own connection is `postgres` with
# the root password, over TCP with scram-sha-256; only the server's background jobs and this
# script use the Unix socket, in the data directory, which only the postgres user may open.
set -euo pipefail

bin=/usr/lib/postgresql/18/bin
data=/data/db/pg
state=/data/db/ferretdb
root_password="$(cat /run/secrets/mongo_root_password)"
app_password="$(cat /run/secrets/store_password)"

settings=(
  -c listen_addresses=127.0.0.1 -c port=5432
  -c "unix_socket_directories=$data" -c unix_socket_permissions=0700
  -c "hba_file=$data/pg_hba.regionstore.conf"
  -c "shared_preload_libraries=pg_cron,pg_documentdb_core,pg_documentdb,pg_documentdb_extended_rum"
  -c cron.database_name=postgres -c cron.log_run=off -c cron.log_statement=off
  -c "cron.host=$data" -c "documentdb.localhost_connection_string=host=$data"
  -c shared_buffers=128MB -c max_connections=200
  -c documentdb.enableCompositeIndexPlanner=on
  -c documentdb.alternate_index_handler_name=extended_rum
  -c max_wal_size=1GB
)

if [[ ! -f "$data/PG_VERSION" ]]; then
  rm -rf "$data" && install -d -m 700 -o postgres -g postgres "$data"
  runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth=reject --encoding=UTF8 \
    --locale=C.UTF-8 >/dev/null
fi
printf '%s\n' "local all all trust" "host all all 127.0.0.1/32 scram-sha-256" \
  >"$data/pg_hba.regionstore.conf"
chown postgres:postgres "$data/pg_hba.regionstore.conf"

runuser -u postgres -- "$bin/postgres" -D "$data" "${settings[@]}" &
postgres=$!
ferretdb=
trap 'kill -TERM $postgres $ferretdb 2>/dev/null || true; wait' TERM INT
until runuser -u postgres -- "$bin/pg_isready" -q -h "$data"; do
  kill -0 "$postgres" 2>/dev/null || exit 1
  sleep 0.5
done

# Every start: the extension where missing, and the roles' passwords from the secrets (which
# may have changed). Fed on stdin, so no password is on a command line; the secrets are hex.
runuser -u postgres -- "$bin/psql" -X -q -h "$data" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS documentdb CASCADE;
CREATE EXTENSION IF NOT EXISTS documentdb_extended_rum;
ALTER ROLE postgres PASSWORD '$root_password';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regionstore') THEN CREATE ROLE regionstore LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'root') THEN CREATE ROLE root LOGIN SUPERUSER; END IF;
END \$\$;
ALTER ROLE regionstore LOGIN PASSWORD '$app_password';
ALTER ROLE root LOGIN SUPERUSER PASSWORD '$root_password';
GRANT documentdb_readwrite_role TO regionstore;
GRANT documentdb_admin_role TO root;
SQL

install -d -m 700 "$state"
(umask 077 && printf 'postgres://postgres:%s@127.0.0.1:5432/postgres\n' "$root_password" >"$state/postgresql-url")
/usr/local/bin/ferretdb --postgresql-url-file="$state/postgresql-url" --listen-addr=:27017 \
  --state-dir="$state" --debug-addr=127.0.0.1:8088 --telemetry=disable --auth \
  --log-level="${FERRETDB_LOG_LEVEL:-warn}" &
ferretdb=$!
wait -n "$postgres" "$ferretdb" || true
kill -TERM "$postgres" "$ferretdb" 2>/dev/null || true
wait
exit 1
