{{- define "kubeloop.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "kubeloop.labels" -}}
app.kubernetes.io/name: kubeloop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "kubeloop.selector" -}}
app.kubernetes.io/name: kubeloop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubeloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ default (include "kubeloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}{{ default "default" .Values.serviceAccount.name }}{{ end }}
{{- end }}

{{- /* The operator's rules on namespaced resources: exactly the verbs of its calls (kopf's watches: list
and watch; kube.py: apply = patch, and create when the object is new; create; delete; status patch; kopf's
Events: create). The ClusterRole of the cluster-wide mode and each Role of the namespaced mode share them. */}}
{{- define "kubeloop.namespacedRules" -}}
# Watched (kopf's indexes and event handlers); a Monitor's retrain creates a TrainingJob.
- apiGroups: [kubeloop.io]
  resources: [datasets, modeldeployments, monitors]
  verbs: [list, watch]
- apiGroups: [kubeloop.io]
  resources: [trainingjobs]
  verbs: [list, watch, create]
# Status is written by merge patch, never read back from the API (the watch delivers it).
- apiGroups: [kubeloop.io]
  resources: [datasets/status, trainingjobs/status, modeldeployments/status, monitors/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion need update on the owner's finalizers subresource.
- apiGroups: [kubeloop.io]
  resources: [datasets/finalizers, trainingjobs/finalizers, modeldeployments/finalizers]
  verbs: [update]
# Jobs are created once (immutable); delete: finished Jobs beyond the history limits are pruned.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
# Server-side apply (patch; create when the object is new); delete: a canary's Deployment when it is
# promoted or rolled back, the HPA and PDB when the spec drops them.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
# Each ModelDeployment's inference pods get a NetworkPolicy (deleted with it, by its owner reference).
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
# Ready waits until the Service's EndpointSlices list the pods of the served model.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
# The runtime's result is the pod's termination message; a server pod's failure to load is its status.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# kopf posts Events on condition transitions (core v1, POST only).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}
