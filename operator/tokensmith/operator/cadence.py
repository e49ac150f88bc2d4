"""Adaptive checkpointing: the Daly-optimal interval from the failure rate and checkpoint cost the run
has shown, with the planner's prior until enough failures were seen (pure; no I/O).

- Interval: Daly 2006 (FGCS 22(3), doi:10.1016/j.future.2004.11.016), eq. 37, through
  `tokensmith.planner.reliability.daly_interval` (one implementation of Daly).
- Failure rate: a gamma-Poisson conjugate rule. Failures of a job are a Poisson process with rate
  lambda per GPU-hour; the prior is Gamma(shape a, rate b) with mean a / b = 1 / M0 (M0: the planner's
  MTBF per GPU, e.g. Llama 3's 50,700 GPU-hours) and weight b = a * M0 GPU-hours, i.e. `a` pseudo-failures
  seen in a * M0 pseudo GPU-hours. After n failures in E GPU-hours the posterior is Gamma(a + n, b + E),
  whose mean rate gives the MTBF estimate (a M0 + E) / (a + n). With few failures it stays near M0;
  after many it follows the observed E / n (the prior then weighs a / (a + n)).
- Checkpoint cost: the mean blocked seconds per save the trainer reported (prior: the planner's
  estimate until a save was measured).
- Bounds and hysteresis: the interval is clamped to [minMinutes, maxMinutes] and only changed when
  the new optimum differs from the current interval by more than `hysteresis` (relative), so that
  one more failure or a noisy save time does not make the cadence flap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokensmith.operator.spec import LLMTrainingJobSpec, LLMTrainingJobStatus

DEFAULT_PRIOR_SECONDS = 60.0  # a save's blocked seconds before any is measured (no planner estimate)
PRIOR_FAILURES = 2.0  # the prior weighs as much as two observed failures
MIN_MINUTES = 5.0
MAX_MINUTES = 24 * 60.0
HYSTERESIS = 0.1


@dataclass(frozen=True)
class Prior:
    """The planner's assumptions: MTBF per GPU (GPU-hours per failure) and checkpoint blocked seconds."""

    mtbf_gpu_hours: float
    checkpoint_seconds: float
    weight_failures: float = PRIOR_FAILURES


def posterior_mtbf_gpu_hours(prior: Prior, failures: int, exposure_gpu_hours: float) -> float:
    """Gamma-Poisson posterior mean rate, as an MTBF per GPU: (a M0 + E) / (a + n)."""
    a = prior.weight_failures
    return (a * prior.mtbf_gpu_hours + max(exposure_gpu_hours, 0.0)) / (a + max(failures, 0))


def optimal_minutes(checkpoint_seconds: float, mtbf_gpu_hours: float, gpus: int) -> float:
    """Daly's optimum (eq. 37) for a job of `gpus` GPUs, in minutes."""
    from tokensmith.planner.reliability import daly_interval, job_mtbf_hours

    hours = float(daly_interval(checkpoint_seconds / 3600.0, job_mtbf_hours(mtbf_gpu_hours, gpus)))
    return hours * 60.0


def target_minutes(
    prior: Prior,
    gpus: int,
    failures: int,
    exposure_gpu_hours: float,
    mean_checkpoint_seconds: float | None = None,
) -> float:
    """The unclamped optimum from the posterior failure rate and the observed (else prior) save cost."""
    mtbf = posterior_mtbf_gpu_hours(prior, failures, exposure_gpu_hours)
    delta = mean_checkpoint_seconds if mean_checkpoint_seconds is not None else prior.checkpoint_seconds
    return optimal_minutes(delta, mtbf, gpus)


def next_minutes(
    current: float | None,
    target: float,
    lo: float = MIN_MINUTES,
    hi: float = MAX_MINUTES,
    hysteresis: float = HYSTERESIS,
) -> float:
    """The interval to run with: `target` clamped to [lo, hi]; `current` kept while within hysteresis."""
    want = min(max(target, lo), hi)
    if current is not None and abs(want - current) <= hysteresis * current:
        return current
    return want


def prior_of(spec: LLMTrainingJobSpec) -> Prior:
    """The planner's assumptions as the job states them (Llama 3's MTBF and DEFAULT_PRIOR_SECONDS else)."""
    from tokensmith.planner.reliability import LLAMA3_GPU_HOURS_PER_FAILURE

    ck = spec.checkpoint
    return Prior(
        mtbf_gpu_hours=ck.prior_mtbf_gpu_hours or LLAMA3_GPU_HOURS_PER_FAILURE,
        checkpoint_seconds=ck.prior_seconds or DEFAULT_PRIOR_SECONDS,
    )


def starting_minutes(spec: LLMTrainingJobSpec) -> float:
    """The interval an `everyMinutes: auto` job starts with: `initialMinutes` (the planner's Daly interval
    in emitted jobs), else Daly's optimum for the prior, clamped to [minMinutes, maxMinutes]."""
    ck = spec.checkpoint
    if ck.initial_minutes is not None:
        return ck.initial_minutes
    target = target_minutes(prior_of(spec), spec.accounted_devices, 0, 0.0)
    return next_minutes(None, target, ck.min_minutes, ck.max_minutes)


def decide(spec: LLMTrainingJobSpec, status: LLMTrainingJobStatus) -> float | None:
    """The interval the job runs with (`status.checkpointEveryMinutes`: the next attempt's config and the
    running attempt's live settings), or None unless `checkpoint.everyMinutes` is `auto`. Exposure is
    the goodput ledger's total GPU-hours; failures are the failure-driven restarts (disruption notices
    are planned, not failures)."""
    ck = spec.checkpoint
    if not ck.auto:
        return None
    acc = status.goodput_ledger
    exposure = acc.total_gpu_hours if acc is not None else 0.0
    seen = status.observed.mean_checkpoint_seconds if status.observed is not None else None
    target = target_minutes(prior_of(spec), spec.accounted_devices, status.restarts, exposure, seen)
    current = status.checkpoint_every_minutes or starting_minutes(spec)
    return next_minutes(current, target, ck.min_minutes, ck.max_minutes)


def effective_spec(spec: LLMTrainingJobSpec, status: LLMTrainingJobStatus) -> LLMTrainingJobSpec:
    """The spec the job's children are built from: with `everyMinutes: auto`, `initialMinutes` replaced
    by the interval the job runs with now, so that a new attempt's trainer config and the live settings
    (`live_settings`) carry it (the drivers call this before creating or updating children)."""
    minutes = status.checkpoint_every_minutes
    if not spec.checkpoint.auto or minutes is None:
        return spec
    ck = spec.checkpoint.model_copy(update={"initial_minutes": round(minutes, 2)})
    return spec.model_copy(update={"checkpoint": ck})


# ---------------------------------------------------------------------------- live settings
# What a running trainer may change without a restart, as a partial trainer config (the keys the
# trainer's `tokensmith.trainer.live` accepts). The operator keeps it in a per-job ConfigMap mounted into
# the workers (children.live_config_map), the local runner in a file; the trainer watches the file.
LIVE_FILE = "live.json"


def live_settings(spec: LLMTrainingJobSpec) -> dict[str, Any] | None:
    """The live settings of an effective spec (`effective_spec`): the checkpoint interval of an
    `everyMinutes: auto` job; None for a job with nothing the operator changes while it runs."""
    if not spec.checkpoint.auto:
        return None
    return {"checkpoint": {"every_minutes": round(starting_minutes(spec), 2)}}


def live_document(settings: dict[str, Any]) -> str:
    """The file's text: stable (sorted keys), so equal settings are an equal file and no rewrite."""
    return json.dumps(settings, sort_keys=True) + "\n"
