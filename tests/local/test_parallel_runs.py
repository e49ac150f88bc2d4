"""`tokensmith run JOB --local` runs tensor- and pipeline-parallel jobs end to end (slow): the operator's
decisions start a 2-process gang with spec.parallelism.tensor=2 or pipeline=2, an injected SIGKILL after
step 6 restarts the gang from the checkpoint of step 4, and the job succeeds; the pipeline job's final
checkpoint is evaluated by a real `tokensmith eval` (consolidated weights of a PP checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
@pytest.mark.parametrize("layout", [{"tensor": 2}, {"pipeline": 2}], ids=["tp2", "pp2"])
def test_parallel_job_restarts_from_checkpoint_and_succeeds(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_cli: Any, layout: dict[str, int]
) -> None:
    extra: dict[str, Any] = {}
    if "pipeline" in layout:
        extra["evaluation"] = {"tasks": ["arc_easy_local"], "limit": 2, "everyCheckpoints": 2}
    manifest = tiny_manifest(
        workspace / "job.yaml", data={"tokens": 256 * 8}, parallelism={**layout, "zeroStage": 1}, **extra
    )
    args = run_args(manifest, workspace / "runs", shards)
    out = run_cli([*args, "--inject-failure", "step=6", "--format", "json"], timeout=540)
    assert out.returncode == 0, out.stderr[-3000:]
    job_dir = workspace / "runs" / "tiny"
    status = json.loads((job_dir / "status.json").read_text())
    assert status["phase"] == "Succeeded" and status["attempt"] == 2 and status["restarts"] == 1, status
    assert status["progress"]["step"] == 8
    assert "resuming from checkpoint step 4" in out.stderr
    log = (job_dir / "local" / "logs" / "tiny-a2-w0.log").read_text()
    assert "resumed from" in log and "step-00000004" in log
    metrics = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    state = next(m for m in metrics if m["type"] == "model_state")
    assert (state["tensor"], state["pipeline"], state["data"]) == (
        layout.get("tensor", 1),
        layout.get("pipeline", 1),
        1,
    )
    assert (job_dir / "step-00000008" / "portable" / "zero" / "tok_emb.weight" / "fp32.pt").is_file()
    if "pipeline" in layout:
        [evaluation] = status["evaluations"]
        assert evaluation["step"] == 8 and evaluation["phase"] == "Succeeded", evaluation
