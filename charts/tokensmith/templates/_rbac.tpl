{{/*
The operator's permissions, rule by rule. They are exactly the calls listed in the operator's code
(tokensmith.operator.rbac: kopf's watches, patches and Events, and the handlers' calls, which its
API client refuses to make unless listed there); tests/charts/test_rbac.py fails on a rule that is
missing, extra or wildcarded. No get/list on Secrets, no update, no delete beyond pods: children are
removed by Kubernetes' garbage collector through their ownerReferences to the job.
*/}}

{{/* Rules on namespaced resources: in the ClusterRole in "cluster" mode, in a Role per watched namespace otherwise. */}}
{{- define "tokensmith.rules.namespaced" -}}
# Worker ConfigMaps: the rendered trainer config (patched per attempt) and the live settings a running
# trainer watches (patched when the adaptive checkpoint interval changes).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch"]
# Events for every transition (kopf posts them through both Event APIs).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Worker pods: created per attempt, deleted as a gang; kopf indexes them.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "delete", "list", "watch"]
# The per-job trainer identity (ServiceAccount + Role + RoleBinding, below); with the admission
# policy's service-account selector, kopf indexes accounts' labels.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "list", "watch"]
# Headless Service for torchrun's rendezvous.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create"]
# Evaluation Jobs on new checkpoints; kopf indexes them.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# Opt-in per-job NetworkPolicies (networkPolicy.jobs).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create"]
# The per-job Role lets trainer rank 0 get/patch its own job's status (resourceNames: the job).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles"]
  verbs: ["create"]
# Volcano PodGroup (minMember = nodes, queue) when a job uses schedulerName: volcano; refreshed per attempt.
- apiGroups: ["scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["create", "patch"]
# The jobs themselves: kopf watches them and patches its finalizer and annotations; the operator
# deletes finished jobs whose spec.ttlSecondsAfterFinished has run out.
- apiGroups: ["tokensmith.dev"]
  resources: ["llmtrainingjobs"]
  verbs: ["delete", "get", "list", "patch", "watch"]
# Status (also what the per-job trainer Role grants, which RBAC requires the operator to hold).
- apiGroups: ["tokensmith.dev"]
  resources: ["llmtrainingjobs/status"]
  verbs: ["get", "patch"]
{{- end }}

{{/* Kopf peering: the ClusterKopfPeering in "cluster" mode, the KopfPeering of each watched namespace otherwise. */}}
{{- define "tokensmith.rules.peering" -}}
{{- if .Values.peering.enabled }}
{{- if eq .Values.watch.mode "cluster" }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "patch", "watch"]
{{- else }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "patch", "watch"]
{{- end }}
{{- end }}
{{- end }}

{{/* Nodes (cluster-scoped, in their own ClusterRole): read always, patch (cordon) only when opted in. */}}
{{- define "tokensmith.rules.nodes" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: {{ if .Values.nodeHealth.cordon }}["list", "patch", "watch"]{{ else }}["list", "watch"]{{ end }}
{{- end }}
