{{/*
Object names are fixed, not derived from the release name: scour and the
kubectl commands Eraser users know look them up by these names.
*/}}
{{- define "scour.controllerName" -}}scour-controller{{- end -}}
{{- define "scour.workerServiceAccount" -}}scour-worker{{- end -}}
{{- define "scour.configMapName" -}}eraser-manager-config{{- end -}}
{{- define "scour.systemExclusionName" -}}eraser-system-exclusion{{- end -}}
{{- define "scour.stateConfigMapName" -}}scour-state{{- end -}}
{{- define "scour.port" -}}8081{{- end -}}

{{- define "scour.namespace" -}}
{{- required "namespace is required" .Values.namespace -}}
{{- end -}}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "scour.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString -}}
{{- end -}}

{{- define "scour.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "scour.tag" .) -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "scour.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: scour
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "scour.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scour
{{- end -}}

{{/* Selects the controller's pods; never changes across upgrades. */}}
{{- define "scour.selectorLabels" -}}
app.kubernetes.io/name: scour
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "scour.trivyServerName" -}}scour-trivy-server{{- end -}}

{{/* Selects the shared Trivy server's pods. */}}
{{- define "scour.trivyServerSelectorLabels" -}}
app.kubernetes.io/name: scour
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: trivy-server
{{- end -}}

{{/*
The system exclusion list: images no policy may remove. Patterns are exact
references, `prefix/*` (anything below the prefix) or `repo:*` (any tag of
exactly that repository).
*/}}
{{- define "scour.systemExclusions" -}}
{{- $k8s := list "kube-apiserver" "kube-controller-manager" "kube-scheduler" "kube-proxy" "etcd" "pause" -}}
{{- $out := list -}}
{{- range $k8s -}}
{{- $out = append $out (printf "registry.k8s.io/%s:*" .) -}}
{{- $out = append $out (printf "k8s.gcr.io/%s:*" .) -}}
{{- $out = append $out (printf "mcr.microsoft.com/oss/kubernetes/%s:*" .) -}}
{{- end -}}
{{- $out = concat $out (list
  "registry.k8s.io/coredns/coredns:*"
  "k8s.gcr.io/coredns/coredns:*"
  "k8s.gcr.io/coredns:*"
  "mcr.microsoft.com/oss/kubernetes/coredns:*"
  "mcr.microsoft.com/oss/v2/kubernetes/coredns:*"
  "mcr.microsoft.com/oss/v2/kubernetes/pause:*"
  "mcr.microsoft.com/oss/v2/kubernetes/kube-proxy:*"
  "localhost/kubernetes/pause:*"
  "docker.io/rancher/mirrored-pause:*"
  "mcr.microsoft.com/containernetworking/*"
  "docker.io/calico/*"
  "quay.io/calico/*"
  "mcr.microsoft.com/oss/calico/*"
  "quay.io/tigera/operator:*"
  "mcr.microsoft.com/oss/tigera/operator:*"
  "quay.io/cilium/*"
  "mcr.microsoft.com/oss/cilium/*"
  "docker.io/flannel/*"
  "ghcr.io/flannel-io/*"
  "quay.io/coreos/flannel:*"
  "docker.io/kindest/*"
) -}}
{{- $out = append $out (printf "%s:*" .Values.image.repository) -}}
{{- $out = concat $out .Values.exclusions.system -}}
{{- toJson (dict "excluded" (uniq $out)) -}}
{{- end -}}

{{/* Fails the render with a clear message when a value is out of range. */}}
{{- define "scour.validate" -}}
{{- $h := .Values.intervalHours -}}
{{- if not (or (kindIs "int" $h) (kindIs "int64" $h) (kindIs "float64" $h)) -}}
{{- fail (printf "intervalHours must be a number of hours, got %v" $h) -}}
{{- end -}}
{{- if ne (float64 $h) (float64 (int $h)) -}}
{{- fail (printf "intervalHours must be a whole number of hours, got %v" $h) -}}
{{- end -}}
{{- if or (lt (int $h) 24) (gt (int $h) 2160) -}}
{{- fail (printf "intervalHours must be between 24 and 2160 (90 days), got %v" $h) -}}
{{- end -}}
{{- if not (has .Values.nodeFilter.type (list "exclude" "include")) -}}
{{- fail (printf "nodeFilter.type must be exclude or include, got %q" .Values.nodeFilter.type) -}}
{{- end -}}
{{- if not (has .Values.runtime.name (list "containerd" "crio" "dockershim")) -}}
{{- fail (printf "runtime.name must be containerd, crio or dockershim, got %q" .Values.runtime.name) -}}
{{- end -}}
{{- with .Values.runtime.imageFsPath -}}
{{- if or (not (hasPrefix "/" .)) (eq (trimSuffix "/" .) "") (regexMatch "(^|/)\\.\\.?(/|$)" .) -}}
{{- fail (printf "runtime.imageFsPath must be an absolute directory other than / without . or .., e.g. /var/lib/containerd; got %q" .) -}}
{{- end -}}
{{- end -}}
{{- if or (lt (float64 .Values.successRatio) 0.0) (gt (float64 .Values.successRatio) 1.0) -}}
{{- fail (printf "successRatio must be between 0.0 and 1.0, got %v" .Values.successRatio) -}}
{{- end -}}
{{- if and .Values.policy.configMap .Values.policy.path -}}
{{- fail "policy: set configMap or path, not both" -}}
{{- end -}}
{{- if and (or .Values.policy.configMap .Values.policy.path) (not .Values.policy.sha256) -}}
{{- fail "policy.sha256 is required with policy.configMap or policy.path; pin the digest `scour policy check` prints" -}}
{{- end -}}
{{- end -}}
