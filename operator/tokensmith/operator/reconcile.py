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
from tokensmith.operator import (
    admission,
    budget,
    evaluation,
    failures,
    goodput,
    lifecycle,
    nodes,
    policy,
    restarts,
    rollback,
)
from tokensmith.operator.names import JOB_NAME_PATTERN, MAX_JOB_NAME
from tokensmith.operator.observed import (
    Action,
    CordonNode,
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
from tokensmith.planner import capability

CONDITION_TYPES = ("Running", "Restarting", "Suspended", "Succeeded", "Failed")
QUEUED = "Queued"  # a condition beside the phase ones: True while the queue has not admitted the gang
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
    layout_problem = check_layout(spec)
    if layout_problem is not None:
        return layout_problem
    try:
        cfg = effective_trainer_config(spec, name)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        return f"spec.trainer (after applying the job-level sections): {_one_line(err)}"
    dp = cfg.layout(spec.world_size).data
    per_step = cfg.train.micro_batch * cfg.model.seq_len * dp
    if cfg.train.global_batch_tokens % per_step:
        return (
            f"global batch of {cfg.train.global_batch_tokens} tokens is not a multiple of micro batch x "
            f"seq_len x data-parallel degree = {cfg.train.micro_batch} x {cfg.model.seq_len} x {dp} "
            f"= {per_step} (data-parallel degree = world size {spec.world_size} / (tensor "
            f"{spec.parallelism.tensor} x pipeline {spec.parallelism.pipeline})); change "
            "parallelism.globalBatchTokens or the gang shape"
        )
    if cfg.train.tokens is None and cfg.train.max_steps is None:
        return "no token budget: set spec.data.tokens (or trainer.train.tokens / max_steps)"
    return None


def check_layout(spec: LLMTrainingJobSpec) -> str | None:
    """The parallel layout against what the trainer runs (`tokensmith.planner.capability`, the rules the
    planner's search and the trainer's config check share), with the gang's processes per node and
    world size; one line naming every broken rule, or None."""
    par = spec.parallelism
    model = spec.model if spec.model is not None else spec.trainer.model
    zero = par.zero_stage if par.zero_stage is not None else spec.trainer.deepspeed.zero_stage
    layout = capability.Layout.for_world(
        spec.world_size,
        tensor=par.tensor,
        pipeline=par.pipeline,
        zero_stage=zero,
        recompute=spec.trainer.parallelism.recompute,
    )
    found = capability.problems(
        layout,
        model.n_layers,
        model.n_heads,
        model.n_kv_heads,
        gpus_per_node=spec.procs_per_node,
        world_size=spec.world_size,
    )
    return "spec.parallelism: " + "; ".join(found) if found else None


def reject(
    status: LLMTrainingJobStatus,
    message: str,
    now: datetime,
    generation: int | None = None,
    workers: tuple[WorkerObservation, ...] = (),
    reason: str = "InvalidSpec",
    kind: str = "Spec",
) -> Decision:
    """The decision for a spec that can never run (invalid, unsupported: Failed/InvalidSpec; against
    the admin's policy: Failed/PolicyViolation), once. A gang still running (the spec was edited into
    an invalid one) is stopped like on any other way into a terminal phase."""
    st = status.model_copy(deep=True)
    if st.phase == "Failed" and st.last_failure is not None and st.last_failure.reason == reason:
        return stop_gang_if_terminal(Decision(st), workers)
    st.observed_generation = generation
    st.start_time = st.start_time or now
    st.last_failure = FailureRecord(
        kind=kind, reason=reason, message=message, retryable=False, attempt=st.attempt, time=now
    )
    _enter(st, "Failed", reason, message, now)
    st.completion_time = now
    st.gang_ready, st.running_since, st.restart_after = False, None, None
    return stop_gang_if_terminal(Decision(st, (EmitEvent("Warning", reason, message),)), workers)


def stop_gang_if_terminal(decision: Decision, workers: tuple[WorkerObservation, ...]) -> Decision:
    """The invariant every decision passes through: in a terminal phase no worker keeps running.
    Whatever path led there (success, failure, invalid spec, budget, deadline), workers that have
    not finished and are not being deleted yet are deleted (SIGTERM: the trainer checkpoints), and
    the driver looks again until they are gone."""
    if decision.status.phase not in TERMINAL_PHASES:
        return decision
    asked = {
        (w.attempt, w.index) for a in decision.actions if isinstance(a, DeleteWorkers) for w in a.workers
    }
    extra = tuple(w for w in _unfinished(workers) if (w.attempt, w.index) not in asked)
    actions = decision.actions + ((DeleteWorkers(extra, f"job {decision.status.phase}"),) if extra else ())
    busy = any(not w.finished for w in workers)
    requeue = decision.requeue_after
    if busy:
        requeue = SHORT_REQUEUE if requeue is None else min(requeue, SHORT_REQUEUE)
    return Decision(decision.status, actions, requeue)


def reconcile(
    name: str,
    spec: LLMTrainingJobSpec,
    status: LLMTrainingJobStatus,
    observed: Observed,
    admission_policy: admission.AdmissionPolicy | None = None,
) -> Decision:
    """Decide what the job's children should be now (see the module docstring). `admission_policy`: the
    admin's (the operator always passes one; the local runner, one machine, none)."""
    decision = stop_gang_if_terminal(
        _decide(name, spec, status, observed, admission_policy), observed.workers
    )
    decision = _force_delete_stuck(spec, decision, observed)
    decision = lifecycle.after_finish(spec, decision, observed.now)
    # the goodput ledger: productive + lost by cause = wall-clock GPU-hours (goodput.py)
    counted = goodput.account(spec, status, decision.status, observed.now)
    return Decision(counted, decision.actions, decision.requeue_after)


def _force_delete_stuck(spec: LLMTrainingJobSpec, decision: Decision, observed: Observed) -> Decision:
    """In every phase: workers stuck Terminating on a down node past their grace period plus
    `forceDeleteAfterSeconds` are deleted with grace period 0 (they would block nothing of ours, but
    hold the pod name and the API server's view of the gang for ever)."""
    after = spec.restart_policy.force_delete_after_seconds
    stuck = nodes.stuck(observed.workers, observed.nodes, observed.now, after)
    acts = list(decision.actions)
    if stuck:
        names = ", ".join(w.name or f"worker {w.index}" for w in stuck)
        message = (
            f"force-deleting {names}: still Terminating {after:.0f}s after the grace period on a "
            "NotReady/unreachable or gone node"
        )
        acts += [
            DeleteWorkers(stuck, "stuck Terminating", force=True),
            EmitEvent("Warning", "ForceDeleted", message),
        ]
    wait = nodes.next_stuck_check(
        [w for w in observed.workers if w not in stuck], observed.nodes, observed.now, after
    )
    requeue = decision.requeue_after
    if wait is not None:
        requeue = wait if requeue is None else min(requeue, wait)
    return Decision(decision.status, tuple(acts), requeue)


def _decide(
    name: str,
    spec: LLMTrainingJobSpec,
    status: LLMTrainingJobStatus,
    observed: Observed,
    admission_policy: admission.AdmissionPolicy | None = None,
) -> Decision:
    now = observed.now
    problem = check_spec(name, spec)
    reason, kind = "InvalidSpec", "Spec"
    if problem is None and admission_policy is not None:
        problem = admission.check(spec, admission_policy, observed.service_accounts)
        reason, kind = admission.REASON, "Policy"
    if problem is not None and status.phase not in TERMINAL_PHASES:
        # the gang may still be running (an edit made the spec invalid): count its time up to now
        holding = status.phase in ("Pending", "Running") and any(
            w.phase == "Running" for w in observed.attempt_workers(status.attempt).values()
        )
        counted = budget.account(spec, status, now, holding)
        return reject(counted, problem, now, observed.generation, observed.workers, reason, kind)

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
    if st.phase not in TERMINAL_PHASES:
        acts += rollback.observe(spec, st, current, now)  # healthy checkpoints; a replay that passed its step

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
    late = lifecycle.deadline_exceeded(spec, st, now)
    if late is not None:
        return _fail(st, acts, observed.workers, "DeadlineExceeded", late, now, kind="Deadline")
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
    st.attempt_resume_step = ckpt.step if ckpt else None
    st.suspect_nodes = nodes.active(st.suspect_nodes, now)
    resume = f"resuming from checkpoint step {ckpt.step}" if ckpt else "starting from scratch"
    resume = rollback.resume_text(st) or resume
    avoid, plan = rollback.avoid_nodes(spec, st, now), rollback.gang_plan(st)
    if plan.resume_from is not None:  # a rollback's replay starts from the healthy checkpoint (NoProgress)
        healthy = st.last_healthy_checkpoint
        st.attempt_resume_step = healthy.step if healthy else None
    away = f", avoiding node(s) {', '.join(avoid)}" if avoid else ""
    message = f"attempt {st.attempt}: creating {spec.cluster.nodes} worker(s), {resume}{away}"
    _enter(st, "Pending", reason, message, now)
    acts.insert(0, CreateGang(st.attempt, tuple(range(spec.cluster.nodes)), avoid, spec.cluster.nodes, plan))
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

    diverged = rollback.divergence(st, current)
    if diverged is not None:  # exit 65: roll back to the last healthy checkpoint (its own budget)
        wait = rollback.report_wait(st, diverged, now)
        if wait is not None:  # the trainer's report is on its way
            return Decision(st, tuple(acts), wait)
        return _on_divergence(spec, st, acts, observed, diverged, now)

    found: list[Failure] = [f for w in current.values() if (f := failures.classify_worker(w, rp)) is not None]
    size = st.attempt_nodes or spec.cluster.nodes  # an edited spec takes effect at the next attempt
    missing = [i for i in range(size) if i not in current]
    if st.gang_ready:
        found += [failures.lost_worker(i, rp) for i in missing]
        silent = _silence(st, now)
        if rp.hang_timeout_seconds > 0 and silent is not None and silent > rp.hang_timeout_seconds:
            found.append(failures.hang(silent, rp))
    elif (
        rp.pending_timeout_seconds > 0
        and st.attempt_start_time is not None
        and not any(w.gated for w in current.values())  # time in the queue is not a stuck gang
    ):
        waited = (now - st.attempt_start_time).total_seconds()
        if waited > rp.pending_timeout_seconds:
            up = sum(1 for w in current.values() if w.phase == "Running")
            if up < size:
                found.append(failures.unschedulable(waited, up, size, rp))
    found += nodes.lost_workers(
        current.values(), observed.nodes, now, spec.node_health, "NodeLost" in rp.retry_on
    )
    failure = failures.worst(found)
    if failure is not None:
        return _on_failure(spec, st, acts, observed, failure, now)
    notices = nodes.notices(current.values(), observed.nodes, spec.cluster.tolerations)
    if notices and spec.node_health.react_to_disruptions:
        return _planned_restart(spec, st, acts, observed, notices, now)
    _queued(spec, st, current, now)

    if missing:  # still creating this attempt's gang (or recreating a pod deleted before it ran)
        avoid, plan = rollback.avoid_nodes(spec, st, now), rollback.gang_plan(st)
        acts.insert(0, CreateGang(st.attempt, tuple(missing), avoid, size, plan))
    elif all(w.phase == "Running" for w in current.values()) and not st.gang_ready:
        st.gang_ready, st.running_since = True, now
        message = f"attempt {st.attempt}: all {size} worker(s) running"
        _enter(st, "Running", "GangRunning", message, now)
        acts.append(EmitEvent("Normal", "GangRunning", message))
    requeue = _requeue(spec, st, now)
    lost_check = nodes.next_lost_check(current.values(), observed.nodes, now, spec.node_health)
    if lost_check is not None:
        requeue = lost_check if requeue is None else min(requeue, lost_check)
    return Decision(st, tuple(acts + deletions), requeue)


def _on_failure(
    spec: LLMTrainingJobSpec,
    st: LLMTrainingJobStatus,
    acts: list[Action],
    observed: Observed,
    failure: Failure,
    now: datetime,
) -> Decision:
    rp = spec.restart_policy
    cls = failure.failure_class
    st.last_failure = FailureRecord(
        kind=failure.kind,
        reason=failure.reason,
        message=failure.message,
        retryable=failure.retryable,
        attempt=st.attempt,
        worker=failure.worker,
        exit_code=failure.exit_code,
        time=now,
        failure_class=cls,
        nodes=list(failure.nodes),
    )
    lost = restarts.lost_gpu_hours(spec, st, now)
    st.gpu_hours_lost_by_class = {
        **st.gpu_hours_lost_by_class,
        cls: round(st.gpu_hours_lost_by_class.get(cls, 0.0) + lost, 6),
    }
    if cls == "Infrastructure" and failure.nodes:
        st.suspect_nodes = nodes.add_suspects(
            st.suspect_nodes, failure.nodes, failure.reason, now, spec.node_health
        )
        if spec.node_health.cordon:
            acts += [CordonNode(n, f"{failure.reason}: {failure.message}") for n in failure.nodes]
    verdict = restarts.judge(st, failure, rp)
    st.attempts_without_progress = restarts.streak_after(st, failure)
    if not verdict.restart:
        return _fail(st, acts, observed.workers, verdict.reason, verdict.message, now)
    st.restarts += 1
    st.restarts_by_class = {**st.restarts_by_class, cls: verdict.count}
    st.restart_after = now + timedelta(seconds=verdict.wait)
    st.gang_ready, st.running_since = False, None
    ckpt = st.last_checkpoint
    resume = f"from checkpoint step {ckpt.step}" if ckpt else "from scratch (no checkpoint yet)"
    of = f"/{verdict.limit}" if verdict.limit is not None else ""
    message = (
        f"{failure.message}; {cls} restart {verdict.count}{of} in {verdict.wait:.0f}s as attempt "
        f"{st.attempt + 1}, resuming {resume}"
    )
    _enter(st, "Restarting", failure.reason, message, now)
    acts.append(EmitEvent("Warning", "Restarting", message))
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:
        acts.append(DeleteWorkers(doomed, f"gang restart after {failure.reason}"))
    return Decision(st, tuple(acts), max(verdict.wait, SHORT_REQUEUE))


def _planned_restart(
    spec: LLMTrainingJobSpec,
    st: LLMTrainingJobStatus,
    acts: list[Action],
    observed: Observed,
    notices: list[tuple[WorkerObservation, str]],
    now: datetime,
) -> Decision:
    """A disruption notice: ask for a checkpoint now (SIGTERM: the trainer saves within the pod's
    grace period, docs/operator.md) and restart the gang away from the node. Not a failure: no
    restart budget is used, no backoff; the node is avoided like a suspect one."""
    why = "; ".join(text for _, text in notices)
    # No suspect: a cordoned or tainted node keeps the new pods away by itself for as long as the
    # maintenance lasts, and is welcome back afterwards (a gang that needs every node of the cluster
    # would otherwise wait out the suspect TTL); an evicted or preempted pod says nothing about its node.
    away = sorted({w.node for w, _ in notices if w.node and w.disruption is None})
    st.planned_restarts += 1
    st.restart_after = now
    st.gang_ready, st.running_since = False, None
    message = (
        f"{why}: checkpoint requested (SIGTERM, {spec.cluster.termination_grace_period_seconds}s grace); "
        f"planned restart {st.planned_restarts} as attempt {st.attempt + 1}"
        + (f" away from {', '.join(away)}" if away else "")
        + "; not counted as a failure"
    )
    _enter(st, "Restarting", "Disruption", message, now)
    acts.append(EmitEvent("Normal", "CheckpointRequested", message))
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:
        acts.append(DeleteWorkers(doomed, "planned restart after a disruption notice"))
    return Decision(st, tuple(acts), SHORT_REQUEUE)


def _queued(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, current: dict[int, WorkerObservation], now: datetime
) -> None:
    """Pending/Queued while a queue (Kueue's scheduling gate) has not admitted the gang."""
    gated = [w for w in current.values() if w.gated]
    existing = next((c for c in st.conditions if c.type == QUEUED), None)
    if gated and not st.gang_ready:
        queue = spec.scheduling.queue_name or "its queue"
        message = f"attempt {st.attempt}: {len(gated)} worker(s) waiting for admission by {queue}"
        if st.phase == "Pending":
            st.message = message
        if existing is None:
            st.conditions.append(
                Condition(
                    type=QUEUED, status="True", reason="Queued", message=message, last_transition_time=now
                )
            )
        elif existing.status != "True":
            existing.status, existing.reason, existing.message = "True", "Queued", message
            existing.last_transition_time = now
    elif existing is not None and existing.status == "True":
        existing.status, existing.reason, existing.message = "False", "Admitted", "admitted"
        existing.last_transition_time = now


def _on_divergence(
    spec: LLMTrainingJobSpec,
    st: LLMTrainingJobStatus,
    acts: list[Action],
    observed: Observed,
    div: rollback.Divergence,
    now: datetime,
) -> Decision:
    """The attempt diverged (rollback.py decides): a new attempt from the last healthy checkpoint, after
    the first restart's backoff, or Failed when the rollback budget or the data policy says so."""
    outcome = rollback.decide(spec, st, div, now)
    acts += outcome.events
    st.last_failure = FailureRecord(
        kind="Diverged",
        reason=outcome.reason,
        message=outcome.message,
        retryable=outcome.rollback,
        attempt=st.attempt,
        worker=div.worker,
        exit_code=div.exit_code,
        time=now,
        failure_class="Application",
        nodes=list(div.nodes),
    )
    if not outcome.rollback:
        return _fail(st, acts, observed.workers, outcome.reason, outcome.message, now)
    wait = policy.backoff_seconds(1, spec.restart_policy)
    st.restart_after = now + timedelta(seconds=wait)
    st.gang_ready, st.running_since = False, None
    _enter(st, "Restarting", outcome.reason, outcome.message, now)
    acts.append(EmitEvent("Warning", "RollingBack", outcome.message))
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:
        acts.append(DeleteWorkers(doomed, "rollback after divergence"))
    return Decision(st, tuple(acts), max(wait, SHORT_REQUEUE))


def _restarting(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, acts: list[Action], observed: Observed, now: datetime
) -> Decision:
    doomed = tuple(w for w in observed.workers if not w.terminating)
    if doomed:  # e.g. the deletion was lost in an operator restart
        acts.append(DeleteWorkers(doomed, "gang restart"))
    # wait until the old gang is gone (it may still hold the GPUs), except pods on a down node:
    # they hold nothing the next attempt can use, and are force-deleted later
    if any(nodes.blocks_restart(w, observed.nodes) for w in observed.workers):
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
