{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "luna-plugins.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name holds it. */}}
{{- define "luna-plugins.fullname" -}}
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

{{- define "luna-plugins.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "luna-plugins.labels" -}}
helm.sh/chart: {{ include "luna-plugins.chart" . }}
{{ include "luna-plugins.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: luna-plugins
{{- end }}

{{- define "luna-plugins.selectorLabels" -}}
app.kubernetes.io/name: {{ include "luna-plugins.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector of the operator. */}}
{{- define "luna-plugins.operatorLabels" -}}
{{ include "luna-plugins.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "luna-plugins.operatorSelectorLabels" -}}
{{ include "luna-plugins.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "luna-plugins.sidecarLabels" -}}
{{ include "luna-plugins.labels" . }}
app.kubernetes.io/component: sidecar
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "luna-plugins.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "luna-plugins.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the sidecar's Role is bound to (and the services' pods should use). */}}
{{- define "luna-plugins.sidecarServiceAccountName" -}}
{{- if .Values.sidecar.serviceAccount.create }}
{{- default (printf "%s-sidecar" (include "luna-plugins.fullname" .) | trunc 63 | trimSuffix "-") .Values.sidecar.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.sidecar.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag of the image; the tag defaults to the chart's appVersion. */}}
{{- define "luna-plugins.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
The sidecar container, for the pod spec of a service that LunaPlugins extend. Include it in the
`containers` list of your own workload (this chart as a dependency, or copy the output of
`helm template`):

  containers:
    - name: handlers
      image: ...
    {{- include "luna-plugins.sidecarContainer" (dict "context" $ "service" "handlers") | nindent 4 }}

Parameters (a dict):
  context          required: the root context ($). With this chart as a dependency named
                   luna-plugins, its values and appVersion are used (`.Subcharts`)
  service          the service's name (LUNA_SIDECAR_SERVICE); default values.sidecar.service
  values           values to read image, sidecar and securityContext from (e.g. with an aliased
                   dependency); default this chart's values
  image            the full image reference; default the chart's image
  name             the container name; default luna-sidecar
  logLevel         default values.sidecar.logLevel
  resources        default values.sidecar.resources
  extraEnv         more EnvVars (list)

The pod also needs `serviceAccountName` set to a ServiceAccount the sidecar Role is bound to
(see `luna-plugins.sidecarServiceAccountName`). Admin intake (8081) listens on 127.0.0.1 only:
the service container posts its events there.
*/}}
{{- define "luna-plugins.sidecarContainer" -}}
{{- $ctx := .context -}}
{{- $chart := $ctx.Chart -}}
{{- $values := $ctx.Values -}}
{{- with $ctx.Subcharts }}{{ with index . "luna-plugins" }}
{{- $chart = .Chart }}{{ $values = .Values }}
{{- end }}{{ end -}}
{{- if .values }}{{ $values = .values }}{{ end -}}
{{- $sidecar := $values.sidecar | default dict -}}
{{- $image := .image -}}
{{- if not $image -}}
{{- $repository := required "luna-plugins.sidecarContainer: pass `image` or values with image.repository" (($values.image | default dict).repository) -}}
{{- $image = printf "%s:%s" $repository (default $chart.AppVersion ($values.image.tag) | toString) -}}
{{- end -}}
- name: {{ .name | default "luna-sidecar" }}
  image: {{ $image | quote }}
  {{- with ($values.image | default dict).pullPolicy }}
  imagePullPolicy: {{ . }}
  {{- end }}
  args: ["sidecar"]
  env:
    - name: LUNA_SIDECAR_SERVICE
      value: {{ .service | default $sidecar.service | default "handlers" | quote }}
    - name: LUNA_SIDECAR_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: LUNA_SIDECAR_POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: LUNA_SIDECAR_POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    - name: LUNA_SIDECAR_LOG_LEVEL
      value: {{ .logLevel | default $sidecar.logLevel | default "INFO" | quote }}
    {{- with .extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: plugin-routes
      containerPort: 8080
      protocol: TCP
    - name: plugin-metrics
      containerPort: 9100
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: plugin-metrics
    periodSeconds: 10
    timeoutSeconds: 3
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: plugin-metrics
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 2
  {{- with (.resources | default $sidecar.resources) }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: luna-sidecar-tmp
      mountPath: /tmp
{{- end }}

{{/*
The volume the sidecar container mounts on /tmp (its root filesystem is read-only). Include it
in the pod's `volumes` list next to the container:

  volumes:
    {{- include "luna-plugins.sidecarVolumes" . | nindent 4 }}
*/}}
{{- define "luna-plugins.sidecarVolumes" -}}
- name: luna-sidecar-tmp
  emptyDir: {}
{{- end }}

{{/* Prometheus scrape annotations for a pod running the sidecar (metrics on 9100). */}}
{{- define "luna-plugins.sidecarPodAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "9100"
prometheus.io/path: /metrics
{{- end }}
