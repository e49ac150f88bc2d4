"""Real local runs: a 2-process DeepSpeed gang on CPU through `tokensmith run --local` (slow).

One job, two invocations, to keep the trainer start-ups (the dominant cost) to three:
1. `--inject-failure step=6`: attempt 1 is SIGKILLed after step 6, the operator's decision restarts
   the gang as attempt 2 from the checkpoint of step 4; Ctrl-C then suspends it cleanly (SIGTERM, the
   trainer checkpoints) and the runner exits 130;
2. the same command again, with a GPU-hour budget that runs out soon: it resumes (attempt 3, from
   the suspended checkpoint, not counted as a restart) and ends Failed/BudgetExceeded with the
   checkpoint kept.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the runner exited {proc.returncode} while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.timeout(600)
def test_restart_from_checkpoint_ctrl_c_resume_and_budget(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_cli: Any, run_env: dict[str, str]
) -> None:
    manifest = tiny_manifest(workspace / "job.yaml", data={"tokens": 256 * 100_000})
    job_dir = workspace / "runs" / "tiny"
    args = run_args(manifest, workspace / "runs", shards)

    # 1. injected failure -> restart from the checkpoint of step 4 -> Ctrl-C
    proc = subprocess.Popen(
        [*args, "--inject-failure", "step=6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_env,
    )
    try:
        _wait_for(
            lambda: any(
                r.get("type") == "checkpoint" and r["attempt"] == 2 and r["step"] >= 8
                for r in _history(job_dir / "local")
            ),
            420,
            "attempt 2 to write a checkpoint",
            proc,
        )
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    status = _status(job_dir / "status.json")
    assert status["phase"] == "Suspended" and status["attempt"] == 2 and status["restarts"] == 1
    assert status["lastFailure"]["exitCode"] == 137  # SIGKILL, as a container runtime reports it
    assert "Restarting: worker 0 exited 137" in err and "resuming from checkpoint step 4" in err
    log = (job_dir / "local" / "logs" / "tiny-a2-w0.log").read_text()
    assert "resumed from" in log and "step-00000004" in log
    history = _history(job_dir / "local")
    first = next(r for r in history if r.get("type") == "progress" and r["attempt"] == 2)
    assert first["step"] == 5  # attempt 2 redid step 5 onwards, from the checkpoint of step 4
    # Ctrl-C stopped the gang cleanly: the trainer saw SIGTERM, finished its step and checkpointed
    metrics = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    sigterm = [m for m in metrics if m.get("type") == "sigterm"]
    assert sigterm, "the trainer never received SIGTERM"
    suspended_at = status["lastCheckpoint"]["step"]
    if sigterm[-1]["saved"]:
        assert suspended_at == sigterm[-1]["step"]
    assert suspended_at >= 8 and (job_dir / f"step-{suspended_at:08d}").is_dir()
    assert "run the same command again to resume" in err
    assert "plotly" in (job_dir / "report.html").read_text()

    # 2. the same command again, with a budget that runs out ~20 s after the gang starts
    budget = status["gpuHours"] + 0.01
    out = run_cli([*args, "--set", f"budget.maxGPUHours={budget}", "--format", "json"], timeout=300)
    assert out.returncode == 3, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["phase"] == "Failed" and summary["reason"] == "BudgetExceeded"
    status = _status(job_dir / "status.json")
    assert status["phase"] == "Failed" and status["lastFailure"]["reason"] == "BudgetExceeded"
    assert status["attempt"] == 3 and status["restarts"] == 1  # a resume is not a restart
    assert status["gpuHours"] >= budget
    attempts = [r for r in _history(job_dir / "local") if r.get("type") == "attempt"]
    assert attempts[-1]["attempt"] == 3 and attempts[-1]["resume_step"] == suspended_at
    kept = status["lastCheckpoint"]["step"]
    assert kept >= suspended_at and (job_dir / f"step-{kept:08d}").is_dir()  # the checkpoint is kept


@pytest.mark.timeout(400)
def test_two_simulated_nodes_and_an_evaluation(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_cli: Any
) -> None:
    """Two launchers rendezvous on 127.0.0.1 as two nodes; every checkpoint gets a real `tokensmith
    eval` process whose short JSON lands in status.evaluations: step 4's has no consolidated weights
    (only the final checkpoint writes them), so that evaluation rebuilds them from DeepSpeed's files."""
    manifest = tiny_manifest(
        workspace / "job.yaml",
        nproc=1,
        cluster={"nodes": 2},
        data={"tokens": 256 * 8},
        evaluation={"tasks": ["arc_easy_local"], "limit": 2, "everyCheckpoints": 1},
    )
    out = run_cli([*run_args(manifest, workspace / "runs", shards), "--format", "json"], timeout=360)
    assert out.returncode == 0, out.stderr[-3000:]
    job_dir = workspace / "runs" / "tiny"
    status = _status(job_dir / "status.json")
    assert status["phase"] == "Succeeded" and status["attempt"] == 1 and status["restarts"] == 0
    assert status["progress"]["step"] == 8 and status["checkpointsObserved"] == 2
    assert (job_dir / "local" / "logs" / "tiny-a1-w1.log").exists()  # the second "node"
    assert [e["step"] for e in status["evaluations"]] == [4, 8]
    for evaluation in status["evaluations"]:
        assert evaluation["phase"] == "Succeeded", evaluation
        assert set(evaluation["results"]) >= {"arc_easy_local", "perplexity"}
    manifests = [json.loads((job_dir / f"step-0000000{s}" / "manifest.json").read_text()) for s in (4, 8)]
    assert [m["consolidated"] for m in manifests] == [False, True]  # keep: 3, both still there
    full = json.loads((job_dir / "evals" / "step-8.json").read_text())  # the evaluator's --output
    assert full["step"] == 8
    summary = json.loads(out.stdout)
    assert [e["results"] for e in summary["evaluations"]] == [e["results"] for e in status["evaluations"]]
