#!/usr/bin/env bash
# Builds the Debian unstable root that runs PostgreSQL 18 with the DocumentDB extension:
#   docdb-root.sh OUT
# Debian packages DocumentDB (postgresql-18-documentdb) only in unstable, and its binaries need a
# newer libc than a stable host has, so PostgreSQL runs chrooted into OUT. The root is made in
# OUT.tmp and renamed only once it is complete: a half-built root never counts as built.
set -euo pipefail

out="$1"
tmp="$out.tmp"
log="$out.log"
packages=(postgresql-18-documentdb)

fail() {
  echo "error: building the DocumentDB root failed: $1" >&2
  [[ -s "$log" ]] && { echo "last lines of $log:" >&2; tail -n 15 "$log" | sed 's/^/  /' >&2; }
  exit 1
}

trap 'fail "unexpected failure at line $LINENO of $0"' ERR

[[ $EUID -eq 0 ]] || fail "it needs root (debootstrap, chroot, mount); run make as root, or install mongod and use STORE_IMPL=mongod"
for tool in unshare chroot mount; do
  command -v "$tool" >/dev/null || fail "$tool not found (apt-get install util-linux coreutils mount)"
done
if ! command -v debootstrap >/dev/null; then
  echo "installing debootstrap with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } \
    >"$log" 2>&1 || fail "apt-get install debootstrap failed"
fi

# The Debian mirror the host's apt already uses (deb822 URIs: or one-line deb entries), so the
# root comes from wherever this machine is allowed to fetch packages.
mirror="$(
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'
  } | tr ' ' '\n' | grep -E '/debian/?$' | head -n 1
)" || true
mirror="${DOCDB_MIRROR:-$mirror}"
[[ -n "$mirror" ]] || fail "no Debian mirror found in /etc/apt/sources.list*; add one, or set DOCDB_MIRROR"

rm -rf "$tmp" && mkdir -p "$(dirname "$out")"
echo "debootstrap sid from $mirror into $tmp (log: $log)"
debootstrap --variant=minbase sid "$tmp" "$mirror" >"$log" 2>&1 \
  || fail "debootstrap sid from $mirror did not finish (no network to the mirror?)"

# Package scripts must not start servers in the root, and no default cluster is wanted: every
# region initialises its own data directory.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod +x "$tmp/usr/sbin/policy-rc.d"
mkdir -p "$tmp/etc/postgresql-common/createcluster.d" "$tmp/srv/pgdata"
echo "create_main_cluster = false" >"$tmp/etc/postgresql-common/createcluster.d/regionstore.conf"
cp /etc/resolv.conf "$tmp/etc/resolv.conf"

# Unstable's Release file can be past its Valid-Until on a mirror snapshot. /proc is mounted in
# a private mount namespace, so nothing is left mounted whatever happens.
apt=(apt-get -q -o Acquire::Check-Valid-Until=false)
echo "installing ${packages[*]} into the root"
unshare --mount --propagation private bash -c '
  set -e
  mount -t proc proc "$1/proc"
  shift
  DEBIAN_FRONTEND=noninteractive chroot "$@"
' _ "$tmp" "$tmp" bash -c "${apt[*]} update && ${apt[*]} install -y --no-install-recommends ${packages[*]} && apt-get clean" \
  >>"$log" 2>&1 || fail "apt-get install ${packages[*]} in the unstable root failed"

for need in usr/lib/postgresql/18/bin/postgres usr/lib/postgresql/18/lib/pg_documentdb.so \
            usr/lib/postgresql/18/lib/pg_cron.so; do
  [[ -e "$tmp/$need" ]] || fail "/$need is missing from the root"
done
grep -q '^postgres:' "$tmp/etc/passwd" || fail "the root has no postgres user"

rm -rf "$out" && mv "$tmp" "$out"
echo "DocumentDB root ready: $out ($(du -sh "$out" | cut -f1))"
