{{- define "edc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "edc.fullname" -}}
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

{{- define "edc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "edc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "edc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The rules on the operator's own kinds, events, Secrets, pods and (rollouts) workloads (cluster- or namespace-wide). */}}
{{- define "edc.namespacedRules" -}}
- apiGroups: ["eci.datacache.dev"]
  resources: ["datacaches", "datacachereplications"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["eci.datacache.dev"]
  resources: ["datacaches/status", "datacachereplications/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if .Values.webhook.enabled }}
# Pods are listed by the labels the webhook set (never watched); the patch removes the gate.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
{{- end }}
{{- if .Values.rollouts.enabled }}
# Rollouts (off unless rollouts.enabled: write access to workloads): opted-in Deployments and
# StatefulSets are listed, read again when they changed meanwhile, and patched (one pod-template
# annotation) when a cache their pods use gets a new revision.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "patch"]
{{- end }}
{{- end }}

{{- define "edc.webhookSecret" -}}
{{ include "edc.fullname" . }}-webhook-tls
{{- end }}

{{- define "edc.webhookService" -}}
{{ include "edc.fullname" . }}-webhook
{{- end }}

{{/* The Secrets the operator may read for EciAccounts, as JSON {namespace: [names, sorted]}:
`accountSecrets` and the secretRef of every entry of `accounts`. */}}
{{- define "edc.accountSecrets" -}}
{{- $secrets := dict }}
{{- $refs := list }}
{{- range .Values.accountSecrets }}
{{- $refs = append $refs . }}
{{- end }}
{{- range .Values.accounts }}
{{- with (.credentials | default dict).secretRef }}
{{- $refs = append $refs . }}
{{- end }}
{{- end }}
{{- range $refs }}
{{- $names := get $secrets .namespace | default list }}
{{- $_ := set $secrets .namespace (append $names .name | uniq | sortAlpha) }}
{{- end }}
{{- $secrets | toJson }}
{{- end }}
