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

{{- define "vlmguard.rayMode" -}}
{{- if eq (.Values.serving).mode "ray" }}true{{ end -}}
{{- end -}}

{{- define "vlmguard.tritonHost" -}}
{{- printf "%s-triton" (include "vlmguard.fullname" .) -}}
{{- end -}}

{{/* Ray Serve's gRPC proxy port and application name: from config.ray (the service's own keys). */}}
{{- define "vlmguard.rayGrpcPort" -}}
{{- (((.Values.config).ray).grpc_port | default 9000) | int -}}
{{- end -}}

{{- define "vlmguard.rayAppName" -}}
{{- (((.Values.config).ray).app_name | default "vlmguard") -}}
{{- end -}}

{{/* The target backend after the chart's Triton defaulting. */}}
{{- define "vlmguard.targetBackend" -}}
{{- $b := ((.Values.config).target).backend | default "none" -}}
{{- if and .Values.triton.enabled (eq $b "none") }}triton{{ else }}{{ $b }}{{ end -}}
{{- end -}}

{{- define "vlmguard.usesRedis" -}}
{{- if ne .Values.queue.mode "inproc" }}true{{ end -}}
{{- end -}}

{{/* Secrets --------------------------------------------------------------------------- */}}
{{- define "vlmguard.authSecretName" -}}
{{- default (printf "%s-auth" (include "vlmguard.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Legacy plain keys (VLMGUARD_API_KEYS from a Secret): "true" or "". */}}
{{- define "vlmguard.legacyKeys" -}}
{{- if and .Values.auth.enabled (or .Values.auth.apiKeys .Values.auth.existingSecret) }}true{{ end -}}
{{- end -}}

{{/* The keys file (keys bound to tenants and scopes) from a Secret volume: "true" or "". */}}
{{- define "vlmguard.keysFile" -}}
{{- if and .Values.auth.enabled (or .Values.auth.keys .Values.auth.tenantRateLimits .Values.auth.keysExistingSecret) }}true{{ end -}}
{{- end -}}

{{- define "vlmguard.keysSecretName" -}}
{{- default (printf "%s-keys" (include "vlmguard.fullname" .)) .Values.auth.keysExistingSecret -}}
{{- end -}}

{{/* Where the keys file is mounted (a directory mount: Secret updates reach the pod). */}}
{{- define "vlmguard.keysDir" -}}/etc/vlmguard-keys{{- end -}}

{{- define "vlmguard.keysVolume" -}}
{{- if include "vlmguard.keysFile" . }}
- name: api-keys
  secret:
    secretName: {{ include "vlmguard.keysSecretName" . }}
    items:
      - key: {{ ternary .Values.auth.keysExistingSecretKey "keys.yaml" (not (empty .Values.auth.keysExistingSecret)) }}
        path: keys.yaml
{{- end }}
{{- end -}}

{{- define "vlmguard.keysVolumeMount" -}}
{{- if include "vlmguard.keysFile" . }}
- name: api-keys
  mountPath: {{ include "vlmguard.keysDir" . }}
  readOnly: true
{{- end }}
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
{{- if include "vlmguard.keysFile" . -}}
{{- $_ := set $auth "keys_file" (printf "%s/keys.yaml" (include "vlmguard.keysDir" .)) -}}
{{- $_ := set $auth "reload_interval_s" .Values.auth.reloadIntervalS -}}
{{- end -}}
{{- $server := merge (dict "listen" (printf "0.0.0.0:%d" (int .Values.gateway.grpcPort)) "auth" $auth) (get $c "server" | default dict) -}}
{{- $_ := set $c "server" $server -}}
{{- $_ := set $c "metrics" (dict "enabled" (not (include "vlmguard.rayMode" .)) "listen" (printf "0.0.0.0:%d" (int .Values.gateway.metricsPort)) "max_tenant_labels" (int .Values.gateway.metricsMaxTenantLabels)) -}}
{{- if .Values.triton.enabled -}}
{{- $target := deepCopy (get $c "target" | default dict) -}}
{{- if eq ($target.backend | default "none") "none" -}}
{{- $_ := set $target "backend" "triton" -}}
{{- end -}}
{{- if eq $target.backend "triton" -}}
{{- $tr := deepCopy (get $target "triton" | default dict) -}}
{{- if not $tr.url -}}
{{- $_ := set $tr "url" (printf "%s:8001" (include "vlmguard.tritonHost" .)) -}}
{{- end -}}
{{- if not $tr.model_name -}}
{{- $_ := set $tr "model_name" .Values.triton.modelName -}}
{{- end -}}
{{- $_ := set $target "triton" $tr -}}
{{- end -}}
{{- $_ := set $c "target" $target -}}
{{- end -}}
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
{{- if and $v.auth.enabled (not $v.auth.apiKeys) (not $v.auth.existingSecret) (not $v.auth.keys) (not $v.auth.keysExistingSecret) -}}
{{- include "vlmguard.fail" "auth.enabled=true needs API keys: set auth.keys or auth.keysExistingSecret (keys bound to tenants and scopes), or auth.apiKeys (got []) or auth.existingSecret (got \"\") (legacy plain keys), or set auth.enabled=false" -}}
{{- end -}}
{{- range $id, $k := $v.auth.keys -}}
{{- if not (hasPrefix "sha256$" (toString ($k).hash)) -}}
{{- include "vlmguard.fail" (printf "auth.keys.%s.hash must be a salted hash from `vlmguard keys hash` (sha256$...), never the key itself" $id) -}}
{{- end -}}
{{- end -}}
{{- if and $v.auth.keysExistingSecret (or $v.auth.keys $v.auth.tenantRateLimits) -}}
{{- include "vlmguard.fail" (printf "auth.keys/auth.tenantRateLimits and auth.keysExistingSecret=%q are exclusive: set one" $v.auth.keysExistingSecret) -}}
{{- end -}}
{{- if and $v.jobs.eval.enabled $v.auth.enabled $v.auth.apiKeys $v.jobs.eval.tenant (ne $v.jobs.eval.tenant "default") -}}
{{- include "vlmguard.fail" (printf "jobs.eval.tenant=%q: the Job sends the first of auth.apiKeys, a legacy key that acts for the default tenant only; give it a key of auth.keys whose tenants include %q (auth.existingSecret with auth.existingSecretClientKey)" $v.jobs.eval.tenant $v.jobs.eval.tenant) -}}
{{- end -}}
{{- if and $v.jobs.eval.enabled $v.auth.enabled (not $v.auth.apiKeys) (not $v.auth.existingSecret) -}}
{{- include "vlmguard.fail" "jobs.eval.enabled=true with auth.enabled=true needs a plain key for the Job to send: auth.apiKeys, or auth.existingSecret with auth.existingSecretClientKey" -}}
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
{{- range $name := list "gateway" "workers.analyze" "workers.target" "workers.rewrite" -}}
{{- $w := ternary $v.gateway (index $v.workers (trimPrefix "workers." $name)) (eq $name "gateway") -}}
{{- if lt (int $w.replicas) 0 -}}
{{- include "vlmguard.fail" (printf "%s.replicas must be >= 0 (got %v)" $name $w.replicas) -}}
{{- end -}}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.minReplicas) (int $w.autoscaling.maxReplicas)) -}}
{{- include "vlmguard.fail" (printf "%s.autoscaling.minReplicas (got %v) must be <= maxReplicas (got %v)" $name $w.autoscaling.minReplicas $w.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- $backend := include "vlmguard.targetBackend" . -}}
{{- if and (ne $v.queue.mode "inproc") (ne $backend "none") (not $v.workers.target.enabled) -}}
{{- include "vlmguard.fail" (printf "config.target.backend=%q needs workers.target.enabled=true with queue.mode=%s (got false): nothing would run the target stage" $backend $v.queue.mode) -}}
{{- end -}}
{{- $rewriter := (($v.config).rewriter).kind | default "template" -}}
{{- if and (ne $v.queue.mode "inproc") (eq $rewriter "generative") (not $v.workers.rewrite.enabled) -}}
{{- include "vlmguard.fail" (printf "config.rewriter.kind=generative needs workers.rewrite.enabled=true with queue.mode=%s (got false): nothing would run the rewrite stage (tier-2 calls would time out)" $v.queue.mode) -}}
{{- end -}}
{{- if and (ne $v.queue.mode "inproc") $v.workers.rewrite.enabled (ne $rewriter "generative") -}}
{{- include "vlmguard.fail" (printf "workers.rewrite.enabled=true but config.rewriter.kind=%q: only the generative rewriter uses the rewrite stage; set config.rewriter.kind=generative or workers.rewrite.enabled=false" $rewriter) -}}
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
{{- if not (has $v.serving.mode (list "workers" "ray")) -}}
{{- include "vlmguard.fail" (printf "serving.mode must be workers or ray (got %q)" $v.serving.mode) -}}
{{- end -}}
{{- if include "vlmguard.rayMode" . -}}
{{- if ne $v.queue.mode "inproc" -}}
{{- include "vlmguard.fail" (printf "serving.mode=ray runs every stage as a Ray Serve deployment (no Redis queue, no stage workers): set queue.mode=inproc (got %s)" $v.queue.mode) -}}
{{- end -}}
{{- if $v.keda.enabled -}}
{{- include "vlmguard.fail" "serving.mode=ray with keda.enabled=true: KEDA scales stage workers, which ray mode does not run (Ray Serve autoscales); set keda.enabled=false" -}}
{{- end -}}
{{- if $v.gateway.autoscaling.enabled -}}
{{- include "vlmguard.fail" "serving.mode=ray with gateway.autoscaling.enabled=true: there is no gateway Deployment (config.ray.ingress scales the ingress); set it false" -}}
{{- end -}}
{{- if gt (int $v.ray.worker.minReplicas) (int $v.ray.worker.maxReplicas) -}}
{{- include "vlmguard.fail" (printf "ray.worker.minReplicas (got %v) must be <= ray.worker.maxReplicas (got %v)" $v.ray.worker.minReplicas $v.ray.worker.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- if $v.triton.enabled -}}
{{- $src := $v.triton.modelRepository.source -}}
{{- if not (has $src (list "pvc" "objectStore" "image")) -}}
{{- include "vlmguard.fail" (printf "triton.enabled=true needs triton.modelRepository.source: pvc, objectStore or image (got %q)" $src) -}}
{{- end -}}
{{- if and (eq $src "pvc") (not $v.triton.modelRepository.pvc.claimName) -}}
{{- include "vlmguard.fail" "triton.modelRepository.source=pvc needs triton.modelRepository.pvc.claimName (got \"\")" -}}
{{- end -}}
{{- if and (eq $src "objectStore") (not $v.triton.modelRepository.objectStore.uri) -}}
{{- include "vlmguard.fail" "triton.modelRepository.source=objectStore needs triton.modelRepository.objectStore.uri (got \"\")" -}}
{{- end -}}
{{- if ne $backend "triton" -}}
{{- include "vlmguard.fail" (printf "triton.enabled=true but config.target.backend=%q: nothing would call Triton; set config.target.backend=triton (or leave it none) or triton.enabled=false" $backend) -}}
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

{{/* Pod template of a Ray node: (dict "root" $ "node" "head" "spec" .Values.ray.head "grpcPort" 9000).
     KubeRay adds `ray start`, its own probes and the ray.io/* labels. */}}
{{- define "vlmguard.rayPodTemplate" -}}
{{- $root := .root -}}
{{- $ctx := dict "root" $root "component" "ray" -}}
metadata:
  labels:
    {{- include "vlmguard.componentLabels" $ctx | nindent 4 }}
    vlmguard.io/ray-node: {{ .node }}
  annotations:
    {{- include "vlmguard.podChecksums" $root | nindent 4 }}
spec:
  serviceAccountName: {{ include "vlmguard.serviceAccountName" $root }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $root.Values.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ printf "ray-%s" .node }}
      image: {{ include "vlmguard.image" (dict "root" $root "image" $root.Values.ray.image) | quote }}
      imagePullPolicy: {{ $root.Values.ray.image.pullPolicy }}
      ports:
        {{- if eq .node "head" }}
        - {name: gcs-server, containerPort: 6379, protocol: TCP}
        - {name: dashboard, containerPort: 8265, protocol: TCP}
        - {name: client, containerPort: 10001, protocol: TCP}
        {{- end }}
        - {name: serve, containerPort: 8000, protocol: TCP}
        - {name: grpc, containerPort: {{ .grpcPort }}, protocol: TCP}
        - {name: metrics, containerPort: 8080, protocol: TCP}
      env:
        {{- include "vlmguard.env" $root | nindent 8 }}
        {{- if include "vlmguard.legacyKeys" $root }}
        - name: VLMGUARD_API_KEYS
          valueFrom:
            secretKeyRef:
              name: {{ include "vlmguard.authSecretName" $root }}
              key: {{ ternary $root.Values.auth.existingSecretKey "api-keys" (not (empty $root.Values.auth.existingSecret)) }}
        {{- end }}
      resources:
        {{- toYaml .spec.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/vlmguard
          readOnly: true
        - name: tmp
          mountPath: /tmp
        - name: cache
          mountPath: /var/cache/vlmguard
        - name: shared-mem
          mountPath: /dev/shm
        {{- include "vlmguard.keysVolumeMount" $root | nindent 8 }}
  volumes:
    - name: config
      configMap:
        name: {{ include "vlmguard.fullname" $root }}-config
    - name: tmp
      emptyDir:
        sizeLimit: {{ .spec.tmpSizeLimit }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $root.Values.modelCacheSizeLimit }}
    - name: shared-mem
      emptyDir:
        medium: Memory
        sizeLimit: {{ .spec.shmSizeLimit }}
    {{- include "vlmguard.keysVolume" $root | nindent 4 }}
  {{- with .spec.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .spec.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
