"""What a driver observed about one job's children, as plain typed data.

The decision functions (`reconcile.py` and the modules it uses) read only these types, never the
Kubernetes API: the kopf handlers build them from pods and Jobs (`observe.py`), the local runner
from its processes. One observation is a snapshot taken at `Observed.now`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tokensmith.operator.spec import LLMTrainingJobStatus

WorkerPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
EvalPhase = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class WorkerObservation:
    """One worker (Kubernetes: one pod; local runner: one node's process group).

    `reason` carries the most specific cause a driver knows: the container's terminated reason
    (`OOMKilled`, `Error`, `Completed`), the pod's (`Evicted`, `NodeLost`, `Preempted`,
    `DeletionByTaintManager`, ...) or the local runner's (`Killed`).
    """

    index: int  # NODE_RANK, 0 = the rendezvous master
    attempt: int
    phase: WorkerPhase
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    terminating: bool = False  # deletion requested (Kubernetes: deletionTimestamp set)
    name: str | None = None
    node: str | None = None  # Kubernetes: spec.nodeName once scheduled
    # Kubernetes: deletionTimestamp (the time the grace period ends), for stuck-pod detection
    deletion_time: datetime | None = None
    gated: bool = False  # held back by a scheduling gate (Kueue: not admitted yet)
    # a DisruptionTarget condition on a pod that still runs: it is about to be evicted/preempted
    disruption: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class NodeObservation:
    """One Kubernetes node as the decisions need it (the local runner has none)."""

    name: str
    ready: bool = True  # the Ready condition is True
    ready_since: datetime | None = None  # lastTransitionTime of the Ready condition
    unschedulable: bool = False  # cordoned
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)


@dataclass(frozen=True)
class EvalObservation:
    """One evaluation run of one checkpoint step (Kubernetes: a batch/v1 Job and its pod)."""

    step: int
    phase: EvalPhase
    name: str | None = None
    results: dict[str, Any] | None = None
    message: str | None = None


@dataclass(frozen=True)
class Observed:
    """Everything the decisions need besides the spec and the last status."""

    now: datetime
    workers: tuple[WorkerObservation, ...] = ()
    evaluations: tuple[EvalObservation, ...] = ()
    generation: int | None = None
    # None: the driver knows nothing about nodes (local runner, or no node watch); {} : none exist
    nodes: dict[str, NodeObservation] | None = None
    # labels of the namespace's ServiceAccounts by name, when the admission policy needs them
    service_accounts: Mapping[str, Mapping[str, str]] | None = None

    def attempt_workers(self, attempt: int) -> dict[int, WorkerObservation]:
        """Workers of one attempt by index (a later duplicate of an index wins)."""
        return {w.index: w for w in self.workers if w.attempt == attempt}

    def live_workers_except(self, attempt: int) -> tuple[WorkerObservation, ...]:
        """Workers of other attempts that still exist and are not being deleted yet."""
        return tuple(w for w in self.workers if w.attempt != attempt and not w.terminating)


@dataclass(frozen=True)
class Failure:
    """Why a gang attempt failed, and whether another attempt may help."""

    kind: str  # one of spec.FAILURE_KINDS, or "Config" for exit code 78
    reason: str  # CamelCase, for conditions and Events
    message: str
    retryable: bool
    worker: int | None = None
    exit_code: int | None = None
    failure_class: str = "Application"  # spec.FAILURE_CLASSES
    nodes: tuple[str, ...] = ()  # nodes of the failing worker(s)


@dataclass(frozen=True)
class GangPlan:
    """What an attempt's workers get beyond the spec after a rollback (see rollback.py): where the trainer
    resumes (`TOKENSMITH_RESUME_FROM`; None: the trainer's default, the newest checkpoint) and the sample
    ranges added to its `data.skip_samples`."""

    resume_from: str | None = None
    skip_samples: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class CreateGang:
    """Make sure these workers of `attempt` exist (creation by deterministic name: never a second copy).
    `avoid_nodes`: the workers must not be placed there (required node anti-affinity)."""

    attempt: int
    indices: tuple[int, ...]
    avoid_nodes: tuple[str, ...] = ()
    # the attempt's gang size (Kueue's pod-group-total-count); informational, not part of equality
    group_size: int | None = field(default=None, compare=False)
    plan: GangPlan = GangPlan()


@dataclass(frozen=True)
class DeleteWorkers:
    """Delete these workers (gracefully: the trainer checkpoints on SIGTERM; `force`: grace period 0,
    for pods stuck Terminating on a lost node)."""

    workers: tuple[WorkerObservation, ...]
    reason: str
    force: bool = False


@dataclass(frozen=True)
class CordonNode:
    """Mark a node unschedulable (opt-in: spec.nodeHealth.cordon)."""

    node: str
    reason: str


@dataclass(frozen=True)
class DeleteJob:
    """Delete the job itself (ttlSecondsAfterFinished); its children follow through ownerReferences."""

    reason: str


@dataclass(frozen=True)
class CreateEvaluation:
    """Evaluate the checkpoint of `step` found at `path` (at most once per step)."""

    step: int
    path: str
    name: str


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = CreateGang | DeleteWorkers | CreateEvaluation | EmitEvent | CordonNode | DeleteJob


@dataclass(frozen=True)
class Decision:
    """The new status, what to do, and when to look again at the latest (seconds)."""

    status: LLMTrainingJobStatus
    actions: tuple[Action, ...] = field(default_factory=tuple)
    requeue_after: float | None = None
