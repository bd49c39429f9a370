{{/*
OpenTelemetry's standard variables for one ragmesh container, when tracing.enabled:
every service and the workers export their spans over OTLP/gRPC to tracing.otlpEndpoint,
each under its own service.name (<tracing.serviceNamePrefix>-<component>).
Call with (dict "root" $ "component" "gateway"); nothing when tracing is off.
*/}}
{{- define "ragmesh.tracingEnv" -}}
{{- $tracing := .root.Values.tracing }}
{{- if $tracing.enabled }}
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ required "tracing.otlpEndpoint is required with tracing.enabled (e.g. http://otel-collector.observability:4317)" $tracing.otlpEndpoint | quote }}
- name: OTEL_EXPORTER_OTLP_INSECURE
  value: {{ $tracing.insecure | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" $tracing.serviceNamePrefix .component | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $tracing.sampler | quote }}
{{- if ne (toString $tracing.samplerArg) "" }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $tracing.samplerArg | quote }}
{{- end }}
{{- with $tracing.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ include "ragmesh.otelAttributes" . | quote }}
{{- end }}
{{- if $tracing.headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ $tracing.headersSecret }}
      key: {{ $tracing.headersSecretKey }}
{{- end }}
{{- end }}
{{- end }}

{{/* A map as OTEL_RESOURCE_ATTRIBUTES wants it: key=value,key=value, sorted by key. */}}
{{- define "ragmesh.otelAttributes" -}}
{{- $pairs := list }}
{{- range $key := keys . | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%v" $key (index $ $key)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}
