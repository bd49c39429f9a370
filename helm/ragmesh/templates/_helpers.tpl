{{/*
Template helpers. Every name is namespaced with "ragmesh." so that they cannot
collide with the helpers of the Milvus and Redis subcharts.
*/}}

{{/* The chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "ragmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-ragmesh, or the release name alone when it already contains the chart name. */}}
{{- define "ragmesh.fullname" -}}
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

{{/* Name of one component's resources: <fullname>-<component>. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "ragmesh.componentName" -}}
{{- printf "%s-%s" (include "ragmesh.fullname" .root | trunc 50 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object. */}}
{{- define "ragmesh.labels" -}}
helm.sh/chart: {{ include "ragmesh.chart" . }}
app.kubernetes.io/name: {{ include "ragmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragmesh
{{- end }}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "ragmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragmesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects. */}}
{{- define "ragmesh.componentLabels" -}}
{{ include "ragmesh.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ragmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ragmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference; refuses `latest` and empty tags so that deployments are reproducible. */}}
{{- define "ragmesh.imageRef" -}}
{{- $tag := toString (required "an image tag is required" .tag) }}
{{- if eq $tag "latest" }}
{{- fail (printf "image %s: pin a version instead of the tag `latest`" .repository) }}
{{- end }}
{{- printf "%s:%s" .repository $tag }}
{{- end }}

{{- define "ragmesh.image" -}}
{{- include "ragmesh.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}

{{/* The five gRPC services, in the order they appear in the ports table. */}}
{{- define "ragmesh.grpcServices" -}}
gateway chunking embedding retrieval generation
{{- end }}

{{/*
Name of an internal service's headless Service: at most 42 + 1 + 10 + 9 = 62
characters, so that it stays a DNS label whatever the release name.
*/}}
{{- define "ragmesh.headlessName" -}}
{{- printf "%s-%s-headless" (include "ragmesh.fullname" .root | trunc 42 | trimSuffix "-") .component }}
{{- end }}

{{/*
In-cluster address of a gRPC service, as its clients' target: the gateway's
Service as host:port; an internal service's headless Service as a dns:/// target
(every ready pod's address, for round_robin), or its ClusterIP Service when
grpcLoadBalancing is off.
*/}}
{{- define "ragmesh.serviceAddress" -}}
{{- $values := index .root.Values .component }}
{{- if and (ne .component "gateway") .root.Values.grpcLoadBalancing.enabled }}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "ragmesh.headlessName" .) .root.Release.Namespace .root.Values.clusterDomain (int $values.port) }}
{{- else }}
{{- printf "%s:%d" (include "ragmesh.componentName" .) (int $values.port) }}
{{- end }}
{{- end }}

{{/*
Names of the subcharts' objects, computed as the subcharts compute them
(milvus.fullname in milvus-helm, common.names.fullname in Bitnami's charts):
<release>-<chart>, or the release name alone when it already contains the chart
name, or the subchart's fullnameOverride.
*/}}
{{- define "ragmesh.subchartFullname" -}}
{{- $values := index .root.Values .chart | default dict }}
{{- if $values.fullnameOverride }}
{{- $values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .chart .root.Release.Name }}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .root.Release.Name .chart | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Milvus URI: the bundled release's Service, or externalMilvus.uri. */}}
{{- define "ragmesh.milvusUri" -}}
{{- if .Values.milvus.enabled }}
{{- $svc := .Values.milvus.service | default dict }}
{{- printf "http://%s:%d" (include "ragmesh.subchartFullname" (dict "root" . "chart" "milvus")) (int ($svc.port | default 19530)) }}
{{- else }}
{{- required "milvus.enabled is false: set externalMilvus.uri" .Values.externalMilvus.uri }}
{{- end }}
{{- end }}

{{/* S3 endpoint of the originals: originals.s3.endpoint, else the bundled Milvus's MinIO. */}}
{{- define "ragmesh.originalsEndpoint" -}}
{{- if .Values.originals.s3.endpoint }}
{{- .Values.originals.s3.endpoint }}
{{- else if .Values.milvus.enabled }}
{{- $minio := .Values.milvus.minio | default dict }}
{{- $svc := $minio.service | default dict }}
{{- printf "http://%s:%d" (include "ragmesh.subchartFullname" (dict "root" (dict "Values" (dict "minio" $minio) "Release" .Release) "chart" "minio")) (int ($svc.port | default 9000)) }}
{{- end }}
{{- end }}

{{/* Secret of the originals' S3 credentials: originals.s3.existingSecret, else the bundled MinIO's. */}}
{{- define "ragmesh.originalsSecret" -}}
{{- if .Values.originals.s3.existingSecret }}
{{- .Values.originals.s3.existingSecret }}
{{- else if .Values.milvus.enabled }}
{{- $minio := .Values.milvus.minio | default dict }}
{{- $minio.existingSecret | default (include "ragmesh.subchartFullname" (dict "root" (dict "Values" (dict "minio" $minio) "Release" .Release) "chart" "minio")) }}
{{- end }}
{{- end }}

{{/* Redis host:port/db without credentials (the password is added in the pod from a Secret). */}}
{{- define "ragmesh.redisScheme" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tls }}rediss{{ else }}redis{{ end }}
{{- end }}

{{- define "ragmesh.redisHostPort" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s-master:6379" (include "ragmesh.subchartFullname" (dict "root" . "chart" "redis")) }}
{{- else }}
{{- printf "%s:%d" (required "redis.enabled is false: set externalRedis.host" .Values.externalRedis.host) (int .Values.externalRedis.port) }}
{{- end }}
{{- end }}

{{- define "ragmesh.redisDatabase" -}}
{{- if .Values.redis.enabled }}0{{ else }}{{ int .Values.externalRedis.database }}{{ end }}
{{- end }}

{{/* Secret and key holding the Redis password; empty when there is none. */}}
{{- define "ragmesh.redisPasswordSecret" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.enabled }}
{{- $auth := .Values.redis.auth }}
{{- default (include "ragmesh.subchartFullname" (dict "root" . "chart" "redis")) $auth.existingSecret }}
{{- end }}
{{- else }}
{{- .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "ragmesh.redisPasswordKey" -}}
{{- if .Values.redis.enabled }}
{{- default "redis-password" .Values.redis.auth.existingSecretPasswordKey }}
{{- else }}
{{- .Values.externalRedis.existingSecretKey }}
{{- end }}
{{- end }}

{{/* The Redis URL; $(REDIS_PASSWORD) is expanded by the kubelet from the env var set before it. */}}
{{- define "ragmesh.redisUrl" -}}
{{- $user := "" }}
{{- if not .Values.redis.enabled }}{{ $user = .Values.externalRedis.username }}{{ end }}
{{- if include "ragmesh.redisPasswordSecret" . }}
{{- printf "%s://%s:$(REDIS_PASSWORD)@%s/%s" (include "ragmesh.redisScheme" .) $user (include "ragmesh.redisHostPort" .) (include "ragmesh.redisDatabase" .) }}
{{- else }}
{{- printf "%s://%s/%s" (include "ragmesh.redisScheme" .) (include "ragmesh.redisHostPort" .) (include "ragmesh.redisDatabase" .) }}
{{- end }}
{{- end }}

{{/* Base URL of the OpenAI-compatible LLM server. */}}
{{- define "ragmesh.llmBaseUrl" -}}
{{- if eq .Values.llm.mode "vllm" }}
{{- printf "http://%s:%d/v1" (include "ragmesh.componentName" (dict "root" . "component" "vllm")) (int .Values.vllm.port) }}
{{- else }}
{{- required "llm.mode is external: set llm.external.baseUrl" .Values.llm.external.baseUrl }}
{{- end }}
{{- end }}

{{- define "ragmesh.llmModel" -}}
{{- if eq .Values.llm.mode "vllm" }}
{{- default .Values.vllm.model .Values.vllm.servedModelName }}
{{- else }}
{{- .Values.llm.external.model }}
{{- end }}
{{- end }}

{{- define "ragmesh.teiUrl" -}}
{{- printf "http://%s:%d" (include "ragmesh.componentName" (dict "root" . "component" "tei")) (int .Values.tei.port) }}
{{- end }}

{{- define "ragmesh.apiKeysSecret" -}}
{{- default (include "ragmesh.componentName" (dict "root" . "component" "api-keys")) .Values.apiKeys.existingSecret }}
{{- end }}

{{/*
One value of the RAGMESH_* ConfigMap as a string. Helm reads numbers as float64,
so whole numbers are printed as integers (41943040, not 4.194304e+07); lists and
maps become JSON, which pydantic-settings parses.
*/}}
{{- define "ragmesh.configValue" -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) }}
{{- toJson . }}
{{- else if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* Volumes every ragmesh container writes to: the root filesystem is read-only. */}}
{{- define "ragmesh.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.scratchSizeLimit }}
{{- end }}

{{- define "ragmesh.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /cache
{{- end }}

{{/*
Whether the bundled Milvus requires authentication: `common.security.authorizationEnabled`
in the user.yaml the Milvus chart merges into milvus.yaml (milvus.extraConfigFiles).
*/}}
{{- define "ragmesh.milvusAuthorization" -}}
{{- if .Values.milvus.enabled }}
{{- $files := .Values.milvus.extraConfigFiles | default dict }}
{{- $user := fromYaml (index $files "user.yaml" | default "") | default dict }}
{{- if dig "common" "security" "authorizationEnabled" false $user }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The secretKeyRef (as YAML) of the bundled Milvus's root password: the
COMMON_SECURITY_DEFAULTROOTPASSWORD variable of the Milvus component that creates
the root user (standalone, or mixCoordinator in cluster mode). The retrieval
service logs in with the same Secret, so the two cannot drift apart. Fails when
authentication is on without a root password from a Secret.
*/}}
{{- define "ragmesh.milvusRootPasswordRef" -}}
{{- $component := ternary "mixCoordinator" "standalone" (.Values.milvus.cluster.enabled | default false) }}
{{- $values := index .Values.milvus $component | default dict }}
{{- $ref := dict }}
{{- range ($values.extraEnv | default list) }}
{{- if eq .name "COMMON_SECURITY_DEFAULTROOTPASSWORD" }}
{{- if not (and .valueFrom .valueFrom.secretKeyRef) }}
{{- fail (printf "milvus.%s.extraEnv: take COMMON_SECURITY_DEFAULTROOTPASSWORD from a Secret (valueFrom.secretKeyRef), not a literal value" $component) }}
{{- end }}
{{- $ref = .valueFrom.secretKeyRef }}
{{- end }}
{{- end }}
{{- if not $ref }}
{{- fail (printf "the bundled Milvus requires authentication (milvus.extraConfigFiles): give it a root password from a Secret in milvus.%s.extraEnv (COMMON_SECURITY_DEFAULTROOTPASSWORD, valueFrom.secretKeyRef), or turn authorizationEnabled off" $component) }}
{{- end }}
{{- toYaml $ref }}
{{- end }}

{{/* Selector labels of the bundled Milvus's pods (milvus.matchLabels in milvus-helm). */}}
{{- define "ragmesh.milvusPodLabels" -}}
app.kubernetes.io/name: {{ (.Values.milvus.nameOverride | default "milvus") | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
