"""Every Kubernetes API permission the operator and the trainer pods use, in one place.

The Helm chart's (Cluster)Role must grant exactly `operator_rules()`; its least-privilege test reads
this module. `kube.KubeClient` refuses (in every environment, tests included) any call that is not
listed here, so a new call cannot ship without its permission being declared.

Who calls what:
- kopf (the framework): watches the jobs, pods and Jobs it indexes; patches the job's metadata
  (its finalizer and last-handled-configuration annotation); posts Events; with peering, reads and
  patches the KopfPeering object.
- the handlers (through `kube.KubeClient`): create children, patch the job's status, delete pods.
- trainer rank 0 (inside worker pods, through the per-job Role `children.trainer_service_account`
  creates): get and patch `llmtrainingjobs/status` of its own job only (resourceNames).

Creating a Role that grants `llmtrainingjobs/status` get/patch requires the operator to hold those
verbs itself (Kubernetes' RBAC escalation check); it does.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensmith.operator.spec import GROUP, PLURAL


@dataclass(frozen=True)
class Permission:
    group: str  # "" = core
    resource: str  # "pods", "llmtrainingjobs/status"
    verbs: tuple[str, ...]
    who: str  # "kopf", "handlers", "peering"
    why: str


OPERATOR_PERMISSIONS: tuple[Permission, ...] = (
    Permission(GROUP, PLURAL, ("get", "list", "watch"), "kopf", "watch jobs (daemon per job)"),
    Permission(GROUP, PLURAL, ("patch",), "kopf", "finalizer and last-handled-configuration annotation"),
    Permission(
        GROUP, f"{PLURAL}/status", ("get", "patch"), "handlers", "write status; lets it grant the same"
    ),
    Permission("", "pods", ("list", "watch"), "kopf", "index of worker and evaluation pods"),
    Permission("", "pods", ("create", "delete"), "handlers", "worker pods of each attempt; gang deletion"),
    Permission("", "services", ("create",), "handlers", "headless rendezvous Service"),
    Permission(
        "",
        "configmaps",
        ("create", "patch"),
        "handlers",
        "rendered trainer config (updated per attempt), live settings (updated as they change)",
    ),
    Permission("", "serviceaccounts", ("create",), "handlers", "per-job trainer identity"),
    Permission(
        "",
        "serviceaccounts",
        ("list", "watch"),
        "kopf",
        "labels of accounts jobs may name (admission policy)",
    ),
    Permission(
        "networking.k8s.io", "networkpolicies", ("create",), "handlers", "opt-in per-job NetworkPolicy"
    ),
    Permission("rbac.authorization.k8s.io", "roles", ("create",), "handlers", "per-job status-patch Role"),
    Permission(
        "rbac.authorization.k8s.io", "rolebindings", ("create",), "handlers", "binds it to the account"
    ),
    Permission("batch", "jobs", ("list", "watch"), "kopf", "index of evaluation Jobs"),
    Permission("batch", "jobs", ("create",), "handlers", "evaluation Jobs"),
    Permission(
        "scheduling.volcano.sh",
        "podgroups",
        ("create", "patch"),
        "handlers",
        "gang scheduling with Volcano (minMember and queue refreshed per attempt)",
    ),
    Permission("", "events", ("create",), "kopf", "Events for every transition"),
    Permission("events.k8s.io", "events", ("create",), "kopf", "Events (newer API group)"),
    Permission(GROUP, PLURAL, ("delete",), "handlers", "spec.ttlSecondsAfterFinished"),
)

# Nodes are cluster-scoped: a ClusterRole of their own in every install mode (read-only).
NODE_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "", "nodes", ("list", "watch"), "kopf", "index of nodes: lost nodes, stuck pods, cordons, taints"
    ),
)

# Opt-in (chart value nodeHealth.cordon): cordon suspect nodes (spec.nodeHealth.cordon of a job).
CORDON_PERMISSIONS: tuple[Permission, ...] = (
    Permission("", "nodes", ("patch",), "handlers", "cordon suspect nodes (opt-in)"),
)

PEERING_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "kopf.dev", "kopfpeerings", ("get", "list", "watch", "patch"), "peering", "namespaced peering"
    ),
    Permission(
        "kopf.dev",
        "clusterkopfpeerings",
        ("get", "list", "watch", "patch"),
        "peering",
        "cluster-wide peering",
    ),
)

TRAINER_PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        GROUP, f"{PLURAL}/status", ("get", "patch"), "trainer", "progress and checkpoints (own job only)"
    ),
)


def rules(permissions: tuple[Permission, ...]) -> list[dict[str, list[str]]]:
    """PolicyRules, one per (group, resource), verbs merged and sorted; no wildcards anywhere."""
    merged: dict[tuple[str, str], set[str]] = {}
    for p in permissions:
        merged.setdefault((p.group, p.resource), set()).update(p.verbs)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(merged.items())
    ]


def node_rules(cordon: bool = False) -> list[dict[str, list[str]]]:
    """What the operator's node ClusterRole must grant (patch only with the cordon opt-in)."""
    return rules(NODE_PERMISSIONS + (CORDON_PERMISSIONS if cordon else ()))


def operator_rules(peering: bool = True) -> list[dict[str, list[str]]]:
    """What the operator's (Cluster)Role must grant."""
    return rules(OPERATOR_PERMISSIONS + (PEERING_PERMISSIONS if peering else ()))


def check_allowed(verb: str, group: str, resource: str) -> None:
    """Raise when the handlers are about to make a call the declared permissions do not cover."""
    for p in OPERATOR_PERMISSIONS + CORDON_PERMISSIONS:
        if p.group == group and p.resource == resource and verb in p.verbs:
            return
    raise PermissionError(
        f"undeclared API call {verb} {group or 'core'}/{resource}: add it to tokensmith.operator.rbac"
    )
