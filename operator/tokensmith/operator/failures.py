"""Failure classification: what went wrong with a worker, and may another attempt fix it.

Kubernetes reports failures in several places; we read them in order of specificity:
1. the pod's `DisruptionTarget` condition (Kubernetes >= 1.26) says why a pod was killed from
   outside: `PreemptionByScheduler`, `DeletionByTaintManager` (its node went NotReady),
   `EvictionByEvictionAPI`, `TerminationByKubelet` (node pressure);
2. the pod's `status.reason`: `Evicted`, `NodeLost`, `Shutdown`, `UnexpectedAdmissionError`;
3. the container's terminated state: `reason` (`OOMKilled`, `Error`) and `exitCode`.
Exit codes: 0 success, 78 (EX_CONFIG) the trainer's "fix your config" code, anything else a crash.
A kernel OOM kill shows as exit code 137 with reason OOMKilled.
"""

from __future__ import annotations

import dataclasses
import re

from tokensmith.operator.observed import Failure, WorkerObservation
from tokensmith.operator.spec import EXIT_CONFIG, RestartPolicySpec

# Failure kind -> class (the restart budget it uses). Application: the trainer's own doing (a crash,
# a config error, a hang, its container's memory limit); Infrastructure: the node or the hardware
# (lost/NotReady node, kubelet eviction under node pressure, GPU errors); Scheduling: the cluster
# wanted the resources back (preemption) or could not place the gang.
KIND_CLASSES = {
    "ExitCode": "Application",
    "Config": "Application",
    "Hang": "Application",
    "OOMKilled": "Application",
    "Evicted": "Infrastructure",
    "NodeLost": "Infrastructure",
    "PodLost": "Infrastructure",
    "Preempted": "Scheduling",
    "Unschedulable": "Scheduling",
}
# Termination messages that blame the GPU or its links, not the program (NVIDIA Xid errors are what
# the driver logs for them: https://docs.nvidia.com/deploy/xid-errors/).
GPU_ERROR = re.compile(
    r"\bXid\b|uncorrectable ECC|ECC error|fallen off the bus|NVLink error|GPU is lost", re.IGNORECASE
)

# Pod/container reasons -> our failure kinds.
_REASON_KINDS = {
    "OOMKilled": "OOMKilled",
    "Evicted": "Evicted",
    "EvictionByEvictionAPI": "Evicted",
    "TerminationByKubelet": "Evicted",
    "Shutdown": "Evicted",
    "Terminated": "Evicted",  # graceful node shutdown
    "Preempted": "Preempted",
    "PreemptionByScheduler": "Preempted",
    "PreemptionByKubeScheduler": "Preempted",
    "StoppedByKueue": "Preempted",  # Kueue preempted or evicted the Workload
    "NodeLost": "NodeLost",
    "DeletionByTaintManager": "NodeLost",
    "DeletionByPodGC": "NodeLost",
    "NodeAffinity": "Evicted",
}


def classify_worker(worker: WorkerObservation, policy: RestartPolicySpec) -> Failure | None:
    """The failure a finished or lost worker represents, or None when it is fine (running or exit 0);
    with its class and the worker's node."""
    found = _classify(worker, policy)
    return attribute(found, worker) if found is not None else None


def attribute(failure: Failure, worker: WorkerObservation | None = None) -> Failure:
    """Set the failure class (from the kind; GPU errors in an exit message are Infrastructure) and
    the node of the failing worker."""
    cls = KIND_CLASSES.get(failure.kind, "Application")
    reason = failure.reason
    if failure.kind == "ExitCode" and GPU_ERROR.search(failure.message or ""):
        cls, reason = "Infrastructure", "GPUError"
    nodes = failure.nodes or ((worker.node,) if worker is not None and worker.node else ())
    return dataclasses.replace(failure, failure_class=cls, reason=reason, nodes=nodes)


def _classify(worker: WorkerObservation, policy: RestartPolicySpec) -> Failure | None:
    if worker.phase == "Unknown":  # the node stopped reporting (kubelet gone)
        return _failure(
            "NodeLost", "NodeLost", f"worker {worker.index}: its node stopped reporting", worker, policy
        )
    if worker.phase != "Failed":
        return None  # Pending, Running, or Succeeded (Kubernetes: every container exited 0)
    kind = _REASON_KINDS.get(worker.reason or "")
    if kind is not None:
        detail = f" (exit code {worker.exit_code})" if worker.exit_code is not None else ""
        text = f"worker {worker.index} {kind}{detail}" + (f": {worker.message}" if worker.message else "")
        return _failure(kind, kind, text, worker, policy)
    code = worker.exit_code
    if code is None:
        text = f"worker {worker.index} failed ({worker.reason or 'no exit code'})"
        return _failure("ExitCode", worker.reason or "Failed", text, worker, policy)
    if code == EXIT_CONFIG:
        text = f"worker {worker.index} exited {code}: the trainer rejected its configuration" + (
            f": {worker.message}" if worker.message else " (see the pod log)"
        )
        return Failure("Config", "ConfigError", text, retryable=False, worker=worker.index, exit_code=code)
    if code in policy.non_retryable_exit_codes:
        text = f"worker {worker.index} exited {code}, listed in restartPolicy.nonRetryableExitCodes"
        return Failure(
            "ExitCode", "NonRetryableExitCode", text, retryable=False, worker=worker.index, exit_code=code
        )
    text = f"worker {worker.index} exited {code}" + (f": {worker.message}" if worker.message else "")
    return _failure("ExitCode", "WorkerFailed", text, worker, policy)


def lost_worker(index: int, policy: RestartPolicySpec) -> Failure:
    """A worker of a gang that was complete has disappeared (deleted, or garbage-collected with its node)."""
    message = f"worker {index} disappeared (pod deleted or garbage-collected with a lost node)"
    return Failure(
        "PodLost",
        "PodLost",
        message,
        retryable="PodLost" in policy.retry_on,
        worker=index,
        failure_class="Infrastructure",
    )


def hang(seconds: float, policy: RestartPolicySpec) -> Failure:
    """The gang sent no progress heartbeat for longer than the hang timeout."""
    message = (
        f"no progress heartbeat for {seconds:.0f}s (restartPolicy.hangTimeoutSeconds = "
        f"{policy.hang_timeout_seconds:.0f})"
    )
    return Failure("Hang", "Hang", message, retryable="Hang" in policy.retry_on)


def worst(failures: list[Failure]) -> Failure | None:
    """The failure that decides the gang's fate: a non-retryable one wins, then the lowest worker.
    A gang where worker 3 exited 78 must not be retried because worker 1 was OOM-killed first."""
    if not failures:
        return None
    return sorted(failures, key=lambda f: (f.retryable, f.worker if f.worker is not None else -1))[0]


def _failure(
    kind: str, reason: str, text: str, worker: WorkerObservation, policy: RestartPolicySpec
) -> Failure:
    retryable = kind in policy.retry_on
    if not retryable:
        text += f" ({kind} is not in restartPolicy.retryOn)"
    return Failure(kind, reason, text, retryable=retryable, worker=worker.index, exit_code=worker.exit_code)


def unschedulable(seconds: float, running: int, size: int, policy: RestartPolicySpec) -> Failure:
    """The gang did not get fully running within the pending timeout (e.g. a partial gang holds GPUs)."""
    message = (
        f"only {running}/{size} worker(s) running {seconds:.0f}s after the attempt started "
        f"(restartPolicy.pendingTimeoutSeconds = {policy.pending_timeout_seconds:.0f})"
    )
    return Failure(
        "Unschedulable",
        "Unschedulable",
        message,
        retryable="Unschedulable" in policy.retry_on,
        failure_class="Scheduling",
    )
