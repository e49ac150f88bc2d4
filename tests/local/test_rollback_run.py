"""Rollback and replay end to end: the real trainer (health policy `rollback`, fault injection) under
`tokensmith run --local`, whose `reconcile` rolls the run back to its last healthy checkpoint (slow).

- `health.inject_nan_at_step`: rank 0's loss is NaN at that step once per checkpoint directory (a
  transient fault): the trainer exits 65, the replay from the healthy checkpoint passes the step, the cause
  is `Hardware`;
- `health.inject_bad_samples`: reading those sample positions makes the loss NaN every time (the fault
  follows the data): the replay diverges at the same step again, the cause is `Data`, and the third attempt
  skips the step's sample range (`data.skip_samples` in its config) and finishes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensmith.trainer.config import TrainerConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "health" not in TrainerConfig.model_fields, reason="needs the trainer's run health (issue 13)"
    ),
]

STEPS = 12  # 256 tokens = 8 samples of 32 tokens per step; checkpoints every 4 steps
BAD_STEP = 6  # its samples are the global positions [40, 48)


def _job(tiny_manifest: Any, workspace: Path, name: str, health: dict[str, Any]) -> Path:
    return tiny_manifest(
        workspace / f"{name}.yaml",
        name=name,
        nproc=1,
        data={"tokens": 256 * STEPS},
        trainer={
            "train": {"warmup_steps": 2, "log_every_steps": 1, "precision": "fp32"},
            "health": {"policy": "rollback", "max_bad_steps": 0, **health},
        },
        restartPolicy={"maxRestarts": 0, "maxRollbacks": 2, "backoffSeconds": 0, "hangTimeoutSeconds": 0},
    )


def _finite_final_loss(status: dict[str, Any]) -> float:
    loss = status["progress"]["loss"]
    assert isinstance(loss, float) and math.isfinite(loss), loss
    return loss


@pytest.mark.timeout(600)
def test_a_one_off_nan_rolls_back_and_is_attributed_to_hardware(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_cli: Any
) -> None:
    manifest = _job(tiny_manifest, workspace, "nan-once", {"inject_nan_at_step": BAD_STEP})
    result = run_cli(run_args(manifest, workspace / "runs", shards, "--format", "json"), timeout=540)
    job_dir = workspace / "runs" / "nan-once"
    status = json.loads((job_dir / "status.json").read_text())
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert status["phase"] == "Succeeded" and status["restarts"] == 0 and status["rollbacks"] == 1
    (record,) = status["rollbackRecords"]
    assert record["cause"] == "Hardware" and record["step"] == BAD_STEP and record["kind"] == "nonfinite"
    assert record["resumeStep"] == 4 and record["samples"] == [40, 48]
    assert record["nodes"] == []  # one machine: no node identity, no anti-affinity (docs/local.md)
    assert status["lostGPUHours"]["rollback"] > 0 and status["lostGPUHours"]["rollback"] < status["gpuHours"]
    assert status["lastHealthyCheckpoint"]["step"] == STEPS
    assert next(c for c in status["conditions"] if c["type"] == "Diverged")["status"] == "False"
    _finite_final_loss(status)
    history = [json.loads(line) for line in (job_dir / "local" / "history.jsonl").read_text().splitlines()]
    assert [r["resume_step"] for r in history if r["type"] == "attempt"] == [0, 4]
    assert {"RollingBack", "DivergenceAttributed"} <= {
        r.get("reason") for r in history if r["type"] == "event"
    }


@pytest.mark.timeout(600)
def test_bad_samples_repeat_are_attributed_to_data_and_skipped(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_cli: Any
) -> None:
    manifest = _job(tiny_manifest, workspace, "bad-data", {"inject_bad_samples": [42, 43]})
    result = run_cli(run_args(manifest, workspace / "runs", shards, "--format", "json"), timeout=540)
    job_dir = workspace / "runs" / "bad-data"
    status = json.loads((job_dir / "status.json").read_text())
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert status["phase"] == "Succeeded" and status["rollbacks"] == 2 and status["attempt"] == 3
    assert [r["cause"] for r in status["rollbackRecords"]] == ["Data", "Data"]
    assert all(r["step"] == BAD_STEP and r["samples"] == [40, 48] for r in status["rollbackRecords"])
    assert status["skipSamples"] == [[40, 48]]
    config = yaml.safe_load((job_dir / "local" / "trainer-attempt-3.yaml").read_text())
    assert config["data"]["skip_samples"] == [[40, 48]]
    before = yaml.safe_load((job_dir / "local" / "trainer-attempt-2.yaml").read_text())
    assert not before["data"].get("skip_samples")  # the first replay reads the same data again
    assert status["lostGPUHours"]["rollback"] > 0
    _finite_final_loss(status)
