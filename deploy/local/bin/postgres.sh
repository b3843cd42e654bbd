#!/usr/bin/env bash
# Runs one region's PostgreSQL 18 with DocumentDB in the foreground, chrooted into the Debian
# unstable root (see docdb-root.sh):  postgres.sh REGION PORT
# The region's data directory ($RUN_DIR/stores/REGION/pg) is bind-mounted at /srv/pgdata inside
# a private mount namespace, so every region uses the same root and nothing stays mounted after
# the server exits. The first start initialises the cluster and creates the extension.
#
# Every TCP connection logs in with a password (scram-sha-256): `postgres` with
# POSTGRES_PASSWORD (FerretDB's own connection) and `regionstore` with STORE_PASSWORD (the
# services, through FerretDB), both from RUN_DIR/secrets. Only the server's own background jobs
# (pg_cron, DocumentDB's worker) and the setup below use its Unix socket, in the data directory,
# which only the postgres user may open. The passwords are set by a server started without TCP
# for that, on the first start and whenever the secrets change (a cluster made before there were
# passwords included).
set -euo pipefail

region="$1" port="$2"
: "${RUN_DIR:?}" "${DOCDB_ROOT:?}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set: start the stack with make up}"
: "${STORE_PASSWORD:?STORE_PASSWORD is not set: start the stack with make up}"
root="$DOCDB_ROOT"
data="$RUN_DIR/stores/$region/pg"
bin=/usr/lib/postgresql/18/bin

[[ -x "$root$bin/postgres" ]] || { echo "$region: no DocumentDB root at $root: run make tools" >&2; exit 1; }
owner="$(awk -F: '$1 == "postgres" {print $3 ":" $4}' "$root/etc/passwd")"

settings=(
  -c listen_addresses=127.0.0.1 -c "port=$port"
  -c unix_socket_directories=/srv/pgdata -c unix_socket_permissions=0700
  -c hba_file=/srv/pgdata/pg_hba.regionstore.conf
  -c "shared_preload_libraries=pg_cron,pg_documentdb_core,pg_documentdb,pg_documentdb_extended_rum"
  -c cron.database_name=postgres -c cron.log_run=off -c cron.log_statement=off
  -c cron.host=/srv/pgdata -c documentdb.localhost_connection_string=host=/srv/pgdata
  -c shared_buffers=128MB -c max_connections=200
  # DocumentDB's planner for its ordered (composite) indexes, the default index kind: with it a
  # page after a cursor and a zip-plus-state query run in milliseconds, not tens of them.
  -c documentdb.enableCompositeIndexPlanner=on
  # New indexes use DocumentDB's extended RUM access method, the one that can return entries in
  # index order: a list page then walks its index and stops after the page, where the base RUM
  # method reads every match and sorts them (docs/reads.md).
  -c documentdb.alternate_index_handler_name=extended_rum
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

# The client authentication file, rewritten on every start.
write_hba() {
  printf '%s\n' "# Written by deploy/local/bin/postgres.sh on every start." \
    "local all all trust" "host all all 127.0.0.1/32 scram-sha-256" \
    >"$1/pg_hba.regionstore.conf"
  chown "$owner" "$1/pg_hba.regionstore.conf"
}

# Fed to psql on stdin, so no password is on a command line. The secrets are URL-safe base64,
# which needs no quoting in SQL.
credentials_sql() {
  cat <<SQL
ALTER ROLE postgres PASSWORD '$POSTGRES_PASSWORD';
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regionstore') THEN
    CREATE ROLE regionstore LOGIN;
  END IF;
END \$\$;
ALTER ROLE regionstore LOGIN PASSWORD '$STORE_PASSWORD';
GRANT documentdb_readwrite_role TO regionstore;
SQL
}

# setup DIR SQL...: runs the SQL (and the credentials) on a server started only for that,
# reachable on its Unix socket only.
setup() {
  local dir="$1" failed=0
  shift
  write_hba "$dir"
  "${in_root[@]}" "$dir" "$root" "$owner" "$bin/pg_ctl" -D /srv/pgdata -w -t 60 \
    -l /srv/pgdata/init.log -o "${settings[*]} -c listen_addresses=" start >/dev/null
  { echo "SET client_min_messages = warning;"; printf '%s\n' "$@"; credentials_sql; } \
    | "${in_root[@]}" "$dir" "$root" "$owner" "$bin/psql" -X -q -h /srv/pgdata -p "$port" \
      -U postgres -d postgres -v ON_ERROR_STOP=1 \
    || failed=$?
  "${in_root[@]}" "$dir" "$root" "$owner" "$bin/pg_ctl" -D /srv/pgdata -w -m fast stop >/dev/null
  (( failed == 0 )) || { echo "$region: setting up PostgreSQL failed; see $dir/init.log" >&2; exit 1; }
  credentials_id >"$dir/credentials.sha256"
}

# Which secrets the cluster's roles have: a digest, never the secrets.
credentials_id() {
  printf '%s\n' "$POSTGRES_PASSWORD" "$STORE_PASSWORD" | sha256sum | cut -d' ' -f1
}

# The extended RUM method (see settings): made on the first start, and once in a cluster made
# before it was used.
EXTENDED_RUM_SQL="CREATE EXTENSION IF NOT EXISTS documentdb_extended_rum;"
EXTENDED_RUM_MARK=extended_rum.created

if [[ ! -f "$data/PG_VERSION" ]]; then
  echo "$region: initialising PostgreSQL in $data"
  rm -rf "$data.tmp" && mkdir -p "$data.tmp" && chown "$owner" "$data.tmp" && chmod 700 "$data.tmp"
  "${in_root[@]}" "$data.tmp" "$root" "$owner" "$bin/initdb" -D /srv/pgdata -U postgres \
    --auth=reject --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # The extension is created once, before the roles that need its own.
  setup "$data.tmp" "CREATE EXTENSION IF NOT EXISTS documentdb CASCADE;" "$EXTENDED_RUM_SQL"
  touch "$data.tmp/$EXTENDED_RUM_MARK"
  mv "$data.tmp" "$data"
elif [[ ! -f "$data/$EXTENDED_RUM_MARK" ]]; then
  echo "$region: creating the extended RUM index method"
  setup "$data" "$EXTENDED_RUM_SQL"
  touch "$data/$EXTENDED_RUM_MARK"
elif [[ "$(cat "$data/credentials.sha256" 2>/dev/null)" != "$(credentials_id)" ]]; then
  echo "$region: setting the roles' passwords"
  setup "$data"
fi

write_hba "$data"
exec "${in_root[@]}" "$data" "$root" "$owner" "$bin/postgres" -D /srv/pgdata "${settings[@]}"
