"""Admission through a queue: Kueue's plain-pod groups, or a Volcano queue on the PodGroup.

Kueue (https://kueue.sigs.k8s.io/docs/tasks/run/plain_pods/, KEP-976): with the `pod` integration
enabled, a pod labelled `kueue.x-k8s.io/queue-name` is gated at creation (scheduling gate
`kueue.x-k8s.io/admission`) until Kueue admits its Workload. Pods with the same
`kueue.x-k8s.io/pod-group-name` label and the annotation `kueue.x-k8s.io/pod-group-total-count`
form one Workload, built once that many pods exist: the gang is admitted as a whole or not at all.
We use one group per attempt (`<job>-a<attempt>`, the pod names' prefix) with the attempt's gang
size as total count, and mark every pod `kueue.x-k8s.io/retriable-in-group: "false"`: Kueue then
considers the group finished as soon as no pod of it runs and one has ended, so the quota of a
failed attempt is released and the next attempt queues as a new Workload (Kueue's own replacement
pods would need the same group and a Kueue-side retry we do not use). A WorkloadPriorityClass goes
in the label `kueue.x-k8s.io/priority-class`.

Volcano (https://volcano.sh/en/docs/podgroup/): the PodGroup carries `queue`, `minMember` (the
gang size), `priorityClassName` and optional `networkTopology` ({mode: hard|soft,
highestTierAllowed}); pods join it through the `scheduling.k8s.io/group-name` annotation.
"""

from __future__ import annotations

from typing import Any

from tokensmith.operator.spec import LLMTrainingJobSpec

KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_RETRIABLE = "kueue.x-k8s.io/retriable-in-group"
KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"
KUEUE_GATE = "kueue.x-k8s.io/admission"
VOLCANO_SCHEDULERS = ("volcano",)


def uses_volcano(spec: LLMTrainingJobSpec) -> bool:
    return spec.cluster.scheduler_name in VOLCANO_SCHEDULERS


def uses_kueue(spec: LLMTrainingJobSpec) -> bool:
    """A queue name without Volcano means Kueue."""
    return spec.scheduling.queue_name is not None and not uses_volcano(spec)


def kueue_group_name(job: str, attempt: int) -> str:
    return f"{job}-a{attempt}"


def kueue_metadata(
    spec: LLMTrainingJobSpec, job: str, attempt: int, group_size: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that make an attempt's pods one Kueue Workload (empty without Kueue)."""
    if not uses_kueue(spec):
        return {}, {}
    labels = {KUEUE_QUEUE: str(spec.scheduling.queue_name), KUEUE_GROUP: kueue_group_name(job, attempt)}
    if spec.scheduling.workload_priority_class:
        labels[KUEUE_PRIORITY] = spec.scheduling.workload_priority_class
    annotations = {KUEUE_TOTAL: str(group_size), KUEUE_RETRIABLE: "false"}
    return labels, annotations


def volcano_pod_group_spec(spec: LLMTrainingJobSpec, min_resources: dict[str, Any]) -> dict[str, Any]:
    """spec of the Volcano PodGroup: the whole gang or nothing, in the job's queue."""
    out: dict[str, Any] = {"minMember": spec.cluster.nodes, "minResources": min_resources}
    if spec.scheduling.queue_name:
        out["queue"] = spec.scheduling.queue_name
    if spec.cluster.priority_class_name:
        out["priorityClassName"] = spec.cluster.priority_class_name
    topo = spec.scheduling.network_topology
    if topo is not None:
        out["networkTopology"] = topo.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out
