"""Run health on the operator's side: roll a diverged run back to its last healthy checkpoint, replay it
on other nodes, and tell a bad node from bad data.

The trainer's half (docs/trainer.md, "Run health") stops a diverged run with exit code 65
(`EXIT_DIVERGED`) after reporting where: `{"type": "diverged", "step", "kind", "samples"}` as a report
line for the local runner, `status.divergence` on Kubernetes. It marks each checkpoint `healthy` or not
and keeps a `latest_healthy` pointer beside `latest`. The decisions here are pure; `reconcile` calls them
on its own copy of the status (which they update in place) and both drivers apply the result.

1. Healthy checkpoints. The trainer reports `lastHealthyCheckpoint` (and `lastCheckpoint.healthy`; a
   healthy `lastCheckpoint` counts too); the operator notes the job's GPU-hours when it first sees a new
   one (`status.rollbackBaseline`, `note_healthy`).
2. Divergence. A worker of the current attempt exits 65, or the trainer reported divergence for this
   attempt and a worker failed (`divergence`). A rollback record is written and, unless
   `restartPolicy.maxRollbacks` is used up or the data policy says stop, the next attempt resumes from the
   newest healthy checkpoint (`TOKENSMITH_RESUME_FROM=latest_healthy`, the trainer's own pointer, which
   may be newer than the operator has seen). Rollbacks have their own budget: they do not use maxRestarts.
   Every later attempt resumes from `latest_healthy` too: a checkpoint the diverged attempt wrote after the
   bad step must never be what a crash restart picks up (`gang_plan`).
3. Replay attribution. The replay runs on nodes other than the diverged attempt's (required node
   anti-affinity, `restartPolicy.replayOnOtherNodes`; the local runner has one machine, so there it
   replays in place). If the replay passes the step where the original diverged (a healthy checkpoint
   after it, a progress heartbeat after it sent after the rollback, or success), the cause is `Hardware`
   and the diverged attempt's nodes become `status.suspectNodes` (later attempts avoid them too). If it
   diverges at the same step again (the same sample range when both reports carry one), the cause is
   `Data`: with `dataPolicy: skipOnRepeat` the range joins `status.skipSamples`, which every later
   attempt's trainer config carries in `data.skip_samples` (the trainer skips it deterministically and
   records it in its checkpoints), with `fail` the job ends Failed/DataDiverged.
4. Lost work. Everything the job spent since the later of the healthy checkpoint and the previous
   rollback is redone: each record carries it, `status.lostGPUHours.rollback` sums it (it is part of
   `gpuHours`, not on top), and `lostCostUSD.rollback` prices it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tokensmith.core.errors import EXIT_DIVERGED
from tokensmith.operator import nodes
from tokensmith.operator.observed import Action, CordonNode, EmitEvent, GangPlan, WorkerObservation
from tokensmith.operator.spec import (
    CheckpointRef,
    Condition,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    RollbackBaseline,
    RollbackRecord,
)

# How long an exit 65 waits for the trainer's divergence report before deciding without it. The trainer
# sends the report before it exits, but the operator may see the pod end before the status patch.
REPORT_GRACE_SECONDS = 10.0
RESUME_HEALTHY = "latest_healthy"  # TOKENSMITH_RESUME_FROM value: the trainer's newest healthy checkpoint
CONDITION = "Diverged"
LOST = "rollback"  # key of status.lostGPUHours / lostCostUSD


@dataclass(frozen=True)
class Divergence:
    """What the current attempt's end says about its divergence."""

    attempt: int
    step: int | None
    kind: str
    samples: tuple[int, int] | None
    nodes: tuple[str, ...]
    worker: int | None
    exit_code: int | None


@dataclass(frozen=True)
class Outcome:
    """The rollback decision: roll back (a new attempt) or stop, with a reason and one line."""

    rollback: bool
    reason: str
    message: str
    events: tuple[Action, ...] = ()


# ------------------------------------------------------------------------------- every pass


def note_healthy(st: LLMTrainingJobStatus) -> None:
    """A healthy `lastCheckpoint` is the `lastHealthyCheckpoint` (whoever wrote which first), and a new
    healthy checkpoint moves the rollback baseline to the GPU-hours spent so far."""
    ck = st.last_checkpoint  # the newest written: a healthy one is the newest healthy one
    known = st.last_healthy_checkpoint
    fresh = known is None or (known.step, known.path) != (ck.step, ck.path) if ck is not None else False
    if ck is not None and ck.healthy is True and fresh:
        st.last_healthy_checkpoint = CheckpointRef(step=ck.step, path=ck.path, time=ck.time)
    healthy = st.last_healthy_checkpoint
    if healthy is not None and (st.rollback_baseline is None or st.rollback_baseline.step != healthy.step):
        st.rollback_baseline = RollbackBaseline(step=healthy.step, gpu_hours=st.gpu_hours)


def open_record(st: LLMTrainingJobStatus) -> RollbackRecord | None:
    """The newest rollback whose replay is running and has not yet told its cause."""
    if not st.rollback_records:
        return None
    last = st.rollback_records[-1]
    return last if last.cause == "Unknown" and st.attempt >= last.replay_attempt else None


def observe(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, current: dict[int, WorkerObservation], now: datetime
) -> list[Action]:
    """Every pass: record a healthy checkpoint, and settle a replay that has passed its step (Hardware)."""
    note_healthy(st)
    rec = open_record(st)
    if rec is not None and replay_passed(st, rec, current):
        return attribute_hardware(spec, st, rec, now)
    if rec is None and _condition_true(st) and _recovered(st, current):
        _set_condition(st, False, "Recovered", "the run passed the step where it diverged", now)
    return []


def replay_passed(
    st: LLMTrainingJobStatus, rec: RollbackRecord, current: dict[int, WorkerObservation]
) -> bool:
    """Whether the replay went past the step where `rec`'s attempt diverged. Progress is the trainer's
    and outlives an attempt, so a progress step counts only when sent after the rollback; a healthy
    checkpoint after the step can only come from the replay (the diverged attempt's are unhealthy)."""
    leader = current.get(0)
    if leader is not None and leader.phase == "Succeeded":
        return True
    if rec.step is None:
        return False
    healthy = st.last_healthy_checkpoint
    if healthy is not None and healthy.step > rec.step:
        return True
    prog = st.progress
    return bool(
        prog is not None
        and prog.step > rec.step
        and prog.heartbeat_time is not None
        and rec.time is not None
        and prog.heartbeat_time > rec.time
    )


def attribute_hardware(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, rec: RollbackRecord, now: datetime
) -> list[Action]:
    rec.cause = "Hardware"
    _add_suspects(spec, st, rec.nodes, now)
    where = f"; suspect nodes: {', '.join(rec.nodes)}" if rec.nodes else " (node unknown: one local machine)"
    message = (
        f"the replay of attempt {rec.attempt} passed step {rec.step} where it diverged: cause Hardware{where}"
    )
    _set_condition(st, False, "Hardware", message, now)
    acts: list[Action] = [EmitEvent("Warning", "DivergenceAttributed", message)]
    if spec.node_health.cordon:  # opt-in, as for infrastructure failures
        acts += [CordonNode(n, message) for n in rec.nodes]
    return acts


# ------------------------------------------------------------------------------- the attempt ended


def divergence(st: LLMTrainingJobStatus, current: dict[int, WorkerObservation]) -> Divergence | None:
    """The current attempt diverged: a worker exited 65, or the trainer reported divergence for this
    attempt and a worker failed (the others of a gang die with it, with other codes)."""
    failed = sorted((w for w in current.values() if w.phase == "Failed"), key=lambda w: w.index)
    d65 = [w for w in failed if w.exit_code == EXIT_DIVERGED]
    report = st.divergence
    if not d65 and not (failed and _report_is_current(st, strict=True)):
        return None
    # with a 65 in hand, a report from the attempt's first second (whole-second times) is taken too
    usable = report is not None and _report_is_current(st, strict=not d65)
    first = (d65 or failed)[0]
    where = tuple(sorted({w.node for w in current.values() if w.node}))  # `nodes` is the module
    if usable and report is not None:
        samples = (int(report.samples[0]), int(report.samples[1])) if report.samples else None
        return Divergence(st.attempt, report.step, report.kind, samples, where, first.index, first.exit_code)
    # exit 65 without a report: the last progress step stands in for the bad step
    step = st.progress.step if st.progress is not None else None
    return Divergence(st.attempt, step, "unknown", None, where, first.index, first.exit_code)


def report_wait(st: LLMTrainingJobStatus, div: Divergence, now: datetime) -> float | None:
    """Seconds to wait for the trainer's report of an exit 65 seen without one (None: decide now)."""
    if div.kind != "unknown" or div.exit_code != EXIT_DIVERGED:
        st.diverged_exit_time = None
        return None
    st.diverged_exit_time = st.diverged_exit_time or now
    left = REPORT_GRACE_SECONDS - (now - st.diverged_exit_time).total_seconds()
    if left > 0:
        return left
    st.diverged_exit_time = None
    return None


def _report_is_current(st: LLMTrainingJobStatus, strict: bool) -> bool:
    """Whether `status.divergence` is this attempt's: by its attempt when it names one, else by its time
    (the trainer's, in whole seconds) against the attempt's start. `strict`: only a report provably
    after the start; else one from the start's second too (a trainer needs longer than a second to
    start, so the previous attempt's report is still kept out), and one without any time."""
    report = st.divergence
    if report is None:
        return False
    if report.attempt is not None:
        return report.attempt == st.attempt
    start = st.attempt_start_time
    if report.time is None or start is None:
        return not strict
    return report.time >= (start if strict else start.replace(microsecond=0))


def _same_place(rec: RollbackRecord, div: Divergence) -> bool:
    """The same bad step: the same sample range when both know it, else the same step."""
    if rec.samples is not None and div.samples is not None:
        return tuple(rec.samples) == div.samples
    return rec.step is not None and rec.step == div.step


def _beyond(div: Divergence, rec: RollbackRecord) -> bool:
    return div.step is not None and rec.step is not None and div.step > rec.step


def decide(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, div: Divergence, now: datetime) -> Outcome:
    """Record the divergence, attribute the previous one if this ends its replay, and choose: roll back
    (a new attempt from the last healthy checkpoint) or stop (budget used up, or Data with `fail`)."""
    rp = spec.restart_policy
    events: list[Action] = []
    cause: Literal["Hardware", "Data", "Unknown"] = "Unknown"
    pending = open_record(st)
    previous = st.rollback_records[-1] if st.rollback_records else None
    if pending is not None and _same_place(pending, div):
        pending.cause = cause = "Data"
    elif pending is not None and _beyond(div, pending):  # the replay got past it, then diverged anew
        events += attribute_hardware(spec, st, pending, now)
    elif previous is not None and previous.cause == "Data" and _same_place(previous, div):
        cause = "Data"  # it repeats even after the skip (a neighbouring range?): still the data's
    healthy = st.last_healthy_checkpoint
    mark = st.rollback_baseline
    baseline = max(mark.gpu_hours if mark is not None else 0.0, previous.gpu_hours_at if previous else 0.0)
    lost = max(st.gpu_hours - baseline, 0.0)
    record = RollbackRecord(
        attempt=div.attempt,
        step=div.step,
        kind=div.kind,
        cause=cause,
        samples=list(div.samples) if div.samples else None,
        nodes=list(div.nodes),
        resume_step=healthy.step if healthy is not None else None,
        replay_attempt=div.attempt + 1,
        lost_gpu_hours=lost,
        gpu_hours_at=st.gpu_hours,
        time=now,
    )
    st.rollback_records.append(record)
    st.lost_gpu_hours[LOST] = st.lost_gpu_hours.get(LOST, 0.0) + lost
    price = spec.budget.price_per_gpu_hour
    if price is not None:
        st.lost_cost_usd[LOST] = round(st.lost_gpu_hours[LOST] * price, 6)
    where = f"step {div.step}" if div.step is not None else "an unknown step"
    what = f"attempt {div.attempt} diverged ({div.kind}) at {where}"
    if div.samples:
        what += f", samples [{div.samples[0]}, {div.samples[1]})"
    _set_condition(st, True, _reason(div.kind), what, now)

    if cause == "Data":
        if rp.data_policy == "fail" or div.samples is None:
            why = (
                "the trainer reported no sample range to skip"
                if div.samples is None
                else "restartPolicy.dataPolicy is fail"
            )
            message = f"{what} again: cause Data; {why}"
            return Outcome(False, "DataDiverged", message, tuple(events))
        if list(div.samples) not in st.skip_samples:
            st.skip_samples.append(list(div.samples))
        events.append(
            EmitEvent(
                "Warning",
                "DivergenceAttributed",
                f"{what} again: cause Data; samples [{div.samples[0]}, {div.samples[1]}) are skipped from "
                "the next attempt on (restartPolicy.dataPolicy skipOnRepeat)",
            )
        )
    if st.rollbacks >= rp.max_rollbacks:
        message = f"{what}; all {rp.max_rollbacks} rollbacks used (restartPolicy.maxRollbacks)"
        return Outcome(False, "MaxRollbacksExceeded", message, tuple(events))
    st.rollbacks += 1
    back = f"healthy checkpoint step {healthy.step}" if healthy else "scratch (no healthy checkpoint)"
    elsewhere = " on other nodes" if rp.replay_on_other_nodes and div.nodes and cause != "Data" else ""
    message = (
        f"{what}; rollback {st.rollbacks}/{rp.max_rollbacks}: attempt {div.attempt + 1} replays from "
        f"{back}{elsewhere}, {lost:.4g} GPU-hours lost"
    )
    return Outcome(True, "Diverged", message, tuple(events))


# ------------------------------------------------------------------------------- the next attempt


def gang_plan(st: LLMTrainingJobStatus) -> GangPlan:
    """What the current attempt's workers get: resume from the healthy pointer once the job has rolled
    back, and skip the sample ranges attributed to the data."""
    if not st.rollback_records:
        return GangPlan()
    skip = tuple((int(r[0]), int(r[1])) for r in st.skip_samples)
    return GangPlan(resume_from=RESUME_HEALTHY, skip_samples=skip)


def avoid_nodes(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, now: datetime) -> tuple[str, ...]:
    """Nodes the current attempt's workers must not use: those of a diverged attempt whose replay has
    not told its cause yet (`replayOnOtherNodes`), and the nodes a Hardware cause made suspect."""
    avoid = set(nodes.avoid(st.suspect_nodes, now))
    rec = open_record(st)
    if rec is not None and spec.restart_policy.replay_on_other_nodes and not _no_room(st, rec):
        avoid.update(rec.nodes)
    return tuple(sorted(avoid))


def _no_room(st: LLMTrainingJobStatus, rec: RollbackRecord) -> bool:
    """The replay could not be placed away from the diverged nodes: its gang ran into
    `pendingTimeoutSeconds` (Unschedulable). Then it replays where the cluster allows (in place); a pass
    still clears the data, and the diverged nodes still become suspects."""
    failed = st.last_failure
    return failed is not None and failed.reason == "Unschedulable" and failed.attempt >= rec.replay_attempt


def _add_suspects(
    spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, names: list[str], now: datetime
) -> None:
    """Rollbacks add suspects to the same list infrastructure failures do (nodes.py: expiry, bound)."""
    st.suspect_nodes = nodes.add_suspects(st.suspect_nodes, names, "Hardware", now, spec.node_health)


def resume_text(st: LLMTrainingJobStatus) -> str | None:
    """How a rollback attempt resumes, for its messages (None: not a rollback)."""
    if not st.rollback_records:
        return None
    healthy = st.last_healthy_checkpoint
    if healthy is None:
        return "rolling back to scratch (no healthy checkpoint yet)"
    return f"rolling back to the newest healthy checkpoint (step {healthy.step} or later)"


# ------------------------------------------------------------------------------- helpers


def _reason(kind: str) -> str:
    return {"nonfinite": "NonFinite", "spike": "LossSpike"}.get(kind, "Diverged")


def _condition_true(st: LLMTrainingJobStatus) -> bool:
    return any(c.type == CONDITION and c.status == "True" for c in st.conditions)


def _recovered(st: LLMTrainingJobStatus, current: dict[int, WorkerObservation]) -> bool:
    """A Data rollback (nothing left to attribute) is over once its replay passes the step too."""
    last = st.rollback_records[-1] if st.rollback_records else None
    return last is not None and st.attempt >= last.replay_attempt and replay_passed(st, last, current)


def _set_condition(st: LLMTrainingJobStatus, active: bool, reason: str, message: str, now: datetime) -> None:
    """The `Diverged` condition (metav1.Condition semantics: the time moves only with the status)."""
    value: Literal["True", "False"] = "True" if active else "False"
    cond = next((c for c in st.conditions if c.type == CONDITION), None)
    if cond is None:
        st.conditions.append(
            Condition(type=CONDITION, status=value, reason=reason, message=message, last_transition_time=now)
        )
        return
    if cond.status != value:
        cond.status, cond.last_transition_time = value, now
    cond.reason, cond.message = reason, message
