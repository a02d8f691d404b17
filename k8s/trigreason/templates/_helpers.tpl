{{/* Names, labels and the pieces every service shares. */}}

{{- define "trigreason.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trigreason.fullname" -}}
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

{{- define "trigreason.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "trigreason.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trigreason
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "srm-worker") */}}
{{- define "trigreason.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trigreason.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The five services: values key -> service name, image (Dockerfile target) and role (the worker's
argument). */}}
{{- define "trigreason.components" -}}
gateway: {name: gateway, target: gateway}
orchestrator: {name: orchestrator, target: orchestrator}
triggerEvaluator: {name: trigger-evaluator, target: trigger-evaluator}
srmWorker: {name: srm-worker, target: worker, role: srm}
lrmWorker: {name: lrm-worker, target: worker, role: lrm}
{{- end }}

{{/* The components this release runs, by placement.mode: single all, edge all but the LRM workers (unless
placement.lrmAtEdge), cloud only the LRM workers. */}}
{{- define "trigreason.placedComponents" -}}
{{- $p := .Values.placement }}
{{- range $key, $c := include "trigreason.components" . | fromYaml }}
{{- $lrm := eq $key "lrmWorker" }}
{{- if or (eq $p.mode "single") (and (eq $p.mode "edge") (or (not $lrm) $p.lrmAtEdge)) (and (eq $p.mode "cloud") $lrm) }}
{{ $key }}: {{ toJson $c }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether this release runs a component: (dict "root" $ "key" "gateway") */}}
{{- define "trigreason.runs" -}}
{{- if hasKey (include "trigreason.placedComponents" .root | fromYaml) .key }}true{{ end }}
{{- end }}

{{/* Environment of every service for its placement and NATS TLS (BusSettings, docs/sites.md). An edge's
JetStream domain is its name, the value `site` (TRIGREASON_SITE, set with the metrics' site label). */}}
{{- define "trigreason.placementEnv" -}}
{{- $p := .Values.placement }}
{{- if ne $p.mode "single" }}
- name: TRIGREASON_PLACEMENT
  value: {{ $p.mode | quote }}
{{- end }}
{{- if eq $p.mode "edge" }}
{{- if or (eq .Values.site "default") (not (regexMatch "^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$" .Values.site)) }}
{{- fail (printf "site: an edge site needs its own name (lower-case letters, digits, '-' and '_'; it is its JetStream domain), not %q" .Values.site) }}
{{- end }}
- name: TRIGREASON_NATS_DOMAIN
  value: {{ .Values.site | quote }}
{{- else if eq $p.mode "cloud" }}
- name: TRIGREASON_NATS_DOMAIN
  value: {{ $p.cloudDomain | quote }}
- name: TRIGREASON_EDGE_SITES
  value: {{ join "," $p.edgeSites | quote }}
{{- end }}
{{- if .Values.natsTls.enabled }}
- name: TRIGREASON_NATS_TLS_CA
  value: /etc/trigreason/nats-tls/ca.crt
- name: TRIGREASON_NATS_TLS_CERT
  value: /etc/trigreason/nats-tls/tls.crt
- name: TRIGREASON_NATS_TLS_KEY
  value: /etc/trigreason/nats-tls/tls.key
- name: TRIGREASON_NATS_TLS_HANDSHAKE_FIRST
  value: {{ .Values.natsTls.handshakeFirst | quote }}
{{- end }}
{{- end }}

{{/* A service's image: (dict "root" $ "target" "gateway") -> <registry>/trigreason-gateway:<tag> */}}
{{- define "trigreason.image" -}}
{{- $image := .root.Values.image }}
{{- $name := printf "trigreason-%s:%s" .target ($image.tag | default .root.Chart.AppVersion) }}
{{- if $image.registry }}
{{- printf "%s/%s" $image.registry $name }}
{{- else }}
{{- $name }}
{{- end }}
{{- end }}

{{/* The bundled NATS chart's full name (the same rule as its own helper). */}}
{{- define "trigreason.natsFullname" -}}
{{- $nats := .Values.nats | default dict }}
{{- if $nats.fullnameOverride }}
{{- $nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "nats" $nats.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trigreason.natsUrl" -}}
{{- if .Values.natsUrl }}
{{- .Values.natsUrl }}
{{- else if .Values.nats.enabled }}
{{- printf "%s://%s.%s.svc:4222" (ternary "tls" "nats" .Values.natsTls.enabled) (include "trigreason.natsFullname" .) .Release.Namespace }}
{{- else }}
{{- fail "NATS: set natsUrl, or nats.enabled=true for the bundled NATS chart" }}
{{- end }}
{{- end }}

{{/* host:port of the NATS monitoring endpoint that KEDA's nats-jetstream scaler reads (/jsz). */}}
{{- define "trigreason.natsMonitoringEndpoint" -}}
{{- $keda := .Values.srmWorker.autoscaling.keda }}
{{- if $keda.monitoringEndpoint }}
{{- $keda.monitoringEndpoint }}
{{- else if .Values.nats.enabled }}
{{- printf "%s-headless.%s.svc.cluster.local:8222" (include "trigreason.natsFullname" .) .Release.Namespace }}
{{- else }}
{{- fail "KEDA needs the NATS monitoring endpoint: set srmWorker.autoscaling.keda.monitoringEndpoint (host:8222)" }}
{{- end }}
{{- end }}

{{/* The port TGI listens on in its container. Workers reach the pods straight through the headless Service
(DNS answers with pod IPs), so their URL carries this port, not the ClusterIP Service's port 80. */}}
{{- define "trigreason.tgiPort" -}}
8080
{{- end }}

{{/* The headless Service of a role's TGI pods: (dict "root" $ "role" "srm") */}}
{{- define "trigreason.tgiHeadless" -}}
{{- printf "%s-tgi-%s-headless" (include "trigreason.fullname" .root) .role }}
{{- end }}

{{/* Inference server URL of a role: (dict "root" $ "role" "srm"). externalUrl as given (one URL, a
comma-separated list, or dns+http://host:port); the chart's own TGI: its headless Service, re-resolved by
the worker, one replica per ready pod (the worker routes a session's steps to one of them). */}}
{{- define "trigreason.backendUrl" -}}
{{- $tgi := index .root.Values.tgi .role }}
{{- if $tgi.externalUrl }}
{{- $tgi.externalUrl }}
{{- else if $tgi.enabled }}
{{- printf "dns+http://%s.%s.svc.cluster.local:%s" (include "trigreason.tgiHeadless" .) .root.Release.Namespace (include "trigreason.tgiPort" .root) }}
{{- else }}
{{- fail (printf "tgi.%s: set enabled=true (the chart runs TGI) or externalUrl" .role) }}
{{- end }}
{{- end }}

{{/* Whether something other than .replicas sets the SRM workers' replica count. */}}
{{- define "trigreason.srmAutoscaled" -}}
{{- $a := .Values.srmWorker.autoscaling }}
{{- if or $a.keda.enabled $a.hpa.enabled }}true{{ end }}
{{- end }}
