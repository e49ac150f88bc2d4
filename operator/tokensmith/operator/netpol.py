"""The per-job NetworkPolicies (opt-in: `spec.cluster.networkPolicy`, or the operator's
`--network-policy` default, which the Helm chart's `networkPolicy.jobs` sets).

- `<job>-workers`: the gang's pods accept traffic only from pods of the same job (torchrun's
  rendezvous, NCCL/gloo collectives on ports the libraries choose) and, when the operator knows its
  own namespace, from pods there (the metrics scrape of the operator's monitoring stack);
- `<job>-eval`: evaluation pods accept nothing (they serve no one; the result leaves through the
  container's termination message).
Egress is left open: the pods reach the API server (rank 0's status reports), storage and registries,
which differ per cluster. A NetworkPolicy needs a CNI that enforces it (Calico, Cilium, ...).
"""

from __future__ import annotations

from typing import Any

from tokensmith.operator import names

NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by Kubernetes >= 1.22


def _selector(job: str, role: str) -> dict[str, Any]:
    return {"matchLabels": {names.LABEL_JOB: job, names.LABEL_ROLE: role}}


def policies(meta: Any, job: str, scrape_namespace: str | None) -> list[dict[str, Any]]:
    """`meta(name, role)` builds the objects' metadata (owner, labels) as the other children's."""
    peers: list[dict[str, Any]] = [{"from": [{"podSelector": _selector(job, names.ROLE_WORKER)}]}]
    if scrape_namespace:
        peers.append({"from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: scrape_namespace}}}]})
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(f"{job}-workers", names.ROLE_WORKER),
            "spec": {
                "podSelector": _selector(job, names.ROLE_WORKER),
                "policyTypes": ["Ingress"],
                "ingress": peers,
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta(f"{job}-eval", names.ROLE_EVAL),
            "spec": {
                "podSelector": _selector(job, names.ROLE_EVAL),
                "policyTypes": ["Ingress"],
                "ingress": [],
            },
        },
    ]
