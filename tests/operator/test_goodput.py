"""Goodput ledger (goodput.py): productive + lost by cause = total, table-driven, and through reconcile."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tokensmith.operator import goodput
from tokensmith.operator.observed import Observed, WorkerObservation
from tokensmith.operator.reconcile import reconcile
from tokensmith.operator.spec import CheckpointRef, LLMTrainingJobStatus, Progress

from .test_reconcile import NAME, T0, make_spec, workers

CASES = [
    # (inputs, expected lost by cause, expected goodput)
    (goodput.Inputs(100.0, 8), {"redone": 0, "rollback": 0, "restart": 0, "checkpoint": 0}, 1.0),
    (
        goodput.Inputs(100.0, 8, redone_by_class={"Infrastructure": 3.0, "Application": 2.0}),
        {"redone": 5.0, "rollback": 0, "restart": 0, "checkpoint": 0},
        0.95,
    ),
    (
        goodput.Inputs(100.0, 8, rollback_gpu_hours=4.0, restart_gpu_hours=6.0),
        {"redone": 0, "rollback": 4.0, "restart": 6.0, "checkpoint": 0},
        0.90,
    ),
    # 900 blocked seconds on 8 devices = 2 GPU-hours
    (
        goodput.Inputs(100.0, 8, checkpoint_seconds=900.0, checkpoint_saves=9),
        {"redone": 0, "rollback": 0, "restart": 0, "checkpoint": 2.0},
        0.98,
    ),
    # causes summing past the measured total: the total is raised, goodput 0, identity kept
    (
        goodput.Inputs(1.0, 8, restart_gpu_hours=2.0),
        {"redone": 0, "rollback": 0, "restart": 2.0, "checkpoint": 0},
        0.0,
    ),
]


@pytest.mark.parametrize(("inputs", "lost", "expected"), CASES)
def test_ledger_splits_the_total_by_cause(inputs: goodput.Inputs, lost: dict, expected: float) -> None:
    out = goodput.ledger(inputs)
    assert out.lost_gpu_hours == pytest.approx(lost)
    assert out.goodput == pytest.approx(expected)
    assert out.productive_gpu_hours + sum(out.lost_gpu_hours.values()) == pytest.approx(
        out.total_gpu_hours, abs=1e-6
    )


def test_ledger_prices_each_cause_and_observes_mtbf_and_checkpoint_cost() -> None:
    out = goodput.ledger(
        goodput.Inputs(
            512.0,
            8,
            restart_gpu_hours=8.0,
            checkpoint_seconds=60.0,
            checkpoint_saves=3,
            interruptions=4,
            price_per_gpu_hour=2.5,
        )
    )
    assert out.lost_cost_usd["restart"] == pytest.approx(20.0)
    assert out.mtbf_gpu_hours == pytest.approx(128.0)
    assert out.mean_checkpoint_seconds == pytest.approx(20.0)
    assert goodput.ledger(goodput.Inputs(0.0, 8)).goodput is None
    assert goodput.ledger(goodput.Inputs(5.0, 8)).mtbf_gpu_hours is None


def _identity(st: LLMTrainingJobStatus) -> None:
    total = st.goodput_ledger.total_gpu_hours if st.goodput_ledger else 0.0
    assert st.productive_gpu_hours is not None
    assert goodput.total_gpu_hours(st) == pytest.approx(max(total, st.gpu_hours), abs=1e-6)


def test_reconcile_accounts_restart_redone_and_checkpoint_stall_and_adds_up() -> None:
    spec = make_spec(budget={"pricePerGPUHour": 2.0})  # 2 nodes x 2 processes = 4 devices
    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0)).status
    # 6 minutes to schedule the gang: restart time
    t = T0 + timedelta(minutes=6)
    st = reconcile(NAME, spec, st, Observed(now=t, workers=workers(1, "Running", "Running"))).status
    assert st.phase == "Running" and st.gang_ready
    assert st.lost_gpu_hours["restart"] == pytest.approx(0.1 * 4)
    # an hour of training, a checkpoint that blocked 90 s at 30 min
    ckpt_time = t + timedelta(minutes=30)
    st.last_checkpoint = CheckpointRef(step=100, path="/ck/100", time=ckpt_time, blocked_seconds=90.0)
    st.progress = Progress(step=150, tokens=0, heartbeat_time=t + timedelta(minutes=59))
    t = t + timedelta(minutes=60)
    st = reconcile(NAME, spec, st, Observed(now=t, workers=workers(1, "Running", "Running"))).status
    _identity(st)
    assert st.lost_gpu_hours["checkpoint"] == pytest.approx(90 / 3600 * 4)
    assert st.observed is not None and st.observed.mean_checkpoint_seconds == pytest.approx(90.0)
    # a worker fails: 30 minutes since the checkpoint are redone
    gang = (WorkerObservation(0, 1, "Running"), WorkerObservation(1, 1, "Failed", exit_code=1))
    st = reconcile(NAME, spec, st, Observed(now=t, workers=gang)).status
    assert st.phase == "Restarting"
    assert st.lost_gpu_hours["redone"] == pytest.approx(0.5 * 4)
    assert sum(st.gpu_hours_lost_by_class.values()) == pytest.approx(st.lost_gpu_hours["redone"])
    assert st.observed is not None and st.observed.interruptions == 1
    # backoff: 10 s, then 4 min to get the new gang running: both restart time
    t2 = t + timedelta(seconds=10)
    st = reconcile(NAME, spec, st, Observed(now=t2, workers=())).status
    t3 = t2 + timedelta(minutes=4)
    st = reconcile(NAME, spec, st, Observed(now=t3, workers=workers(2, "Running", "Running"))).status
    _identity(st)
    assert st.lost_gpu_hours["restart"] == pytest.approx((6 + 10 / 60 + 4) / 60 * 4, rel=1e-6)
    total = goodput.total_gpu_hours(st)
    assert total == pytest.approx((6 + 60 + 10 / 60 + 4) / 60 * 4, rel=1e-6)
    assert st.goodput == pytest.approx(st.productive_gpu_hours / total, abs=1e-6)
    assert st.lost_cost_usd["redone"] == pytest.approx(st.lost_gpu_hours["redone"] * 2.0)
    assert st.observed.mtbf_gpu_hours == pytest.approx(total)


def test_suspended_and_finished_time_is_not_counted() -> None:
    spec = make_spec()
    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0)).status
    st = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Running", "Running"))).status
    st = reconcile(
        NAME, spec, st, Observed(now=T0 + timedelta(hours=1), workers=workers(1, "Succeeded", "Succeeded"))
    ).status
    assert st.phase == "Succeeded"
    before = goodput.total_gpu_hours(st)
    assert before == pytest.approx(4.0)
    st = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(hours=5), workers=())).status
    assert goodput.total_gpu_hours(st) == pytest.approx(before)
    assert st.goodput == pytest.approx(1.0)
