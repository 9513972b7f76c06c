{{/* The release's name for its objects (63 characters at most). */}}
{{- define "gkm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gkm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gkm.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: key-server
{{- end -}}

{{- define "gkm.secretName" -}}
{{- if .Values.secrets.create -}}{{ include "gkm.fullname" . }}{{- else -}}{{ required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}{{- end -}}
{{- end -}}

{{/* More than one key server: the groups get cooperative key servers. */}}
{{- define "gkm.coop" -}}
{{- if gt (int .Values.keyServers.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{/*
  Checks across values that the schema cannot express; a failure names the
  value and renders nothing.
*/}}
{{- define "gkm.validate" -}}
{{- $n := int .Values.keyServers.replicas -}}
{{- if and (gt $n 1) (ne (len .Values.keyServers.addresses) $n) -}}
{{- fail (printf "keyServers.addresses: %d addresses for %d replicas (list every key server's address, one per replica)" (len .Values.keyServers.addresses) $n) -}}
{{- end -}}
{{- if .Values.secrets.create -}}
{{- if and (not .Values.secrets.masterKey) (not .Values.persistence.enabled) -}}
{{- fail "secrets.masterKey is required without persistence (the generated one would be lost with the pod): 64 hex digits (openssl rand -hex 32)" -}}
{{- end -}}
{{- if and (gt $n 1) (not .Values.secrets.coopPsk) -}}
{{- fail "secrets.coopPsk is required with more than one key server" -}}
{{- end -}}
{{- if and (gt $n 1) (not .Values.secrets.rekeySigningKey) -}}
{{- fail "secrets.rekeySigningKey is required with more than one key server: every key server of a group signs rekeys with the same key" -}}
{{- end -}}
{{- if and (gt $n 1) (not (and .Values.secrets.enrollmentCaCert .Values.secrets.enrollmentCaKey)) -}}
{{- fail "secrets.enrollmentCaCert and secrets.enrollmentCaKey are required with more than one key server: every key server trusts the agents one of them enrolled (openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ...)" -}}
{{- end -}}
{{- if and .Values.secrets.enrollmentCaCert (not .Values.secrets.enrollmentCaKey) -}}
{{- fail "secrets.enrollmentCaKey is required with secrets.enrollmentCaCert" -}}
{{- end -}}
{{- range $i, $p := .Values.psks -}}
{{- if not $p.key -}}
{{- fail (printf "psks[%d].key is required when secrets.create is true" $i) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.oidc.issuer (not .Values.secrets.oidcClientSecret) -}}
{{- fail "secrets.oidcClientSecret is required with oidc.issuer" -}}
{{- end -}}
{{- if and .Values.database.postgres (ne (len .Values.database.urls) $n) -}}
{{- fail (printf "database.urls: %d URLs for %d replicas (each key server has its own database)" (len .Values.database.urls) $n) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.database.postgres .Values.persistence.enabled -}}
{{- fail "persistence.enabled and database.postgres: choose one store (SQLite on a volume, or PostgreSQL)" -}}
{{- end -}}
{{- end -}}

{{/* Whether a master key is given (else the server makes one in its volume). */}}
{{- define "gkm.masterKey" -}}
{{- if or .Values.secrets.masterKey (not .Values.secrets.create) -}}true{{- end -}}
{{- end -}}

{{/*
  The API's address: all addresses with TLS (or httpInsecure behind a
  TLS-terminating proxy); otherwise loopback only, reached through
  kubectl port-forward.
*/}}
{{- define "gkm.apiExposed" -}}
{{- if or .Values.tls.secretName .Values.httpInsecure -}}true{{- end -}}
{{- end -}}

{{/*
  Whole numbers back to integers, in place: YAML values reach templates as
  floats, and server.toml's integer fields refuse `1001.0`. Takes a dict.
*/}}
{{- define "gkm.intify" -}}
{{- $m := . -}}
{{- range $k, $v := $m -}}
{{- if and (kindIs "float64" $v) (eq $v (floor $v)) -}}
{{- $_ := set $m $k (int64 $v) -}}
{{- else if kindIs "map" $v -}}
{{- include "gkm.intify" $v -}}
{{- else if kindIs "slice" $v -}}
{{- $out := list -}}
{{- range $v -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- $out = append $out (int64 .) -}}
{{- else -}}
{{- if kindIs "map" . -}}{{- include "gkm.intify" . -}}{{- end -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- $_ := set $m $k $out -}}
{{- end -}}
{{- end -}}
{{- end -}}
