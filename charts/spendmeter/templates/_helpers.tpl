{{/*
Named templates shared by the chart's resources: names, labels, the image reference, the webhook's TLS
source, and the checks that stop an install whose values contradict each other.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "spendmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: fullnameOverride, or the release name joined with the chart name. */}}
{{- define "spendmeter.fullname" -}}
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

{{/* The operator's objects are named after the release, with this suffix. */}}
{{- define "spendmeter.operatorName" -}}
{{- printf "%s-operator" (include "spendmeter.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "spendmeter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: spendmeter
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{ include "spendmeter.selectorLabels" . }}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "spendmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spendmeter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "spendmeter.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "spendmeter.operatorName" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: repository, then the digest if set, else the tag (default: appVersion). */}}
{{- define "spendmeter.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret the operator serves the webhook with: the user's, or the chart's (generated or cert-manager's). */}}
{{- define "spendmeter.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "spendmeter.fullname" .)) .Values.webhook.tls.existingSecret -}}
{{- end -}}

{{/* The Service the API server calls the webhook through. */}}
{{- define "spendmeter.webhookServiceName" -}}
{{- printf "%s-webhook" (include "spendmeter.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The host names the webhook certificate must name: the Service's, and the out-of-cluster URL's host. */}}
{{- define "spendmeter.webhookDnsNames" -}}
{{- $svc := include "spendmeter.webhookServiceName" . -}}
{{- $names := list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) -}}
{{- $host := include "spendmeter.webhookUrlHost" . -}}
{{- if and $host (not (regexMatch "^[0-9.]+$|:" $host)) -}}
{{- $names = append $names $host -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* The IP addresses the webhook certificate must name: the out-of-cluster URL's host, when an address. */}}
{{- define "spendmeter.webhookIpAddresses" -}}
{{- $host := include "spendmeter.webhookUrlHost" . -}}
{{- if and $host (regexMatch "^[0-9.]+$|:" $host) -}}
{{- toJson (list $host) -}}
{{- else -}}
{{- toJson list -}}
{{- end -}}
{{- end -}}

{{/* The host of webhook.url, without brackets or port; empty when no URL is set. */}}
{{- define "spendmeter.webhookUrlHost" -}}
{{- if .Values.webhook.url -}}
{{- regexReplaceAll "^\\[?([^\\]]*?)\\]?(:[0-9]+)?$" (urlParse .Values.webhook.url).host "${1}" -}}
{{- end -}}
{{- end -}}

{{/* Metric label names that spendmeter's metrics already carry: cost labels cannot take them. */}}
{{- define "spendmeter.reservedLabels" -}}
{{- toJson (list "workload" "workload_kind" "namespace" "pod" "provider" "model" "operation" "status" "type" "reason" "stream" "le" "kind" "job" "instance") -}}
{{- end -}}

{{/* Stops the install when values contradict each other, naming the keys to change. */}}
{{- define "spendmeter.validate" -}}
{{- $tls := .Values.webhook.tls -}}
{{- if and $tls.certManager.enabled $tls.existingSecret -}}
{{- fail "webhook.tls.certManager.enabled and webhook.tls.existingSecret are both set: choose one source for the webhook certificate" -}}
{{- end -}}
{{- if and $tls.existingSecret (not $tls.caBundle) -}}
{{- fail "webhook.tls.existingSecret is set but webhook.tls.caBundle is empty: the API server needs the CA that signed that certificate" -}}
{{- end -}}
{{- if and $tls.caBundle (not $tls.existingSecret) -}}
{{- fail "webhook.tls.caBundle is set without webhook.tls.existingSecret: a CA bundle only makes sense for a certificate you provide" -}}
{{- end -}}
{{- $reserved := include "spendmeter.reservedLabels" . | fromJsonArray -}}
{{- $seen := dict -}}
{{- range $podLabel, $name := .Values.injection.costLabels -}}
{{- if has $name $reserved -}}
{{- fail (printf "injection.costLabels maps pod label %q to %q, a label spendmeter's metrics already carry; choose another name" $podLabel $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "injection.costLabels maps both %q and %q to the cost label %q; each cost label needs its own pod label" (get $seen $name) $podLabel $name) -}}
{{- end -}}
{{- $_ := set $seen $name $podLabel -}}
{{- end -}}
{{- end -}}

{{/*
The webhook's TLS material as JSON {"ca.crt", "tls.crt", "tls.key", "ca.key", "names"}, for the generated
Secret and the webhook's caBundle alike. It is made once per render (and cached in .Values, which every
template of one render shares), and kept across upgrades: when the Secret exists, its CA is reused, and so
is its certificate while the host names it must carry are unchanged.
*/}}
{{- define "spendmeter.webhookTls" -}}
{{- if not .Values.webhook.tls._generated -}}
{{- $names := include "spendmeter.webhookDnsNames" . | fromJsonArray -}}
{{- $ips := include "spendmeter.webhookIpAddresses" . | fromJsonArray -}}
{{- $fingerprint := printf "%s|%s" (join "," $names) (join "," $ips) | sha256sum -}}
{{- $days := int .Values.webhook.tls.validityDays -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "spendmeter.webhookSecretName" .) -}}
{{- $data := dict -}}
{{- if $existing -}}{{- $data = default dict $existing.data -}}{{- end -}}
{{- $ca := dict -}}
{{- if and (hasKey $data "ca.crt") (hasKey $data "ca.key") -}}
{{- $ca = buildCustomCert (get $data "ca.crt") (get $data "ca.key") -}}
{{- else -}}
{{- $ca = genCA "spendmeter webhook CA" $days -}}
{{- end -}}
{{- $result := dict -}}
{{- $annotations := dig "metadata" "annotations" dict ($existing | default dict) -}}
{{- if and (hasKey $data "tls.crt") (hasKey $data "tls.key") (hasKey $data "ca.key") (eq (get $annotations "spendmeter.io/certificate-names") $fingerprint) -}}
{{- $result = dict "ca.crt" (get $data "ca.crt" | b64dec) "ca.key" (get $data "ca.key" | b64dec) "tls.crt" (get $data "tls.crt" | b64dec) "tls.key" (get $data "tls.key" | b64dec) -}}
{{- else -}}
{{- $cert := genSignedCert (first $names) $ips $names $days $ca -}}
{{- $result = dict "ca.crt" $ca.Cert "ca.key" $ca.Key "tls.crt" $cert.Cert "tls.key" $cert.Key -}}
{{- end -}}
{{- $_ := set $result "names" $fingerprint -}}
{{- $_ := set .Values.webhook.tls "_generated" $result -}}
{{- end -}}
{{- toJson .Values.webhook.tls._generated -}}
{{- end -}}

{{/* The PEM CA bundle the API server checks the webhook against (base64), when the chart knows it. */}}
{{- define "spendmeter.webhookCaBundle" -}}
{{- if .Values.webhook.tls.existingSecret -}}
{{- .Values.webhook.tls.caBundle | b64enc -}}
{{- else if not .Values.webhook.tls.certManager.enabled -}}
{{- get (include "spendmeter.webhookTls" . | fromJson) "ca.crt" | b64enc -}}
{{- end -}}
{{- end -}}
