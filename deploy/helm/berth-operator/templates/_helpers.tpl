{{- define "berth-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "berth-operator.fullname" -}}
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

{{- define "berth-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "berth-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: berth
{{- end -}}

{{- define "berth-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "berth-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "berth-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "berth-operator.leaderElectionID" -}}
{{- default (printf "%s-leader" (include "berth-operator.fullname" .)) .Values.leaderElection.id -}}
{{- end -}}

{{- define "berth-operator.leaderElectionNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace -}}
{{- end -}}

{{/* The token file the operator reads, or "" for none. */}}
{{- define "berth-operator.tokenFile" -}}
{{- if .Values.sidecarBroker.enabled -}}
{{- .Values.sidecarBroker.tokenPath -}}
{{- else if .Values.berth.apiKey.secretName -}}
{{- printf "/etc/berth/api-key/%s" .Values.berth.apiKey.secretKey -}}
{{- else -}}
{{- .Values.berth.tokenFile.path -}}
{{- end -}}
{{- end -}}

{{/* Cross-field rules the schema cannot express clearly; every failure names the values to fix. */}}
{{- define "berth-operator.validate" -}}
{{- $v := .Values -}}
{{- if not $v.berth.apiServer -}}
{{- fail "berth.apiServer (https://host:port of the Berth API server) is required" -}}
{{- end -}}
{{- $sources := 0 -}}
{{- if $v.berth.apiKey.secretName }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $v.berth.tokenFile.path }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $v.sidecarBroker.enabled }}{{ $sources = add1 $sources }}{{ end -}}
{{- if gt $sources 1 -}}
{{- fail "berth credentials: set only one of berth.apiKey.secretName, berth.tokenFile.path or sidecarBroker.enabled=true" -}}
{{- end -}}
{{- if eq $sources 0 -}}
{{- fail "berth credentials: set berth.apiKey.secretName, berth.tokenFile.path or sidecarBroker.enabled=true" -}}
{{- end -}}
{{- if $v.sidecarBroker.enabled -}}
{{- $o := $v.sidecarBroker.oidc -}}
{{- if not (or $o.issuerURL $o.tokenURL) -}}
{{- fail "sidecarBroker.oidc.issuerURL (or sidecarBroker.oidc.tokenURL) is required with sidecarBroker.enabled=true" -}}
{{- end -}}
{{- if not $o.clientID -}}
{{- fail "sidecarBroker.oidc.clientID is required with sidecarBroker.enabled=true" -}}
{{- end -}}
{{- if not $o.clientSecret.secretName -}}
{{- fail "sidecarBroker.oidc.clientSecret.secretName is required with sidecarBroker.enabled=true" -}}
{{- end -}}
{{- if or (eq (int $v.sidecarBroker.adminPort) (int $v.metrics.port)) (eq (int $v.sidecarBroker.adminPort) (int $v.healthProbe.port)) -}}
{{- fail "sidecarBroker.adminPort must differ from metrics.port and healthProbe.port" -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int $v.replicaCount) 1) (not $v.leaderElection.enabled) -}}
{{- fail (printf "replicaCount=%d needs leaderElection.enabled=true (only one replica may act)" (int $v.replicaCount)) -}}
{{- end -}}
{{- if eq (int $v.metrics.port) (int $v.healthProbe.port) -}}
{{- fail "metrics.port and healthProbe.port must differ" -}}
{{- end -}}
{{- end -}}
