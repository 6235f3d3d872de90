{{/* Names, labels and the pieces every workload shares. */}}

{{- define "sovereign.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: the release name alone when it already says "sovereign". */}}
{{- define "sovereign.fullname" -}}
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

{{/* fullname-component, for an object of one component (api, worker, beat, agent, ...). */}}
{{- define "sovereign.componentName" -}}
{{- printf "%s-%s" (include "sovereign.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "sovereign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sovereign.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sovereign.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sovereign.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sovereign
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "sovereign.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{- define "sovereign.apiServiceName" -}}
{{- include "sovereign.componentName" (dict "root" . "component" "api") }}
{{- end }}

{{/* The Service the kube-apiserver calls the admission webhooks through. */}}
{{- define "sovereign.webhookServiceName" -}}
{{- include "sovereign.componentName" (dict "root" . "component" "webhooks") }}
{{- end }}

{{/* The names the one server certificate carries: the API's Service and the webhooks'. */}}
{{- define "sovereign.certificateDnsNames" -}}
{{- $ns := .Release.Namespace }}
{{- $names := list }}
{{- range $service := list (include "sovereign.apiServiceName" .) (include "sovereign.webhookServiceName" .) }}
{{- $names = concat $names (list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.cluster.local" $service $ns)) }}
{{- end }}
{{- /* localhost too, so `kubectl port-forward` clients can verify the certificate. */}}
{{- toJson (append $names "localhost") }}
{{- end }}

{{/* The Secret with tls.crt, tls.key and ca.crt (chart-generated or cert-manager's). */}}
{{- define "sovereign.tlsSecretName" -}}
{{- include "sovereign.componentName" (dict "root" . "component" "tls") }}
{{- end }}

{{/* The ServiceAccount whose requests the node-label protection lets through. */}}
{{- define "sovereign.controllerServiceAccount" -}}
{{- include "sovereign.componentName" (dict "root" . "component" "worker") }}
{{- end }}

{{- define "sovereign.apiScheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* The URL agents reach the control plane at. */}}
{{- define "sovereign.controlPlaneUrl" -}}
{{- if .Values.agent.controlPlaneUrl }}
{{- .Values.agent.controlPlaneUrl }}
{{- else }}
{{- printf "%s://%s.%s.svc:%d" (include "sovereign.apiScheme" .) (include "sovereign.apiServiceName" .) .Release.Namespace (int .Values.api.service.port) }}
{{- end }}
{{- end }}

{{/*
The certificate and key the chart generates (tls.mode=generated), made once per render
and kept in .Values so the Secret and both webhooks' caBundle agree; reused from the
Secret already in the cluster on upgrade, so the webhooks keep trusting the same CA.
*/}}
{{- define "sovereign.generatedTLS" -}}
{{- if not (hasKey .Values "__generatedTLS") }}
{{- $secretName := include "sovereign.tlsSecretName" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $tls := dict }}
{{- $names := include "sovereign.certificateDnsNames" . }}
{{- /* Reused only while it still names every Service: an upgrade that adds one (the
webhook listener's, say) gets a new pair, or the API server could not verify it. */}}
{{- $covers := and $existing $existing.metadata.annotations (eq (index $existing.metadata.annotations "sovereign.io/certificate-names" | default "") ($names | sha256sum)) }}
{{- if and $existing $existing.data $covers (hasKey $existing.data "ca.crt") (hasKey $existing.data "tls.crt") (hasKey $existing.data "tls.key") }}
{{- $tls = dict "ca" (index $existing.data "ca.crt" | b64dec) "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec) }}
{{- else }}
{{- $service := include "sovereign.apiServiceName" . }}
{{- $ns := .Release.Namespace }}
{{- $dnsNames := $names | fromJsonArray }}
{{- $ca := genCA (printf "%s-ca" (include "sovereign.fullname" .)) (int .Values.tls.generated.caValidityDays) }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service $ns) (list "127.0.0.1") $dnsNames (int .Values.tls.generated.certValidityDays) $ca }}
{{- $tls = dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key }}
{{- end }}
{{- $_ := set .Values "__generatedTLS" $tls }}
{{- end }}
{{- toJson (get .Values "__generatedTLS") }}
{{- end }}

{{/* What a webhook configuration needs to trust the API: an annotation or a caBundle. */}}
{{- define "sovereign.webhookCAAnnotation" -}}
{{- if eq .Values.tls.mode "certManager" }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "sovereign.tlsSecretName" .) }}
{{- end }}
{{- end }}

{{- define "sovereign.webhookClientConfig" -}}
clientConfig:
  service:
    namespace: {{ .root.Release.Namespace }}
    name: {{ include "sovereign.webhookServiceName" .root }}
    path: {{ .path }}
    port: {{ .root.Values.webhooks.service.port }}
  {{- if eq .root.Values.tls.mode "generated" }}
  caBundle: {{ (include "sovereign.generatedTLS" .root | fromJson).ca | b64enc }}
  {{- end }}
{{- end }}

{{/* Namespaces that never reach the webhooks: the release's own and the system ones. */}}
{{- define "sovereign.webhookNamespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range (prepend .Values.webhooks.exemptNamespaces .Release.Namespace | uniq) }}
        - {{ . | quote }}
        {{- end }}
{{- end }}

{{/*
A CEL test, for matchConditions, that the pod spec at .path asks for GPUs: an nvidia.com/gpu
or nvidia.com/mig-* extended resource in any container or init container, or a DRA claim.
*/}}
{{- define "sovereign.asksForGpus" -}}
{{- $gpu := "(k == 'nvidia.com/gpu' || k.startsWith('nvidia.com/mig-'))" -}}
{{- $inContainer := printf "has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(k, %s)) || (has(c.resources.requests) && c.resources.requests.exists(k, %s)))" $gpu $gpu -}}
{{- printf "(has(%s.containers) && %s.containers.exists(c, %s)) || (has(%s.initContainers) && %s.initContainers.exists(c, %s)) || (has(%s.resourceClaims) && size(%s.resourceClaims) > 0)" .path .path $inContainer .path .path $inContainer .path .path }}
{{- end }}

{{- define "sovereign.gpuMatchConditions" -}}
{{- if .root.Values.webhooks.gpuWorkloadsOnly }}
matchConditions:
  - name: asks-for-gpus
    expression: {{ include "sovereign.asksForGpus" (dict "path" .path) | quote }}
{{- end }}
{{- end }}

{{/* The sovereign.io/* labels of a Node object as "key=value" strings, in CEL. */}}
{{- define "sovereign.sovereignLabels" -}}
{{- printf "(has(%s.metadata.labels) ? %s.metadata.labels.filter(k, k.startsWith('sovereign.io/')).map(k, k + '=' + %s.metadata.labels[k]) : [])" . . . }}
{{- end }}

{{- define "sovereign.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "sovereign.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* SOVEREIGN_* settings every control-plane container reads. */}}
{{- define "sovereign.controlPlaneEnv" -}}
- name: SOVEREIGN_ENV
  value: {{ .Values.environment | quote }}
- name: SOVEREIGN_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: SOVEREIGN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
- name: SOVEREIGN_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.key }}
- name: SOVEREIGN_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretKey.existingSecret }}
      key: {{ .Values.secretKey.key }}
# Beat schedules the node label sync only when it is on (the worker's RBAC follows it too).
- name: SOVEREIGN_KUBERNETES__LABEL_SYNC_ENABLED
  value: {{ .Values.labelSync.enabled | toString | quote }}
# Beat schedules the pod sweep, which evicts revoked pods, only with evictions on (as its RBAC).
- name: SOVEREIGN_KUBERNETES__POD_SWEEP_ENABLED
  value: {{ .Values.evictions.enabled | toString | quote }}
# The checkpoint signing key; mounted only where it signs (worker, API): see sovereign.auditSigningVolume.
- name: SOVEREIGN_AUDIT__SIGNING_KEY_FILE
  value: {{ printf "%s/%s" (include "sovereign.auditSigningDir" .) .Values.auditSigning.key | quote }}
- name: SOVEREIGN_AUDIT__CHECKPOINT_SECONDS
  value: {{ .Values.auditSigning.checkpointSeconds | toString | quote }}
{{- range $name, $value := .Values.settings }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "sovereign.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Refusals for combinations the schema cannot express. */}}
{{- define "sovereign.checks" -}}
{{- if and .Values.webhooks.enabled (not .Values.tls.enabled) }}
{{- fail "webhooks.enabled needs tls.enabled: the API server calls admission webhooks only over HTTPS" }}
{{- end }}
{{- end }}

{{/* A map as the agent's k=v,k2=v2 (sorted, so a render is stable). */}}
{{- define "sovereign.pairs" -}}
{{- $pairs := list }}
{{- range $key := keys . | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%v" $key (index $ $key)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Where the audit signing key's Secret is mounted. */}}
{{- define "sovereign.auditSigningDir" -}}
/etc/sovereign/audit-signing
{{- end }}

{{/* The audit signing key's mount and volume (the worker signs on beat, the API on demand). */}}
{{- define "sovereign.auditSigningMount" -}}
- name: audit-signing
  mountPath: {{ include "sovereign.auditSigningDir" . }}
  readOnly: true
{{- end }}

{{- define "sovereign.auditSigningVolume" -}}
- name: audit-signing
  secret:
    secretName: {{ .Values.auditSigning.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.auditSigning.key }}
        path: {{ .Values.auditSigning.key }}
{{- end }}
