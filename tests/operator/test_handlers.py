"""The kopf shell's status writing: only changed keys, never the trainer's, volatile keys throttled,
and read-your-own-writes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from tokensmith.operator import children
from tokensmith.operator.handlers import Runtime, _write_status, current_status
from tokensmith.operator.spec import LLMTrainingJobStatus, Progress

JOB = children.JobRef("j", "ml", "uid")


class FakeClient:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch(
        self, api_version: str, plural: str, ns: str, name: str, body: dict, sub: str = ""
    ) -> dict:
        assert (plural, sub) == ("llmtrainingjobs", "status")
        self.patches.append(body["status"])
        return {}


def test_status_writes() -> None:
    client = FakeClient()
    rt = Runtime(client=client, defaults=children.Defaults(), interval=60.0)  # type: ignore[arg-type]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    st = LLMTrainingJobStatus(
        phase="Running", attempt=1, accounted_time=t0, progress=Progress(step=3, tokens=30)
    )

    async def run() -> None:
        stored: dict[str, Any] = {"progress": {"step": 9, "tokens": 90}}  # the trainer's newer report
        await _write_status(rt, JOB, stored, st)
        first = client.patches[-1]
        assert first["phase"] == "Running" and first["restarts"] == 0 and "progress" not in first
        merged = current_status(rt, "ml", "j", stored)
        assert merged["progress"] == {"step": 9, "tokens": 90} and merged["phase"] == "Running"
        # only the GPU-hour clock moved: not written again within the interval
        later = st.model_copy(
            update={"gpu_hours": 0.5, "accounted_time": datetime(2026, 1, 1, 0, 1, tzinfo=UTC)}
        )
        await _write_status(rt, JOB, merged, later)
        assert len(client.patches) == 1
        # a real change: only the changed keys, and null for a key no longer set
        failed = later.model_copy(update={"phase": "Restarting", "accounted_time": None, "restarts": 1})
        await _write_status(rt, JOB, current_status(rt, "ml", "j", stored), failed)
        patch = client.patches[-1]
        assert patch["phase"] == "Restarting" and patch["restarts"] == 1 and patch["accountedTime"] is None
        assert "attempt" not in patch and "progress" not in patch

    asyncio.run(run())


def test_job_gauges_by_class_and_ages() -> None:
    from datetime import timedelta

    from tokensmith.operator.metrics import OperatorMetrics
    from tokensmith.operator.spec import CheckpointRef

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    st = LLMTrainingJobStatus(
        progress=Progress(step=3, tokens=30, heartbeat_time=t0, tokens_per_second=1234.5),
        last_checkpoint=CheckpointRef(step=2, path="/c", time=t0 - timedelta(seconds=60)),
        restarts_by_class={"Infrastructure": 2},
        gpu_hours_lost_by_class={"Infrastructure": 3.5},
        planned_restarts=1,
        goodput=0.9,
        lost_gpu_hours={"redone": 3.5, "restart": 1.0, "rollback": 0.75},
        checkpoint_every_minutes=42.0,
        rollbacks=2,
    )
    m = OperatorMetrics()
    m.observe_status("ml", "j", st, t0 + timedelta(seconds=5))

    def value(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, {"namespace": "ml", "job": "j", **labels})

    assert value("tokensmith_job_heartbeat_age_seconds") == 5.0
    assert value("tokensmith_job_last_checkpoint_age_seconds") == 65.0
    assert value("tokensmith_job_tokens_per_second") == 1234.5
    assert value("tokensmith_job_restarts", failure_class="Infrastructure") == 2
    assert value("tokensmith_job_restarts", failure_class="Application") == 0
    assert value("tokensmith_job_gpu_hours_lost", failure_class="Infrastructure") == 3.5
    assert value("tokensmith_job_planned_restarts") == 1
    assert value("tokensmith_job_goodput") == 0.9
    assert value("tokensmith_job_lost_gpu_hours", cause="restart") == 1.0
    assert value("tokensmith_job_checkpoint_every_minutes") == 42.0
    assert value("tokensmith_job_rollbacks") == 2 and value("tokensmith_job_rollback_gpu_hours_lost") == 0.75
    m.observe_status("ml", "j", LLMTrainingJobStatus(), t0)  # nothing reported yet: no age series
    assert value("tokensmith_job_heartbeat_age_seconds") is None
    m.forget_job("ml", "j")
    assert value("tokensmith_job_restarts", failure_class="Infrastructure") is None
    assert value("tokensmith_job_goodput") is None
    assert value("tokensmith_job_lost_gpu_hours", cause="redone") is None
