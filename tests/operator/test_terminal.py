"""Every way into a terminal phase stops the gang (issue 14's defect: an edit that made the spec
invalid ended the job Failed/InvalidSpec while its workers kept running)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tokensmith.operator.observed import DeleteWorkers, Observed, WorkerObservation
from tokensmith.operator.reconcile import reconcile, reject
from tokensmith.operator.spec import LLMTrainingJobSpec, LLMTrainingJobStatus

from .test_reconcile import NAME, T0, make_spec, running_status, workers


def _deleted(decision) -> set[tuple[int, int]]:  # type: ignore[no-untyped-def]
    return {(w.attempt, w.index) for a in decision.actions if isinstance(a, DeleteWorkers) for w in a.workers}


def _invalid_edit() -> LLMTrainingJobSpec:
    # passes the models, fails the trainer-config check: global batch not a multiple of the step
    return make_spec(parallelism={"microBatch": 2, "globalBatchTokens": 3000})


@pytest.mark.parametrize(
    "case",
    ["invalid-edit", "budget", "non-retryable", "max-restarts", "success", "already-failed-invalid"],
)
def test_every_terminal_path_stops_the_running_gang(case: str) -> None:
    spec = make_spec(restartPolicy={"maxRestarts": 0})
    st = running_status(spec)
    gang = workers(1, "Running", "Running", name="p")
    now = T0 + timedelta(seconds=5)
    if case == "invalid-edit":
        d = reconcile(NAME, _invalid_edit(), st, Observed(now=now, workers=gang))
        assert d.status.last_failure is not None and d.status.last_failure.reason == "InvalidSpec"
        assert d.status.gpu_hours > 0  # the gang's time up to the edit is counted
    elif case == "budget":
        d = reconcile(NAME, make_spec(budget={"maxGPUHours": 1e-6}), st, Observed(now=now, workers=gang))
        assert d.status.phase == "Failed"
    elif case == "non-retryable":
        failed = (WorkerObservation(0, 1, "Failed", exit_code=78, name="p0"), gang[1])
        d = reconcile(NAME, spec, st, Observed(now=now, workers=failed))
        assert d.status.last_failure is not None and d.status.last_failure.reason == "ConfigError"
        gang = failed
    elif case == "max-restarts":
        failed = (WorkerObservation(0, 1, "Failed", exit_code=1, name="p0"), gang[1])
        d = reconcile(NAME, spec, st, Observed(now=now, workers=failed))
        assert d.status.last_failure is not None and d.status.phase == "Failed"
        gang = failed
    elif case == "success":
        done = (WorkerObservation(0, 1, "Succeeded", exit_code=0, name="p0"), gang[1])
        d = reconcile(NAME, spec, st, Observed(now=now, workers=done))
        assert d.status.phase == "Succeeded"
        gang = done
    else:  # the pass after the rejection, e.g. by a restarted operator: still stops what runs
        first = reject(st, "bad", now, 2, gang)
        d = reject(first.status, "bad", now, 2, gang)
    assert d.status.phase in ("Failed", "Succeeded")
    assert _deleted(d) == {(w.attempt, w.index) for w in gang if not w.finished}
    assert d.requeue_after is not None  # look again until the workers are gone


def test_invalid_spec_records_the_running_attempt() -> None:
    spec = make_spec()
    st = running_status(spec)
    d = reject(st, "spec.budget.maxCostUSD: needs pricePerGPUHour", T0, 2, workers(1, "Running", "Running"))
    assert d.status.last_failure is not None and d.status.last_failure.attempt == 1
    assert d.status.phase == "Failed" and not d.status.gang_ready
    fresh = reject(LLMTrainingJobStatus(), "bad", T0, 1)
    assert fresh.status.last_failure is not None and fresh.status.last_failure.attempt == 0
    assert not fresh.actions[1:] and fresh.requeue_after is None  # nothing ran: nothing to stop
