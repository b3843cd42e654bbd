#!/usr/bin/env bash
# Runs one KRaft broker+controller node in the foreground (process-compose supervises it).
# Usage: kafka.sh [NODE_ID]; node 1 listens on KAFKA_PORT/KAFKA_CONTROLLER_PORT, node N on
# KAFKA_N_PORT/KAFKA_N_CONTROLLER_PORT. KAFKA_BROKERS (1 or 3) is the size of the quorum.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
: "${RUN_DIR:?}" "${CACHE_DIR:?}" "${KAFKA_PORT:?}" "${KAFKA_CONTROLLER_PORT:?}"
node="${1:-1}"
brokers="${KAFKA_BROKERS:-1}"
[[ "$brokers" == 1 || "$brokers" == 3 ]] || { echo "KAFKA_BROKERS must be 1 or 3" >&2; exit 2; }

ports() {  # the client and controller ports of node $1
  if [[ "$1" == 1 ]]; then echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT"; else
    local client="KAFKA_$1_PORT" controller="KAFKA_$1_CONTROLLER_PORT"
    echo "${!client:?} ${!controller:?}"
  fi
}
voters=""
for n in $(seq 1 "$brokers"); do
  read -r _ controller <<<"$(ports "$n")"
  voters+="${voters:+,}$n@127.0.0.1:$controller"
done
read -r port controller_port <<<"$(ports "$node")"
rf=$brokers
min_isr=$((brokers > 1 ? 2 : 1))

# A quorum keeps its own data: a single node's log cannot join a three-node cluster.
if [[ "$brokers" == 1 ]]; then cluster="$RUN_DIR/kafka"; state="$cluster"; else
  cluster="$RUN_DIR/kafka-quorum"; state="$cluster/node-$node"
fi
data="$state/data"
config="$state/server.properties"
classpath="$CACHE_DIR/kafka/libs/*"
java_opts=(
  ${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/kafka/log4j2.xml"
  -cp "$classpath"
)

mkdir -p "$data"
# Ports may change between runs, so the config is rendered on every start.
sed -e "s|@KAFKA_PORT@|$port|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$controller_port|g" \
    -e "s|@KAFKA_NODE_ID@|$node|g" \
    -e "s|@KAFKA_VOTERS@|$voters|g" \
    -e "s|@KAFKA_RF@|$rf|g" \
    -e "s|@KAFKA_MIN_ISR@|$min_isr|g" \
    -e "s|@KAFKA_DATA_DIR@|$data|g" \
    "$here/kafka/server.properties" >"$config"
# With the fault points (make up FAULTS=..., links.yaml) the services reach the broker through
# Toxiproxy: a listener of its own, advertised as the link's port, so that the addresses the
# broker hands out keep those clients behind the link; everyone else keeps PLAINTEXT.
if [[ "${LINKS:-}" == 1 && "$node" == 1 ]]; then
  sed -i \
    -e "s|^listeners=.*|&,LINK://127.0.0.1:${KAFKA_LINK_BROKER_PORT:?}|" \
    -e "s|^advertised.listeners=.*|&,LINK://127.0.0.1:${KAFKA_LINK_PORT:?}|" \
    -e "s|^listener.security.protocol.map=.*|&,LINK:PLAINTEXT|" \
    "$config"
fi

# Format once: re-formatting would wipe the topics and committed offsets of the last run.
if [[ ! -f "$data/meta.properties" ]]; then
  # A cluster id is a random UUID in unpadded URL-safe base64; made here to spare a JVM start.
  # Every node of a quorum must share it: the first to start links its id into place.
  candidate="$cluster/cluster-id.$node"
  "${PYTHON:-python3}" -I -S -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' >"$candidate"
  ln "$candidate" "$cluster/cluster-id" 2>/dev/null || true
  rm -f "$candidate"
  java "${java_opts[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format \
    --cluster-id="$(cat "$cluster/cluster-id")" --config "$config"
fi

exec java "${java_opts[@]}" kafka.Kafka "$config"
