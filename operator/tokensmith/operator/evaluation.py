"""Evaluation scheduling: which checkpoint gets an evaluation run, and folding results into status.

Rule: the operator counts the distinct completed checkpoints it sees in `status.lastCheckpoint`
(`status.checkpointsObserved`); every `evaluation.everyCheckpoints`-th one gets one evaluation
run. A step is never evaluated twice: a step already in `status.evaluations` or with an existing
evaluation run is skipped. A failed evaluation is recorded in `status.evaluations` and an Event,
and never changes the training job's phase.
"""

from __future__ import annotations

from tokensmith.operator.names import eval_job_name
from tokensmith.operator.observed import CreateEvaluation, EmitEvent, EvalObservation
from tokensmith.operator.spec import EvaluationResult, LLMTrainingJobSpec, LLMTrainingJobStatus


def schedule(
    job_name: str, spec: LLMTrainingJobSpec, status: LLMTrainingJobStatus, known_steps: set[int]
) -> tuple[LLMTrainingJobStatus, list[CreateEvaluation | EmitEvent]]:
    """Count a newly reported checkpoint and decide whether it gets an evaluation run.

    `known_steps`: steps with an evaluation run already observed (Jobs that exist), so that an
    operator restarted between creating a Job and recording it never creates a second one.
    """
    ckpt = status.last_checkpoint
    if ckpt is None:
        return status, []
    if status.last_observed_checkpoint_step is not None and ckpt.step <= status.last_observed_checkpoint_step:
        return status, []
    new = status.model_copy(deep=True)
    new.checkpoints_observed += 1
    new.last_observed_checkpoint_step = ckpt.step
    actions: list[CreateEvaluation | EmitEvent] = [
        EmitEvent("Normal", "CheckpointSaved", f"checkpoint of step {ckpt.step} complete at {ckpt.path}")
    ]
    ev = spec.evaluation
    due = bool(ev.tasks) and new.checkpoints_observed % ev.every_checkpoints == 0
    already = ckpt.step in known_steps or any(e.step == ckpt.step for e in new.evaluations)
    if due and not already:
        name = eval_job_name(job_name, ckpt.step)
        new.evaluations.append(EvaluationResult(step=ckpt.step, job=name, phase="Running"))
        actions.append(CreateEvaluation(step=ckpt.step, path=ckpt.path, name=name))
        actions.append(
            EmitEvent("Normal", "EvaluationStarted", f"evaluating step {ckpt.step} on {', '.join(ev.tasks)}")
        )
    return new, actions


def collect(
    status: LLMTrainingJobStatus, observed: tuple[EvalObservation, ...]
) -> tuple[LLMTrainingJobStatus, list[EmitEvent]]:
    """Fold finished evaluation runs into status.evaluations (each result recorded once)."""
    new = status.model_copy(deep=True)
    events: list[EmitEvent] = []
    by_step = {e.step: e for e in new.evaluations}
    for obs in sorted(observed, key=lambda o: o.step):
        entry = by_step.get(obs.step)
        if entry is None:  # created before an operator restart, never recorded: adopt it
            entry = EvaluationResult(step=obs.step, job=obs.name, phase="Running")
            new.evaluations.append(entry)
            by_step[obs.step] = entry
        if entry.phase != "Running" or obs.phase == "Running":
            continue
        entry.phase = obs.phase
        entry.results = dict(obs.results or {})
        entry.message = obs.message
        if obs.phase == "Succeeded":
            summary = ", ".join(f"{k}={_short(v)}" for k, v in list(entry.results.items())[:6])
            events.append(
                EmitEvent("Normal", "EvaluationSucceeded", f"step {obs.step}: {summary or 'no metrics'}")
            )
        else:
            events.append(
                EmitEvent(
                    "Warning", "EvaluationFailed", f"step {obs.step}: {obs.message or 'evaluation failed'}"
                )
            )
    new.evaluations.sort(key=lambda e: e.step)
    return new, events


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
