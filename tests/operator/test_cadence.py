"""Adaptive checkpointing (cadence.py) on seeded failure schedules (chaos.py)."""

from __future__ import annotations

import pytest

from tokensmith.operator import cadence, chaos
from tokensmith.operator.spec import LLMTrainingJobStatus
from tokensmith.planner.reliability import LLAMA3_GPU_HOURS_PER_FAILURE, daly_interval, wall_time

GPUS = 64 * 8
DELTA_S = 120.0
RESTART_H = 10 / 60
PRIOR = cadence.Prior(mtbf_gpu_hours=LLAMA3_GPU_HOURS_PER_FAILURE, checkpoint_seconds=DELTA_S)


def adaptive(prior: cadence.Prior) -> chaos.Policy:
    state: dict[str, float | None] = {"current": None}

    def policy(failures: int, wall_hours: float) -> float:
        target = cadence.target_minutes(prior, GPUS, failures, wall_hours * GPUS)
        state["current"] = cadence.next_minutes(state["current"], target)
        return state["current"] / 60.0

    return policy


@pytest.mark.parametrize(
    ("failures", "exposure", "expected"),
    [
        (0, 0.0, 50_000.0),  # nothing seen: the prior
        (0, 100_000.0, 100_000.0),  # (2 x 50k + 100k) / 2: no failure in a long time raises it
        (2, 100_000.0, 50_000.0),  # as expected: unchanged
        (98, 1_250_000.0, 13_500.0),  # 4x the rate (observed 12,755): the data dominate
    ],
)
def test_gamma_poisson_posterior(failures: int, exposure: float, expected: float) -> None:
    prior = cadence.Prior(mtbf_gpu_hours=50_000.0, checkpoint_seconds=60.0)
    assert cadence.posterior_mtbf_gpu_hours(prior, failures, exposure) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        (None, 50.0, 50.0),
        (50.0, 54.0, 50.0),  # within 10%: kept (no flapping)
        (50.0, 70.0, 70.0),
        (50.0, 1.0, cadence.MIN_MINUTES),
        (None, 1e6, cadence.MAX_MINUTES),
    ],
)
def test_bounds_and_hysteresis(current: float | None, target: float, expected: float) -> None:
    assert cadence.next_minutes(current, target) == pytest.approx(expected)


def test_daly_is_the_planners() -> None:
    m = LLAMA3_GPU_HOURS_PER_FAILURE / GPUS
    assert cadence.optimal_minutes(DELTA_S, LLAMA3_GPU_HOURS_PER_FAILURE, GPUS) == pytest.approx(
        float(daly_interval(DELTA_S / 3600, m)) * 60
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_4x_the_prior_failure_rate_adaptive_converges_and_beats_the_fixed_prior(seed: int) -> None:
    true_mtbf = LLAMA3_GPU_HOURS_PER_FAILURE / 4
    failures = chaos.schedule(seed, true_mtbf / GPUS, horizon_hours=8000)
    work = 60 * 24.0
    prior_tau = cadence.optimal_minutes(DELTA_S, PRIOR.mtbf_gpu_hours, GPUS) / 60
    fixed = chaos.simulate(work, failures, DELTA_S / 3600, RESTART_H, lambda n, t: prior_tau)
    adapt = chaos.simulate(work, failures, DELTA_S / 3600, RESTART_H, adaptive(PRIOR))
    optimum = cadence.optimal_minutes(DELTA_S, true_mtbf, GPUS) / 60
    assert adapt.failures >= 20
    assert abs(adapt.intervals[-1] - optimum) <= 0.2 * optimum
    assert adapt.goodput > fixed.goodput
    for out in (fixed, adapt):  # every hour is accounted to a cause
        parts = out.work_hours + out.redone_hours + out.restart_hours + out.checkpoint_hours
        assert parts == pytest.approx(out.wall_hours, abs=1e-6)


def test_simulated_goodput_matches_dalys_prediction() -> None:
    """Same MTBF and checkpoint cost: the model's goodput (eq. 13) within 10% of the simulated one."""
    mtbf_job = LLAMA3_GPU_HOURS_PER_FAILURE / GPUS
    tau = float(daly_interval(DELTA_S / 3600, mtbf_job))
    work = 60 * 24.0
    for seed in (4, 5):
        failures = chaos.schedule(seed, mtbf_job, horizon_hours=10_000)
        out = chaos.simulate(work, failures, DELTA_S / 3600, RESTART_H, lambda n, t: tau)
        predicted = work / float(wall_time(work, tau, DELTA_S / 3600, RESTART_H, mtbf_job))
        assert out.goodput == pytest.approx(predicted, rel=0.10)


def test_reconcile_steers_the_next_attempts_interval_and_effective_spec_applies_it() -> None:
    from datetime import timedelta

    from tokensmith.operator.observed import Observed, WorkerObservation
    from tokensmith.operator.reconcile import reconcile
    from tokensmith.operator.spec import LLMTrainingJobStatus, effective_trainer_config

    from .test_reconcile import NAME, T0, make_spec, workers

    # 4 devices with a 40 GPU-hour MTBF prior: Daly ~ sqrt(2 * 60 s * 10 h) ~ 35 min
    ck = {"everyMinutes": "auto", "initialMinutes": 35.0, "priorMTBFGPUHours": 40.0, "priorSeconds": 60.0}
    spec = make_spec(checkpoint=ck, restartPolicy={"maxRestarts": 50, "maxAttemptsWithoutProgress": 0})
    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0)).status
    t = T0
    attempt = 1
    for _ in range(8):  # a failure every 30 minutes: 2 GPU-hours per failure, 20x the prior's rate
        st = reconcile(NAME, spec, st, Observed(now=t, workers=workers(attempt, "Running", "Running"))).status
        t += timedelta(minutes=30)
        gang = (
            WorkerObservation(0, attempt, "Running"),
            WorkerObservation(1, attempt, "Failed", exit_code=1),
        )
        st = reconcile(NAME, spec, st, Observed(now=t, workers=gang)).status
        assert st.phase == "Restarting"
        t += timedelta(seconds=15)
        st = reconcile(NAME, spec, st, Observed(now=t, workers=())).status
        attempt = st.attempt
    # posterior MTBF (2 x 40 + ~16) / (2 + 8) ~ 9.6 GPU-hours: Daly ~ 21 min, down from 35
    assert st.checkpoint_every_minutes is not None and st.checkpoint_every_minutes < 25.0
    effective = cadence.effective_spec(spec, st)
    cfg = effective_trainer_config(effective, NAME)
    assert cfg.checkpoint.every_minutes == pytest.approx(round(st.checkpoint_every_minutes, 2))
    assert cadence.live_settings(effective) == {
        "checkpoint": {"every_minutes": round(st.checkpoint_every_minutes, 2)}
    }
    off = make_spec(checkpoint={"everyMinutes": 35.0})
    assert cadence.decide(off, st) is None and cadence.effective_spec(off, st) is off
    assert cadence.live_settings(off) is None


VOLUME = {"persistentVolumeClaim": {"claimName": "ck"}}


@pytest.mark.parametrize(
    ("checkpoint", "every", "initial"),
    [
        ({"everyMinutes": "auto", "initialMinutes": 55.0}, "auto", 55.0),
        ({"everyMinutes": "auto"}, "auto", None),
        ({"everyMinutes": 30}, 30.0, None),
        ({"everyMinutes": "7.5"}, 7.5, None),  # fractional minutes on a cluster (int-or-string)
        ({"everyMinutes": 35.0, "adaptive": True}, "auto", 35.0),  # the older spelling
        ({"adaptive": True}, "auto", None),
        ({"everyMinutes": 35.0, "initialMinutes": 20.0, "adaptive": True}, "auto", 20.0),
        ({}, None, None),
    ],
)
def test_every_minutes_is_a_number_or_auto(checkpoint: dict, every: object, initial: float | None) -> None:
    from tokensmith.operator.spec import CheckpointSpec

    ck = CheckpointSpec.model_validate({"volume": VOLUME, **checkpoint})
    assert (ck.every_minutes, ck.initial_minutes, ck.auto) == (every, initial, every == "auto")


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"everyMinutes": "often"}, "everyMinutes: must be a number of minutes >= 0 or `auto`, not 'often'"),
        ({"everyMinutes": -5}, "everyMinutes: must be a number of minutes >= 0 or `auto`, not -5"),
        ({"everyMinutes": 30, "initialMinutes": 10}, "initialMinutes applies only with everyMinutes: auto"),
        ({"everyMinutes": "auto", "initialMinutes": 0}, "initialMinutes"),
    ],
)
def test_bad_intervals_are_one_line(checkpoint: dict, message: str) -> None:
    from pydantic import ValidationError

    from tokensmith.operator.spec import CheckpointSpec, format_validation_error

    with pytest.raises(ValidationError) as err:
        CheckpointSpec.model_validate({"volume": VOLUME, **checkpoint})
    text = format_validation_error(err.value)
    assert message in text and "\n" not in text


def test_auto_starts_from_initial_minutes_else_from_daly_for_the_prior() -> None:
    from tokensmith.operator.spec import LLMTrainingJobStatus, effective_trainer_config

    from .test_reconcile import NAME, make_spec

    prior = {"priorMTBFGPUHours": 40.0, "priorSeconds": 60.0}
    given = make_spec(checkpoint={"everyMinutes": "auto", "initialMinutes": 50.0, **prior})
    assert cadence.starting_minutes(given) == 50.0
    assert effective_trainer_config(given, NAME).checkpoint.every_minutes == 50.0
    derived = make_spec(checkpoint={"everyMinutes": "auto", **prior})
    daly = cadence.optimal_minutes(60.0, 40.0, derived.accounted_devices)
    assert cadence.starting_minutes(derived) == pytest.approx(daly)
    assert effective_trainer_config(derived, NAME).checkpoint.every_minutes == pytest.approx(daly)
    # no status yet: the first decision keeps the starting interval (within hysteresis of the target)
    assert cadence.decide(derived, LLMTrainingJobStatus()) == pytest.approx(daly)
    clamped = make_spec(checkpoint={"everyMinutes": "auto", **prior, "minMinutes": 60.0})
    assert cadence.starting_minutes(clamped) == 60.0


def _drive_reconcile(adaptive: bool, failures: list[chaos.Failure], hours: float) -> LLMTrainingJobStatus:
    """The operator's decision core (`reconcile`, what both drivers call) through a seeded schedule on a
    64 x 8 job, event by event: the gang runs, the trainer reports each save when complete (blocked
    DELTA_S), a worker fails at each failure time (failures during a restart are absorbed by it), the
    restart takes the operator's backoff (60 s) plus RESTART_H. The trainer runs each attempt with the
    interval the operator gave it (status.checkpointEveryMinutes)."""
    from datetime import timedelta

    from tokensmith.operator.observed import Observed, WorkerObservation
    from tokensmith.operator.reconcile import reconcile
    from tokensmith.operator.spec import CheckpointRef

    from .test_reconcile import NAME, T0, make_spec

    prior_min = cadence.optimal_minutes(DELTA_S, PRIOR.mtbf_gpu_hours, GPUS)
    ck = {"everyMinutes": round(prior_min, 2), "adaptive": adaptive, "priorSeconds": DELTA_S}
    spec = make_spec(
        checkpoint={**ck, "priorMTBFGPUHours": PRIOR.mtbf_gpu_hours},
        cluster={"nodes": 64, "gpusPerNode": 8, "nprocPerNode": 8},
        parallelism={"microBatch": 1, "globalBatchTokens": 4096 * GPUS},
        model={"preset": "llama-7b"},
        data={"tokens": 10**13},
        restartPolicy={
            "maxRestarts": 10_000,
            "backoffSeconds": 60,
            "maxBackoffSeconds": 60,
            "hangTimeoutSeconds": 0,
            "maxAttemptsWithoutProgress": 0,
        },
    )
    end, now = T0 + timedelta(hours=hours), T0
    pending = [T0 + timedelta(hours=f.hour) for f in failures]

    def gang(attempt: int, failed: bool = False) -> tuple[WorkerObservation, ...]:
        ok = tuple(WorkerObservation(i, attempt, "Running") for i in range(64))
        return (ok[0], WorkerObservation(1, attempt, "Failed", exit_code=1), *ok[2:]) if failed else ok

    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=now)).status
    step = 0
    while now < end:
        st = reconcile(NAME, spec, st, Observed(now=now, workers=gang(st.attempt))).status
        assert st.phase == "Running"
        every = timedelta(minutes=st.checkpoint_every_minutes or spec.checkpoint.every_minutes or 0)
        while pending and pending[0] < now:  # fell in the restart: absorbed by it
            pending.pop(0)
        fail_at = pending.pop(0) if pending else end
        save_end = now + every + timedelta(seconds=DELTA_S)
        while save_end <= min(fail_at, end):  # saves complete and are reported
            step += int(every.total_seconds() // 60)
            st.last_checkpoint = CheckpointRef(
                step=step, path=f"/ck/{step}", time=save_end, blocked_seconds=DELTA_S
            )
            st = reconcile(NAME, spec, st, Observed(now=save_end, workers=gang(st.attempt))).status
            now, save_end = save_end, save_end + every + timedelta(seconds=DELTA_S)
        if fail_at >= end:
            st = reconcile(NAME, spec, st, Observed(now=end, workers=gang(st.attempt))).status
            break
        now = fail_at
        st = reconcile(NAME, spec, st, Observed(now=now, workers=gang(st.attempt, failed=True))).status
        assert st.phase == "Restarting"
        assert st.restart_after is not None
        now = st.restart_after  # the backoff the operator chose
        st = reconcile(NAME, spec, st, Observed(now=now)).status  # the old gang is gone: a new attempt
        assert st.phase == "Pending"
        now += timedelta(hours=RESTART_H)
    return st


@pytest.mark.parametrize("seed", [1, 2])
def test_the_operators_decisions_with_4x_the_prior_rate_converge_and_beat_the_fixed_prior(seed: int) -> None:
    """Issue 15's adaptive item through the operator's own decisions (cadence.decide fed by the goodput
    ledger inside `reconcile`), not only the model: two simulated months at 4x the prior's failure rate."""
    true_mtbf = LLAMA3_GPU_HOURS_PER_FAILURE / 4
    failures = chaos.schedule(seed, true_mtbf / GPUS, horizon_hours=60 * 24.0)
    fixed = _drive_reconcile(False, failures, 60 * 24.0)
    adapt = _drive_reconcile(True, failures, 60 * 24.0)
    optimum = cadence.optimal_minutes(DELTA_S, true_mtbf, GPUS)
    assert adapt.restarts >= 20 and adapt.restarts == fixed.restarts
    assert adapt.checkpoint_every_minutes is not None
    assert abs(adapt.checkpoint_every_minutes - optimum) <= 0.2 * optimum
    assert fixed.checkpoint_every_minutes is None
    assert adapt.goodput is not None and fixed.goodput is not None and adapt.goodput > fixed.goodput
    for st in (fixed, adapt):  # the ledger adds up to the wall-clock GPU-hours of the run
        total = (st.productive_gpu_hours or 0.0) + sum(st.lost_gpu_hours.values())
        assert total == pytest.approx(60 * 24.0 * GPUS, abs=1e-6)
