"""Decisions about nodes: lost nodes, pods stuck Terminating on them, disruption notices, and the
suspect nodes later attempts avoid. Pure functions over `observed.NodeObservation`s.

Kubernetes background (https://kubernetes.io/docs/concepts/architecture/nodes/#condition,
https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/#taint-based-evictions):
a node whose kubelet stops reporting gets Ready=Unknown and the `node.kubernetes.io/unreachable`
taint; its pods keep their last reported phase, and once deleted they stay Terminating forever,
because only the (gone) kubelet confirms a graceful deletion (jobset#574). A deletion with grace
period 0 removes them from the API server; the containers, if the node ever comes back, are killed by
its kubelet. A cordoned node (`spec.unschedulable`, shown as the `node.kubernetes.io/unschedulable`
taint) or one tainted NoSchedule/NoExecute for maintenance is about to be drained: that is a notice,
not yet a failure. `DisruptionTarget` is the pod condition Kubernetes sets before an eviction or
preemption (Kubernetes >= 1.26).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from tokensmith.operator.observed import Failure, NodeObservation, WorkerObservation
from tokensmith.operator.spec import NodeHealthSpec, SuspectNode, Toleration

# Taints Kubernetes itself manages for node conditions; NotReady/unreachable is handled as a lost
# node, the pressure taints only keep new pods away. The cordon taint is a maintenance notice.
_CONDITION_TAINT_PREFIX = "node.kubernetes.io/"
CORDON_TAINT = "node.kubernetes.io/unschedulable"
NOTICE_EFFECTS = ("NoSchedule", "NoExecute")


def down_reason(node: str | None, nodes: Mapping[str, NodeObservation] | None) -> str | None:
    """Why `node` cannot run or confirm the end of a pod: 'NotReady' or 'Gone' (None: healthy, or
    the driver knows nothing about nodes)."""
    if node is None or nodes is None:
        return None
    obs = nodes.get(node)
    if obs is None:
        return "Gone"
    return None if obs.ready else "NotReady"


def down_seconds(node: str, nodes: Mapping[str, NodeObservation], now: datetime) -> float:
    """How long the node has been down (a gone node: treated as down for ever)."""
    obs = nodes.get(node)
    if obs is None or obs.ready_since is None:
        return float("inf")
    return (now - obs.ready_since).total_seconds()


def stuck(
    workers: Iterable[WorkerObservation],
    nodes: Mapping[str, NodeObservation] | None,
    now: datetime,
    force_after: float,
) -> tuple[WorkerObservation, ...]:
    """Workers deleted long enough ago (their grace period, which ends at `deletion_time`, plus
    `force_after` seconds) that are still there because their node is NotReady or gone."""
    out = []
    for w in workers:
        if not w.terminating or w.deletion_time is None or down_reason(w.node, nodes) is None:
            continue
        if now >= w.deletion_time + timedelta(seconds=force_after):
            out.append(w)
    return tuple(out)


def next_stuck_check(
    workers: Iterable[WorkerObservation],
    nodes: Mapping[str, NodeObservation] | None,
    now: datetime,
    force_after: float,
) -> float | None:
    """Seconds until the next terminating worker on a down node becomes stuck (for requeueing)."""
    waits = [
        (w.deletion_time + timedelta(seconds=force_after) - now).total_seconds()
        for w in workers
        if w.terminating and w.deletion_time is not None and down_reason(w.node, nodes) is not None
    ]
    return max(min(waits), 0.0) + 0.05 if waits else None


def blocks_restart(w: WorkerObservation, nodes: Mapping[str, NodeObservation] | None) -> bool:
    """Does this old worker have to be gone before the next attempt starts? Not one on a down node:
    it holds no GPU of a healthy node, and the next attempt avoids that node anyway."""
    return down_reason(w.node, nodes) is None


def lost_workers(
    current: Iterable[WorkerObservation],
    nodes: Mapping[str, NodeObservation] | None,
    now: datetime,
    health: NodeHealthSpec,
    retryable: bool = True,
) -> list[Failure]:
    """Workers of the current attempt whose node has been down for `notReadyTimeoutSeconds`."""
    out: list[Failure] = []
    for w in current:
        reason = down_reason(w.node, nodes)
        if reason is None or w.finished or w.terminating or w.node is None or nodes is None:
            continue
        if down_seconds(w.node, nodes, now) < health.not_ready_timeout_seconds:
            continue
        what = "is NotReady/unreachable" if reason == "NotReady" else "is gone"
        out.append(
            Failure(
                "NodeLost",
                "NodeLost",
                f"worker {w.index}: node {w.node} {what}",
                retryable=retryable,
                worker=w.index,
                failure_class="Infrastructure",
                nodes=(w.node,),
            )
        )
    return out


def next_lost_check(
    current: Iterable[WorkerObservation],
    nodes: Mapping[str, NodeObservation] | None,
    now: datetime,
    health: NodeHealthSpec,
) -> float | None:
    waits = [
        health.not_ready_timeout_seconds - down_seconds(w.node, nodes, now)
        for w in current
        if w.node is not None and nodes is not None and down_reason(w.node, nodes) is not None
    ]
    return max(min(waits), 0.0) + 0.05 if waits else None


def tolerated(tolerations: Iterable[Toleration], key: str, value: str, effect: str) -> bool:
    """core/v1 toleration matching (the scheduler's rules, without tolerationSeconds)."""
    for t in tolerations:
        if t.effect is not None and t.effect != effect:
            continue
        if t.key is None and t.operator == "Exists":
            return True
        if t.key != key:
            continue
        if t.operator == "Exists" or (t.value or "") == value:
            return True
    return False


def notices(
    current: Iterable[WorkerObservation],
    nodes: Mapping[str, NodeObservation] | None,
    tolerations: Iterable[Toleration],
) -> list[tuple[WorkerObservation, str]]:
    """Disruption notices for live workers: (worker, why) for a cordoned node, an untolerated
    NoSchedule/NoExecute taint (not a node-condition taint), or a DisruptionTarget condition."""
    tolerations = list(tolerations)
    out: list[tuple[WorkerObservation, str]] = []
    for w in current:
        if w.finished or w.terminating:
            continue
        if w.disruption is not None:
            out.append((w, f"worker {w.index} has DisruptionTarget ({w.disruption})"))
            continue
        node = (nodes or {}).get(w.node or "")
        if node is None or not node.ready:
            continue
        if node.unschedulable:
            out.append((w, f"node {node.name} of worker {w.index} is cordoned"))
            continue
        for key, value, effect in node.taints:
            if effect not in NOTICE_EFFECTS or key == CORDON_TAINT:
                continue
            if key.startswith(_CONDITION_TAINT_PREFIX) or tolerated(tolerations, key, value, effect):
                continue
            out.append((w, f"node {node.name} of worker {w.index} is tainted {key}:{effect}"))
            break
    return out


# ------------------------------------------------------------------------------ suspect nodes


def add_suspects(
    suspects: list[SuspectNode], names: Iterable[str], reason: str, now: datetime, health: NodeHealthSpec
) -> list[SuspectNode]:
    """The suspect list with `names` added (or refreshed), expired entries dropped, and at most
    `maxSuspectNodes` kept (the most recently implicated win). Pure."""
    expires = now + timedelta(seconds=health.suspect_ttl_seconds)
    by_name = {s.name: s.model_copy() for s in active(suspects, now)}
    for name in names:
        old = by_name.get(name)
        failures = old.failures + 1 if old is not None else 1
        by_name[name] = SuspectNode(name=name, reason=reason, time=now, expires=expires, failures=failures)
    ranked = sorted(by_name.values(), key=lambda s: s.time or now, reverse=True)
    return sorted(ranked[: health.max_suspect_nodes], key=lambda s: s.name)


def active(suspects: Iterable[SuspectNode], now: datetime) -> list[SuspectNode]:
    return [s for s in suspects if s.expires is None or s.expires > now]


def avoid(suspects: Iterable[SuspectNode], now: datetime) -> tuple[str, ...]:
    """Node names the next attempt's pods must not be placed on."""
    return tuple(sorted(s.name for s in active(suspects, now)))
