"""`tokensmith run --local` with `checkpoint.everyMinutes: auto`: the runner's adaptive interval reaches the
running trainer (slow: one real trainer process).

The prior says a save costs 60 s and the job fails once an hour, so the job starts at Daly's ~10 minutes;
the first save the trainer reports takes a fraction of a second, the operator's decision (run locally)
moves the interval to well under a minute, the runner rewrites `local/live.json`, and the same attempt's
trainer applies it (a `live` metrics record), without a restart.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensmith.operator import cadence

pytestmark = pytest.mark.slow


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(300)
def test_a_new_interval_reaches_the_running_trainer(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_env: dict[str, str]
) -> None:
    checkpoint = {
        "everyMinutes": "auto",
        "priorMTBFGPUHours": 1.0,
        "priorSeconds": 60.0,
        "minMinutes": 0.05,
        "everySteps": 10,
    }
    manifest = tiny_manifest(
        workspace / "job.yaml", nproc=1, data={"tokens": 256 * 100_000}, checkpoint=checkpoint
    )
    job_dir = workspace / "runs" / "tiny"
    env = {**run_env, "TOKENSMITH_LIVE_CHECK_SECONDS": "0"}  # the trainer looks every step
    proc = subprocess.Popen(
        run_args(manifest, workspace / "runs", shards),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(r["type"] == "live" for r in _records(job_dir / "metrics.jsonl")):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the runner exited {proc.returncode}"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: suspend (the trainer checkpoints), exit 130
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    changes = [r for r in _records(job_dir / "metrics.jsonl") if r["type"] == "live"]
    change = changes[0]  # more may follow: each save refines the measured cost (10% hysteresis)
    assert all(c["setting"] == "checkpoint.every_minutes" for c in changes)
    assert all(a["new"] == b["old"] for a, b in itertools.pairwise(changes))
    daly = cadence.optimal_minutes(60.0, 1.0, 1)  # for the prior: ~10.3 minutes, the first attempt's config
    assert change["old"] == pytest.approx(daly, abs=0.01)
    assert change["new"] < 1.0 and change["step"] >= 10  # after the first save was measured
    live = json.loads((job_dir / "local" / "live.json").read_text())
    status = json.loads((job_dir / "status.json").read_text())
    assert live["checkpoint"]["every_minutes"] == pytest.approx(status["checkpointEveryMinutes"], abs=0.006)
    assert status["attempt"] == 1 and status["restarts"] == 0  # the same attempt, no restart
    config = yaml.safe_load((job_dir / "local" / "trainer-attempt-1.yaml").read_text())
    assert config["checkpoint"]["every_minutes"] == pytest.approx(daly, abs=0.01)
