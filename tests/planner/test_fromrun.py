"""`tokensmith plan --from-run`: refit MFU, MTBF and checkpoint cost from a job and re-forecast finish time
and cost (planner/fromrun.py), on table-driven numbers, an emitted job with a status, and the status.json
and job.json a real local run wrote (tests/planner/data/fromrun-tiny: the scenario of
tests/local/test_goodput_report.py, 2 CPU processes, a failure injected after step 6)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tokensmith.planner import arch, fromrun, gpus, reliability
from tokensmith.planner.cli import plan
from tokensmith.planner.emit import build_job, read_predictions
from tokensmith.planner.planning import plan as make_plan

FIXTURE = Path(__file__).parent / "data" / "fromrun-tiny"
H100 = gpus.get_gpu("H100-SXM").peak_flops

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
    "restarts": 2,
    "goodputLedger": {"time": "2026-01-01T01:00:00+00:00", "totalGPUHours": 8.0},
}


@pytest.mark.parametrize(
    ("tps", "active", "devices", "peak", "mfu"),
    [
        (1000.0, 7e9, 1, 989e12, 6 * 7e9 * 1000 / 989e12),  # 7B on one H100 at 1k tokens/s: 4.2%
        (4e5, 1e9, 8, 312e12, 2.4e15 / 2.496e15),  # 1B on 8 A100s at 400k tokens/s: 96%
        (3.3e6, 70e9, 2048, 989e12, 6 * 70e9 * 3.3e6 / (2048 * 989e12)),  # 70B on 2048 H100s: 68%
    ],
)
def test_refit_mfu_is_the_planners_6n_definition(
    tps: float, active: float, devices: int, peak: float, mfu: float
) -> None:
    got = fromrun.planned_mfu(tps, active, devices, peak)
    assert got == pytest.approx(mfu, rel=1e-12)
    # re-forecasting at the refitted MFU on the same devices is the observed throughput again
    assert fromrun.solve_hours(3.6e9, active, devices, peak, got) == pytest.approx(3.6e9 / tps / 3600)


@pytest.mark.parametrize(
    ("mtbf", "delta", "restart", "interval"),
    [
        (1e12, 10.0, 10.0, 60.0),  # no failures to speak of: one 10 s save per hour
        (1600.0, 60.0, 10.0, None),  # a failure every 100 job-hours on 16 GPUs, Daly's interval
        (400.0, 60.0, 10.0, None),  # failures 4x as often
        (400.0, 60.0, 10.0, 120.0),  # the same at a fixed 2 h interval
    ],
)
def test_wall_hours_stretch_the_solve_time_by_daly(
    mtbf: float, delta: float, restart: float, interval: float | None
) -> None:
    """Against the first-order expectation (Young 1974; Daly 2006): per solve hour, delta / tau of
    saves, and per failure (every M job-hours) half an interval redone plus the restart."""
    wall, used = fromrun.wall_hours(100.0, 16, mtbf, delta, restart, interval)
    job, d, r = mtbf / 16, delta / 3600, restart / 60
    tau = used / 60
    if interval is None:
        assert tau == pytest.approx(float(reliability.daly_interval(d, job)))
    else:
        assert used == interval
    first_order = 100.0 * (1 + d / tau + (tau / 2 + r) / job)
    assert wall == pytest.approx(first_order, rel=0.01)
    assert fromrun.wall_hours(0.0, 16, mtbf, delta, restart, interval)[0] == 0.0


def test_emitted_job_with_a_status_refits_and_reforecasts(tmp_path: Path) -> None:
    """A real plan, emitted as a job (its predictions in annotations), with a status half-way: MFU 80%
    of the plan's, two failures in 2,000 GPU-hours, 45 s checkpoints."""
    p = make_plan(params="1B", tokens="40B", gpus=16, gpu="H100-SXM")
    job = build_job(p)
    predicted = read_predictions(job["metadata"]["annotations"])
    assert predicted["goodput"] == pytest.approx(p.goodput, abs=1e-4)
    assert predicted["expected_interruptions"] == pytest.approx(p.expected_interruptions, rel=1e-3)
    assert predicted["mtbf_gpu_hours"] == pytest.approx(p.job_mtbf_hours * 16, rel=1e-5)
    assert predicted["gpu"] == "H100-SXM" and predicted["mfu"] == round(p.mfu, 3)

    active = arch.param_counts(arch.ModelConfig.model_validate(p.model)).active
    tps = 0.8 * p.mfu * 16 * H100 / (6 * active)
    price = float(job["spec"]["budget"]["pricePerGPUHour"])
    status: dict[str, Any] = {
        **STATUS,
        "progress": {"tokens": 20_000_000_000, "totalTokens": 40_000_000_000, "tokensPerSecond": tps},
        "gpuHours": 2000.0,
        "costUSD": 2000.0 * price,
        "restarts": 2,
        "observed": {"interruptions": 2, "mtbfGPUHours": 1000.0, "meanCheckpointSeconds": 45.0},
        "lostGPUHours": {"redone": 20.0, "restart": 16.0 * 2 * 0.25},  # 15 min per restart on 16 GPUs
        "goodputLedger": {"time": "2026-01-06T05:00:00+00:00", "totalGPUHours": 2000.0},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**job, "status": status}))
    out = CliRunner().invoke(plan, ["--from-run", str(path), "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    r, f = doc["refit"], doc["forecast"]
    assert r["devices"] == 16 and r["gpu"] == "H100-SXM"
    assert r["mfu"] == pytest.approx(0.8 * p.mfu, rel=1e-9)
    prior = float(job["spec"]["checkpoint"]["priorMTBFGPUHours"])
    assert r["mtbf_gpu_hours"] == pytest.approx((2 * prior + 2000.0) / (2 + 2))  # gamma-Poisson, cadence.py
    assert r["checkpoint_seconds"] == 45.0 and r["restart_minutes"] == pytest.approx(15.0)
    assert f["solve_hours"] == pytest.approx(20e9 / tps / 3600, rel=1e-9)
    wall, tau = fromrun.wall_hours(f["solve_hours"], 16, r["mtbf_gpu_hours"], 45.0, 15.0, None)
    assert f["remaining_hours"] == pytest.approx(wall) and f["remaining_hours"] > f["solve_hours"]
    assert f["checkpoint_interval_minutes"] == pytest.approx(tau)
    assert f["remaining_gpu_hours"] == pytest.approx(wall * 16)
    assert f["remaining_cost_usd"] == pytest.approx(wall * 16 * price)
    assert f["remaining_interruptions"] == pytest.approx(wall * 16 / r["mtbf_gpu_hours"])
    finish = datetime.fromisoformat(f["finish_time"])
    assert finish == datetime.fromisoformat("2026-01-06T05:00:00+00:00") + timedelta(hours=wall)
    rows = {c["quantity"]: c for c in doc["comparison"]}
    assert rows["MFU"]["plan"] == round(p.mfu, 3) and rows["goodput"]["plan"] == round(p.goodput, 4)
    assert rows["cost (USD)"]["actual"] == pytest.approx(2000.0 * price + wall * 16 * price)
    table = CliRunner().invoke(plan, ["--from-run", str(path)])
    assert table.exit_code == 0 and "actual (so far + forecast)" in table.output
    assert "MFU " in table.output and "PaLM" in table.output


def test_status_without_a_spec_still_forecasts_from_throughput(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(STATUS))
    out = CliRunner().invoke(plan, ["--from-run", str(path), "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["refit"]["devices"] == 8 and doc["refit"]["mfu"] is None
    assert "no job spec" in doc["refit"]["mfu_note"]
    assert doc["refit"]["price_per_gpu_hour"] == pytest.approx(2.0)
    assert doc["forecast"]["solve_hours"] == pytest.approx(3_600_000 / 1000 / 3600)
    assert doc["forecast"]["remaining_hours"] > doc["forecast"]["solve_hours"]


def test_real_local_run_status_and_job_file() -> None:
    status = FIXTURE / "status.json"
    plain = CliRunner().invoke(plan, ["--from-run", str(status), "--format", "json"])
    assert plain.exit_code == 0, plain.output
    doc = json.loads(plain.output)
    assert doc["phase"] == "Succeeded" and doc["forecast"]["remaining_hours"] == 0.0
    assert doc["refit"]["mfu"] is None and "CPU job" in doc["refit"]["mfu_note"]
    assert doc["refit"]["interruptions"] == 1 and doc["plan"]["mfu"] == 0.4
    out = CliRunner().invoke(plan, ["--from-run", str(status), "--gpu", "h100", "--format", "json"])
    assert out.exit_code == 0, out.output
    refit = json.loads(out.output)["refit"]
    spec = json.loads((FIXTURE / "job.json").read_text())["spec"]
    active = arch.param_counts(arch.ModelConfig.model_validate(spec["model"])).active
    tps = json.loads(status.read_text())["progress"]["tokensPerSecond"]
    assert refit["mfu"] == pytest.approx(6 * active * tps / (2 * H100), rel=1e-12)


@pytest.mark.parametrize("content", ["{}", "- a\n- b\n", "[: not yaml"])
def test_bad_run_files_are_one_line_usage_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = CliRunner().invoke(plan, ["--from-run", str(path)])
    assert out.exit_code == 2 and "--from-run" in out.output
    missing = CliRunner().invoke(plan, ["--from-run", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output


@pytest.mark.parametrize(
    ("whole", "gpu", "message"),
    [
        ({"spec": {"cluster": {"nodes": 0}}, "status": STATUS}, None, "the job's spec is not valid"),
        ({"status": STATUS}, "TPU-v9", "unknown GPU 'TPU-v9'"),
        ({"status": {**STATUS, "progress": {"tokens": -5}}}, None, "not a valid job status"),
    ],
)
def test_bad_jobs_and_gpus_exit_2_with_one_line(
    tmp_path: Path, whole: dict[str, Any], gpu: str | None, message: str
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(whole))
    out = CliRunner().invoke(plan, ["--from-run", str(path), *(["--gpu", gpu] if gpu else [])])
    assert out.exit_code == 2, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], out.output
