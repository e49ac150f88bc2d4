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
