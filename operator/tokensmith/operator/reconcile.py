"""The reconcile decision: from (spec, last status, observation) to (new status, actions).

Pure: no I/O, no clock (time comes in `Observed.now`). Both drivers call `reconcile`: the kopf
handlers (`handlers.py`) and the local runner. Drivers must apply a Decision in this order:
1. `CreateGang` / `CreateEvaluation` (creation is idempotent by name),
2. write `Decision.status`,
3. `DeleteWorkers`, then `EmitEvent`.
Creating before recording lets a restarted driver adopt what it created (`reconcile` adopts
attempts newer than the status); recording before deleting means a deletion is never mistaken for
a lost pod after a crash. Then look again after at most `Decision.requeue_after` seconds.

Phases: Pending (gang being created or scheduled) -> Running (every worker running) -> Succeeded
(worker 0 exited 0: the token budget is reached). A retryable failure -> Restarting (whole gang
deleted, backoff) -> Pending with attempt + 1; a non-retryable one, too many restarts or an
exhausted budget -> Failed. `spec.suspend` -> Suspended (gang deleted, checkpoints kept); clearing
it starts a new attempt without counting a restart.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from tokensmith.core.units import format_si
from tokensmith.operator import admission, budget, evaluation, failures, policy
from tokensmith.operator.names import JOB_NAME_PATTERN, MAX_JOB_NAME
from tokensmith.operator.observed import (
    Action,
    CreateGang,
    Decision,
    DeleteWorkers,
    EmitEvent,
    Failure,
    Observed,
    WorkerObservation,
)
from tokensmith.operator.spec import (
    TERMINAL_PHASES,
    Condition,
    FailureRecord,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    Phase,
    effective_trainer_config,
    token_budget,
)

CONDITION_TYPES = ("Running", "Restarting", "Suspended", "Succeeded", "Failed")
# How soon to look again while waiting for something that has no event of its own (pod deletion).
SHORT_REQUEUE = 1.0


def check_spec(name: str, spec: LLMTrainingJobSpec) -> str | None:
    """Constraints the schema cannot express; a one-line reason when the job can never run."""
    import re

    if len(name) > MAX_JOB_NAME or not re.match(JOB_NAME_PATTERN, name):
        return (
            f"metadata.name {name!r} must be a DNS-1035 label of at most {MAX_JOB_NAME} characters "
            "(lower-case letters, digits, '-'; starting with a letter): child names derive from it"
        )
    if spec.parallelism.tensor > 1 or spec.parallelism.pipeline > 1:
        return (
            "spec.parallelism.tensor/pipeline > 1 is not supported by the trainer yet; "
            "use data parallelism with ZeRO (parallelism.zeroStage) and set both to 1"
        )
    try:
        cfg = effective_trainer_config(spec, name)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        return f"spec.trainer (after applying the job-level sections): {_one_line(err)}"
    per_step = cfg.train.micro_batch * cfg.model.seq_len * spec.world_size
    if cfg.train.global_batch_tokens % per_step:
        return (
            f"global batch of {cfg.train.global_batch_tokens} tokens is not a multiple of micro batch x "
            f"seq_len x world size = {cfg.train.micro_batch} x {cfg.model.seq_len} x {spec.world_size} "
            f"= {per_step}; change parallelism.globalBatchTokens or the gang shape"
        )
    if cfg.train.tokens is None and cfg.train.max_steps is None:
        return "no token budget: set spec.data.tokens (or trainer.train.tokens / max_steps)"
    return None


def reject(
    status: LLMTrainingJobStatus,
    message: str,
    now: datetime,
    generation: int | None = None,
    reason: str = "InvalidSpec",
    kind: str = "Spec",
) -> Decision:
    """The decision for a spec that can never run (invalid, unsupported: Failed/InvalidSpec; against
    the admin's policy: Failed/PolicyViolation), once."""
    st = status.model_copy(deep=True)
    if st.phase == "Failed" and st.last_failure is not None and st.last_failure.reason == reason:
        return Decision(st)
    st.observed_generation = generation
    st.start_time = st.start_time or now
    st.last_failure = FailureRecord(kind=kind, reason=reason, message=message, retryable=False, time=now)
    _enter(st, "Failed", reason, message, now)
    st.completion_time = now
    return Decision(st, (EmitEvent("Warning", reason, message),))


def reconcile(
    name: str,
    spec: LLMTrainingJobSpec,
    status: LLMTrainingJobStatus,
    observed: Observed,
    admission_policy: admission.AdmissionPolicy | None = None,
) -> Decision:
    """Decide what the job's children should be now (see the module docstring). `admission_policy`: the
    admin's (the operator always passes one; the local runner, one machine, none)."""
    now = observed.now
    problem = check_spec(name, spec)
    if problem is not None and status.phase not in TERMINAL_PHASES:
        return reject(status, problem, now, observed.generation)
    if admission_policy is not None and status.phase not in TERMINAL_PHASES:
        violation = admission.check(spec, admission_policy, observed.service_accounts)
        if violation is not None:
            return reject(status, violation, now, observed.generation, admission.REASON, "Policy")

    st = status.model_copy(deep=True)
    acts: list[Action] = []
    st.start_time = st.start_time or now
    if observed.generation is not None:
        st.observed_generation = observed.generation

    # An attempt newer than the status: the driver created it and stopped before recording it.
    newest = max((w.attempt for w in observed.workers), default=0)
    if newest > st.attempt and st.phase not in TERMINAL_PHASES:
        st.attempt, st.gang_ready, st.restart_after = newest, False, None
        st.attempt_start_time = st.attempt_start_time or now
        _enter(st, "Pending", "Adopted", f"attempt {newest} found running; adopted", now)

    st, eval_events = evaluation.collect(st, observed.evaluations)
    acts += eval_events
    if st.phase != "Failed":
        st, eval_actions = evaluation.schedule(name, spec, st, {e.step for e in observed.evaluations})
        acts += eval_actions

    current = observed.attempt_workers(st.attempt)
    holding = st.phase in ("Pending", "Running") and any(w.phase == "Running" for w in current.values())
    st = budget.account(spec, st, now, holding)
    st.progress_text = _progress_text(spec, st)

    if st.phase in TERMINAL_PHASES:
        return _finish(st, acts, _unfinished(observed.workers), "job finished")
    if spec.suspend:
        return _suspend(st, acts, observed, now)
    if st.phase == "Suspended":  # suspend was cleared: resume from the latest checkpoint
        acts.append(EmitEvent("Normal", "Resumed", "spec.suspend cleared; resuming"))
        return _start_attempt(spec, st, acts, now, "Resumed")
    over = budget.exceeded(spec, st)
    if over is not None:
        return _fail(st, acts, observed.workers, "BudgetExceeded", over, now, kind="Budget")
    if st.phase == "Restarting":
        return _restarting(spec, st, acts, observed, now)
    if st.attempt == 0:
        return _start_attempt(spec, st, acts, now, "Created")
    return _judge_gang(spec, st, acts, observed, current, now)


# ------------------------------------------------------------------------------------ phases


def _start_attempt(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, acts: list[Action], now: datetime, reason: str
) -> Decision:
    st.attempt += 1
    st.attempt_nodes = spec.cluster.nodes
    st.gang_ready, st.restart_after, st.running_since = False, None, None
    st.attempt_start_time = now
    ckpt = st.last_checkpoint
    resume = f"resuming from checkpoint step {ckpt.step}" if ckpt else "starting from scratch"
    message = f"attempt {st.attempt}: creating {spec.cluster.nodes} worker(s), {resume}"
    _enter(st, "Pending", reason, message, now)
    acts.insert(0, CreateGang(st.attempt, tuple(range(spec.cluster.nodes))))
    acts.append(EmitEvent("Normal", "AttemptStarted", message))
    return Decision(st, tuple(acts), _requeue(spec, st, now))


def _judge_gang(
    spec: LLMTrainingJobSpec,
    st: LLMTrainingJobStatus,
    acts: list[Action],
    observed: Observed,
    current: dict[int, WorkerObservation],
    now: datetime,
) -> Decision:
    rp = spec.restart_policy
    stale = observed.live_workers_except(st.attempt)
    deletions: list[Action] = [DeleteWorkers(stale, "left over from an earlier attempt")] if stale else []

    leader = current.get(0)
    if leader is not None and leader.phase == "Succeeded":
        st.completion_time = now
        done = f" after {st.progress.tokens} tokens" if st.progress else ""
        message = f"worker 0 exited 0{done}: training complete"
        _enter(st, "Succeeded", "Completed", message, now)
        acts.append(EmitEvent("Normal", "Succeeded", message))
        return _finish(st, acts, _unfinished(observed.workers), "training finished")

    found: list[Failure] = [f for w in current.values() if (f := failures.classify_worker(w, rp)) is not None]
    size = st.attempt_nodes or spec.cluster.nodes  # an edited spec takes effect at the next attempt
    missing = [i for i in range(size) if i not in current]
    if st.gang_ready:
        found += [failures.lost_worker(i, rp) for i in missing]
        silent = _silence(st, now)
        if rp.hang_timeout_seconds > 0 and silent is not None and silent > rp.hang_timeout_seconds:
            found.append(failures.hang(silent, rp))
    elif rp.pending_timeout_seconds > 0 and st.attempt_start_time is not None:
        waited = (now - st.attempt_start_time).total_seconds()
        if waited > rp.pending_timeout_seconds:
            up = sum(1 for w in current.values() if w.phase == "Running")
            if up < size:
                found.append(failures.unschedulable(waited, up, size, rp))
    failure = failures.worst(found)
    if failure is not None:
        return _on_failure(spec, st, acts, observed, failure, now)

    if missing:  # still creating this attempt's gang (or recreating a pod deleted before it ran)
        acts.insert(0, CreateGang(st.attempt, tuple(missing)))
    elif all(w.phase == "Running" for w in current.values()) and not st.gang_ready:
        st.gang_ready, st.running_since = True, now
        message = f"attempt {st.attempt}: all {size} worker(s) running"
        _enter(st, "Running", "GangRunning", message, now)
        acts.append(EmitEvent("Normal", "GangRunning", message))
    return Decision(st, tuple(acts + deletions), _requeue(spec, st, now))


def _on_failure(
    spec: LLMTrainingJobSpec,
    st: LLMTrainingJobStatus,
    acts: list[Action],
    observed: Observed,
    failure: Failure,
    now: datetime,
) -> Decision:
    rp = spec.restart_policy
    st.last_failure = FailureRecord(
        kind=failure.kind,
        reason=failure.reason,
        message=failure.message,
        retryable=failure.retryable,
        attempt=st.attempt,
        worker=failure.worker,
        exit_code=failure.exit_code,
        time=now,
    )
    if not failure.retryable:
        return _fail(st, acts, observed.workers, failure.reason, failure.message, now)
    if st.restarts >= rp.max_restarts:
        message = f"{failure.message}; all {rp.max_restarts} restarts used (restartPolicy.maxRestarts)"
        return _fail(st, acts, observed.workers, "MaxRestartsExceeded", message, now)
    st.restarts += 1
    wait = policy.backoff_seconds(st.restarts, rp)
    st.restart_after = now + timedelta(seconds=wait)
    st.gang_ready, st.running_since = False, None
    ckpt = st.last_checkpoint
    resume = f"from checkpoint step {ckpt.step}" if ckpt else "from scratch (no checkpoint yet)"
    message = (
        f"{failure.message}; restart {st.restarts}/{rp.max_restarts} in {wait:.0f}s as attempt "
        f"{st.attempt + 1}, resuming {resume}"
    )
    _enter(st, "Restarting", failure.reason, message, now)
    acts.append(EmitEvent("Warning", "Restarting", message))
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:
        acts.append(DeleteWorkers(doomed, f"gang restart after {failure.reason}"))
    return Decision(st, tuple(acts), max(wait, SHORT_REQUEUE))


def _restarting(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, acts: list[Action], observed: Observed, now: datetime
) -> Decision:
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:  # e.g. the deletion was lost in an operator restart
        acts.append(DeleteWorkers(doomed, "gang restart"))
    if observed.workers:  # wait until the old gang is gone: it may still hold the GPUs
        return Decision(st, tuple(acts), SHORT_REQUEUE)
    if st.restart_after is not None and now < st.restart_after:
        return Decision(st, tuple(acts), (st.restart_after - now).total_seconds())
    return _start_attempt(spec, st, acts, now, "Restarted")


def _suspend(st: LLMTrainingJobStatus, acts: list[Action], observed: Observed, now: datetime) -> Decision:
    if st.phase != "Suspended":
        ckpt = st.last_checkpoint
        keep = f"; checkpoint step {ckpt.step} kept" if ckpt else ""
        message = f"spec.suspend is true: gang deleted{keep}"
        _enter(st, "Suspended", "Suspended", message, now)
        st.gang_ready, st.running_since, st.restart_after = False, None, None
        acts.append(EmitEvent("Normal", "Suspended", message))
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:
        acts.append(DeleteWorkers(doomed, "suspended"))
    return Decision(st, tuple(acts), SHORT_REQUEUE if observed.workers else None)


def _fail(
    st: LLMTrainingJobStatus,
    acts: list[Action],
    workers: tuple[WorkerObservation, ...],
    reason: str,
    message: str,
    now: datetime,
    kind: str | None = None,
) -> Decision:
    if kind is not None:
        st.last_failure = FailureRecord(kind=kind, reason=reason, message=message, retryable=False, time=now)
    st.completion_time = now
    _enter(st, "Failed", reason, message, now)
    acts.append(EmitEvent("Warning", reason, message))
    return _finish(st, acts, _unfinished(workers), f"job failed: {reason}")


def _finish(
    st: LLMTrainingJobStatus, acts: list[Action], unfinished: tuple[WorkerObservation, ...], why: str
) -> Decision:
    """Terminal phases: stop what still runs (SIGTERM lets the trainer save a checkpoint);
    finished pods stay for their logs until the job is deleted."""
    if unfinished:
        acts.append(DeleteWorkers(unfinished, why))
    running_evals = any(e.phase == "Running" for e in st.evaluations)
    return Decision(st, tuple(acts), SHORT_REQUEUE if unfinished else (30.0 if running_evals else None))


# ----------------------------------------------------------------------------------- helpers


def _unfinished(workers: tuple[WorkerObservation, ...]) -> tuple[WorkerObservation, ...]:
    return tuple(w for w in workers if not w.finished and not w.terminating)


def _silence(st: LLMTrainingJobStatus, now: datetime) -> float | None:
    """Seconds since the gang last showed life: the later of its start and the last heartbeat."""
    marks = [t for t in (st.running_since, st.progress.heartbeat_time if st.progress else None) if t]
    return (now - max(marks)).total_seconds() if marks else None


def _requeue(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, now: datetime) -> float | None:
    """When time alone changes the decision: the hang deadline or the budget running out."""
    waits: list[float] = []
    rp = spec.restart_policy
    silent = _silence(st, now)
    if st.gang_ready and rp.hang_timeout_seconds > 0 and silent is not None:
        waits.append(max(rp.hang_timeout_seconds - silent, 0.0) + 0.05)
    if not st.gang_ready and rp.pending_timeout_seconds > 0 and st.attempt_start_time is not None:
        waited = (now - st.attempt_start_time).total_seconds()
        waits.append(max(rp.pending_timeout_seconds - waited, 0.0) + 0.05)
    if st.accounted_time is not None:
        left = budget.seconds_until_exhausted(spec, st)
        if left is not None:
            waits.append(left + 0.05)
    return min(waits) if waits else None


def _progress_text(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus) -> str | None:
    total = token_budget(spec)
    done = st.progress.tokens if st.progress else 0
    if not total:
        return f"{format_si(done)} tokens" if st.progress else None
    return f"{format_si(done)}/{format_si(total)} ({100.0 * done / total:.0f}%)"


def _enter(st: LLMTrainingJobStatus, phase: Phase, reason: str, message: str, now: datetime) -> None:
    """Set the phase and keep one condition per phase type (standard metav1.Condition semantics:
    lastTransitionTime changes only when a condition's status changes)."""
    st.phase, st.message = phase, message
    for ctype in CONDITION_TYPES:
        active = ctype == phase
        existing = next((c for c in st.conditions if c.type == ctype), None)
        if existing is None:
            if active:
                st.conditions.append(
                    Condition(
                        type=ctype, status="True", reason=reason, message=message, last_transition_time=now
                    )
                )
            continue
        value: Literal["True", "False"] = "True" if active else "False"
        if existing.status != value:
            existing.status, existing.last_transition_time = value, now
        if active:
            existing.reason, existing.message = reason, message
    for cond in st.conditions:
        cond.observed_generation = st.observed_generation


def _one_line(err: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        from tokensmith.operator.spec import format_validation_error

        return format_validation_error(err, prefix="trainer")
    return str(err).splitlines()[0]
