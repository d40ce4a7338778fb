{{/* Names and labels. */}}
{{- define "appliance.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "appliance.fullname" -}}
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

{{- define "appliance.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "appliance.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kb-appliance
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "api"). */}}
{{- define "appliance.selectorLabels" -}}
app.kubernetes.io/name: {{ include "appliance.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "appliance.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "appliance.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: (dict "ctx" $ "image" .Values.image "tag" default-tag). */}}
{{- define "appliance.image" -}}
{{- $registry := .image.registry | default .ctx.Values.global.imageRegistry -}}
{{- $repository := .image.repository -}}
{{- if $registry }}{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (toString (.image.tag | default .tag)) -}}
{{- end -}}
{{- end }}

{{- define "appliance.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Qdrant subchart's full name, as that chart computes it. */}}
{{- define "appliance.qdrantFullname" -}}
{{- if .Values.qdrant.fullnameOverride }}
{{- .Values.qdrant.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "qdrant" .Values.qdrant.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "appliance.scale" -}}
{{- if eq .Values.mode "scale" }}true{{ end }}
{{- end }}

{{/* Qdrant URL in scale mode: the subchart's Service, or the external URL. */}}
{{- define "appliance.vectorstoreUrl" -}}
{{- if .Values.qdrant.enabled }}
{{- printf "http://%s:6333" (include "appliance.qdrantFullname" .) }}
{{- else }}
{{- .Values.vectorstore.url }}
{{- end }}
{{- end }}

{{/* Name and base URL of one inference model's Service: (dict "ctx" $ "model" $m). */}}
{{- define "appliance.inferenceName" -}}
{{- printf "%s-llm-%s" (include "appliance.fullname" .ctx) (.model.name | lower | replace "." "-" | replace "_" "-") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "appliance.inferenceUrl" -}}
{{- printf "http://%s:%v/v1" (include "appliance.inferenceName" .) .ctx.Values.inference.port }}
{{- end }}

{{/* Hosts the appliance process may connect to (APPLIANCE_EGRESS__ALLOW), as a JSON list. */}}
{{- define "appliance.egressAllow" -}}
{{- $hosts := list }}
{{- if include "appliance.scale" . }}
{{- $url := include "appliance.vectorstoreUrl" . }}
{{- if $url }}{{ $hosts = append $hosts (urlParse $url).hostname }}{{ end }}
{{- if and .Values.database.url (not .Values.database.existingSecret) }}
{{- $hosts = append $hosts (urlParse .Values.database.url).hostname }}
{{- end }}
{{- if and .Values.redis.url (not .Values.redis.existingSecret) }}
{{- $hosts = append $hosts (urlParse .Values.redis.url).hostname }}
{{- end }}
{{- end }}
{{- range .Values.inference.models }}
{{- $hosts = append $hosts (include "appliance.inferenceName" (dict "ctx" $ "model" .)) }}
{{- end }}
{{- concat $hosts .Values.config.egressAllow | uniq | toJson }}
{{- end }}

{{/* Checks of value combinations the schema cannot express; they fail the render with a reason. */}}
{{- define "appliance.validate" -}}
{{- if include "appliance.scale" . }}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "mode=scale needs PostgreSQL: set database.url or database.existingSecret" }}
{{- end }}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "mode=scale needs Redis: set redis.url or redis.existingSecret" }}
{{- end }}
{{- if not (or .Values.qdrant.enabled .Values.vectorstore.url) }}
{{- fail "mode=scale needs a Qdrant server: set vectorstore.url or qdrant.enabled=true" }}
{{- end }}
{{- else if .Values.qdrant.enabled }}
{{- fail "qdrant.enabled needs mode=scale (embedded mode keeps its Qdrant Edge shard in-process)" }}
{{- end }}
{{- $names := list }}
{{- range .Values.inference.models }}
{{- if has .name $names }}{{ fail (printf "inference.models: the name %q appears twice" .name) }}{{ end }}
{{- $names = append $names .name }}
{{- if not (or .claimName $.Values.inference.modelsClaim) }}
{{- fail (printf "inference.models %q: set its claimName or inference.modelsClaim (the PVC holding the model files)" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.inference.defaultModel (not (has .Values.inference.defaultModel $names)) }}
{{- fail (printf "inference.defaultModel %q is not one of inference.models" .Values.inference.defaultModel) }}
{{- end }}
{{- end }}

{{/* One environment variable from a Secret: (dict "name" ENV "secret" NAME "key" KEY). */}}
{{- define "appliance.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/* The environment of the appliance containers (API and worker). */}}
{{- define "appliance.env" -}}
{{- $secret := include "appliance.fullname" . -}}
envFrom:
  - configMapRef:
      name: {{ include "appliance.fullname" . }}
env:
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_AUTH__ADMIN_KEY" "secret" (.Values.auth.existingSecret | default $secret) "key" (ternary .Values.auth.existingSecretKey "admin-key" (ne .Values.auth.existingSecret ""))) | nindent 2 }}
{{- if include "appliance.scale" . }}
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_AUTH__SECRETS_KEY" "secret" (.Values.auth.existingSecret | default $secret) "key" (ternary .Values.auth.existingSecretsKeyKey "secrets-key" (ne .Values.auth.existingSecret ""))) | nindent 2 }}
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_DATABASE__URL" "secret" (.Values.database.existingSecret | default $secret) "key" (ternary .Values.database.existingSecretKey "database-url" (ne .Values.database.existingSecret ""))) | nindent 2 }}
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_REDIS__URL" "secret" (.Values.redis.existingSecret | default $secret) "key" (ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret ""))) | nindent 2 }}
{{- if .Values.qdrant.enabled }}
{{- if .Values.qdrant.apiKey }}
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_VECTORSTORE__API_KEY" "secret" (printf "%s-apikey" (include "appliance.qdrantFullname" .)) "key" "api-key") | nindent 2 }}
{{- end }}
{{- else if .Values.vectorstore.existingSecret }}
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_VECTORSTORE__API_KEY" "secret" .Values.vectorstore.existingSecret "key" .Values.vectorstore.existingSecretKey) | nindent 2 }}
{{- else if .Values.vectorstore.apiKey }}
{{- include "appliance.secretEnv" (dict "name" "APPLIANCE_VECTORSTORE__API_KEY" "secret" $secret "key" "vectorstore-api-key") | nindent 2 }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volumes every appliance pod mounts besides its data dir: /tmp (the root filesystem is read-only). */}}
{{- define "appliance.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 4Gi
{{- end }}
