#!/bin/bash
# kafka-storage.sh ARGS...: as the script of Kafka's distribution (format, info, ...).
exec java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.xml \
  -cp '/opt/kafka/libs/*' kafka.tools.StorageTool "$@"
