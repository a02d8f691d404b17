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

{{/* The components this release runs, by site.placement: single all, edge all but the LRM workers (unless
site.lrmAtEdge), cloud only the LRM workers. */}}
{{- define "trigreason.placedComponents" -}}
{{- $site := .Values.site }}
{{- range $key, $c := include "trigreason.components" . | fromYaml }}
{{- $lrm := eq $key "lrmWorker" }}
{{- if or (eq $site.placement "single") (and (eq $site.placement "edge") (or (not $lrm) $site.lrmAtEdge)) (and (eq $site.placement "cloud") $lrm) }}
{{ $key }}: {{ toJson $c }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether this release runs a component: (dict "root" $ "key" "gateway") */}}
{{- define "trigreason.runs" -}}
{{- if hasKey (include "trigreason.placedComponents" .root | fromYaml) .key }}true{{ end }}
{{- end }}

{{/* Environment of every service for its site and NATS TLS (the settings of BusSettings, docs/sites.md). */}}
{{- define "trigreason.siteEnv" -}}
{{- $site := .Values.site }}
{{- if ne $site.placement "single" }}
- name: TRIGREASON_PLACEMENT
  value: {{ $site.placement | quote }}
{{- end }}
{{- if eq $site.placement "edge" }}
- name: TRIGREASON_SITE
  value: {{ required "site.name: an edge site needs its name (it is also its JetStream domain)" $site.name | quote }}
- name: TRIGREASON_NATS_DOMAIN
  value: {{ $site.name | quote }}
{{- else if eq $site.placement "cloud" }}
- name: TRIGREASON_NATS_DOMAIN
  value: {{ $site.domain | quote }}
- name: TRIGREASON_EDGE_SITES
  value: {{ join "," $site.edgeSites | quote }}
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
