{{/*
Pod labels of a pod that runs the sidecar: the PodMonitor of this chart selects them. Add them to
your own workload's pod template next to the sidecar container:

  labels:
    {{- include "luna-plugins.sidecarPodLabels" . | nindent 4 }}
*/}}
{{- define "luna-plugins.sidecarPodLabels" -}}
luna.dev/sidecar: "true"
{{- end }}

{{/* The namespaceSelector of a PodMonitor/ServiceMonitor: the listed namespaces, or all. */}}
{{- define "luna-plugins.monitorNamespaceSelector" -}}
{{- if . }}
matchNames:
  {{- toYaml . | nindent 2 }}
{{- else }}
any: true
{{- end }}
{{- end }}
