#!/usr/bin/env bash
# Runs one of the local stack's Redis instances in the foreground: redis.sh PORT [NAME]
# NAME (default redis) picks the config NAME.conf beside this script and the data directory
# RUN_DIR/NAME: `redis` for the control plane, `redis-idempotency` for the idempotency records.
# Clients log in as the user `regionstore` with REDIS_PASSWORD (RUN_DIR/secrets/redis_password,
# which stackctl makes); the passwordless `default` user is off. Only the password's SHA-256 is
# on the command line, which is no way in.
set -euo pipefail

port="$1"
name="${2:-redis}"
: "${RUN_DIR:?}" "${REDIS_PASSWORD:?REDIS_PASSWORD is not set: start the stack with make up}"
hash="$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d' ' -f1)"
mkdir -p "$RUN_DIR/$name"
exec redis-server "$(dirname "$0")/$name.conf" --port "$port" --dir "$RUN_DIR/$name" \
  --user default off --user regionstore on "#$hash" '~*' '&*' '+@all'
