#!/usr/bin/env bash
# Runs the local stack's Redis in the foreground: redis.sh PORT
# Clients log in as the user `regionstore` with REDIS_PASSWORD (RUN_DIR/secrets/redis_password,
# which stackctl makes); the passwordless `default` user is off. Only the password's SHA-256 is
# on the command line, which is no way in.
set -euo pipefail

port="$1"
: "${RUN_DIR:?}" "${REDIS_PASSWORD:?REDIS_PASSWORD is not set: start the stack with make up}"
hash="$(printf '%s' "$REDIS_PASSWORD" | sha256sum | cut -d' ' -f1)"
exec redis-server "$(dirname "$0")/redis.conf" --port "$port" --dir "$RUN_DIR/redis" \
  --user default off --user regionstore on "#$hash" '~*' '&*' '+@all'
