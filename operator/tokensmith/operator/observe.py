"""From raw Kubernetes objects (pods, batch Jobs) to the typed observations the decisions read.

Pure functions over the JSON the API returns; the kopf handlers feed them from kopf's in-memory
indices, so a reconcile needs no LIST request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from tokensmith.operator import names
from tokensmith.operator.observed import EvalObservation, NodeObservation, WorkerObservation, WorkerPhase
from tokensmith.operator.spec import (
    CheckpointRef,
    DivergenceReport,
    LLMTrainingJobStatus,
    Progress,
    SigtermSave,
)

# Disruption reasons Kubernetes writes to the DisruptionTarget pod condition (>= 1.26), and Kueue's
# StoppedByKueue (preempted or evicted Workload; Kueue's pod integration writes it to a
# TerminationTarget or DisruptionTarget condition before deleting the pod).
_DISRUPTIONS = {"PreemptionByScheduler", "PreemptionByKubeScheduler", "DeletionByTaintManager",
                "EvictionByEvictionAPI", "DeletionByPodGC", "TerminationByKubelet",
                "StoppedByKueue"}  # fmt: skip
_DISRUPTION_CONDITIONS = ("DisruptionTarget", "TerminationTarget")


def worker_from_pod(pod: Mapping[str, Any]) -> WorkerObservation | None:
    """A worker pod as an observation (None for pods that are not workers of a job)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(names.LABEL_ROLE) != names.ROLE_WORKER or names.LABEL_ATTEMPT not in labels:
        return None
    try:
        attempt = int(labels[names.LABEL_ATTEMPT])
        index = int(labels.get(names.LABEL_INDEX, "-1"))
    except ValueError:
        return None
    status = pod.get("status") or {}
    phase: WorkerPhase = status.get("phase") or "Pending"
    if phase not in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
        phase = "Unknown"
    exit_code, reason, message = _terminated(status)
    disruption = None
    for cond in status.get("conditions") or []:
        disrupted = cond.get("type") in _DISRUPTION_CONDITIONS and cond.get("status") == "True"
        if disrupted and cond.get("reason") in _DISRUPTIONS:
            reason, message = cond["reason"], cond.get("message") or message
            disruption = cond["reason"]
    if status.get("reason") in (
        "Evicted",
        "NodeLost",
        "Shutdown",
        "Terminated",
        "NodeAffinity",
        "Preempting",
    ):
        reason = "Preempted" if status["reason"] == "Preempting" else status["reason"]
        message = status.get("message") or message
    return WorkerObservation(
        index=index,
        attempt=attempt,
        phase=phase,
        exit_code=exit_code,
        reason=reason,
        message=message,
        terminating=bool(meta.get("deletionTimestamp")),
        name=meta.get("name"),
        node=(pod.get("spec") or {}).get("nodeName"),
        deletion_time=_time(meta.get("deletionTimestamp")),
        gated=bool((pod.get("spec") or {}).get("schedulingGates")),
        disruption=disruption if phase in ("Pending", "Running") else None,
    )


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def node_from(obj: Mapping[str, Any]) -> NodeObservation | None:
    """A core/v1 Node as an observation (Ready condition, cordon, taints)."""
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        return None
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    taints = tuple(
        (str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", "")))
        for t in spec.get("taints") or []
    )
    return NodeObservation(
        name=name,
        # no Ready condition yet (a node just registering) counts as ready: nothing runs there
        ready=ready is None or ready.get("status") == "True",
        ready_since=_time(ready.get("lastTransitionTime")) if ready else None,
        unschedulable=bool(spec.get("unschedulable")),
        taints=taints,
    )


def _terminated(status: Mapping[str, Any]) -> tuple[int | None, str | None, str | None]:
    """Exit code, reason and message of the first terminated container (the trainer)."""
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            message = (term.get("message") or "").strip().splitlines()
            return term.get("exitCode"), term.get("reason"), (message[-1][:500] if message else None)
    return None, None, None


def evaluation_from(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> EvalObservation | None:
    """An evaluation Job (and its pod, for the termination message) as an observation."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(names.LABEL_ROLE) != names.ROLE_EVAL:
        return None
    try:
        step = int(labels[names.LABEL_STEP])
    except (KeyError, ValueError):
        return None
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    results, message = _eval_message(pods)
    if "Complete" in conditions or status.get("succeeded"):
        if results is None:
            return EvalObservation(step, "Failed", meta.get("name"), None, message or "no results reported")
        return EvalObservation(step, "Succeeded", meta.get("name"), results, None)
    if "Failed" in conditions or status.get("failed"):
        reason = conditions.get("Failed", {}).get("message") or conditions.get("Failed", {}).get("reason")
        return EvalObservation(
            step, "Failed", meta.get("name"), None, message or reason or "evaluation failed"
        )
    return EvalObservation(step, "Running", meta.get("name"))


def _eval_message(pods: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """Results from the evaluator's termination message ({"results": ...} or {"error": ...})."""
    for pod in pods:
        exit_code, reason, _ = _terminated(pod.get("status") or {})
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            text = term.get("message")
            if not text:
                continue
            try:
                doc = json.loads(text)
            except ValueError:
                return None, f"exit code {exit_code}: {text.strip().splitlines()[-1][:300]}"
            if isinstance(doc, dict) and "error" in doc:
                return None, str(doc["error"])[:500]
            if isinstance(doc, dict) and isinstance(doc.get("results"), dict):
                return doc["results"], None
        if exit_code not in (None, 0):
            return None, f"evaluator exited {exit_code}" + (f" ({reason})" if reason else "")
    return None, None


# ------------------------------------------------------------------ for drivers without Kubernetes


def worker_from_exit(
    index: int, attempt: int, returncode: int | None, *, terminating: bool = False, name: str | None = None
) -> WorkerObservation:
    """A local worker process as an observation (the local runner's equivalent of a pod).

    `returncode` as `subprocess.Popen.returncode`: None while running, a negative value -N when killed
    by signal N (reported as exit code 128 + N, reason `OOMKilled` for SIGKILL as a kernel OOM kill
    looks, `Killed` for other signals).
    """
    if returncode is None:
        return WorkerObservation(index, attempt, "Running", terminating=terminating, name=name)
    if returncode == 0:
        return WorkerObservation(index, attempt, "Succeeded", exit_code=0, terminating=terminating, name=name)
    if returncode < 0:
        signal = -returncode
        reason = "OOMKilled" if signal == 9 else "Killed"
        return WorkerObservation(
            index,
            attempt,
            "Failed",
            exit_code=128 + signal,
            reason=reason,
            terminating=terminating,
            name=name,
        )
    return WorkerObservation(
        index, attempt, "Failed", exit_code=returncode, reason="Error", terminating=terminating, name=name
    )


def apply_report(
    status: LLMTrainingJobStatus, record: Mapping[str, Any], total_tokens: int | None = None
) -> LLMTrainingJobStatus:
    """Fold one trainer report (a `TOKENSMITH_REPORT_FILE` JSON line: type progress|checkpoint|diverged|done)
    into the status the way the trainer's Kubernetes reporter patches it: `progress`,
    `lastCheckpoint` (with `healthy`) and `divergence`. Unknown record types are ignored (pure;
    returns a new status)."""
    kind = record.get("type")
    new = status.model_copy(deep=True)
    when = record.get("time")
    if kind == "progress":
        new.progress = Progress.model_validate(
            {
                "step": int(record.get("step", 0)),
                "tokens": int(record.get("tokens", 0)),
                "loss": record.get("loss"),
                "heartbeatTime": when,
                "tokensPerSecond": record.get("tokens_per_s"),
                "totalTokens": total_tokens,
                "sourceTokens": record.get("source_tokens"),
            }
        )
    elif kind == "checkpoint":
        new.last_checkpoint = CheckpointRef.model_validate(
            {"step": int(record["step"]), "path": str(record["path"]), "time": when}
            | ({"healthy": bool(record["healthy"])} if "healthy" in record else {})
            | {"blockedSeconds": record.get("blocked_s"), "durableSeconds": record.get("durable_s")}
        )
        if record.get("healthy"):  # the trainer patches status.lastHealthyCheckpoint beside it
            new.last_healthy_checkpoint = CheckpointRef.model_validate(
                {"step": int(record["step"]), "path": str(record["path"]), "time": when}
            )
    elif kind == "diverged":  # the trainer's status.divergence patch; the runner tags the attempt
        new.divergence = DivergenceReport.model_validate(
            {k: record.get(k) for k in ("step", "kind", "samples", "attempt")} | {"time": when}
        )
    elif kind == "sigterm":  # the trainer's status.progress.sigterm patch
        sigterm = SigtermSave.model_validate(
            {
                "step": int(record.get("step", 0)),
                "saved": bool(record.get("saved")),
                "graceLeftSeconds": record.get("grace_left_s"),
                "expectedSaveSeconds": record.get("expected_save_s"),
            }
        )
        new.progress = (new.progress or Progress()).model_copy(update={"sigterm": sigterm})
    elif kind == "done" and new.progress is not None:
        new.progress = new.progress.model_copy(
            update={
                "step": int(record.get("step", new.progress.step)),
                "tokens": int(record.get("tokens", 0)),
            }
        )
    return new
