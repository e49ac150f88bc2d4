"""The real local runner (its loop, processes and status file) follows the fleet decisions that apply
to one machine. The trainer is replaced by a tiny stand-in process (the runner's command prefix is
patched), so these run in seconds: the decisions are the operator's, the processes are real."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensmith.operator.local import manifest as mf
from tokensmith.operator.local import processes
from tokensmith.operator.local.runner import LocalRunner


def _job(tmp_path: Path, **spec_over: Any) -> mf.LocalJob:
    spec: dict[str, Any] = {
        "checkpoint": {"volume": {"emptyDir": {}}},
        "data": {"tokens": 4096},
        "cluster": {"nodes": 1, "gpusPerNode": 0, "nprocPerNode": 1, "terminationGracePeriodSeconds": 2},
        "restartPolicy": {"maxRestarts": 10, "backoffSeconds": 0, "hangTimeoutSeconds": 0},
    }
    for key, value in spec_over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    doc = {
        "apiVersion": "tokensmith.dev/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": "f"},
        "spec": spec,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return mf.load_job(path, tmp_path / "runs")


def _trainer(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Every worker runs `code` instead of `tokensmith train` (its arguments are ignored)."""
    monkeypatch.setattr(processes, "TOKENSMITH", [sys.executable, "-c", code])


@pytest.mark.timeout(120)
def test_crashing_attempts_without_a_checkpoint_end_no_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trainer(monkeypatch, "import sys; sys.exit(1)")
    result = LocalRunner(_job(tmp_path)).run()
    st = result.status
    assert st.phase == "Failed" and st.attempt == 3  # maxAttemptsWithoutProgress 3 < maxRestarts 10
    assert [c.reason for c in st.conditions if c.type == "Failed"] == ["NoProgress"]
    assert st.restarts_by_class == {"Application": 2} and st.attempts_without_progress == 3
    assert st.last_failure is not None and st.last_failure.failure_class == "Application"
    # the goodput ledger in status.json adds up (productive + lost by cause = total)
    import json

    from tokensmith.operator.goodput import ledger_problem

    doc = json.loads(_status_file(tmp_path).read_text())
    assert doc["productiveGPUHours"] is not None and set(doc["lostGPUHours"]) >= {"redone", "restart"}
    assert ledger_problem(doc) is None
    assert doc["observed"]["interruptions"] == 2


@pytest.mark.timeout(120)
def test_the_active_deadline_stops_a_running_gang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _trainer(monkeypatch, "import time; time.sleep(60)")
    result = LocalRunner(_job(tmp_path, activeDeadlineSeconds=2)).run()
    st = result.status
    assert st.phase == "Failed" and st.last_failure is not None
    assert st.last_failure.reason == "DeadlineExceeded" and st.attempt == 1
    assert st.completion_time is not None and st.start_time is not None
    assert (st.completion_time - st.start_time).total_seconds() < 10


def _status_file(tmp_path: Path) -> Path:
    return next((tmp_path / "runs").rglob("status.json"))
