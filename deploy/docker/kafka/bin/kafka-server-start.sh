#!/bin/bash
# kafka-server-start.sh CONFIG: as the script of Kafka's distribution, for the jars in /opt/kafka/libs.
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -Djava.awt.headless=true -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$@"
