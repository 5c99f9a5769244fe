{{/* Names ------------------------------------------------------------------------------ */}}
{{- define "vlmguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vlmguard.fullname" -}}
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

{{- define "vlmguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vlmguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vlmguard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "vlmguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vlmguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "vlmguard.componentLabels" -}}
{{ include "vlmguard.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vlmguard.componentSelector" -}}
{{ include "vlmguard.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "vlmguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vlmguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Images: (dict "root" $ "image" .Values.image.gateway) */}}
{{- define "vlmguard.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The gateway loads models only with the in-process queue: then it needs the worker image. */}}
{{- define "vlmguard.gatewayImage" -}}
{{- if eq .Values.queue.mode "inproc" -}}
{{- .Values.image.worker | toYaml -}}
{{- else -}}
{{- .Values.image.gateway | toYaml -}}
{{- end -}}
{{- end -}}

{{- define "vlmguard.usesRedis" -}}
{{- if ne .Values.queue.mode "inproc" }}true{{ end -}}
{{- end -}}

{{/* Secrets --------------------------------------------------------------------------- */}}
{{- define "vlmguard.authSecretName" -}}
{{- default (printf "%s-auth" (include "vlmguard.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "vlmguard.redisSecretName" -}}
{{- default (printf "%s-redis" (include "vlmguard.fullname" .)) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "vlmguard.redisSecretKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.existingSecretKey }}{{ else }}redis-password{{ end -}}
{{- end -}}

{{- define "vlmguard.externalSecretName" -}}
{{- default (printf "%s-queue" (include "vlmguard.fullname" .)) .Values.queue.external.existingSecret -}}
{{- end -}}

{{- define "vlmguard.redisHost" -}}
{{- printf "%s-redis" (include "vlmguard.fullname" .) -}}
{{- end -}}

{{/* The Redis password: the given one, the one already in the cluster, or a new random one. */}}
{{- define "vlmguard.redisPassword" -}}
{{- if .Values.redis.auth.password -}}
{{- .Values.redis.auth.password -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "vlmguard.redisSecretName" .) -}}
{{- if and $existing $existing.data (index $existing.data "redis-password") -}}
{{- index $existing.data "redis-password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment of every VLMGuard container: config, secrets, caches. */}}
{{- define "vlmguard.env" -}}
- name: VLMGUARD_CONFIG
  value: /etc/vlmguard/config.yaml
- name: VLMGUARD_CACHE_DIR
  value: /var/cache/vlmguard
- name: HOME
  value: /tmp
- name: HF_HUB_OFFLINE
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- if eq .Values.queue.mode "redis" }}
- name: VLMGUARD_QUEUE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "vlmguard.redisSecretName" . }}
      key: {{ include "vlmguard.redisSecretKey" . }}
{{- else if eq .Values.queue.mode "external" }}
- name: VLMGUARD_QUEUE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "vlmguard.externalSecretName" . }}
      key: {{ .Values.queue.external.existingSecretUrlKey }}
{{- if include "vlmguard.externalPasswordKey" . }}
- name: VLMGUARD_QUEUE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "vlmguard.externalSecretName" . }}
      key: {{ include "vlmguard.externalPasswordKey" . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "vlmguard.externalPasswordKey" -}}
{{- if .Values.queue.external.existingSecret -}}
{{- .Values.queue.external.existingSecretPasswordKey -}}
{{- else if .Values.queue.external.password -}}
password
{{- end -}}
{{- end -}}

{{/* Volumes every VLMGuard pod has: config, /tmp and the model cache (read-only rootfs). */}}
{{- define "vlmguard.volumes" -}}
- name: config
  configMap:
    name: {{ include "vlmguard.fullname" . }}-config
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.modelCacheSizeLimit }}
{{- end -}}

{{- define "vlmguard.volumeMounts" -}}
- name: config
  mountPath: /etc/vlmguard
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/vlmguard
{{- end -}}

{{- define "vlmguard.podChecksums" -}}
checksum/config: {{ include "vlmguard.configYaml" . | sha256sum }}
{{- end -}}

{{/* The VLMGuard config file: .Values.config plus the keys the chart owns. */}}
{{- define "vlmguard.configYaml" -}}
{{- $c := deepCopy (.Values.config | default dict) -}}
{{- $auth := dict "enabled" .Values.auth.enabled "api_keys_env" "VLMGUARD_API_KEYS" -}}
{{- $server := merge (dict "listen" (printf "0.0.0.0:%d" (int .Values.gateway.grpcPort)) "auth" $auth) (get $c "server" | default dict) -}}
{{- $_ := set $c "server" $server -}}
{{- $_ := set $c "metrics" (dict "enabled" true "listen" (printf "0.0.0.0:%d" (int .Values.gateway.metricsPort))) -}}
{{- $queue := deepCopy (get $c "queue" | default dict) -}}
{{- if eq .Values.queue.mode "redis" -}}
{{- $_ := set $queue "url" (printf "redis://%s:6379/0" (include "vlmguard.redisHost" .)) -}}
{{- end -}}
{{- $_ := set $queue "password_env" "VLMGUARD_QUEUE_PASSWORD" -}}
{{- $_ := set $c "queue" $queue -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Validation: fails with the key and the bad value --------------------------------------- */}}
{{- define "vlmguard.fail" -}}
{{- fail (printf "\n\nvlmguard: invalid values: %s\n" .) -}}
{{- end -}}

{{- define "vlmguard.validate" -}}
{{- $v := .Values -}}
{{- if and $v.auth.enabled (not $v.auth.apiKeys) (not $v.auth.existingSecret) -}}
{{- include "vlmguard.fail" "auth.enabled=true needs API keys: set auth.apiKeys (got []) or auth.existingSecret (got \"\"), or set auth.enabled=false" -}}
{{- end -}}
{{- if and $v.auth.apiKeys $v.auth.existingSecret -}}
{{- include "vlmguard.fail" (printf "auth.apiKeys and auth.existingSecret=%q are exclusive: set one" $v.auth.existingSecret) -}}
{{- end -}}
{{- if eq $v.queue.mode "external" -}}
{{- if and (not $v.queue.external.url) (not $v.queue.external.existingSecret) -}}
{{- include "vlmguard.fail" "queue.mode=external needs queue.external.url (got \"\") or queue.external.existingSecret (got \"\")" -}}
{{- end -}}
{{- if and $v.keda.enabled (not $v.queue.external.address) -}}
{{- include "vlmguard.fail" "keda.enabled=true with queue.mode=external needs queue.external.address (host:port for KEDA's scaler; got \"\")" -}}
{{- end -}}
{{- end -}}
{{- range $name := list "gateway" "workers.analyze" "workers.target" -}}
{{- $w := ternary $v.gateway (index $v.workers (trimPrefix "workers." $name)) (eq $name "gateway") -}}
{{- if lt (int $w.replicas) 0 -}}
{{- include "vlmguard.fail" (printf "%s.replicas must be >= 0 (got %v)" $name $w.replicas) -}}
{{- end -}}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.minReplicas) (int $w.autoscaling.maxReplicas)) -}}
{{- include "vlmguard.fail" (printf "%s.autoscaling.minReplicas (got %v) must be <= maxReplicas (got %v)" $name $w.autoscaling.minReplicas $w.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $backend := (($v.config).target).backend | default "none" -}}
{{- if and (ne $v.queue.mode "inproc") (ne $backend "none") (not $v.workers.target.enabled) -}}
{{- include "vlmguard.fail" (printf "config.target.backend=%q needs workers.target.enabled=true with queue.mode=%s (got false): nothing would run the target stage" $backend $v.queue.mode) -}}
{{- end -}}
{{- if and (ne $v.queue.mode "inproc") (not $v.workers.analyze.enabled) -}}
{{- include "vlmguard.fail" (printf "workers.analyze.enabled=false with queue.mode=%s: nothing would run the analyze stage (Guard and Analyze calls would time out)" $v.queue.mode) -}}
{{- end -}}
{{- if and $v.jobs.eval.enabled (not $v.jobs.eval.benchClaimName) -}}
{{- include "vlmguard.fail" "jobs.eval.enabled=true needs jobs.eval.benchClaimName (a PVC with the benchmark sets; got \"\")" -}}
{{- end -}}
{{- if and $v.jobs.eval.enabled $v.auth.enabled $v.auth.existingSecret (not $v.auth.existingSecretClientKey) -}}
{{- include "vlmguard.fail" "jobs.eval.enabled=true with auth.existingSecret needs auth.existingSecretClientKey (the key the Job sends; got \"\")" -}}
{{- end -}}
{{- if $v.jobs.trainAnalyzer.enabled -}}
{{- if not $v.jobs.trainAnalyzer.benchClaimName -}}
{{- include "vlmguard.fail" "jobs.trainAnalyzer.enabled=true needs jobs.trainAnalyzer.benchClaimName (got \"\")" -}}
{{- end -}}
{{- if not $v.jobs.trainAnalyzer.outputClaimName -}}
{{- include "vlmguard.fail" "jobs.trainAnalyzer.enabled=true needs jobs.trainAnalyzer.outputClaimName (where the head is written; got \"\")" -}}
{{- end -}}
{{- end -}}
{{- if and $v.gateway.ingress.enabled (not $v.gateway.ingress.host) -}}
{{- include "vlmguard.fail" "gateway.ingress.enabled=true needs gateway.ingress.host (got \"\")" -}}
{{- end -}}
{{- range $k := list "server.listen" "server.auth" "server.tls" "metrics" "queue.url" "queue.password_env" -}}
{{- $parts := splitList "." $k -}}
{{- $node := $v.config -}}
{{- range $p := $parts -}}{{- if kindIs "map" $node -}}{{- $node = get $node $p -}}{{- else -}}{{- $node = "" -}}{{- end -}}{{- end -}}
{{- if $node -}}
{{- include "vlmguard.fail" (printf "config.%s is set by the chart (got %v): use the chart's own values (gateway.*, auth.*, queue.*)" $k $node) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy egress rule to the queue (nothing with the in-process queue). */}}
{{- define "vlmguard.queueEgress" -}}
{{- if eq .Values.queue.mode "redis" }}
- to:
    - podSelector:
        matchLabels:
          {{- include "vlmguard.componentSelector" (dict "root" . "component" "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else if eq .Values.queue.mode "external" }}
- ports:
    - port: {{ .Values.queue.external.port }}
      protocol: TCP
{{- end }}
{{- end -}}
