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
  logFormat        default values.sidecar.logFormat
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
    - name: LUNA_SIDECAR_LOG_FORMAT
      value: {{ .logFormat | default $sidecar.logFormat | default "text" | quote }}
    # settings from Secrets (spec.settingsFrom): the service's settings Secret, see sidecarVolumes
    - name: LUNA_SIDECAR_SECRET_SETTINGS_DIR
      value: /etc/luna-plugins/settings
    # durable delivery: the queue volume is always there, so any LunaPlugin may ask for at-least-once
    {{- $delivery := $sidecar.delivery | default dict }}
    {{- $retry := $delivery.retry | default dict }}
    {{- $breaker := $delivery.breaker | default dict }}
    - name: LUNA_SIDECAR_QUEUE_DIR
      value: /var/lib/luna-plugins/queues
    - name: LUNA_SIDECAR_DELIVERY
      value: {{ $delivery.mode | default "at-most-once" | quote }}
    - name: LUNA_SIDECAR_QUEUE_MAX_BYTES
      value: {{ $delivery.maxQueueBytes | default 134217728 | int64 | quote }}
    - name: LUNA_SIDECAR_DEAD_LETTERS_MAX_BYTES
      value: {{ $delivery.maxDeadLetterBytes | default 67108864 | int64 | quote }}
    - name: LUNA_SIDECAR_QUEUE_WHEN_FULL
      value: {{ $delivery.whenFull | default "refuse" | quote }}
    - name: LUNA_SIDECAR_RETRY_INITIAL_BACKOFF
      value: {{ $retry.initialBackoffSeconds | default 0.5 | toString | quote }}
    - name: LUNA_SIDECAR_RETRY_MAX_BACKOFF
      value: {{ $retry.maxBackoffSeconds | default 30 | toString | quote }}
    - name: LUNA_SIDECAR_RETRY_MAX_ELAPSED
      value: {{ (hasKey $retry "maxElapsedSeconds" | ternary $retry.maxElapsedSeconds 3600) | toString | quote }}
    - name: LUNA_SIDECAR_BREAKER_FAILURES
      value: {{ $breaker.failures | default 5 | int | quote }}
    - name: LUNA_SIDECAR_BREAKER_OPEN_TIME
      value: {{ $breaker.openSeconds | default 30 | toString | quote }}
    # limits of each plugin that runs in a process of its own (spec.isolation: process)
    {{- $isolation := $sidecar.isolation | default dict }}
    - name: LUNA_SIDECAR_ISOLATED_MEMORY
      value: {{ $isolation.memory | default 268435456 | int64 | quote }}
    - name: LUNA_SIDECAR_ISOLATED_STALL_TIMEOUT
      value: {{ $isolation.stallTimeout | default 10 | toString | quote }}
    - name: LUNA_SIDECAR_ISOLATED_OPEN_FILES
      value: {{ $isolation.openFiles | default 256 | int | quote }}
    - name: LUNA_SIDECAR_ISOLATED_PROCESSES
      value: {{ $isolation.processes | default 64 | int | quote }}
    - name: LUNA_SIDECAR_ISOLATED_CRASH_LIMIT
      value: {{ $isolation.crashLimit | default 5 | int | quote }}
    {{- $packages := $sidecar.packages | default dict }}
    {{- if and $packages.enabled (or $packages.indexUrl $packages.wheelhouse) }}
    - name: LUNA_SIDECAR_PACKAGES_DIR
      value: /var/lib/luna-plugins/packages
    - name: LUNA_SIDECAR_PACKAGES_TIMEOUT
      value: {{ $packages.timeoutSeconds | default 300 | quote }}
    - name: LUNA_SIDECAR_PACKAGES_MAX_BYTES
      value: {{ $packages.maxBytes | default 419430400 | int64 | quote }}
    {{- with $packages.indexUrl }}
    - name: LUNA_SIDECAR_PACKAGES_INDEX_URL
      value: {{ . | quote }}
    {{- end }}
    {{- with $packages.extraIndexUrls }}
    - name: LUNA_SIDECAR_PACKAGES_EXTRA_INDEX_URLS
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with $packages.trustedHosts }}
    - name: LUNA_SIDECAR_PACKAGES_TRUSTED_HOSTS
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with $packages.caConfigMap }}
    - name: LUNA_SIDECAR_PACKAGES_CA_FILE
      value: {{ printf "/etc/luna-plugins/packages-ca/%s" .key | quote }}
    {{- end }}
    {{- if $packages.wheelhouse }}
    - name: LUNA_SIDECAR_PACKAGES_FIND_LINKS
      value: /var/lib/luna-plugins/wheelhouse
    {{- end }}
    {{- if $packages.requireHashes }}
    - name: LUNA_SIDECAR_PACKAGES_REQUIRE_HASHES
      value: "true"
    {{- end }}
    {{- end }}
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
    - name: luna-sidecar-settings
      mountPath: /etc/luna-plugins/settings
      readOnly: true
    - name: luna-sidecar-queues
      mountPath: /var/lib/luna-plugins/queues
    {{- $packages := $sidecar.packages | default dict }}
    {{- if and $packages.enabled (or $packages.indexUrl $packages.wheelhouse) }}
    - name: luna-sidecar-packages
      mountPath: /var/lib/luna-plugins/packages
    {{- if $packages.caConfigMap }}
    - name: luna-sidecar-packages-ca
      mountPath: /etc/luna-plugins/packages-ca
      readOnly: true
    {{- end }}
    {{- if $packages.wheelhouse }}
    - name: luna-sidecar-wheelhouse
      mountPath: /var/lib/luna-plugins/wheelhouse
      readOnly: true
    {{- end }}
    {{- end }}
{{- end }}

{{/*
The volumes the sidecar container mounts: /tmp (its root filesystem is read-only), the service's
settings Secret (`luna-plugins-<service>-settings`: the values of plugins' spec.settingsFrom,
written by the operator; optional, so a service without any needs nothing), the durable delivery
queues (`luna-sidecar-queues`, an emptyDir of sidecar.delivery.queueVolume.sizeLimit; to keep
queues across the pod's deletion, leave it out and give the pod a PersistentVolumeClaim of that
name, e.g. a StatefulSet's volumeClaimTemplate; the injection webhook keeps a pod's own) and, with
sidecar.packages.enabled, where plugins' packages are installed (and the index's CA bundle, the
wheelhouse when set). Include them in the pod's `volumes` list next to the container, with the
same service as the container:

  volumes:
    {{- include "luna-plugins.sidecarVolumes" (dict "context" $ "service" "handlers") | nindent 4 }}

(`include "luna-plugins.sidecarVolumes" .` takes the service from sidecar.service.)
*/}}
{{- define "luna-plugins.sidecarVolumes" -}}
{{- $ctx := . -}}
{{- $service := "" -}}
{{- if hasKey . "context" }}{{ $ctx = .context }}{{ $service = .service | default "" }}{{ end -}}
{{- $values := $ctx.Values -}}
{{- with $ctx.Subcharts }}{{ with index . "luna-plugins" }}{{ $values = .Values }}{{ end }}{{ end -}}
{{- $sidecar := $values.sidecar | default dict -}}
{{- $service = $service | default $sidecar.service | default "handlers" -}}
{{- $packages := $sidecar.packages | default dict -}}
- name: luna-sidecar-tmp
  emptyDir:
    sizeLimit: {{ $sidecar.tmpSizeLimit | default "64Mi" }}
- name: luna-sidecar-settings
  secret:
    secretName: {{ printf "luna-plugins-%s-settings" $service | quote }}
    optional: true
- name: luna-sidecar-queues
  emptyDir:
    sizeLimit: {{ (($sidecar.delivery | default dict).queueVolume | default dict).sizeLimit | default "512Mi" }}
{{- if and $packages.enabled (or $packages.indexUrl $packages.wheelhouse) }}
- name: luna-sidecar-packages
  {{- toYaml ($packages.volume | default (dict "emptyDir" dict)) | nindent 2 }}
{{- with $packages.caConfigMap }}
- name: luna-sidecar-packages-ca
  configMap:
    name: {{ .name | quote }}
    items:
      - key: {{ .key | quote }}
        path: {{ .key | quote }}
{{- end }}
{{- with $packages.wheelhouse }}
- name: luna-sidecar-wheelhouse
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Prometheus scrape annotations for a pod running the sidecar (metrics on 9100). */}}
{{- define "luna-plugins.sidecarPodAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: "9100"
prometheus.io/path: /metrics
{{- end }}

{{/* Fail early, with a message that says what to change, on values that cannot work together
(values.schema.json refuses them too; this also covers --skip-schema-validation). */}}
{{- define "luna-plugins.validateValues" -}}
{{- if and .Values.injection.enabled (not .Values.webhook.enabled) }}
{{- fail "injection.enabled=true needs webhook.enabled=true: the sidecar is injected by the operator's admission webhook. Set webhook.enabled=true, or injection.enabled=false." }}
{{- end }}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.peering.enabled) }}
{{- fail (printf "operator.replicas=%d needs operator.peering.enabled=true: without kopf peering every replica would handle every LunaPlugin. Set operator.peering.enabled=true, or operator.replicas to 0 or 1." (int .Values.operator.replicas)) }}
{{- end }}
{{- $ports := list (int .Values.operator.livenessPort) (int .Values.operator.metricsPort) }}
{{- if .Values.webhook.enabled }}{{ $ports = append $ports (int .Values.webhook.port) }}{{ end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "operator.livenessPort, operator.metricsPort and webhook.port must differ (they are %v): each is a listener of the operator pod." $ports) }}
{{- end }}
{{- end }}

{{/* Labels of the operator's metrics Service, which the operator's ServiceMonitor selects. */}}
{{- define "luna-plugins.operatorMetricsLabels" -}}
{{ include "luna-plugins.labels" . }}
app.kubernetes.io/component: operator-metrics
{{- end }}

{{/* Labels of the admission webhook objects. */}}
{{- define "luna-plugins.webhookLabels" -}}
{{ include "luna-plugins.labels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* The Service in front of the operator's webhook server, and the Secret of its certificate. */}}
{{- define "luna-plugins.webhookServiceName" -}}
{{- printf "%s-webhook" (include "luna-plugins.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "luna-plugins.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "luna-plugins.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the webhook's certificates come from: certManager, operator or helm. */}}
{{- define "luna-plugins.webhookCertificateSource" -}}
{{- if .Values.webhook.certManager.enabled }}certManager{{ else }}{{ .Values.webhook.certificates }}{{ end }}
{{- end }}

{{/* The Secret where the operator keeps its own webhook CA (webhook.certificates=operator). */}}
{{- define "luna-plugins.webhookCASecretName" -}}
{{- printf "%s-webhook-ca" (include "luna-plugins.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The DNS names the API server may call the webhook Service by (a YAML list). */}}
{{- define "luna-plugins.webhookDNSNames" -}}
{{- $service := include "luna-plugins.webhookServiceName" . }}
{{- $namespace := .Release.Namespace }}
{{- list $service (printf "%s.%s" $service $namespace) (printf "%s.%s.svc" $service $namespace) (printf "%s.%s.svc.cluster.local" $service $namespace) | toYaml }}
{{- end }}

{{/* The webhook configurations the chart renders, as KIND/NAME (a YAML list). */}}
{{- define "luna-plugins.webhookConfigurationNames" -}}
{{- $fullname := include "luna-plugins.fullname" . }}
{{- $names := list (printf "validating/%s" $fullname) }}
{{- if .Values.injection.enabled }}{{ $names = append $names (printf "mutating/%s-inject" $fullname) }}{{ end }}
{{- $names | toYaml }}
{{- end }}

{{/* The cert-manager Certificate (and Issuer) of the webhook, for cert-manager.io/inject-ca-from. */}}
{{- define "luna-plugins.webhookCertificateName" -}}
{{- printf "%s-webhook" (include "luna-plugins.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The webhook's certificate when Helm makes it (webhook.certManager.enabled=false), as YAML with
ca.crt, tls.crt and tls.key (PEM). The existing Secret is reused (`lookup`), so `helm upgrade`
keeps the certificate the running pods serve and the caBundle of the configurations in step;
otherwise a CA and a certificate for the Service's DNS names are generated. Computed once per
rendering and kept in .Values, so the Secret, both configurations and the Deployment's checksum
see the same certificate.
*/}}
{{- define "luna-plugins.webhookCerts" -}}
{{- if not (hasKey .Values "__lunaWebhookCerts") }}
{{- $certs := dict }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "luna-plugins.webhookSecretName" .) }}
{{- $data := dig "data" dict ($secret | default dict) }}
{{- if and (index $data "ca.crt") (index $data "tls.crt") (index $data "tls.key") }}
{{- $certs = dict "ca.crt" (index $data "ca.crt" | b64dec) "tls.crt" (index $data "tls.crt" | b64dec) "tls.key" (index $data "tls.key" | b64dec) }}
{{- else }}
{{- $service := include "luna-plugins.webhookServiceName" . }}
{{- $namespace := .Release.Namespace }}
{{- $names := include "luna-plugins.webhookDNSNames" . | fromYamlArray }}
{{- $days := int .Values.webhook.certValidityDays }}
{{- $ca := genCA (printf "%s-webhook-ca" (include "luna-plugins.fullname" .)) $days }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $service $namespace) nil $names $days $ca }}
{{- $certs = dict "ca.crt" $ca.Cert "tls.crt" $cert.Cert "tls.key" $cert.Key }}
{{- end }}
{{- $_ := set .Values "__lunaWebhookCerts" $certs }}
{{- end }}
{{- toYaml (get .Values "__lunaWebhookCerts") }}
{{- end }}

{{/* clientConfig of a webhook served by the operator at `path`. (dict "context" $ "path" "/x") */}}
{{- define "luna-plugins.webhookClientConfig" -}}
{{- $ctx := .context -}}
service:
  name: {{ include "luna-plugins.webhookServiceName" $ctx }}
  namespace: {{ $ctx.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- if eq (include "luna-plugins.webhookCertificateSource" $ctx) "helm" }}
caBundle: {{ index (include "luna-plugins.webhookCerts" $ctx | fromYaml) "ca.crt" | b64enc }}
{{- end }}
{{- end }}

{{/* Annotations of the webhook configurations: cert-manager's CA injector fills their caBundle. */}}
{{- define "luna-plugins.webhookConfigurationAnnotations" -}}
{{- if .Values.webhook.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "luna-plugins.webhookCertificateName" .) }}
{{- end }}
{{- end }}

{{/*
The injection template the operator reads (`--inject-template`): the sidecar container of
`luna-plugins.sidecarContainer`, its volumes, and the pod annotations and labels added when absent.
*/}}
{{- define "luna-plugins.injectTemplate" -}}
container:
  {{- include "luna-plugins.sidecarContainer" (dict "context" .) | fromYamlArray | first | toYaml | nindent 2 }}
volumes:
  {{- include "luna-plugins.sidecarVolumes" . | nindent 2 }}
annotations:
  {{- if .Values.prometheus.scrapeAnnotations }}
  {{- include "luna-plugins.sidecarPodAnnotations" . | nindent 2 }}
  {{- else }} {}
  {{- end }}
labels:
  {{- include "luna-plugins.sidecarPodLabels" . | nindent 2 }}
{{- end }}

{{/* The served versions of the LunaPlugin CRD (crds/lunaplugins.yaml), for the webhook rules. */}}
{{- define "luna-plugins.lunapluginVersions" -}}
{{- $crd := .Files.Get "crds/lunaplugins.yaml" | fromYaml }}
{{- $versions := list }}
{{- range (dig "spec" "versions" list $crd) }}
{{- if .served }}{{ $versions = append $versions .name }}{{ end }}
{{- end }}
{{- toYaml (required "crds/lunaplugins.yaml serves no version" ($versions | default nil)) }}
{{- end }}

{{/* The namespaces that get the sidecar's ServiceAccount, Role and RoleBinding: the release
namespace and sidecar.namespaces. */}}
{{- define "luna-plugins.sidecarNamespaces" -}}
{{- toYaml (prepend (without (.Values.sidecar.namespaces | default list) .Release.Namespace) .Release.Namespace | uniq) }}
{{- end }}

{{/* Where `luna-plugins check` sends its admission probe: the release's namespace when the
operator watches it, else the first namespace it watches. */}}
{{- define "luna-plugins.checkProbeNamespace" -}}
{{- $watched := .Values.operator.namespaces }}
{{- if or (not $watched) (has .Release.Namespace $watched) }}{{ .Release.Namespace }}{{ else }}{{ first $watched }}{{ end }}
{{- end }}

{{/* The pod spec running `luna-plugins check` for the hooks.
(dict "context" $ "name" ACCOUNT "probeNamespace" NS "wait" SECONDS-or-0) */}}
{{- define "luna-plugins.checkPodSpec" -}}
{{- $ctx := .context -}}
serviceAccountName: {{ .name }}
automountServiceAccountToken: true
restartPolicy: Never
{{- with $ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
containers:
  - name: check
    image: {{ include "luna-plugins.image" $ctx | quote }}
    imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
    args:
      - check
      - --release={{ $ctx.Release.Name }}
      - --operator-namespace={{ $ctx.Release.Namespace }}
      - --namespace={{ .probeNamespace }}
      {{- if .wait }}
      - --wait={{ .wait }}s
      {{- end }}
    securityContext:
      {{- toYaml $ctx.Values.securityContext | nindent 6 }}
    {{- with $ctx.Values.hooks.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
{{- end }}

{{/* The injection webhooks' rule: Pods, at creation. */}}
{{- define "luna-plugins.podCreateRules" -}}
- apiGroups: [""]
  apiVersions: [v1]
  resources: [pods]
  operations: [CREATE]
  scope: Namespaced
{{- end }}

{{/* The namespaces the injection webhooks never look at, and, with operator.namespaces (the
argument), the only ones they look at. */}}
{{- define "luna-plugins.injectNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: [kube-system, kube-node-lease]
{{- with . }}
- key: kubernetes.io/metadata.name
  operator: In
  values:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{/* What both injection webhooks share after their selectors. Granting the Pod's ServiceAccount
the sidecar's access is a side effect, never made for a dry run. */}}
{{- define "luna-plugins.injectWebhookTail" -}}
reinvocationPolicy: IfNeeded
failurePolicy: Ignore
sideEffects: NoneOnDryRun
admissionReviewVersions: [v1]
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
{{- end }}

{{/* "true" when the operator scans for pods that asked for the sidecar and run without it
(injection.auditInterval is not zero), else empty. */}}
{{- define "luna-plugins.injectionAudit" -}}
{{- if regexMatch "[1-9]" (toString .Values.injection.auditInterval) }}true{{ end }}
{{- end }}
