{{/*
Names, labels, digest-only references and the pod template shared by the Deployment and
the Rollout. Every check that must hold whatever the values lives here, so a misconfigured
release fails at render time instead of running with a weaker posture.
*/}}

{{- define "secure-runtime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "secure-runtime.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "secure-runtime.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (app.kubernetes.io/*) on every object. */}}
{{- define "secure-runtime.labels" -}}
helm.sh/chart: {{ include "secure-runtime.chart" . }}
{{ include "secure-runtime.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference-server
app.kubernetes.io/part-of: secure-model-pipeline
{{- end }}

{{/* Selector labels: immutable on a Deployment, so only name and instance. */}}
{{- define "secure-runtime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secure-runtime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "secure-runtime.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "secure-runtime.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "secure-runtime.trustConfigMap" -}}
{{- if .Values.trust.publicKey }}
{{- printf "%s-trust" (include "secure-runtime.fullname" .) }}
{{- else }}
{{- default (printf "%s-trust" (include "secure-runtime.fullname" .)) .Values.trust.existingConfigMap }}
{{- end }}
{{- end }}

{{- define "secure-runtime.kekSecret" -}}
{{- default (printf "%s-kek" (include "secure-runtime.fullname" .)) .Values.keys.secretName }}
{{- end }}

{{/*
"<repository>@<digest>", or fail. Called with (list "image" .Values.image).
Tags are refused wherever they appear: a tag names whatever was pushed last, while the
signature and the admission policy are bound to one digest.
*/}}
{{- define "secure-runtime.digestRef" -}}
{{- $what := index . 0 }}
{{- $v := index . 1 }}
{{- $repo := $v.repository | default "" }}
{{- $digest := $v.digest | default "" }}
{{- if not $repo }}
{{- fail (printf "%s.repository is required" $what) }}
{{- end }}
{{- if contains "@" $repo }}
{{- fail (printf "%s.repository %q must not contain a digest: put it in %s.digest" $what $repo $what) }}
{{- end }}
{{- if regexMatch ":[^/]*$" $repo }}
{{- fail (printf "%s.repository %q carries a tag: secure-runtime deploys by digest only; drop the tag and set %s.digest to sha256:<64 hex>" $what $repo $what) }}
{{- end }}
{{- if $v.tag }}
{{- fail (printf "%s.tag %q is set but tags are not accepted: secure-runtime deploys by digest only; set %s.digest to sha256:<64 hex>" $what (toString $v.tag) $what) }}
{{- end }}
{{- if not $digest }}
{{- fail (printf "%s.digest is required: secure-runtime deploys by digest only (%s.digest: sha256:<64 hex>), never by tag" $what $what) }}
{{- end }}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" (toString $digest)) }}
{{- fail (printf "%s.digest %q is not a digest (a tag?): expected sha256:<64 lowercase hex>; secure-runtime deploys by digest only" $what (toString $digest)) }}
{{- end }}
{{- printf "%s@%s" $repo $digest }}
{{- end }}

{{/* The --model argument: an OCI reference by digest, or a path in a read-only volume. */}}
{{- define "secure-runtime.modelArg" -}}
{{- if .Values.model.volume.enabled }}
{{- if not .Values.model.volume.claimName }}
{{- fail "model.volume.claimName is required when model.volume.enabled" }}
{{- end }}
{{- if .Values.model.volume.subPath }}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.volume.mountPath) (trimPrefix "/" .Values.model.volume.subPath) }}
{{- else }}
{{- .Values.model.volume.mountPath }}
{{- end }}
{{- else }}
{{- include "secure-runtime.digestRef" (list "model" .Values.model) }}
{{- end }}
{{- end }}

{{/*
Refuse environment entries that read a Secret: key material reaches the process only as a
read-only file, because environments leak (crash dumps, /proc/<pid>/environ, debug output).
*/}}
{{- define "secure-runtime.checkEnv" -}}
{{- range .Values.runtime.extraEnv }}
{{- if and .valueFrom .valueFrom.secretKeyRef }}
{{- fail (printf "runtime.extraEnv %q reads a Secret: secrets and keys are mounted as read-only files, never passed as environment variables" .name) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Node selector: user's, plus the GPU's when enabled. */}}
{{- define "secure-runtime.nodeSelector" -}}
{{- $sel := deepCopy (.Values.nodeSelector | default dict) }}
{{- if .Values.gpu.enabled }}
{{- $sel = merge $sel (deepCopy (.Values.gpu.nodeSelector | default dict)) }}
{{- end }}
{{- if $sel }}
{{- toYaml $sel }}
{{- end }}
{{- end }}

{{/*
Affinity: the user's, plus (GPU) a required node affinity on the labels that NVIDIA GPU
feature discovery sets: nvidia.com/gpu.present for whole GPUs, nvidia.com/<profile>.count for
a MIG profile (mixed strategy), and nvidia.com/gpu.product when products are listed.
*/}}
{{- define "secure-runtime.affinity" -}}
{{- $aff := deepCopy (.Values.affinity | default dict) }}
{{- if .Values.gpu.enabled }}
{{- $exprs := list }}
{{- $res := .Values.gpu.resourceName }}
{{- if hasPrefix "nvidia.com/mig-" $res }}
{{- $exprs = append $exprs (dict "key" (printf "%s.count" $res) "operator" "Exists") }}
{{- else }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/gpu.present" "operator" "In" "values" (list "true")) }}
{{- end }}
{{- if .Values.gpu.products }}
{{- $exprs = append $exprs (dict "key" "nvidia.com/gpu.product" "operator" "In" "values" .Values.gpu.products) }}
{{- end }}
{{- $na := $aff.nodeAffinity | default dict }}
{{- $req := get $na "requiredDuringSchedulingIgnoredDuringExecution" | default dict }}
{{- $terms := $req.nodeSelectorTerms | default list }}
{{- if $terms }}
{{- $newTerms := list }}
{{- range $terms }}
{{- $t := deepCopy . }}
{{- $_ := set $t "matchExpressions" (concat ($t.matchExpressions | default list) $exprs) }}
{{- $newTerms = append $newTerms $t }}
{{- end }}
{{- $terms = $newTerms }}
{{- else }}
{{- $terms = list (dict "matchExpressions" $exprs) }}
{{- end }}
{{- $_ := set $req "nodeSelectorTerms" $terms }}
{{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $req }}
{{- $_ := set $aff "nodeAffinity" $na }}
{{- end }}
{{- if $aff }}
{{- toYaml $aff }}
{{- end }}
{{- end }}

{{- define "secure-runtime.resources" -}}
{{- $res := deepCopy (.Values.resources | default dict) }}
{{- if .Values.gpu.enabled }}
{{- $limits := $res.limits | default dict }}
{{- $_ := set $limits .Values.gpu.resourceName (int .Values.gpu.count) }}
{{- $_ := set $res "limits" $limits }}
{{- if $res.requests }}
{{- $_ := set $res.requests .Values.gpu.resourceName (int .Values.gpu.count) }}
{{- end }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{- define "secure-runtime.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The pod template shared by the Deployment and the Rollout. */}}
{{- define "secure-runtime.podTemplate" -}}
{{- include "secure-runtime.checkEnv" . -}}
metadata:
  labels:
    {{- include "secure-runtime.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or (not .Values.model.volume.enabled) .Values.trust.publicKey .Values.podAnnotations }}
  annotations:
    {{- /* The sealed model the pod loads, by digest: the admission webhook verifies it
    (signature, key provider, attestations) before the pod runs; the runtime pulls the
    same digest. A volume-mounted model has no registry digest to name. */}}
    {{- if not .Values.model.volume.enabled }}
    secure-model-pipeline.dev/model: {{ include "secure-runtime.modelArg" . | quote }}
    {{- end }}
    {{- if .Values.trust.publicKey }}
    checksum/trust: {{ .Values.trust.publicKey | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ include "secure-runtime.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- if and .Values.gpu.enabled .Values.gpu.runtimeClassName }}
  runtimeClassName: {{ .Values.gpu.runtimeClassName }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: secure-runtime
      image: {{ include "secure-runtime.digestRef" (list "image" .Values.image) | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # The interpreter as the image provides it: images built by `pipeline build` have
      # /usr/bin/python3 (their Entrypoint) and no `python`.
      command: ["/usr/bin/python3", "-m", "secure_runtime"]
      args:
        - --model
        - {{ include "secure-runtime.modelArg" . | quote }}
        - --trust
        - {{ printf "%s/%s" (trimSuffix "/" .Values.trust.mountPath) .Values.trust.key | quote }}
        - {{ .Values.keys.argName }}
        - {{ printf "%s/%s" (trimSuffix "/" .Values.keys.mountPath) .Values.keys.key | quote }}
        - --host
        - {{ .Values.runtime.host | quote }}
        - --port
        - {{ .Values.runtime.httpPort | quote }}
        - --grpc-port
        - {{ .Values.runtime.grpcPort | quote }}
        {{- if .Values.gpu.enabled }}
        # A GPU pod must run on its GPU: under `auto` a missing driver would mean CPU, silently.
        - --device
        - cuda
        {{- end }}
        {{- range .Values.runtime.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: PYTHONUNBUFFERED
          value: "1"
        - name: PYTHONDONTWRITEBYTECODE
          value: "1"
        - name: HOME
          value: /tmp
        {{- with .Values.runtime.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.runtime.httpPort }}
          protocol: TCP
        - name: grpc
          containerPort: {{ .Values.runtime.grpcPort }}
          protocol: TCP
      startupProbe:
        httpGet:
          path: /v2/health/live
          port: http
        periodSeconds: {{ .Values.probes.startup.periodSeconds }}
        failureThreshold: {{ .Values.probes.startup.failureThreshold }}
        timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
      livenessProbe:
        httpGet:
          path: /v2/health/live
          port: http
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
        timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
      readinessProbe:
        httpGet:
          path: /v2/health/ready
          port: http
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
        timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
      resources:
        {{- include "secure-runtime.resources" . | nindent 8 }}
      securityContext:
        {{- include "secure-runtime.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: kek
          mountPath: {{ .Values.keys.mountPath }}
          readOnly: true
        - name: trust
          mountPath: {{ .Values.trust.mountPath }}
          readOnly: true
        {{- if .Values.model.volume.enabled }}
        - name: model
          mountPath: {{ .Values.model.volume.mountPath }}
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        medium: Memory
        sizeLimit: {{ .Values.tmp.sizeLimit }}
    {{- if .Values.keys.csi.enabled }}
    - name: kek
      csi:
        driver: {{ required "keys.csi.driver is required when keys.csi.enabled" .Values.keys.csi.driver }}
        readOnly: true
        {{- with .Values.keys.csi.volumeAttributes }}
        volumeAttributes:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with .Values.keys.csi.nodePublishSecretRef }}
        nodePublishSecretRef:
          name: {{ . }}
        {{- end }}
    {{- else }}
    - name: kek
      secret:
        secretName: {{ include "secure-runtime.kekSecret" . }}
        defaultMode: 0440
        optional: false
        items:
          - key: {{ .Values.keys.key }}
            path: {{ .Values.keys.key }}
    {{- end }}
    - name: trust
      configMap:
        name: {{ include "secure-runtime.trustConfigMap" . }}
        defaultMode: 0444
        optional: false
        items:
          - key: {{ .Values.trust.key }}
            path: {{ .Values.trust.key }}
    {{- if .Values.model.volume.enabled }}
    - name: model
      persistentVolumeClaim:
        claimName: {{ .Values.model.volume.claimName }}
        readOnly: true
    {{- end }}
  {{- with (include "secure-runtime.nodeSelector" .) }}
  nodeSelector:
    {{- . | nindent 4 }}
  {{- end }}
  {{- $tol := concat (.Values.tolerations | default list) (ternary (.Values.gpu.tolerations | default list) list .Values.gpu.enabled) }}
  {{- with $tol }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (include "secure-runtime.affinity" .) }}
  affinity:
    {{- . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* interval/count/failureLimit/inconclusiveLimit of one analysis metric. */}}
{{- define "secure-runtime.metricLimits" -}}
interval: {{ .interval | quote }}
count: {{ int .count }}
failureLimit: {{ int .failureLimit }}
inconclusiveLimit: {{ int .inconclusiveLimit }}
{{- end }}
