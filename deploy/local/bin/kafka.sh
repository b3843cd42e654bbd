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
  # A cluster id is a random UUID in unpadded URL-safe base64; made here to spare a JVM start.
  cluster_id="$("${PYTHON:-python3}" -I -S -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  java "${java_opts[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format \
    --cluster-id="$cluster_id" --config "$config"
fi

exec java "${java_opts[@]}" kafka.Kafka "$config"
