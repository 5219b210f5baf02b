{{- define "berth-apiserver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "berth-apiserver.fullname" -}}
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

{{- define "berth-apiserver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth-apiserver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth-apiserver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "berth-apiserver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: apiserver
app.kubernetes.io/part-of: berth
{{- end -}}

{{- define "berth-apiserver.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "berth-apiserver.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "berth-apiserver.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "berth-apiserver.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "berth-apiserver.fullname" .) -}}
{{- else -}}
{{- .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "berth-apiserver.sqlDsnSecretName" -}}
{{- if .Values.store.sql.dsnSecret.name -}}
{{- .Values.store.sql.dsnSecret.name -}}
{{- else -}}
{{- printf "%s-sql-dsn" (include "berth-apiserver.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "berth-apiserver.sqlDsnSecretKey" -}}
{{- if .Values.store.sql.dsnSecret.name -}}
{{- .Values.store.sql.dsnSecret.key -}}
{{- else -}}
dsn
{{- end -}}
{{- end -}}

{{- define "berth-apiserver.singleReplicaStore" -}}
{{- if or (eq .Values.store.backend "mem") (and (eq .Values.store.backend "sql") (eq .Values.store.sql.driver "sqlite")) -}}true{{- end -}}
{{- end -}}

{{/* Cross-field rules the schema cannot express clearly; every failure names the values to fix. */}}
{{- define "berth-apiserver.validate" -}}
{{- $v := .Values -}}
{{- if and $v.tls.certManager.enabled $v.tls.existingSecret -}}
{{- fail "tls: set exactly one of tls.certManager.enabled=true or tls.existingSecret, not both" -}}
{{- end -}}
{{- if not (or $v.tls.certManager.enabled $v.tls.existingSecret) -}}
{{- fail "tls: set exactly one of tls.certManager.enabled=true (with tls.certManager.issuerRef.name) or tls.existingSecret; the API server serves HTTPS only" -}}
{{- end -}}
{{- if and $v.tls.certManager.enabled (not $v.tls.certManager.issuerRef.name) -}}
{{- fail "tls.certManager.issuerRef.name is required when tls.certManager.enabled=true" -}}
{{- end -}}
{{- if eq $v.store.backend "k8s" -}}
{{- if not $v.coordination.namespace -}}
{{- fail "coordination.namespace is required with store.backend=k8s" -}}
{{- end -}}
{{- if and $v.coordination.inCluster $v.coordination.kubeconfig.secretName -}}
{{- fail "coordination: set either coordination.inCluster=true or coordination.kubeconfig.secretName, not both" -}}
{{- end -}}
{{- if not (or $v.coordination.inCluster $v.coordination.kubeconfig.secretName) -}}
{{- fail "coordination: store.backend=k8s needs coordination.inCluster=true or coordination.kubeconfig.secretName" -}}
{{- end -}}
{{- else -}}
{{- if or $v.coordination.namespace $v.coordination.inCluster $v.coordination.kubeconfig.secretName -}}
{{- fail (printf "coordination.* values are only valid with store.backend=k8s (store.backend=%s)" $v.store.backend) -}}
{{- end -}}
{{- end -}}
{{- if eq $v.store.backend "sql" -}}
{{- if not $v.store.sql.driver -}}
{{- fail "store.sql.driver (postgres, mysql or sqlite) is required with store.backend=sql" -}}
{{- end -}}
{{- if and $v.store.sql.dsn $v.store.sql.dsnSecret.name -}}
{{- fail "store.sql: set either store.sql.dsn or store.sql.dsnSecret.name, not both" -}}
{{- end -}}
{{- if not (or $v.store.sql.dsn $v.store.sql.dsnSecret.name) -}}
{{- fail "store.sql: store.backend=sql needs store.sql.dsnSecret.name (or store.sql.dsn)" -}}
{{- end -}}
{{- else -}}
{{- if or $v.store.sql.driver $v.store.sql.dsn $v.store.sql.dsnSecret.name -}}
{{- fail (printf "store.sql.* values are only valid with store.backend=sql (store.backend=%s)" $v.store.backend) -}}
{{- end -}}
{{- end -}}
{{- if and (include "berth-apiserver.singleReplicaStore" .) (gt (int $v.replicaCount) 1) -}}
{{- fail (printf "replicaCount=%d: store.backend=%s keeps lease state in one process; set replicaCount=1" (int $v.replicaCount) (ternary "sql with store.sql.driver=sqlite" $v.store.backend (eq $v.store.backend "sql"))) -}}
{{- end -}}
{{- if and (eq $v.auth.mode "static-keys") (not $v.auth.staticKeys.secretName) -}}
{{- fail "auth.staticKeys.secretName is required with auth.mode=static-keys" -}}
{{- end -}}
{{- if eq $v.auth.mode "oidc" -}}
{{- if not (and $v.auth.oidc.issuerURL $v.auth.oidc.audience) -}}
{{- fail "auth.oidc.issuerURL and auth.oidc.audience are required with auth.mode=oidc" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $v.auth.mode "none") (not $v.auth.allowUnauthenticated) -}}
{{- fail "auth.mode=none disables authentication: also set auth.allowUnauthenticated=true" -}}
{{- end -}}
{{- end -}}
