{{/* Names, labels and image references shared by every template. */}}

{{- define "vclink-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Default "vclink-agent": the hub chart expects this ServiceAccount name. */}}
{{- define "vclink-agent.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "vclink-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vclink-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "vclink-agent.labels" -}}
{{ include "vclink-agent.selectorLabels" . }}
app.kubernetes.io/part-of: vclink
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "vclink-agent.image" -}}
{{- $registry := .Values.image.registry -}}
{{- if and .Values.global .Values.global.cattle .Values.global.cattle.systemDefaultRegistry -}}
{{- $registry = .Values.global.cattle.systemDefaultRegistry -}}
{{- end -}}
{{- $ref := .Values.image.repository -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" (trimSuffix "/" $registry) $ref -}}{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $ref .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "vclink-agent.jobImage" -}}
{{- default (include "vclink-agent.image" .) .Values.job.image -}}
{{- end -}}

{{- define "vclink-agent.caSecretName" -}}
{{- if .Values.hub.caSecretName -}}
{{- .Values.hub.caSecretName -}}
{{- else if .Values.hub.caBundle -}}
{{- printf "%s-hub-ca" (include "vclink-agent.fullname" .) -}}
{{- end -}}
{{- end -}}
