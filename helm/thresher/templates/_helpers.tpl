{{/* Names ---------------------------------------------------------------------------------- */}}

{{- define "thresher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thresher.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "thresher.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "thresher.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "thresher.operatorName" -}}
{{- printf "%s-operator" (include "thresher.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "thresher.operatorServiceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "thresher.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "thresher.workerServiceAccount" -}}
{{- default (printf "%s-worker" (include "thresher.fullname" .) | trunc 63 | trimSuffix "-") .Values.worker.serviceAccount.name -}}
{{- end -}}

{{/* Labels --------------------------------------------------------------------------------- */}}

{{- define "thresher.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "thresher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: thresher
{{- end -}}

{{- define "thresher.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "thresher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Images: global.imageRegistry > per-image registry > image.registry; a digest wins over a tag.
     Usage: include "thresher.image" (dict "root" . "override" .Values.operator.image) */}}
{{- define "thresher.image" -}}
{{- $root := .root -}}
{{- $base := $root.Values.image -}}
{{- $o := .override | default dict -}}
{{- $registry := $root.Values.global.imageRegistry | default $o.registry | default $base.registry -}}
{{- $repository := $o.repository | default $base.repository -}}
{{- $tag := $o.tag | default $base.tag | default $root.Chart.AppVersion | toString -}}
{{- $digest := $o.digest -}}
{{- if and (not $digest) (not $o.repository) (not $o.tag) -}}
{{- $digest = $base.digest -}}
{{- end -}}
{{- $name := ternary (printf "%s/%s" $registry $repository) $repository (ne $registry "") -}}
{{- if $digest -}}
{{- printf "%s@%s" $name $digest -}}
{{- else -}}
{{- printf "%s:%s" $name $tag -}}
{{- end -}}
{{- end -}}


{{/* Namespaces -----------------------------------------------------------------------------
     Watched namespaces: "" in cluster mode (every namespace), else the list (default: release's). */}}
{{- define "thresher.watchedNamespaces" -}}
{{- if eq .Values.operator.watch.mode "namespaces" -}}
{{- default (list .Release.Namespace) .Values.operator.watch.namespaces | uniq | join "," -}}
{{- end -}}
{{- end -}}

{{/* Namespaces where step pods may run and need the worker ServiceAccount (and NetworkPolicy). */}}
{{- define "thresher.workerNamespaces" -}}
{{- $ns := list .Release.Namespace -}}
{{- if eq .Values.operator.watch.mode "namespaces" -}}
{{- $ns = concat $ns (default (list .Release.Namespace) .Values.operator.watch.namespaces) -}}
{{- end -}}
{{- $ns = concat $ns .Values.worker.serviceAccount.extraNamespaces -}}
{{- $ns | uniq | join "," -}}
{{- end -}}

{{/* NetworkPolicy peers allowed to scrape metrics (none listed: anyone). */}}
{{- define "thresher.metricsPeers" -}}
{{- if .Values.networkPolicy.metricsFrom }}
from:
  {{- toYaml .Values.networkPolicy.metricsFrom | nindent 2 }}
{{- end }}
{{- end -}}
