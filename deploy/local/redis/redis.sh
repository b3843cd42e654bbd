#!/usr/bin/env bash
# Runs one of the local stack's Redis instances in the foreground: redis.sh PORT [NAME]
# NAME (default redis) picks the config NAME.conf beside this script and the data directory
# RUN_DIR/NAME: `redis` for the control plane, `redis-idempotency` for the idempotency records.
# Clients log in as the user `regionstore` with REDIS_PASSWORD (RUN_DIR/secrets/redis_password,
# which stackctl makes). Nobody can log in as `default`: it has no password at all (resetpass,
# and not nopass). It is not switched off, because Redis 7 replays the append-only file as
# `default`, and with `default` off it silently drops every MULTI/EXEC and every script's writes
# on a restart (redis/redis#14541): region statuses and idempotency records would be lost. Only
# the password's SHA-256 is on the command line, which is no way in.
set -euo pipefail

port="$1"
name="${2:-redis}"
: "${RUN_DIR:?}" "${REDIS_PASSWORD:?REDIS_PASSWORD is not set: start the stack with make up}"
hash="$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d' ' -f1)"
mkdir -p "$RUN_DIR/$name"
exec redis-server "$(dirname "$0")/$name.conf" --port "$port" --dir "$RUN_DIR/$name" \
  --user default on resetpass '~*' '&*' '+@all' --user regionstore on "#$hash" '~*' '&*' '+@all'
