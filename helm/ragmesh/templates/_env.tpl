{{/*
Environment of one ragmesh container, beyond the ConfigMap it loads with envFrom:
caches on the writable emptyDir, and the secrets this component (and only this
one) needs, each read from a Secret with secretKeyRef. Call with
(dict "root" $ "component" "gateway").
*/}}
{{- define "ragmesh.env" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /cache
- name: HF_HOME
  value: /cache/huggingface
{{- if has .component (list "gateway" "worker") }}
{{- $secret := include "ragmesh.redisPasswordSecret" $root }}
{{- if $secret }}
# defined before RAGMESH_REDIS_URL, which refers to it as $(REDIS_PASSWORD)
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "ragmesh.redisPasswordKey" $root }}
{{- end }}
- name: RAGMESH_REDIS_URL
  value: {{ include "ragmesh.redisUrl" $root | quote }}
{{- end }}
{{- if and (has .component (list "gateway" "worker")) (eq $root.Values.originals.store "s3") }}
{{- $s3secret := include "ragmesh.originalsSecret" $root }}
{{- if $s3secret }}
- name: RAGMESH_BLOB_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3secret }}
      key: {{ $root.Values.originals.s3.accessKeyKey }}
- name: RAGMESH_BLOB_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $s3secret }}
      key: {{ $root.Values.originals.s3.secretKeyKey }}
{{- end }}
{{- end }}
{{- if and (eq .component "retrieval") (include "ragmesh.milvusAuthorization" $root) }}
# the bundled Milvus's root password, from the Secret Milvus itself reads it from;
# defined before RAGMESH_RETRIEVAL_MILVUS_TOKEN, which refers to it
- name: MILVUS_ROOT_PASSWORD
  valueFrom:
    secretKeyRef:
      {{- include "ragmesh.milvusRootPasswordRef" $root | nindent 6 }}
- name: RAGMESH_RETRIEVAL_MILVUS_TOKEN
  value: "root:$(MILVUS_ROOT_PASSWORD)"
{{- end }}
{{- if and (eq .component "retrieval") (not $root.Values.milvus.enabled) $root.Values.externalMilvus.existingSecret }}
- name: RAGMESH_RETRIEVAL_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.externalMilvus.existingSecret }}
      key: {{ $root.Values.externalMilvus.existingSecretKey }}
{{- end }}
{{- if and (eq .component "generation") (eq $root.Values.llm.mode "external") $root.Values.llm.external.existingSecret }}
- name: RAGMESH_GENERATION_LLM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.llm.external.existingSecret }}
      key: {{ $root.Values.llm.external.existingSecretKey }}
{{- end }}
{{- if and (eq .component "gateway") $root.Values.reranker.existingSecret }}
- name: RAGMESH_RERANK_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.reranker.existingSecret }}
      key: {{ $root.Values.reranker.existingSecretKey }}
{{- end }}
{{- if and (eq .component "embedding") (eq $root.Values.embedding.backend "openai") $root.Values.embedding.openai.existingSecret }}
- name: RAGMESH_EMBEDDING_OPENAI_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.embedding.openai.existingSecret }}
      key: {{ $root.Values.embedding.openai.existingSecretKey }}
{{- end }}
{{- include "ragmesh.tracingEnv" . }}
{{- with $values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every ragmesh pod. Call with (dict "root" $ "component" "gateway"). */}}
{{- define "ragmesh.podSpecCommon" -}}
{{- $root := .root }}
{{- $values := index $root.Values .component }}
serviceAccountName: {{ include "ragmesh.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with (default $root.Values.nodeSelector $values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations $values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.affinity $values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod metadata: labels and a checksum of the ConfigMap, so that a config change rolls the pods. */}}
{{- define "ragmesh.podMetadata" -}}
{{- $root := .root }}
labels:
  {{- include "ragmesh.componentLabels" . | nindent 2 }}
  {{- with $root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
  {{- with $root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
