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

{{/* The Rancher cluster id: clusterId (Fleet), else global.cattle.clusterId (Apps page). */}}
{{- define "vclink-agent.clusterId" -}}
{{- $fromRancher := "" -}}
{{- if and .Values.global .Values.global.cattle -}}
{{- $fromRancher = .Values.global.cattle.clusterId | default "" -}}
{{- end -}}
{{- default $fromRancher .Values.clusterId -}}
{{- end -}}

{{/*
Flags of the registration Job's pod settings, one argument per list item (the agent
copies them onto every Job it creates). Each toleration is passed as one JSON object.
*/}}
{{- define "vclink-agent.jobArgs" -}}
{{- range .Values.job.imagePullSecrets }}
- --job-image-pull-secret
- {{ required "job.imagePullSecrets[] entries need a name" .name | quote }}
{{- end }}
{{- range $k, $v := .Values.job.nodeSelector }}
- --job-node-selector
- {{ printf "%s=%s" $k $v | quote }}
{{- end }}
{{- range .Values.job.tolerations }}
- --job-toleration
- {{ toJson . | quote }}
{{- end }}
{{- with .Values.job.priorityClassName }}
- --job-priority-class-name
- {{ . | quote }}
{{- end }}
{{- end -}}
