"""From local processes and the trainer's report lines to the operator's typed observations.

The local counterpart of `tokensmith.operator.observe` (pods and Jobs) and of the trainer's status
patches: pure functions, so the scenario tests can drive them next to the Kubernetes path and check
that `reconcile` takes the same decisions.

Mapping (Kubernetes -> here):
- a worker pod -> one node's launcher process (`tokensmith train --nproc P`), mapped by the
  operator's `observe.worker_from_exit`: Running while it lives, Succeeded on exit 0, Failed otherwise
  (the launcher reports a rank killed by signal N as exit 128 + N, reason `Error`);
- the pod's termination message (FallbackToLogsOnError) -> the last line of the process's log;
- `deletionTimestamp` -> the runner has sent SIGTERM;
- an evaluation Job and its termination message -> a `tokensmith eval` process and the file named
  by `TOKENSMITH_TERMINATION_LOG`;
- the trainer's `status.progress` / `status.lastCheckpoint` (with `healthy`) / `lastHealthyCheckpoint` /
  `divergence` patches -> the same fields taken from the JSON lines the trainer appends to
  `TOKENSMITH_REPORT_FILE` (the runner tags each line with its attempt, which the divergence keeps);
- a node name -> none: one machine, so a rollback replays in place (no anti-affinity, no suspects).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokensmith.operator.observed import EvalObservation, WorkerObservation
from tokensmith.operator.spec import LLMTrainingJobStatus


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
    from tokensmith.operator.launch import exit_code_of

    return exit_code_of(returncode)


def worker_observation(proc: ProcessState) -> WorkerObservation:
    """The operator's own mapping (`observe.worker_from_exit`), plus the last log line as the message
    (a pod's termination message with FallbackToLogsOnError)."""
    from dataclasses import replace

    from tokensmith.operator.observe import worker_from_exit

    obs = worker_from_exit(
        proc.index, proc.attempt, proc.returncode, terminating=proc.terminating, name=proc.name
    )
    if obs.phase == "Failed" and proc.last_line:
        obs = replace(obs, message=proc.last_line[:500])
    return obs


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


def fold_reports(
    status: LLMTrainingJobStatus, records: Iterable[Mapping[str, Any]], total_tokens: int | None = None
) -> LLMTrainingJobStatus:
    """Apply the trainer's report lines in order with the operator's `observe.apply_report`, which
    mirrors the trainer's Kubernetes status patches: the newest report wins."""
    from tokensmith.operator.observe import apply_report

    for rec in records:
        status = apply_report(status, rec, total_tokens)
    return status
