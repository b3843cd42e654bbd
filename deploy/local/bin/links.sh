#!/usr/bin/env bash
# Runs Toxiproxy with the stack's links (deploy/local/links.yaml), rendered from the ports on
# every start: name, where the services dial it, and the dependency behind it.
set -euo pipefail
: "${RUN_DIR:?}" "${TOXIPROXY:?}" "${TOXIPROXY_PORT:?}" "${KAFKA_LINK_PORT:?}"

links=(
  "kafka ${KAFKA_LINK_PORT} ${KAFKA_LINK_BROKER_PORT:?}"
  "redis ${REDIS_LINK_PORT:?} ${REDIS_PORT:?}"
  "redis_idempotency ${IDEMPOTENCY_REDIS_LINK_PORT:?} ${IDEMPOTENCY_REDIS_PORT:?}"
  "region_1 ${REGION_1_LINK_PORT:?} ${REGION_1_PORT:?}"
  "region_2 ${REGION_2_LINK_PORT:?} ${REGION_2_PORT:?}"
  "region_3 ${REGION_3_LINK_PORT:?} ${REGION_3_PORT:?}"
  "gateway ${GATEWAY_LINK_PORT:?} ${GATEWAY_PORT:?}"
  "gateway_2 ${GATEWAY_2_LINK_PORT:?} ${GATEWAY_2_PORT:?}"
)
config="$RUN_DIR/links.json"
{
  echo "["
  for i in "${!links[@]}"; do
    read -r name listen upstream <<<"${links[$i]}"
    sep=$([[ $i -lt $((${#links[@]} - 1)) ]] && echo "," || true)
    printf '  {"name": "%s", "listen": "127.0.0.1:%s", "upstream": "127.0.0.1:%s", "enabled": true}%s\n' \
      "$name" "$listen" "$upstream" "$sep"
  done
  echo "]"
} >"$config"

exec "$TOXIPROXY" -host 127.0.0.1 -port "$TOXIPROXY_PORT" -config "$config"
