#!/bin/bash
# Starts one node of the quorum with kafka/server.properties: formats its log directory on the
# first start (with the services' SCRAM user, `regionstore`, whose password is the Docker secret
# kafka_password), then runs the broker. Needs only Kafka's own scripts in /opt/kafka/bin.
# Environment: KAFKA_NODE_ID, KAFKA_EXTERNAL_PORT (the host port that publishes 9094), CLUSTER_ID.
set -euo pipefail
: "${KAFKA_NODE_ID:?}" "${KAFKA_EXTERNAL_PORT:?}" "${CLUSTER_ID:?}"

password="$(cat /run/secrets/kafka_password)"
host="$(hostname)"
config=/tmp/server.properties
(
  umask 077
  cat /etc/kafka/regionstore/server.properties
  printf '%s\n' "node.id=$KAFKA_NODE_ID" \
    "advertised.listeners=INTERNAL://$host:9092,EXTERNAL://127.0.0.1:$KAFKA_EXTERNAL_PORT,BROKER://127.0.0.1:9095,REPLICATION://$host:9096" \
    "listener.name.replication.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"regionstore\" password=\"$password\";"
) >"$config"

# A formatted directory is left as it is: formatting again would refuse, or wipe the topics.
# (Checked here too, to spare a restart the tool's JVM.)
if [[ ! -f /var/lib/kafka/data/meta.properties ]]; then
  /opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "$CLUSTER_ID" \
    --config "$config" --add-scram "SCRAM-SHA-512=[name=regionstore,password=$password]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
