{{/*
The operator's permissions, rule by rule. They must equal what the operator code calls
(tokensmith.operator.rbac); tests/charts/test_rbac.py fails on anything extra or missing.
*/}}

{{/* Rules on namespaced resources: in a ClusterRole in "cluster" mode, in a Role per watched namespace otherwise. */}}
{{- define "tokensmith.rules.namespaced" -}}
- apiGroups: ["tokensmith.dev"]
  resources: ["llmtrainingjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tokensmith.dev"]
  resources: ["llmtrainingjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "create", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["get", "list", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Rules on cluster-scoped resources ("cluster" mode only). */}}
{{- define "tokensmith.rules.cluster" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{/* Kopf peering: a ClusterKopfPeering in "cluster" mode, a KopfPeering per watched namespace otherwise. */}}
{{- define "tokensmith.rules.peering" -}}
{{- if .Values.peering.enabled }}
{{- if eq .Values.watch.mode "cluster" }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- else }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{/* What a training pod may do: report progress and checkpoints on its job's status, nothing else. */}}
{{- define "tokensmith.rules.worker" -}}
- apiGroups: ["tokensmith.dev"]
  resources: ["llmtrainingjobs/status"]
  verbs: ["patch"]
{{- end }}
