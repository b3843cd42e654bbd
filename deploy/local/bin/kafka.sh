#!/usr/bin/env bash
# Runs the single-node KRaft broker in the foreground (process-compose supervises it).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
: "${RUN_DIR:?}" "${CACHE_DIR:?}" "${KAFKA_PORT:?}" "${KAFKA_CONTROLLER_PORT:?}"
state="$RUN_DIR/kafka"
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
sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@KAFKA_DATA_DIR@|$data|g" \
    "$here/kafka/server.properties" >"$config"

# Format once: re-formatting would wipe the topics and committed offsets of the last run.
if [[ ! -f "$data/meta.properties" ]]; then
  cluster_id="$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid)"
  java "${java_opts[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$config"
fi

exec java "${java_opts[@]}" kafka.Kafka "$config"
