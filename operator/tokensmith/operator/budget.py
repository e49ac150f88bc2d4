"""GPU-hour accounting and budget enforcement.

GPU-hours accrue while the current attempt has at least one worker running, for the whole gang
(a gang holds all its GPUs from the moment it is scheduled). CPU-only jobs count one device per
process so that budgets and the local runner work the same way without GPUs. Time is counted
incrementally from `status.accountedTime`, so an operator restart neither loses nor doubles hours
(at most one reconcile interval is attributed late).
"""

from __future__ import annotations

from datetime import datetime

from tokensmith.operator.spec import LLMTrainingJobSpec, LLMTrainingJobStatus


def account(
    spec: LLMTrainingJobSpec, status: LLMTrainingJobStatus, now: datetime, gang_running: bool
) -> LLMTrainingJobStatus:
    """Return a status with gpuHours/costUSD advanced to `now` (pure; the input is not changed)."""
    new = status.model_copy()
    if gang_running and status.accounted_time is not None and now > status.accounted_time:
        hours = (now - status.accounted_time).total_seconds() / 3600.0
        new.gpu_hours = status.gpu_hours + hours * spec.accounted_devices
    new.accounted_time = now if gang_running else None
    price = spec.budget.price_per_gpu_hour
    new.cost_usd = round(new.gpu_hours * price, 6) if price is not None else None
    return new


def exceeded(spec: LLMTrainingJobSpec, status: LLMTrainingJobStatus) -> str | None:
    """A one-line reason when the budget is used up, else None."""
    b = spec.budget
    if b.max_gpu_hours is not None and status.gpu_hours >= b.max_gpu_hours:
        return f"used {status.gpu_hours:.3f} GPU-hours of budget.maxGPUHours = {b.max_gpu_hours:g}"
    if b.max_cost_usd is not None and status.cost_usd is not None and status.cost_usd >= b.max_cost_usd:
        return f"spent ${status.cost_usd:.2f} of budget.maxCostUSD = ${b.max_cost_usd:g}"
    return None


def seconds_until_exhausted(spec: LLMTrainingJobSpec, status: LLMTrainingJobStatus) -> float | None:
    """While running: seconds until the budget runs out at the current burn rate (for requeueing)."""
    devices = spec.accounted_devices
    limits = []
    if spec.budget.max_gpu_hours is not None:
        limits.append(spec.budget.max_gpu_hours)
    if spec.budget.max_cost_usd is not None and spec.budget.price_per_gpu_hour:
        limits.append(spec.budget.max_cost_usd / spec.budget.price_per_gpu_hour)
    if not limits or devices == 0:
        return None
    return max((min(limits) - status.gpu_hours) * 3600.0 / devices, 0.0)
