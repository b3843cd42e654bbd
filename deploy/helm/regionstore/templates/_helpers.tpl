{{/* Names, labels and the settings every service shares. */}}

{{- define "regionstore.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "regionstore.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "regionstore.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "regionstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: regionstore
{{- end -}}

{{/* Labels of one component: include "regionstore.componentLabels" (list . "gateway") */}}
{{- define "regionstore.componentLabels" -}}
{{ include "regionstore.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "regionstore.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regionstore.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Every pod of the release's own workloads (the services and Redis). */}}
{{- define "regionstore.releasePods" -}}
app.kubernetes.io/name: {{ include "regionstore.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "regionstore.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Kafka: the Strimzi cluster, its client listener and the users. */}}
{{- define "regionstore.kafkaName" -}}
{{- include "regionstore.fullname" . -}}
{{- end -}}

{{- define "regionstore.kafkaPort" -}}
{{- ternary 9093 9092 .Values.kafka.tls -}}
{{- end -}}

{{- define "regionstore.kafkaBootstrap" -}}
{{- printf "%s-kafka-bootstrap.%s.svc:%s" (include "regionstore.kafkaName" .) .Release.Namespace (include "regionstore.kafkaPort" .) -}}
{{- end -}}

{{/* The user KEDA reads the groups' lag as; Strimzi makes its password, in a Secret of its name. */}}
{{- define "regionstore.lagReader" -}}
{{- printf "%s-lag-reader" (include "regionstore.fullname" .) -}}
{{- end -}}

{{/* Strimzi's cluster CA certificate, which it keeps in this Secret. */}}
{{- define "regionstore.kafkaCaSecret" -}}
{{- printf "%s-cluster-ca-cert" (include "regionstore.kafkaName" .) -}}
{{- end -}}

{{/* The services' settings names, as regionstore_shared.settings defaults them. */}}
{{- define "regionstore.topics" -}}
commands: customers.commands
deadletter: customers.deadletter
audit: audit.events
keys: customers.keys
pendingPrefix: pending.
writerGroup: regionstore.writer
replicatorGroup: regionstore.replicator
recoveryGroupPrefix: regionstore.recovery.
{{- end -}}

{{/* A region's replica set: include "regionstore.storeName" (list . "region_1") */}}
{{- define "regionstore.storeName" -}}
{{- printf "%s-store-%s" (include "regionstore.fullname" (index . 0)) (index . 1 | replace "_" "-") -}}
{{- end -}}

{{/* The replica set's members by their stable names, as the operator names them. */}}
{{- define "regionstore.storeUri" -}}
{{- $root := index . 0 -}}
{{- $name := include "regionstore.storeName" . -}}
{{- $hosts := list -}}
{{- range $i := until (int $root.Values.mongodb.members) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s-svc.%s.svc.%s:27017" $name $i $name $root.Release.Namespace $root.Values.clusterDomain) -}}
{{- end -}}
{{- printf "mongodb://%s/?replicaSet=%s&w=majority" (join "," $hosts) $name -}}
{{- end -}}

{{- define "regionstore.redisName" -}}
{{- printf "%s-redis" (include "regionstore.fullname" .) -}}
{{- end -}}

{{- define "regionstore.idempotencyRedisName" -}}
{{- printf "%s-redis-idempotency" (include "regionstore.fullname" .) -}}
{{- end -}}

{{/* Settings a user may not set through .Values.settings: the chart sets them, or they are
     secret (and belong in a Secret). */}}
{{- define "regionstore.reservedSettings" -}}
^REGIONSTORE_(ENVIRONMENT|REGIONS|LOG_LEVEL|NODE_ID|NODE_LEASE_TTL_S|HTTP__[A-Z_]+|STORES__[A-Z0-9_]+|STORE__(USERNAME|DATABASE)|REDIS__(URL|USERNAME)|IDEMPOTENCY_REDIS__(URL|USERNAME)|KAFKA__(BOOTSTRAP_SERVERS|SECURITY_PROTOCOL|SASL_[A-Z_]+|PARTITIONS|REPLICATION_FACTOR|[A-Z_]*TOPIC|[A-Z_]*TOPIC_PREFIX|[A-Z_]*GROUP|[A-Z_]*GROUP_PREFIX))$
{{- end -}}

{{/* Fails, naming the value, when a required value is missing or the values contradict each
     other. Included by the ConfigMap, which every render has. */}}
{{- define "regionstore.validate" -}}
{{- $v := .Values -}}
{{- if not $v.regions -}}
{{- fail "regions is required: the region map, a list of {name, zip_min, zip_max, replicas} (see values.yaml)" -}}
{{- end -}}
{{- $names := list -}}
{{- range $region := $v.regions -}}
{{- if has $region.name $names -}}
{{- fail (printf "regions: %s is listed twice" $region.name) -}}
{{- end -}}
{{- $names = append $names $region.name -}}
{{- end -}}
{{- range $region := $v.regions -}}
{{- if gt (int $region.zip_min) (int $region.zip_max) -}}
{{- fail (printf "regions: %s has zip_min %v above zip_max %v" $region.name $region.zip_min $region.zip_max) -}}
{{- end -}}
{{- range $replica := $region.replicas -}}
{{- if eq $replica $region.name -}}
{{- fail (printf "regions: %s cannot be its own replica" $region.name) -}}
{{- end -}}
{{- if not (has $replica $names) -}}
{{- fail (printf "regions: %s replicates to %s, which is not a region" $region.name $replica) -}}
{{- end -}}
{{- end -}}
{{- range $other := $v.regions -}}
{{- if and (ne $other.name $region.name) (le (int $other.zip_min) (int $region.zip_max)) (ge (int $other.zip_max) (int $region.zip_min)) -}}
{{- fail (printf "regions: the zip ranges of %s and %s overlap" $region.name $other.name) -}}
{{- end -}}
{{- end -}}
{{- $store := include "regionstore.storeName" (list $ $region.name) -}}
{{- if gt (len $store) 48 -}}
{{- fail (printf "regions: the replica set name %s is longer than 48 characters: shorten the release name or the region's" $store) -}}
{{- end -}}
{{- end -}}
{{- range $name, $secret := $v.secrets -}}
{{- $_ := required (printf "secrets.%s.name is required: the name of an existing Secret holding %s under the key secrets.%s.key" $name $secret.key $name) $secret.name -}}
{{- if or (eq $secret.name $v.kafka.user) (eq $secret.name (include "regionstore.lagReader" $)) -}}
{{- fail (printf "secrets.%s.name: %s is the name of a Kafka user, whose Secret Strimzi writes: name your Secret otherwise" $name $secret.name) -}}
{{- end -}}
{{- end -}}
{{- if gt (int $v.kafka.replicationFactor) (int $v.kafka.replicas) -}}
{{- fail (printf "kafka.replicationFactor is %v, above kafka.replicas (%v): a topic cannot have more replicas than there are brokers" $v.kafka.replicationFactor $v.kafka.replicas) -}}
{{- end -}}
{{- $leases := add (int $v.gateway.autoscaling.maxReplicas) (int $v.gateway.maxSurge) -}}
{{- if gt $leases 64 -}}
{{- fail (printf "gateway.autoscaling.maxReplicas + gateway.maxSurge is %d: at most 64 gateway processes can hold a clock id at once" $leases) -}}
{{- end -}}
{{- if gt (int $v.gateway.autoscaling.minReplicas) (int $v.gateway.autoscaling.maxReplicas) -}}
{{- fail "gateway.autoscaling.minReplicas is above gateway.autoscaling.maxReplicas" -}}
{{- end -}}
{{- range $component := list "writer" "replicator" -}}
{{- $scaling := (index $v $component).autoscaling -}}
{{- if gt (int $scaling.maxReplicas) (int $v.kafka.partitions) -}}
{{- fail (printf "%s.autoscaling.maxReplicas is %v, above kafka.partitions (%v): a consumer beyond the partition count has nothing to do" $component $scaling.maxReplicas $v.kafka.partitions) -}}
{{- end -}}
{{- if gt (int $scaling.minReplicas) (int (include "regionstore.maxConsumers" (list $ $component))) -}}
{{- fail (printf "%s.autoscaling.minReplicas is above its maxReplicas (kafka.partitions when 0)" $component) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $v.settings -}}
{{- if not (hasPrefix "REGIONSTORE_" $key) -}}
{{- fail (printf "settings.%s: only REGIONSTORE_* settings belong here" $key) -}}
{{- end -}}
{{- if regexMatch "(?i)(PASSWORD|SECRET)" $key -}}
{{- fail (printf "settings.%s is a secret: it comes from secrets.*, never from values" $key) -}}
{{- end -}}
{{- if regexMatch (include "regionstore.reservedSettings" $) $key -}}
{{- fail (printf "settings.%s is set by the chart from its own values (see values.yaml)" $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A consumer's most replicas: its maxReplicas, or the partition count when 0. */}}
{{- define "regionstore.maxConsumers" -}}
{{- $root := index . 0 -}}
{{- $max := int (index $root.Values (index . 1)).autoscaling.maxReplicas -}}
{{- ternary $max (int $root.Values.kafka.partitions) (gt $max 0) -}}
{{- end -}}

{{/* The region map as the services read it: only the fields of a RegionSpec. */}}
{{- define "regionstore.regionsJson" -}}
{{- $regions := list -}}
{{- range $region := .Values.regions -}}
{{- $regions = append $regions (dict "name" $region.name "zip_min" (int $region.zip_min) "zip_max" (int $region.zip_max) "replicas" (default (list) $region.replicas)) -}}
{{- end -}}
{{- toJson $regions -}}
{{- end -}}

{{/*
The services' pod: include "regionstore.servicePod" (dict "root" . "component" "writer"
"module" "regionstore_writer" "port" 8101 "secrets" (list ...) "env" (list ...)).
The passwords are files in /run/secrets, named as the settings read them
(regionstore_kafka__sasl_password is REGIONSTORE_KAFKA__SASL_PASSWORD), as with Docker secrets.
*/}}
{{- define "regionstore.servicePod" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "regionstore.componentLabels" (list $root .component) | nindent 4 }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: 30
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "regionstore.selectorLabels" (list $root .component) | nindent 16 }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector:
        matchLabels:
          {{- include "regionstore.selectorLabels" (list $root .component) | nindent 10 }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ include "regionstore.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["python", "-m", {{ .module | quote }}]
      envFrom:
        - configMapRef:
            name: {{ include "regionstore.fullname" $root }}-config
      env:
        - name: REGIONSTORE_HTTP__PORT
          value: {{ .port | quote }}
        {{- if .state }}
        - name: REGIONSTORE_STATE_DIR
          value: /var/lib/regionstore/state
        {{- end }}
        {{- range .env }}
        - name: {{ .name }}
          value: {{ .value | quote }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .port }}
          protocol: TCP
      # The process is up (served by the health listener before the work starts), ready once
      # its clients are open; a slow first start (topics, indexes, placement tables) is allowed.
      startupProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 5
        timeoutSeconds: 4
        failureThreshold: 60
      livenessProbe:
        httpGet: {path: /healthz, port: http}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      readinessProbe:
        httpGet: {path: /readyz, port: http}
        periodSeconds: 5
        timeoutSeconds: 4
        failureThreshold: 3
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - {name: secrets, mountPath: /run/secrets, readOnly: true}
        - {name: tmp, mountPath: /tmp}
        {{- if .state }}
        - {name: state, mountPath: /var/lib/regionstore/state}
        {{- end }}
        {{- if $v.kafka.tls }}
        - {name: kafka-ca, mountPath: /etc/regionstore/kafka-ca, readOnly: true}
        {{- end }}
  volumes:
    - name: secrets
      projected:
        defaultMode: 0440
        sources:
          {{- range .secrets }}
          {{- $secret := index $v.secrets . }}
          - secret:
              name: {{ $secret.name }}
              items:
                - key: {{ $secret.key }}
                  path: {{ index (include "regionstore.secretFiles" $root | fromYaml) . }}
          {{- end }}
    - name: tmp
      emptyDir: {sizeLimit: 64Mi}
    {{- with .state }}
    # The placement tables on disk: kept across container restarts, so a restarted consumer
    # resumes from its mark; a new pod reads them from Kafka before it joins its group.
    - name: state
      emptyDir: {sizeLimit: {{ .sizeLimit }}}
    {{- end }}
    {{- if $v.kafka.tls }}
    - name: kafka-ca
      secret:
        secretName: {{ include "regionstore.kafkaCaSecret" $root }}
        items:
          - {key: ca.crt, path: ca.crt}
    {{- end }}
{{- end -}}

{{/* The file each secret is mounted as: the setting it is, lowercased (CommonSettings reads
     /run/secrets/<name>). */}}
{{- define "regionstore.secretFiles" -}}
kafka: regionstore_kafka__sasl_password
redis: regionstore_redis__password
idempotencyRedis: regionstore_idempotency_redis__password
store: regionstore_store__password
auth: regionstore_auth__secret
{{- end -}}
