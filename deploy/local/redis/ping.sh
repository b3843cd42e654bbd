#!/usr/bin/env bash
# Readiness probe of the local stack's Redis, logged in as the services are:
#   ping.sh PORT PASSWORD_FILE
set -euo pipefail

REDISCLI_AUTH="$(<"$2")" exec redis-cli --no-auth-warning --user regionstore -h 127.0.0.1 -p "$1" ping
