{{/* Names, labels and the image reference shared by every template. */}}

{{- define "vclink-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vclink-hub.fullname" -}}
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

{{- define "vclink-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vclink-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{- define "vclink-hub.labels" -}}
{{ include "vclink-hub.selectorLabels" . }}
app.kubernetes.io/part-of: vclink
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Registry: Rancher's system default registry wins over image.registry. */}}
{{- define "vclink-hub.image" -}}
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

{{- define "vclink-hub.serviceAccountName" -}}
{{- include "vclink-hub.fullname" . -}}
{{- end -}}

{{- define "vclink-hub.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "vclink-hub.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{- define "vclink-hub.rancherSecretName" -}}
{{- default (printf "%s-rancher-credential" (include "vclink-hub.fullname" .)) .Values.rancherCredential.secretName -}}
{{- end -}}

{{- define "vclink-hub.crtbGrantRole" -}}
{{- printf "%s-crtb-grant" (include "vclink-hub.fullname" .) -}}
{{- end -}}

{{/* Rancher's URL: rancher.url, else global.cattle.url (set by Rancher's Apps page). */}}
{{- define "vclink-hub.rancherUrl" -}}
{{- $fromRancher := "" -}}
{{- if and .Values.global .Values.global.cattle -}}
{{- $fromRancher = .Values.global.cattle.url | default "" -}}
{{- end -}}
{{- default $fromRancher .Values.rancher.url | trimSuffix "/" -}}
{{- end -}}

{{/*
--fleet-workspace-for-project from .Values.fleetWorkspaceForProject: "key=ws,key=ws" in
key order (Helm sorts map keys), so the rendering is stable.
*/}}
{{- define "vclink-hub.workspaceMapping" -}}
{{- $out := list -}}
{{- range $k, $v := .Values.fleetWorkspaceForProject -}}
{{- $out = append $out (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
