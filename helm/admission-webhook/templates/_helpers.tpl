{{/*
Names, labels, digest-only references and the checks that must hold whatever the values:
a misconfigured release fails at render time instead of running with a weaker posture.
*/}}

{{- define "admission-webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "admission-webhook.fullname" -}}
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

{{- define "admission-webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "admission-webhook.labels" -}}
helm.sh/chart: {{ include "admission-webhook.chart" . }}
{{ include "admission-webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: secure-model-pipeline
{{- end }}

{{- define "admission-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "admission-webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Cluster-scoped objects (webhook configurations): unique per namespace and release. */}}
{{- define "admission-webhook.clusterName" -}}
{{- if .Release.Namespace }}
{{- printf "%s-%s" .Release.Namespace (include "admission-webhook.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "admission-webhook.fullname" . }}
{{- end }}
{{- end }}

{{- define "admission-webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "admission-webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "admission-webhook.tlsSecret" -}}
{{- default (printf "%s-tls" (include "admission-webhook.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{- define "admission-webhook.imageKeysConfigMap" -}}
{{- default (printf "%s-image-keys" (include "admission-webhook.fullname" .)) .Values.imagePolicy.keys.configMap }}
{{- end }}

{{- define "admission-webhook.certificateName" -}}
{{- printf "%s-serving" (include "admission-webhook.fullname" .) }}
{{- end }}

{{/* The Service's in-cluster DNS name, the name the serving certificate must carry. */}}
{{- define "admission-webhook.serviceHost" -}}
{{- printf "%s.%s.svc" (include "admission-webhook.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
"<repository>@<digest>", or fail. Called with (list "image" .Values.image).
*/}}
{{- define "admission-webhook.digestRef" -}}
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
{{- fail (printf "%s.repository %q carries a tag: admission-webhook deploys by digest only; drop the tag and set %s.digest to sha256:<64 hex>" $what $repo $what) }}
{{- end }}
{{- if $v.tag }}
{{- fail (printf "%s.tag %q is set but tags are not accepted: admission-webhook deploys by digest only; set %s.digest to sha256:<64 hex>" $what (toString $v.tag) $what) }}
{{- end }}
{{- if not $digest }}
{{- fail (printf "%s.digest is required: admission-webhook deploys by digest only (%s.digest: sha256:<64 hex>), never by tag" $what $what) }}
{{- end }}
{{- if not (regexMatch "^sha256:[a-f0-9]{64}$" (toString $digest)) }}
{{- fail (printf "%s.digest %q is not a digest (a tag?): expected sha256:<64 lowercase hex>; admission-webhook deploys by digest only" $what (toString $digest)) }}
{{- end }}
{{- printf "%s@%s" $repo $digest }}
{{- end }}

{{/* Every check on values that the schema cannot express. */}}
{{/*
The registry budget of one decision (--registry-timeout): what the API server's
timeoutSeconds leaves after the margin the webhook keeps to answer. Derived, never set.
*/}}
{{- define "admission-webhook.registryTimeout" -}}
{{- sub (int .Values.webhook.timeoutSeconds) (int .Values.webhook.answerMarginSeconds) -}}
{{- end }}

{{- define "admission-webhook.checks" -}}
{{- range .Values.server.extraEnv }}
{{- if and .valueFrom .valueFrom.secretKeyRef }}
{{- fail (printf "server.extraEnv %q reads a Secret: secrets are mounted as read-only files, never passed as environment variables" .name) }}
{{- end }}
{{- end }}
{{- if not (lt (int .Values.webhook.answerMarginSeconds) (int .Values.webhook.timeoutSeconds)) }}
{{- fail (printf "webhook.answerMarginSeconds (%v) must be below webhook.timeoutSeconds (%v): the registry budget of a decision is their difference" .Values.webhook.answerMarginSeconds .Values.webhook.timeoutSeconds) }}
{{- end }}
{{- if not .Values.certManager.enabled }}
{{- $ca := required "caBundle is required unless certManager.enabled: the base64 PEM CA that signed the serving certificate" .Values.caBundle }}
{{- if not (contains "-----BEGIN CERTIFICATE-----" (b64dec $ca)) }}
{{- fail "caBundle must be a base64-encoded PEM certificate bundle (-----BEGIN CERTIFICATE-----)" }}
{{- end }}
{{- end }}
{{- $env := .Values.imagePolicy.env | default dict }}
{{- range $ref := regexFindAll "\\$\\{?[A-Za-z_][A-Za-z0-9_]*\\}?" (.Files.Get "files/image-policy.yaml") -1 }}
{{- $var := trimSuffix "}" (trimPrefix "{" (trimPrefix "$" $ref)) }}
{{- if not (hasKey $env $var) }}
{{- fail (printf "files/image-policy.yaml uses $%s but imagePolicy.env has no %s: the server would refuse to start (exit 3)" $var $var) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "admission-webhook.containerSecurityContext" -}}
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

{{/* Rules shared by both webhooks: pods and every workload kind with a pod template. */}}
{{/*
Exactly the kinds the webhook judges (pipeline/policy/workloads.py KINDS; a test keeps the
two lists equal). A kind the webhook does not know is denied, so never add one here
without teaching the webhook where its images are.
*/}}
{{- define "admission-webhook.rules" -}}
- apiGroups: [""]
  apiVersions: ["v1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["pods", "podtemplates", "replicationcontrollers"]
  scope: Namespaced
- apiGroups: ["apps"]
  apiVersions: ["v1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["deployments", "replicasets", "statefulsets", "daemonsets"]
  scope: Namespaced
- apiGroups: ["batch"]
  apiVersions: ["v1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["jobs", "cronjobs"]
  scope: Namespaced
- apiGroups: ["argoproj.io"]
  apiVersions: ["v1alpha1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["rollouts", "workflows", "workflowtemplates", "cronworkflows"]
  scope: Namespaced
- apiGroups: ["argoproj.io"]
  apiVersions: ["v1alpha1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["clusterworkflowtemplates"]
  scope: Cluster
- apiGroups: ["serving.kserve.io"]
  apiVersions: ["v1beta1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["inferenceservices"]
  scope: Namespaced
- apiGroups: ["serving.kserve.io"]
  apiVersions: ["v1alpha1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["servingruntimes"]
  scope: Namespaced
- apiGroups: ["serving.kserve.io"]
  apiVersions: ["v1alpha1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["clusterservingruntimes", "clusterstoragecontainers"]
  scope: Cluster
{{- end }}

{{/* Never the control plane's namespace nor our own (the webhook must not gate itself). */}}
{{- define "admission-webhook.namespaceSelector" -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- toYaml (uniq (concat (list "kube-system" .Release.Namespace) (.Values.webhook.excludeNamespaces | default list))) | nindent 6 }}
{{- end }}

{{- define "admission-webhook.annotations" -}}
{{- if .Values.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "admission-webhook.certificateName" .) }}
{{- end }}
{{- end }}

{{- define "admission-webhook.clientConfig" -}}
{{- $ctx := index . 0 }}
{{- $path := index . 1 }}
clientConfig:
  service:
    name: {{ include "admission-webhook.fullname" $ctx }}
    namespace: {{ $ctx.Release.Namespace }}
    path: {{ $path }}
    port: 443
  {{- if not $ctx.Values.certManager.enabled }}
  caBundle: {{ $ctx.Values.caBundle }}
  {{- end }}
{{- end }}
