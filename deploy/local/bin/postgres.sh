#!/usr/bin/env bash
# Runs one region's PostgreSQL 18 with DocumentDB in the foreground, chrooted into the Debian
# unstable root (see docdb-root.sh):  postgres.sh REGION PORT
# The region's data directory ($RUN_DIR/stores/REGION/pg) is bind-mounted at /srv/pgdata inside
# a private mount namespace, so every region uses the same root and nothing stays mounted after
# the server exits. The first start initialises the cluster and creates the extension.
set -euo pipefail

region="$1" port="$2"
: "${RUN_DIR:?}" "${DOCDB_ROOT:?}"
root="$DOCDB_ROOT"
data="$RUN_DIR/stores/$region/pg"
bin=/usr/lib/postgresql/18/bin

[[ -x "$root$bin/postgres" ]] || { echo "$region: no DocumentDB root at $root: run make tools" >&2; exit 1; }
owner="$(awk -F: '$1 == "postgres" {print $3 ":" $4}' "$root/etc/passwd")"

settings=(
  -c listen_addresses=127.0.0.1 -c "port=$port" -c unix_socket_directories=
  -c "shared_preload_libraries=pg_cron,pg_documentdb_core,pg_documentdb"
  -c cron.database_name=postgres -c cron.log_run=off -c cron.log_statement=off
  -c shared_buffers=128MB -c max_connections=200
  # DocumentDB's planner for its ordered (composite) indexes, the default index kind: with it a
  # page after a cursor and a zip-plus-state query run in milliseconds, not tens of them.
  -c documentdb.enableCompositeIndexPlanner=on
  # A store's checkpoints and autovacuum are sized for a development machine.
  -c max_wal_size=1GB -c checkpoint_timeout=5min
)

# "${in_root[@]}" DIR COMMAND...: as the postgres user, with DIR bind-mounted at /srv/pgdata.
in_root=(unshare --mount --propagation private bash -c '
  set -e
  mount --bind "$1" "$2/srv/pgdata"
  root="$2" user="$3"
  shift 3
  exec chroot --userspec="$user" "$root" "$@"
' _)

if [[ ! -f "$data/PG_VERSION" ]]; then
  echo "$region: initialising PostgreSQL in $data"
  rm -rf "$data.tmp" && mkdir -p "$data.tmp" && chown "$owner" "$data.tmp" && chmod 700 "$data.tmp"
  "${in_root[@]}" "$data.tmp" "$root" "$owner" "$bin/initdb" -D /srv/pgdata -U postgres \
    --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # The extension is created once, by a server started only for that.
  "${in_root[@]}" "$data.tmp" "$root" "$owner" "$bin/pg_ctl" -D /srv/pgdata -w -t 60 \
    -l /srv/pgdata/init.log -o "${settings[*]}" start >/dev/null
  created=0
  chroot "$root" "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 \
    -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS documentdb CASCADE" \
    || created=$?
  "${in_root[@]}" "$data.tmp" "$root" "$owner" "$bin/pg_ctl" -D /srv/pgdata -w -m fast stop >/dev/null
  (( created == 0 )) || { echo "$region: CREATE EXTENSION documentdb failed; see $data.tmp/init.log" >&2; exit 1; }
  mv "$data.tmp" "$data"
fi

exec "${in_root[@]}" "$data" "$root" "$owner" "$bin/postgres" -D /srv/pgdata "${settings[@]}"
