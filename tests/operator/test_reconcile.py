"""The pure decision functions: every failure kind, backoff, max restarts, budget, suspend/resume,
evaluation scheduling, and a driver that restarts in the middle of each phase."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tokensmith.operator import budget, policy
from tokensmith.operator.failures import classify_worker
from tokensmith.operator.observed import (
    CreateEvaluation,
    CreateGang,
    DeleteWorkers,
    EmitEvent,
    EvalObservation,
    Observed,
    WorkerObservation,
)
from tokensmith.operator.reconcile import check_spec, reconcile
from tokensmith.operator.spec import CheckpointRef, LLMTrainingJobSpec, LLMTrainingJobStatus, Progress

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAME = "job"


def make_spec(**overrides: object) -> LLMTrainingJobSpec:
    doc: dict = {
        "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
        "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 2},
        "data": {"tokens": 100_000},
        "parallelism": {"microBatch": 2, "globalBatchTokens": 2048},
        "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 10, "hangTimeoutSeconds": 60},
    }
    for key, value in overrides.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return LLMTrainingJobSpec.model_validate(doc)


def workers(attempt: int, *phases: str, **kw: object) -> tuple[WorkerObservation, ...]:
    return tuple(WorkerObservation(index=i, attempt=attempt, phase=p, **kw) for i, p in enumerate(phases))  # type: ignore[arg-type]


def kinds(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [type(a).__name__ for a in decision.actions]


def events(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [a.reason for a in decision.actions if isinstance(a, EmitEvent)]


def running_status(spec: LLMTrainingJobSpec, attempt: int = 1) -> LLMTrainingJobStatus:
    d = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0))
    d = reconcile(NAME, spec, d.status, Observed(now=T0, workers=workers(attempt, "Running", "Running")))
    assert d.status.phase == "Running"
    return d.status


def test_first_reconcile_creates_attempt_one() -> None:
    d = reconcile(NAME, make_spec(), LLMTrainingJobStatus(), Observed(now=T0, generation=1))
    assert d.status.phase == "Pending" and d.status.attempt == 1 and d.status.observed_generation == 1
    assert d.actions[0] == CreateGang(1, (0, 1))
    assert "AttemptStarted" in events(d)


def test_partial_gang_creates_only_missing_workers_and_then_runs() -> None:
    spec = make_spec()
    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0)).status
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Pending")))
    assert d.actions[0] == CreateGang(1, (1,)) and d.status.phase == "Pending"
    d = reconcile(NAME, spec, d.status, Observed(now=T0, workers=workers(1, "Running", "Running")))
    assert d.status.phase == "Running" and d.status.gang_ready
    assert "GangRunning" in events(d)
    assert [c.type for c in d.status.conditions if c.status == "True"] == ["Running"]


def test_success_is_worker_zero_exiting_zero() -> None:
    spec = make_spec()
    st = running_status(spec)
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Succeeded", "Running")))
    assert d.status.phase == "Succeeded" and d.status.completion_time == T0
    deleted = [a for a in d.actions if isinstance(a, DeleteWorkers)]
    assert [w.index for w in deleted[0].workers] == [1]  # the straggler is stopped, worker 0 kept for logs


@pytest.mark.parametrize(
    ("worker", "kind", "retryable"),
    [
        (WorkerObservation(0, 1, "Failed", exit_code=1, reason="Error"), "ExitCode", True),
        (WorkerObservation(0, 1, "Failed", exit_code=137, reason="OOMKilled"), "OOMKilled", True),
        (WorkerObservation(0, 1, "Failed", reason="Evicted", message="node pressure"), "Evicted", True),
        (WorkerObservation(0, 1, "Failed", reason="PreemptionByScheduler"), "Preempted", True),
        (WorkerObservation(0, 1, "Failed", reason="DeletionByTaintManager"), "NodeLost", True),
        (WorkerObservation(0, 1, "Unknown"), "NodeLost", True),
        (WorkerObservation(0, 1, "Failed", exit_code=78), "Config", False),
    ],
)
def test_failure_kinds(worker: WorkerObservation, kind: str, retryable: bool) -> None:
    f = classify_worker(worker, make_spec().restart_policy)
    assert f is not None and f.kind == kind and f.retryable is retryable


def test_retry_on_and_non_retryable_exit_codes_are_honoured() -> None:
    rp = make_spec(restartPolicy={"retryOn": ["ExitCode"], "nonRetryableExitCodes": [78, 3]}).restart_policy
    oom = classify_worker(WorkerObservation(0, 1, "Failed", exit_code=137, reason="OOMKilled"), rp)
    assert oom is not None and not oom.retryable and "not in restartPolicy.retryOn" in oom.message
    three = classify_worker(WorkerObservation(0, 1, "Failed", exit_code=3), rp)
    assert three is not None and not three.retryable and three.reason == "NonRetryableExitCode"
    assert classify_worker(WorkerObservation(0, 1, "Running"), rp) is None
    assert classify_worker(WorkerObservation(0, 1, "Succeeded", exit_code=0), rp) is None


def test_one_worker_failing_restarts_the_whole_gang_after_backoff() -> None:
    spec = make_spec()
    st = running_status(spec)
    st = st.model_copy(update={"last_checkpoint": CheckpointRef(step=40, path="/checkpoints/job/step-40")})
    gang = (WorkerObservation(0, 1, "Running"), WorkerObservation(1, 1, "Failed", exit_code=1))
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang))
    assert d.status.phase == "Restarting" and d.status.restarts == 1
    assert d.status.restart_after == T0 + timedelta(seconds=10)
    deleted = next(a for a in d.actions if isinstance(a, DeleteWorkers))
    assert {w.index for w in deleted.workers} == {0, 1}  # the gang dies together
    assert "resuming from checkpoint step 40" in d.status.message
    # old pods still terminating: wait, never start attempt 2 beside them
    terminating = tuple(replace(w, terminating=True) for w in gang)
    d2 = reconcile(NAME, spec, d.status, Observed(now=T0 + timedelta(seconds=20), workers=terminating))
    assert d2.status.phase == "Restarting" and not any(isinstance(a, CreateGang) for a in d2.actions)
    # gone, but the backoff has not passed
    d3 = reconcile(NAME, spec, d.status, Observed(now=T0 + timedelta(seconds=5)))
    assert d3.status.phase == "Restarting" and d3.requeue_after == pytest.approx(5.0)
    # backoff over: attempt 2, from the checkpoint
    d4 = reconcile(NAME, spec, d.status, Observed(now=T0 + timedelta(seconds=10)))
    assert d4.status.phase == "Pending" and d4.status.attempt == 2 and d4.status.restarts == 1
    assert d4.actions[0] == CreateGang(2, (0, 1))
    assert "resuming from checkpoint step 40" in d4.status.message


def test_backoff_is_exponential_and_capped() -> None:
    rp = make_spec(
        restartPolicy={"backoffSeconds": 10, "backoffMultiplier": 3, "maxBackoffSeconds": 60}
    ).restart_policy
    assert [policy.backoff_seconds(n, rp) for n in range(0, 5)] == [0, 10, 30, 60, 60]


def test_max_restarts_ends_failed() -> None:
    spec = make_spec(restartPolicy={"maxRestarts": 1})
    st = running_status(spec).model_copy(update={"restarts": 1})
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Failed", "Running", exit_code=1)))
    assert d.status.phase == "Failed"
    failed = next(c for c in d.status.conditions if c.type == "Failed")
    assert failed.reason == "MaxRestartsExceeded" and "all 1 restarts used" in failed.message
    assert "MaxRestartsExceeded" in events(d)


def test_config_error_is_never_retried_even_if_another_worker_is_retryable() -> None:
    spec = make_spec()
    st = running_status(spec)
    gang = (
        WorkerObservation(0, 1, "Failed", exit_code=137, reason="OOMKilled"),
        WorkerObservation(1, 1, "Failed", exit_code=78),
    )
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang))
    assert d.status.phase == "Failed" and d.status.restarts == 0
    assert d.status.last_failure is not None and d.status.last_failure.reason == "ConfigError"


def test_hang_detection_uses_the_heartbeat() -> None:
    spec = make_spec()
    st = running_status(spec)
    gang = workers(1, "Running", "Running")
    beat = st.model_copy(
        update={"progress": Progress(step=5, tokens=500, heartbeat_time=T0 + timedelta(seconds=50))}
    )
    d = reconcile(NAME, spec, beat, Observed(now=T0 + timedelta(seconds=100), workers=gang))
    assert d.status.phase == "Running"
    assert d.requeue_after == pytest.approx(10.05)  # exactly when the hang would be declared
    d = reconcile(NAME, spec, beat, Observed(now=T0 + timedelta(seconds=111), workers=gang))
    assert d.status.phase == "Restarting" and d.status.last_failure is not None
    assert d.status.last_failure.kind == "Hang"


def test_a_pod_vanishing_from_a_running_gang_is_a_failure() -> None:
    spec = make_spec()
    st = running_status(spec)
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Running")))
    assert d.status.phase == "Restarting" and d.status.last_failure is not None
    assert d.status.last_failure.kind == "PodLost"


def test_budget_accounting_and_exhaustion() -> None:
    spec = make_spec(
        budget={"maxGPUHours": 4, "pricePerGPUHour": 2.0}, restartPolicy={"hangTimeoutSeconds": 0}
    )
    st = running_status(spec)
    gang = workers(1, "Running", "Running")
    d = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(minutes=30), workers=gang))
    assert d.status.gpu_hours == pytest.approx(2.0) and d.status.cost_usd == pytest.approx(4.0)
    assert d.status.phase == "Running" and d.requeue_after == pytest.approx(1800.05)
    d = reconcile(NAME, spec, d.status, Observed(now=T0 + timedelta(minutes=61), workers=gang))
    assert d.status.phase == "Failed" and d.status.last_failure is not None
    assert d.status.last_failure.reason == "BudgetExceeded"
    assert any(isinstance(a, DeleteWorkers) and len(a.workers) == 2 for a in d.actions)
    assert budget.exceeded(spec, d.status) is not None


def test_budget_does_not_count_suspended_time() -> None:
    spec = make_spec(budget={"maxGPUHours": 4})
    st = running_status(spec)
    susp = make_spec(budget={"maxGPUHours": 4}, suspend=True)
    d = reconcile(NAME, susp, st, Observed(now=T0, workers=workers(1, "Running", "Running")))
    d = reconcile(NAME, susp, d.status, Observed(now=T0 + timedelta(hours=10)))
    assert d.status.gpu_hours == 0 and d.status.phase == "Suspended"


def test_suspend_and_resume() -> None:
    spec = make_spec()
    st = running_status(spec).model_copy(update={"last_checkpoint": CheckpointRef(step=8, path="/c/8")})
    suspended = make_spec(suspend=True)
    d = reconcile(NAME, suspended, st, Observed(now=T0, workers=workers(1, "Running", "Running")))
    assert d.status.phase == "Suspended" and "checkpoint step 8 kept" in d.status.message
    assert any(isinstance(a, DeleteWorkers) for a in d.actions)
    d = reconcile(NAME, suspended, d.status, Observed(now=T0))
    assert d.status.phase == "Suspended" and not [a for a in d.actions if not isinstance(a, EmitEvent)]
    d = reconcile(NAME, spec, d.status, Observed(now=T0))
    assert d.status.phase == "Pending" and d.status.attempt == 2 and d.status.restarts == 0
    assert d.actions[0] == CreateGang(2, (0, 1)) and "Resumed" in events(d)


def test_evaluation_every_kth_checkpoint_never_twice_and_failures_recorded() -> None:
    spec = make_spec(evaluation={"tasks": ["hellaswag"], "everyCheckpoints": 2})
    st = running_status(spec)
    gang = workers(1, "Running", "Running")
    creates: list[CreateEvaluation] = []
    for step in (10, 10, 20, 30, 40):
        st = st.model_copy(update={"last_checkpoint": CheckpointRef(step=step, path=f"/c/{step}")})
        d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang))
        creates += [a for a in d.actions if isinstance(a, CreateEvaluation)]
        st = d.status
    assert [c.step for c in creates] == [20, 40] and st.checkpoints_observed == 4
    assert creates[0].name == "job-eval-20" and creates[0].path == "/c/20"
    evals = (
        EvalObservation(20, "Succeeded", name="job-eval-20", results={"hellaswag/acc": 0.31}),
        EvalObservation(40, "Failed", name="job-eval-40", message="OOMKilled"),
    )
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang, evaluations=evals))
    assert [(e.step, e.phase) for e in d.status.evaluations] == [(20, "Succeeded"), (40, "Failed")]
    assert d.status.evaluations[0].results == {"hellaswag/acc": 0.31}
    assert d.status.phase == "Running"  # a failed evaluation never fails training
    assert {"EvaluationSucceeded", "EvaluationFailed"} <= set(events(d))
    again = reconcile(NAME, spec, d.status, Observed(now=T0, workers=gang, evaluations=evals))
    assert "EvaluationSucceeded" not in events(again)  # recorded once


def test_evaluation_created_before_an_operator_crash_is_adopted_not_duplicated() -> None:
    spec = make_spec(evaluation={"tasks": ["piqa"]})
    st = running_status(spec).model_copy(update={"last_checkpoint": CheckpointRef(step=10, path="/c/10")})
    seen = (EvalObservation(10, "Running", name="job-eval-10"),)
    d = reconcile(
        NAME, spec, st, Observed(now=T0, workers=workers(1, "Running", "Running"), evaluations=seen)
    )
    assert not any(isinstance(a, CreateEvaluation) for a in d.actions)
    assert [(e.step, e.job) for e in d.status.evaluations] == [(10, "job-eval-10")]


# ---- operator restarted in the middle of each phase: the status it reads back is all it has


def test_restart_while_pending_with_a_gang_the_status_never_recorded() -> None:
    spec = make_spec()
    # status still says attempt 1 but the crashed operator had already created attempt 2's pods
    st = LLMTrainingJobStatus(phase="Restarting", attempt=1, restarts=1, restart_after=T0)
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(2, "Pending")))
    assert d.status.attempt == 2 and d.status.phase == "Pending" and d.status.restarts == 1
    assert d.actions[0] == CreateGang(2, (1,))  # only the one it had not created yet


def test_restart_while_running_changes_nothing() -> None:
    spec = make_spec()
    st = running_status(spec)
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Running", "Running")))
    assert d.status.phase == "Running" and not [a for a in d.actions if not isinstance(a, EmitEvent)]


def test_restart_while_restarting_finishes_the_deletion() -> None:
    spec = make_spec()
    st = LLMTrainingJobStatus(phase="Restarting", attempt=1, restarts=1, restart_after=T0)
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=workers(1, "Running", "Failed")))
    assert d.status.phase == "Restarting" and d.status.attempt == 1
    assert any(isinstance(a, DeleteWorkers) for a in d.actions)


def test_restart_after_a_terminal_phase_never_recreates_a_gang() -> None:
    spec = make_spec()
    for phase in ("Succeeded", "Failed"):
        st = LLMTrainingJobStatus(phase=phase, attempt=3)  # type: ignore[arg-type]
        d = reconcile(NAME, spec, st, Observed(now=T0))
        assert d.status.phase == phase and not d.actions


@pytest.mark.parametrize(
    "parallelism",
    [
        {"tensor": 2, "zeroStage": 1},
        {"pipeline": 2, "zeroStage": 1},
        {"tensor": 2, "pipeline": 2, "zeroStage": 0, "globalBatchTokens": 1024},
    ],
)
def test_tensor_and_pipeline_layouts_the_trainer_runs_are_accepted(parallelism: dict) -> None:
    spec = make_spec(parallelism=parallelism)
    assert check_spec(NAME, spec) is None
    d = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0))
    assert any(isinstance(a, CreateGang) for a in d.actions)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"parallelism": {"tensor": 3}}, "tensor parallel degree 3 must divide the attention heads"),
        ({"parallelism": {"pipeline": 64}}, "pipeline parallel degree 64 exceeds the model's"),
        ({"parallelism": {"pipeline": 2, "zeroStage": 2}}, "ZeRO stage 2 cannot be combined with pipeline"),
        ({"parallelism": {"tensor": 4}}, "must divide the processes per node (2)"),
        ({"parallelism": {"tensor": 2, "zeroStage": 3}}, "ZeRO stage 3 cannot be combined with tensor"),
        ({"parallelism": {"globalBatchTokens": 1000}}, "must be a multiple"),
        (
            {"parallelism": {"globalBatchTokens": 256 * 3}},
            "not a multiple of micro batch x seq_len x data-parallel degree",
        ),
        ({"data": {"tokens": None}}, "no token budget"),
    ],
)
def test_specs_that_can_never_run_end_failed_with_the_reason(overrides: dict, expected: str) -> None:
    spec = make_spec(**overrides)
    assert expected in (check_spec(NAME, spec) or "")
    d = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0))
    assert d.status.phase == "Failed" and expected in d.status.message
    assert not any(isinstance(a, CreateGang) for a in d.actions)


def test_bad_job_name_is_reported() -> None:
    assert "DNS-1035" in (check_spec("9" + "x" * 50, make_spec()) or "")


def test_local_driver_helpers_feed_the_same_decisions() -> None:
    """What the local runner does: processes' return codes and report-file lines -> the same reconcile."""
    from tokensmith.operator.observe import apply_report, worker_from_exit

    assert worker_from_exit(0, 1, None).phase == "Running"
    assert worker_from_exit(0, 1, 0).phase == "Succeeded"
    killed = worker_from_exit(1, 1, -9)
    assert (killed.phase, killed.exit_code, killed.reason) == ("Failed", 137, "OOMKilled")
    config = worker_from_exit(1, 1, 78)
    spec = make_spec()
    st = running_status(spec)
    st = apply_report(
        st,
        {
            "type": "progress",
            "step": 7,
            "tokens": 700,
            "loss": 2.5,
            "tokens_per_s": 10.0,
            "time": "2026-01-01T00:00:05Z",
        },
        total_tokens=100_000,
    )
    st = apply_report(
        st, {"type": "checkpoint", "step": 5, "path": "/c/step-5", "time": "2026-01-01T00:00:04Z"}
    )
    assert st.progress is not None and st.progress.tokens == 700 and st.progress.total_tokens == 100_000
    assert st.last_checkpoint is not None and st.last_checkpoint.step == 5
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=(worker_from_exit(0, 1, None), config)))
    assert d.status.phase == "Failed" and d.status.last_failure is not None
    assert d.status.last_failure.reason == "ConfigError"


def test_a_gang_size_edit_applies_at_the_next_attempt_not_as_a_failure() -> None:
    spec = make_spec()
    st = running_status(spec)
    bigger = make_spec(cluster={"nodes": 4})
    d = reconcile(NAME, bigger, st, Observed(now=T0, workers=workers(1, "Running", "Running")))
    assert d.status.phase == "Running" and not [a for a in d.actions if not isinstance(a, EmitEvent)]
    d = reconcile(
        NAME, bigger, d.status, Observed(now=T0, workers=workers(1, "Failed", "Running", exit_code=1))
    )
    d = reconcile(NAME, bigger, d.status, Observed(now=T0 + timedelta(seconds=10)))
    assert d.actions[0] == CreateGang(2, (0, 1, 2, 3)) and d.status.attempt_nodes == 4


def test_a_gang_stuck_pending_is_released_and_retried() -> None:
    spec = make_spec(restartPolicy={"pendingTimeoutSeconds": 300})
    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0)).status
    partial = (WorkerObservation(0, 1, "Running"), WorkerObservation(1, 1, "Pending"))
    d = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(seconds=200), workers=partial))
    assert d.status.phase == "Pending" and d.requeue_after == pytest.approx(100.05)
    d = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(seconds=301), workers=partial))
    assert d.status.phase == "Restarting" and d.status.last_failure is not None
    assert d.status.last_failure.kind == "Unschedulable" and "only 1/2 worker(s) running" in d.status.message
    assert any(isinstance(a, DeleteWorkers) and len(a.workers) == 2 for a in d.actions)  # GPUs freed
    # a gang that comes up exactly at the deadline is fine
    up = workers(1, "Running", "Running")
    assert (
        reconcile(NAME, spec, st, Observed(now=T0 + timedelta(seconds=301), workers=up)).status.phase
        == "Running"
    )
