"""The local report's goodput section: the ledger over time (local/timeline.py) and predicted vs observed
(local/goodput_report.py), on table-driven samples and on a real local run (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensmith.operator.local import goodput_report, timeline
from tokensmith.operator.local.timeline import Recorder, Sample
from tokensmith.operator.spec import GoodputObserved, LLMTrainingJobStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float, **hours: float) -> Sample:
    return Sample(T0 + timedelta(seconds=seconds), {"productive": 0.0, "restart": 0.0, **hours})


def recorded(samples: list[Sample]) -> list[float]:
    rec = Recorder()
    out = [s for x in samples for s in rec.see(x)] + rec.flush()
    return [(s.time - T0).total_seconds() for s in out]


@pytest.mark.parametrize(
    ("samples", "written"),
    [
        # pending (restart grows) then running (productive grows): one record per change of trend
        (
            [at(0), at(1, restart=1), at(2, restart=2), at(3, restart=2, productive=1),
             at(4, restart=2, productive=2), at(5, restart=2, productive=3)],
            [0, 2, 5],
        ),
        # idle (suspended) stays one segment; a failure reclassifies productive as redone
        (
            [at(0), at(1), at(2), at(3, productive=1), at(4, productive=0.5, redone=0.7),
             at(5, productive=1.5, redone=0.7)],
            [0, 2, 3, 4, 5],
        ),
        ([at(0, productive=1)], [0]),
        ([], []),
    ],
)  # fmt: skip
def test_recorder_writes_one_sample_per_segment(samples: list[Sample], written: list[float]) -> None:
    assert recorded(samples) == written


def test_records_grow_with_events_not_with_polls() -> None:
    """A day polled every 0.5 s (172,800 looks) with a save every hour and one failure: about two records
    per save (its blocked seconds are a change of trend), not one per poll."""
    rec, written, prod, ckpt, redone = Recorder(), 0, 0.0, 0.0, 0.0
    for i in range(172_800):
        if i % 7200 == 0 and i:
            ckpt += 1e-3
        elif i == 100_000:
            prod, redone = prod - 0.5, redone + 0.5
        else:
            prod += 2 * 0.5 / 3600
        written += len(rec.see(at(i * 0.5, productive=prod, checkpoint=ckpt, redone=redone)))
    written += len(rec.flush())
    assert 40 <= written <= 2 * 23 + 2 * 1 + 4


def test_series_starts_at_zero_ends_at_the_status_and_telescopes_after_downsampling() -> None:
    samples = [at(10 + i, productive=0.1 * i, restart=0.5, redone=0.01 * (i // 50)) for i in range(500)]
    final = at(600, productive=50.0, restart=0.5, redone=0.09, checkpoint=0.2)
    points = timeline.series(samples, final, T0, max_points=40)
    assert len(points) == 40
    assert points[0].time == T0 and all(v == 0 for v in points[0].hours.values())
    assert points[-1].hours == final.hours
    sums = timeline.totals(timeline.segments(points))
    for key, value in final.hours.items():
        assert sums[key] == pytest.approx(value, abs=1e-9)


def test_a_final_status_older_than_the_last_sample_is_placed_at_its_time() -> None:
    points = timeline.series([at(5, productive=1)], at(3, productive=2), T0)
    assert [p.time for p in points] == [T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=5)]
    assert points[-1].hours["productive"] == 2


def test_predicted_vs_observed_rows_from_plan_json_and_annotations() -> None:
    status = LLMTrainingJobStatus.model_validate(
        {"goodput": 0.8, "productiveGPUHours": 8.0, "lostGPUHours": {"redone": 1.5, "restart": 0.5},
         "lostCostUSD": {"redone": 3.0, "restart": 1.0}, "costUSD": 20.0, "restarts": 2}
    )  # fmt: skip
    status.observed = GoodputObserved(interruptions=2, mtbf_gpu_hours=5.0, mean_checkpoint_seconds=12.0)
    plan = {"goodput": 0.97, "expected_interruptions": 13.0, "job_mtbf_hours": 10.0,
            "cluster": {"gpus": 4, "gpu": "H100-SXM"}, "cost_usd": 1000.0, "gpu_hours_total": 400.0,
            "checkpoint_write_seconds": 30.0}  # fmt: skip
    rows = {r["name"]: r for r in goodput_report.rows(status, goodput_report.predictions(plan, None))}
    assert rows["interruptions"]["predicted"] == 13.0 and rows["interruptions"]["observed"] == 2
    # 10 GPU-hours run here at the plan's 40 GPU-hours per interruption: 0.25 expected
    assert "0.25 expected in the 10 GPU-hours" in rows["interruptions"]["note"]
    assert rows["MTBF (GPU-hours per interruption)"]["predicted"] == 40.0
    assert rows["goodput"]["predicted"] == 0.97 and rows["goodput"]["observed"] == 0.8
    assert rows["cost lost to failures (USD)"]["predicted"] == pytest.approx(30.0)
    assert rows["cost lost to failures (USD)"]["observed"] == 4.0
    assert rows["GPU-hours (devices x time counted)"]["observed"] == 10.0
    notes = {"tokensmith.dev/plan-goodput": "0.9", "tokensmith.dev/plan-expected-interruptions": "3",
             "tokensmith.dev/plan-mtbf-gpu-hours": "x", "other/key": "1"}  # fmt: skip
    predicted = goodput_report.predictions(None, notes)
    assert predicted == {"goodput": 0.9, "expected_interruptions": 3.0}
    assert goodput_report.predictions(None, None) == {}


def _history(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_real_run_report_timeline_adds_up_to_the_ledger(
    workspace: Path, shards: Path, tiny_manifest: Any, run_args: Any, run_cli: Any
) -> None:
    """A real 2-process run with an injected failure: the timeline the runner recorded adds up to the
    ledger in status.json (1e-6), the report shows it and the plan's predictions, and `tokensmith plan
    --from-run` reads the same run directory."""
    manifest = tiny_manifest(
        workspace / "job.yaml", data={"tokens": 256 * 12}, budget={"pricePerGPUHour": 2.0}
    )
    doc = yaml.safe_load(manifest.read_text())
    doc["metadata"]["annotations"] = {
        "tokensmith.dev/plan-goodput": "0.97",
        "tokensmith.dev/plan-expected-interruptions": "0.5",
        "tokensmith.dev/plan-mtbf-gpu-hours": "50700",
        "tokensmith.dev/plan-gpu": "H100-SXM",
        "tokensmith.dev/plan-mfu": "0.4",
    }
    manifest.write_text(yaml.safe_dump(doc))
    out = run_cli(run_args(manifest, workspace / "runs", shards, "--inject-failure", "step=6"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "goodput, predicted vs observed:" in out.stdout and "interruptions" in out.stdout
    job_dir = workspace / "runs" / "tiny"
    status_doc = json.loads((job_dir / "status.json").read_text())
    status = LLMTrainingJobStatus.model_validate(status_doc)
    assert status.restarts == 1 and status.lost_gpu_hours["redone"] > 0

    history = _history(job_dir / "local" / "history.jsonl")
    ledger = [r for r in history if r["type"] == "ledger"]
    progress = [r for r in history if r["type"] == "progress"]
    # one record per change of trend, not one per poll: fewer than the trainer's progress lines
    assert 3 <= len(ledger) < len(progress) + 8
    from tokensmith.operator.local.demo import timeline_problem

    assert timeline_problem(status_doc, history) is None  # the runner's last sample = the ledger
    end = status.completion_time
    points = goodput_report.points_of(ledger, status, end)
    sums = timeline.totals(timeline.segments(points))
    assert sums["productive"] == pytest.approx(status.productive_gpu_hours, abs=1e-6)
    for cause, hours in status.lost_gpu_hours.items():
        assert sums.get(cause, 0.0) == pytest.approx(hours, abs=1e-6), cause
    assert sum(sums.values()) == pytest.approx(status.goodput_ledger.total_gpu_hours, abs=1e-6)  # type: ignore[union-attr]
    # the top edge never rises faster than the devices times wall-clock (2 processes here)
    for seg in timeline.segments(points):
        hours = (seg.end - seg.start).total_seconds() / 3600 * 2
        assert sum(seg.hours.values()) <= hours + 1e-6

    html = (job_dir / "report.html").read_text()
    assert "Predicted (the job's plan annotations) vs observed" in html
    assert '"stackgroup":"ledger"' in html and '"name":"redone"' in html
    assert "<script src" not in html and "plotly.js v" in html  # self-contained: plotly.js inline
    # `tokensmith plan --from-run` on the same run (job.json beside status.json gives the model)
    refit = subprocess.run(
        [sys.executable, "-m", "tokensmith.cli", "plan", "--from-run", str(job_dir / "status.json"),
         "--gpu", "H100-SXM", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refit.returncode == 0, refit.stderr
    data = json.loads(refit.stdout)
    assert data["refit"]["mfu"] is not None and data["refit"]["mfu"] > 0
    assert data["plan"]["mfu"] == 0.4 and data["refit"]["interruptions"] == 1
