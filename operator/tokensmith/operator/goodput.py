"""Goodput: where a job's GPU-hours went, by cause, in one ledger (pure; no I/O).

The total is wall-clock GPU-hours: the job's devices times the time since it first started, less time
suspended or finished (the reservation view, as in Daly 2006, doi:10.1016/j.future.2004.11.016, where
goodput = solve time / wall time). It is split exactly into productive GPU-hours and lost GPU-hours by
cause (`status.lostGPUHours`, dollars in `status.lostCostUSD` with `budget.pricePerGPUHour`):

- `redone`: work of a failed attempt since its last checkpoint (restarts.lost_gpu_hours, per failure
  class in `status.gpuHoursLostByClass`: `redone` is that map's sum, one source, two views);
- `rollback`: steps redone after a rollback to the last healthy checkpoint (rollback.py);
- `restart`: time with no complete gang: restart backoff, scheduling, pulling, rendezvous;
- `checkpoint`: training blocked by checkpoint saves (the trainer's `blockedSeconds` per save).
Evaluation runs as separate Jobs on saved checkpoints and never stalls the gang, so it is not a
cause of lost gang time (its GPU-hours are not in `gpuHours` either).

productive = total - sum(lost) holds exactly (to float rounding). Should the causes ever sum to more
than the measured total (clock skew between reconciles), the total is raised to their sum so the
identity still holds and goodput stays in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tokensmith.operator import cadence
from tokensmith.operator.rollback import LOST as ROLLBACK
from tokensmith.operator.spec import (
    TERMINAL_PHASES,
    GoodputLedger,
    GoodputObserved,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
)

REDONE, RESTART, CHECKPOINT = "redone", "restart", "checkpoint"
CAUSES = (REDONE, ROLLBACK, RESTART, CHECKPOINT)


@dataclass(frozen=True)
class Inputs:
    """What the ledger is computed from (all GPU-hours unless named otherwise)."""

    total_gpu_hours: float
    devices: int
    redone_by_class: Mapping[str, float] = field(default_factory=dict)
    rollback_gpu_hours: float = 0.0
    restart_gpu_hours: float = 0.0
    checkpoint_seconds: float = 0.0  # blocked seconds, summed over saves
    checkpoint_saves: int = 0
    interruptions: int = 0
    price_per_gpu_hour: float | None = None


@dataclass(frozen=True)
class Ledger:
    total_gpu_hours: float
    productive_gpu_hours: float
    lost_gpu_hours: dict[str, float]
    lost_cost_usd: dict[str, float]
    goodput: float | None
    interruptions: int
    mtbf_gpu_hours: float | None
    mean_checkpoint_seconds: float | None


def ledger(x: Inputs) -> Ledger:
    """Split `x.total_gpu_hours` into productive and lost by cause (see the module docstring)."""
    lost = {
        REDONE: sum(max(v, 0.0) for v in x.redone_by_class.values()),
        ROLLBACK: max(x.rollback_gpu_hours, 0.0),
        RESTART: max(x.restart_gpu_hours, 0.0),
        CHECKPOINT: max(x.checkpoint_seconds, 0.0) * x.devices / 3600.0,
    }
    total = max(x.total_gpu_hours, sum(lost.values()))
    productive = total - sum(lost.values())
    price = x.price_per_gpu_hour
    cost = {k: v * price for k, v in lost.items()} if price is not None else {}
    return Ledger(
        total_gpu_hours=total,
        productive_gpu_hours=productive,
        lost_gpu_hours=lost,
        lost_cost_usd=cost,
        goodput=productive / total if total > 0 else None,
        interruptions=x.interruptions,
        mtbf_gpu_hours=total / x.interruptions if x.interruptions else None,
        mean_checkpoint_seconds=x.checkpoint_seconds / x.checkpoint_saves if x.checkpoint_saves else None,
    )


def advance_ledger(
    acc: GoodputLedger, before: LLMTrainingJobStatus, after: LLMTrainingJobStatus, devices: int, now: datetime
) -> GoodputLedger:
    """Advance the running sums to `now`. The interval since `acc.time` is judged by the state the
    reconcile started from (`before`): counted while the job had started and was neither finished nor
    suspended; `restart` while it had no complete gang. A checkpoint is counted once per new step."""
    new = acc.model_copy()
    counting = before.start_time is not None and before.phase not in (*TERMINAL_PHASES, "Suspended")
    if counting and acc.time is not None and now > acc.time:
        hours = (now - acc.time).total_seconds() / 3600.0 * devices
        new.total_gpu_hours = acc.total_gpu_hours + hours
        if not (before.phase == "Running" and before.gang_ready):
            new.restart_gpu_hours = acc.restart_gpu_hours + hours
    live = after.start_time is not None and after.phase not in (*TERMINAL_PHASES, "Suspended")
    new.time = now if live else None
    ckpt = after.last_checkpoint
    if ckpt is not None and (acc.checkpoint_step is None or ckpt.step > acc.checkpoint_step):
        new.checkpoint_step = ckpt.step
        if ckpt.blocked_seconds is not None:
            new.checkpoint_seconds = acc.checkpoint_seconds + ckpt.blocked_seconds
            new.checkpoint_saves = acc.checkpoint_saves + 1
    return new


def account(
    spec: LLMTrainingJobSpec, before: LLMTrainingJobStatus, after: LLMTrainingJobStatus, now: datetime
) -> LLMTrainingJobStatus:
    """`after` with the goodput contract filled in: `goodput`, `productiveGPUHours`, `lostGPUHours`,
    `lostCostUSD` and `observed` (pure; returns a new status)."""
    st = after.model_copy()
    acc = advance_ledger(before.goodput_ledger or GoodputLedger(), before, after, spec.accounted_devices, now)
    st.goodput_ledger = acc
    if st.start_time is None:
        return st
    out = ledger(
        Inputs(
            total_gpu_hours=max(acc.total_gpu_hours, st.gpu_hours),
            devices=spec.accounted_devices,
            redone_by_class=st.gpu_hours_lost_by_class,
            rollback_gpu_hours=st.lost_gpu_hours.get(ROLLBACK, 0.0),
            restart_gpu_hours=acc.restart_gpu_hours,
            checkpoint_seconds=acc.checkpoint_seconds,
            checkpoint_saves=acc.checkpoint_saves,
            interruptions=st.restarts + st.planned_restarts,
            price_per_gpu_hour=spec.budget.price_per_gpu_hour,
        )
    )
    st.goodput = round(out.goodput, 6) if out.goodput is not None else None
    st.productive_gpu_hours = out.productive_gpu_hours
    st.lost_gpu_hours = dict(out.lost_gpu_hours)
    st.lost_cost_usd = dict(out.lost_cost_usd)
    st.observed = GoodputObserved(
        interruptions=out.interruptions,
        mtbf_gpu_hours=out.mtbf_gpu_hours,
        mean_checkpoint_seconds=out.mean_checkpoint_seconds,
    )
    st.checkpoint_every_minutes = cadence.decide(spec, st)
    return st


def total_gpu_hours(status: LLMTrainingJobStatus) -> float:
    """The ledger's total (productive + lost) as recorded in a status."""
    return (status.productive_gpu_hours or 0.0) + sum(status.lost_gpu_hours.values())


def total_gpu_hours_of(status: dict[str, object]) -> float:
    """The same for a status document (camelCase keys, as read from the API or status.json)."""
    lost = status.get("lostGPUHours") or {}
    assert isinstance(lost, dict)
    productive = status.get("productiveGPUHours") or 0.0
    assert isinstance(productive, int | float)
    return float(productive) + sum(float(v) for v in lost.values())


def ledger_problem(status: dict[str, object]) -> str | None:
    """One line when a status document's goodput fields do not add up (productive + lost = total to
    1e-6, goodput = productive / total), else None; None also when it has no goodput fields yet."""
    if status.get("productiveGPUHours") is None:
        return None
    acc = status.get("goodputLedger") or {}
    assert isinstance(acc, dict)
    lost = status.get("lostGPUHours") or {}
    assert isinstance(lost, dict)
    gpu_hours = status.get("gpuHours") or 0.0
    assert isinstance(gpu_hours, int | float)
    total = max(
        float(acc.get("totalGPUHours") or 0.0), float(gpu_hours), sum(float(v) for v in lost.values())
    )
    summed = total_gpu_hours_of(status)
    if abs(summed - total) > 1e-6:
        return f"productive + lost = {summed:.6f} GPU-hours, total {total:.6f}"
    ratio = status.get("goodput")
    if total > 0 and (
        not isinstance(ratio, int | float) or abs(ratio - summed_productive(status) / total) > 1e-5
    ):
        return f"goodput {ratio} is not productive / total"
    return None


def summed_productive(status: dict[str, object]) -> float:
    value = status.get("productiveGPUHours") or 0.0
    assert isinstance(value, int | float)
    return float(value)
