"""From local processes and the trainer's report lines to the operator's typed observations.

The local counterpart of `tokensmith.operator.observe` (pods and Jobs) and of the trainer's status
patches: pure functions, so the scenario tests can drive them next to the Kubernetes path and check
that `reconcile` takes the same decisions.

Mapping (Kubernetes -> here):
- a worker pod -> one node's launcher process (`tokensmith train --nproc P`); Running while it
  lives, Succeeded on exit 0, Failed otherwise with the exit code (a signal N reads 128 + N, as the
  container runtime reports it) and reason `Error`, the kubelet's reason for a non-zero exit;
- the pod's termination message (FallbackToLogsOnError) -> the last line of the process's log;
- `deletionTimestamp` -> the runner has sent SIGTERM;
- an evaluation Job and its termination message -> a `tokensmith eval` process and the file named
  by `TOKENSMITH_TERMINATION_LOG`;
- the trainer's `status.progress` / `status.lastCheckpoint` patches -> the same fields taken from the
  JSON lines the trainer appends to `TOKENSMITH_REPORT_FILE`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokensmith.operator.observed import EvalObservation, WorkerObservation
from tokensmith.operator.spec import CheckpointRef, LLMTrainingJobStatus, Progress


@dataclass(frozen=True)
class ProcessState:
    """What the runner knows about one worker process."""

    index: int
    attempt: int
    returncode: int | None  # None while it runs; negative: killed by that signal (Popen's convention)
    terminating: bool = False
    last_line: str | None = None
    name: str | None = None


def exit_code(returncode: int) -> int:
    """Popen's return code as a shell (and the container runtime) reports it: signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def worker_observation(proc: ProcessState) -> WorkerObservation:
    if proc.returncode is None:
        return WorkerObservation(
            proc.index, proc.attempt, "Running", terminating=proc.terminating, name=proc.name
        )
    code = exit_code(proc.returncode)
    return WorkerObservation(
        index=proc.index,
        attempt=proc.attempt,
        phase="Succeeded" if code == 0 else "Failed",
        exit_code=code,
        reason="Completed" if code == 0 else "Error",
        message=(proc.last_line or "")[:500] or None,
        terminating=proc.terminating,
        name=proc.name,
    )


def eval_observation(
    step: int, name: str, returncode: int | None, termination: str | None, last_line: str | None = None
) -> EvalObservation:
    """A `tokensmith eval` process: Running, or its result from the termination message (the same
    short JSON the operator reads from the evaluation pod: {"results": ...} or {"error": ...})."""
    if returncode is None:
        return EvalObservation(step, "Running", name)
    doc: Any = None
    if termination:
        try:
            doc = json.loads(termination)
        except ValueError:
            doc = None
    if isinstance(doc, dict) and "error" in doc:
        return EvalObservation(step, "Failed", name, None, str(doc["error"])[:500])
    if returncode == 0 and isinstance(doc, dict) and isinstance(doc.get("results"), dict):
        return EvalObservation(step, "Succeeded", name, doc["results"], None)
    if returncode == 0:
        return EvalObservation(step, "Failed", name, None, "no results reported")
    detail = f": {last_line[:300]}" if last_line else ""
    return EvalObservation(step, "Failed", name, None, f"evaluator exited {exit_code(returncode)}{detail}")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def fold_reports(
    status: LLMTrainingJobStatus, records: Iterable[Mapping[str, Any]], total_tokens: int | None = None
) -> LLMTrainingJobStatus:
    """Apply the trainer's report lines to the status as its Kubernetes patches would
    (`reporting.progress_patch` / `checkpoint_patch`): the newest report wins."""
    new = status.model_copy(deep=True)
    for rec in records:
        kind = rec.get("type")
        if kind == "progress":
            tps = rec.get("tokens_per_s")
            new.progress = Progress(
                step=int(rec.get("step", 0)),
                tokens=int(rec.get("tokens", 0)),
                loss=rec.get("loss"),
                heartbeat_time=_time(rec.get("time")),
                total_tokens=total_tokens,
                tokens_per_second=round(float(tps), 1) if tps is not None else None,
            )
        elif kind == "checkpoint":
            new.last_checkpoint = CheckpointRef(
                step=int(rec["step"]), path=str(rec["path"]), time=_time(rec.get("time"))
            )
    return new
