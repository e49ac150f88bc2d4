"""The local runner's cost per look at a running gang, against torchx's local scheduler.

What a local driver pays every time it checks on its workers: ours observes the processes, folds new
trainer reports, calls the operator's `reconcile`, and writes `status.json` when it changed (it does,
every time: GPU-hours grow while the gang runs); torchx's `local_cwd` scheduler answers `describe(app_id)`
(its status poll, which `torchx run --wait` and `torchx status` call). Both watch the same two `sleep`
processes. The runner polls every 0.5 s, so this cost is its CPU overhead per half second of training.

    .venv/bin/python benchmarks/local_runner_overhead.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ITERATIONS = 300
WORKERS = 2


def _job(tmp: Path) -> Path:
    spec = {
        "model": {"preset": "tiny"},
        "data": {"trainPath": "/data/train", "tokens": 8192 * 100},
        "parallelism": {"microBatch": 8, "globalBatchTokens": 8192},
        "cluster": {"nodes": WORKERS, "gpusPerNode": 0, "nprocPerNode": 1},
        "checkpoint": {"volume": {"emptyDir": {}}},
    }
    doc = {"apiVersion": "tokensmith.dev/v1alpha1", "kind": "LLMTrainingJob", "metadata": {"name": "b"}}
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump({**doc, "spec": spec}))
    return path


def ours(tmp: Path) -> list[float]:
    from tokensmith.operator.local.manifest import load_job
    from tokensmith.operator.local.processes import Worker
    from tokensmith.operator.local.runner import LocalRunner
    from tokensmith.operator.reconcile import reconcile
    from tokensmith.operator.spec import LLMTrainingJobStatus

    job = load_job(_job(tmp), tmp / "runs")
    runner = LocalRunner(job)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    for i in range(WORKERS):
        proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        report = job.run_dir / f"r{i}.jsonl"
        report.touch()
        runner.gang.workers[f"b-a1-w{i}"] = Worker(i, 1, f"b-a1-w{i}", proc, tmp / "log", report)
    status = LLMTrainingJobStatus(phase="Pending", attempt=1, start_time=datetime.now(UTC))
    times = []
    try:
        for _ in range(ITERATIONS):
            started = time.perf_counter()
            status = runner._reports(status)
            decision = reconcile(job.name, runner.spec, status, runner.observe(datetime.now(UTC)))
            runner.apply(status, decision)
            status = decision.status
            times.append(time.perf_counter() - started)
    finally:
        runner.gang.kill_all()
    assert status.phase == "Running", status.phase
    return times


def torchx(tmp: Path) -> list[float]:
    from torchx.schedulers.local_scheduler import create_scheduler
    from torchx.specs import AppDef, Role

    scheduler = create_scheduler("bench")
    role = Role(name="w", image=os.getcwd(), entrypoint="sleep", args=["60"], num_replicas=WORKERS)
    app_id = scheduler.submit(AppDef(name="bench", roles=[role]), cfg={"log_dir": str(tmp / "torchx")})
    times = []
    try:
        for _ in range(ITERATIONS):
            started = time.perf_counter()
            desc = scheduler.describe(app_id)
            times.append(time.perf_counter() - started)
        assert desc is not None and str(desc.state).endswith("RUNNING"), desc
    finally:
        scheduler.cancel(app_id)
        scheduler.close()
    return times


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mine = ours(Path(tmp))
        peer = torchx(Path(tmp))
    a, b = statistics.median(mine), statistics.median(peer)
    print(f"{WORKERS} worker processes, {ITERATIONS} looks each, median per look:")
    print(f"  tokensmith run --local (observe + reconcile + status.json): {a * 1e6:8.0f} us")
    print(f"  torchx local_cwd describe():                                {b * 1e6:8.0f} us")
    print(f"  ratio ours / torchx: {a / b:.2f}; our CPU share at one look per 0.5 s: {a / 0.5:.3%}")


if __name__ == "__main__":
    main()
