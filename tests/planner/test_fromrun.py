"""`tokensmith plan --from-run`: refit from a job status and re-forecast (planner/fromrun.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tokensmith.planner.cli import plan

STATUS = {
    "phase": "Running",
    "startTime": "2026-01-01T00:00:00+00:00",
    "progress": {"step": 10, "tokens": 1_000_000, "totalTokens": 4_600_000, "tokensPerSecond": 1000.0},
    "gpuHours": 8.0,
    "costUSD": 16.0,
    "goodput": 0.9,
    "productiveGPUHours": 7.2,
    "lostGPUHours": {"redone": 0.5, "restart": 0.3},
    "observed": {"interruptions": 2, "mtbfGPUHours": 4.0, "meanCheckpointSeconds": 30.0},
    "goodputLedger": {"time": "2026-01-01T01:00:00+00:00", "totalGPUHours": 8.0},
}


def test_forecast_from_status_json_and_yaml(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(STATUS))
    out = CliRunner().invoke(plan, ["--from-run", str(path), "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    # 3.6M tokens at 1000 tokens/s and goodput 0.9: 4000 s / 0.9... = 1.111 h; 8 devices at $2
    assert doc["remaining_hours"] == pytest.approx(3_600_000 / 900 / 3600)
    assert doc["devices"] == 8 and doc["price_per_gpu_hour"] == pytest.approx(2.0)
    assert doc["remaining_cost_usd"] == pytest.approx(doc["remaining_hours"] * 8 * 2.0)
    assert doc["mtbf_gpu_hours"] == 4.0 and doc["mean_checkpoint_seconds"] == 30.0
    whole = tmp_path / "job.yaml"
    whole.write_text(yaml.safe_dump({"kind": "LLMTrainingJob", "status": STATUS}))
    out = CliRunner().invoke(plan, ["--from-run", str(whole)])
    assert out.exit_code == 0 and "remaining: 1.111 h" in out.output


@pytest.mark.parametrize("content", ["{}", "- a\n- b\n", "[: not yaml"])
def test_bad_run_files_are_one_line_usage_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = CliRunner().invoke(plan, ["--from-run", str(path)])
    assert out.exit_code == 2 and "--from-run" in out.output
    missing = CliRunner().invoke(plan, ["--from-run", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output
