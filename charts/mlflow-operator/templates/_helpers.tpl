{{- define "mlflow-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlflow-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlflow-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlflow-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlflow-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mlflow-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of `helm test`'s objects: not the operator's selector labels, so its pod is never
one of the operator pods (the Service, the PDB and `check` select those). */}}
{{- define "mlflow-operator.testLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mlflow-operator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "mlflow-operator.serviceAccountName" -}}
{{- default (include "mlflow-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* Service the API server reaches the webhook through. */}}
{{- define "mlflow-operator.serviceName" -}}
{{- printf "%s-webhook" (include "mlflow-operator.fullname" .) }}
{{- end }}

{{/* The MutatingWebhookConfiguration (cluster-scoped). */}}
{{- define "mlflow-operator.webhookConfigName" -}}
{{- include "mlflow-operator.fullname" . }}
{{- end }}

{{- define "mlflow-operator.selfManagedSecret" -}}
{{- default (printf "%s-webhook-cert" (include "mlflow-operator.fullname" .)) .Values.webhook.certificates.selfManaged.secretName }}
{{- end }}

{{- define "mlflow-operator.certManagerSecret" -}}
{{- printf "%s-webhook-tls" (include "mlflow-operator.fullname" .) }}
{{- end }}

{{/* Secret mounted as the serving certificate (certManager and secret modes). */}}
{{- define "mlflow-operator.tlsSecret" -}}
{{- if eq .Values.webhook.certificates.mode "certManager" }}
{{- include "mlflow-operator.certManagerSecret" . }}
{{- else if eq .Values.webhook.certificates.mode "secret" }}
{{- required "webhook.certificates.secret.name is required when webhook.certificates.mode is secret" .Values.webhook.certificates.secret.name }}
{{- end }}
{{- end }}

{{- define "mlflow-operator.leaseName" -}}
{{- printf "%s-controller" (include "mlflow-operator.fullname" .) }}
{{- end }}

{{/* The CA probe's port: selfManaged certificates with a probePort, else empty. */}}
{{- define "mlflow-operator.caProbePort" -}}
{{- if and (eq .Values.webhook.certificates.mode "selfManaged") .Values.webhook.certificates.selfManaged.probePort -}}
{{ .Values.webhook.certificates.selfManaged.probePort }}
{{- end -}}
{{- end }}
