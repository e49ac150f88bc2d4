"""Fast tests of the local runner's pure parts and its bad-input handling (no trainer process)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokensmith.core.errors import TokensmithError
from tokensmith.operator.local import manifest as mf
from tokensmith.operator.local.display import status_line
from tokensmith.operator.local.observe import (
    ProcessState,
    eval_observation,
    exit_code,
    fold_reports,
    worker_observation,
)
from tokensmith.operator.local.processes import ReportTail
from tokensmith.operator.local.report import (
    History,
    predicted_losses,
    read_valid_losses,
    summary,
    summary_text,
    write_html,
)
from tokensmith.operator.local.runner import read_status, write_status
from tokensmith.operator.spec import (
    CheckpointRef,
    EvaluationResult,
    LLMTrainingJobStatus,
    Progress,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tiny-job.yaml"
CKPT: dict[str, Any] = {"checkpoint": {"volume": {"emptyDir": {}}}}


def _job(tmp_path: Path, spec: dict[str, Any], kind: str = "LLMTrainingJob") -> Path:
    doc = {"apiVersion": "tokensmith.dev/v1alpha1", "kind": kind, "metadata": {"name": "t"}, "spec": spec}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


# ------------------------------------------------------------------------------- manifest


def test_example_maps_checkpoints_to_workdir_and_data_through_mounts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    job = mf.load_job(
        EXAMPLE,
        tmp_path / "runs",
        mounts=(f"/opt/tokensmith/sample-data={data}",),
        sets=("data.tokens=81920", "checkpoint.keep=4", "trainer.train.log_every_steps=2"),
    )
    assert job.name == "tiny"
    assert job.checkpoint_dir == (tmp_path / "runs" / "tiny").resolve()
    assert job.status_path == job.checkpoint_dir / "status.json"
    cfg = job.trainer_config()
    assert cfg.data.train_path == str(data / "train")
    assert cfg.data.tokenizer_path == str(data / "tokenizer.json")
    assert cfg.checkpoint.dir == str(job.checkpoint_dir) and cfg.checkpoint.keep == 4
    assert cfg.train.tokens == 81920 and cfg.train.log_every_steps == 2
    with pytest.raises(
        TokensmithError, match=r"data.trainPath /opt/tokensmith/sample-data/train is .*--mount"
    ):
        mf.check_local_paths(job)  # the shards are not there (yet)
    unmapped = mf.load_job(EXAMPLE, tmp_path / "runs")
    with pytest.raises(TokensmithError, match=r"--mount /opt/tokensmith/sample-data=DIR"):
        mf.check_local_paths(unmapped)


def test_mixture_sources_are_mapped_through_mounts_and_checked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "web" / "train").mkdir(parents=True)
    sources = [{"path": "/data/web/train", "weight": 0.7}, {"path": "/data/code/train", "weight": 0.3}]
    path = _job(tmp_path, {**CKPT, "data": {"sources": sources}})
    job = mf.load_job(path, tmp_path / "runs", mounts=(f"/data={data}",))
    cfg = job.trainer_config()
    assert [s.path for s in cfg.data.training_sources()] == [
        str(data / "web" / "train"),
        str(data / "code" / "train"),
    ]
    with pytest.raises(TokensmithError, match=r"data.sources\[1\].path /data/code/train is .*--mount"):
        mf.check_local_paths(job)


@pytest.mark.parametrize(
    ("spec", "sets", "kind", "message"),
    [
        (CKPT, (), "Pod", "exactly one document of kind LLMTrainingJob"),
        ({**CKPT, "clustr": {}}, (), "LLMTrainingJob", "spec.clustr"),
        (CKPT, ("cluster.nodes=0",), "LLMTrainingJob", "cluster.nodes"),
        (CKPT, ("novalue",), "LLMTrainingJob", "expected KEY=VALUE"),
    ],
)  # fmt: skip
def test_bad_manifests_are_one_line_errors(
    tmp_path: Path, spec: dict[str, Any], sets: tuple[str, ...], kind: str, message: str
) -> None:
    with pytest.raises(TokensmithError, match=message) as info:
        mf.load_job(_job(tmp_path, spec, kind), tmp_path / "runs", sets=sets)
    assert "\n" not in info.value.message and info.value.exit_code == 2


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokensmith.cli", "run", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    cases = [
        ([str(EXAMPLE)], "only --local is supported"),
        ([str(EXAMPLE), "--local", "--inject-failure", "after=3"], "expected step=N"),
        ([str(tmp_path / "missing.yaml"), "--local"], "cannot read"),
        ([str(EXAMPLE), "--local", "--workdir", str(tmp_path)], "does not exist on this machine"),
        ([str(EXAMPLE), "--local", "--plan", str(EXAMPLE)], "not a JSON plan"),
    ]
    for args, message in cases:
        out = _cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# ------------------------------------------------------------------------------- observe


def test_process_states_read_like_pods() -> None:
    assert exit_code(-9) == 137 and exit_code(-15) == 143 and exit_code(78) == 78
    running = worker_observation(ProcessState(0, 1, None, name="w"))
    assert running.phase == "Running" and not running.finished
    crashed = worker_observation(ProcessState(1, 2, 137, True, "boom", "w1"))  # a rank SIGKILLed
    assert (crashed.phase, crashed.exit_code, crashed.reason, crashed.message, crashed.terminating) == (
        "Failed", 137, "Error", "boom", True,
    )  # fmt: skip
    # the launcher itself killed (what the kernel's OOM killer does): the operator's own mapping
    assert worker_observation(ProcessState(0, 1, -9)).reason == "OOMKilled"
    done = worker_observation(ProcessState(0, 1, 0))
    assert done.phase == "Succeeded" and done.exit_code == 0


def test_eval_observation_from_termination_message() -> None:
    ok = json.dumps({"schema": "tokensmith.eval/v1", "results": {"arc": {"acc": 0.5}}})
    assert eval_observation(5, "e", None, None).phase == "Running"
    got = eval_observation(5, "e", 0, ok)
    assert got.phase == "Succeeded" and got.results == {"arc": {"acc": 0.5}}
    err = eval_observation(5, "e", 2, json.dumps({"error": "no checkpoint at step-5"}))
    assert err.phase == "Failed" and err.message == "no checkpoint at step-5"
    crash = eval_observation(5, "e", -9, None, "Killed")
    assert crash.phase == "Failed" and crash.message == "evaluator exited 137: Killed"
    assert eval_observation(5, "e", 0, None).message == "no results reported"


def test_report_lines_fold_into_status_like_the_trainer_patches(tmp_path: Path) -> None:
    from tokensmith.trainer.reporting import FileReporter

    path = tmp_path / "r.jsonl"
    rep = FileReporter(path)
    rep.progress(3, 300, 5.5, 1e-3, 120.0)
    rep.checkpoint(3, "/ck/step-00000003")
    rep.progress(4, 400, 5.0, 1e-3, 130.04)
    with path.open("a") as handle:
        handle.write('{"type": "progress", "step": 9')  # a line still being written
    tail = ReportTail()
    status = fold_reports(LLMTrainingJobStatus(), tail.read([path]), total_tokens=1000)
    assert status.progress is not None and status.progress.step == 4 and status.progress.tokens == 400
    assert status.progress.tokens_per_second == pytest.approx(130.04) and status.progress.total_tokens == 1000
    assert status.last_checkpoint is not None and status.last_checkpoint.step == 3
    assert tail.read([path]) == []  # the torn line waits until it is complete
    with path.open("a") as handle:
        handle.write(', "tokens": 900}\n')
    assert [r["step"] for r in tail.read([path])] == [9]


def test_status_file_round_trip_is_camel_case(tmp_path: Path) -> None:
    st = LLMTrainingJobStatus(
        phase="Running", attempt=2, restarts=1, gpu_hours=0.5,
        last_checkpoint=CheckpointRef(step=10, path="/x"), progress=Progress(step=12, tokens=99),
        evaluations=[EvaluationResult(step=10, phase="Succeeded", results={"arc": {"acc": 0.3}})],
    )  # fmt: skip
    path = tmp_path / "status.json"
    write_status(path, st)
    raw = json.loads(path.read_text())
    assert raw["lastCheckpoint"]["step"] == 10 and raw["progress"]["step"] == 12 and raw["gpuHours"] == 0.5
    assert raw["evaluations"][0] == {"step": 10, "phase": "Succeeded", "results": {"arc": {"acc": 0.3}}}
    assert read_status(path) == st
    path.write_text("{not json")
    with pytest.raises(TokensmithError, match="--fresh"):
        read_status(path)


# ------------------------------------------------------------------------------- output


def test_status_line_names_everything() -> None:
    st = LLMTrainingJobStatus(
        phase="Running", attempt=2,
        progress=Progress(step=12, tokens=99, loss=4.25, tokens_per_second=2500.0),
        last_checkpoint=CheckpointRef(step=10, path="/x"),
        evaluations=[EvaluationResult(step=10, phase="Succeeded")], gpu_hours=0.125,
    )  # fmt: skip
    line = status_line(st, 30)
    for part in (
        "Running",
        "attempt 2",
        "step 12/30",
        "loss 4.250",
        "2.5k tok/s",
        "ckpt 10",
        "10:ok",
        "GPU-h",
    ):
        assert part in line, (part, line)


def test_summary_and_report_with_a_plan(tmp_path: Path) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    results = {"arc_easy_local": {"acc": 0.3}, "perplexity": {"bits_per_byte": 3.1}}
    st = LLMTrainingJobStatus(
        phase="Succeeded", attempt=2, restarts=1, start_time=t0, completion_time=t0 + timedelta(seconds=90),
        progress=Progress(step=30, tokens=30_000, loss=6.5),
        last_checkpoint=CheckpointRef(step=30, path="/x"),
        evaluations=[EvaluationResult(step=10, phase="Succeeded", results=results)],
    )  # fmt: skip
    history = History(
        progress=[
            {"attempt": a, "step": s, "tokens": s * 1000, "loss": 8 - s / 10, "lr": 1e-3,
             "tokens_per_s": 900.0, "time": (t0 + timedelta(seconds=s * 3)).isoformat()}
            for a, s in ((1, 5), (1, 10), (1, 15), (2, 11), (2, 20), (2, 30))
        ],
        events=[{"type": "event", "reason": "Restarting", "attempt": 1, "message": "x",
                 "time": (t0 + timedelta(seconds=50)).isoformat()}],
        attempts=[{"attempt": 1, "resume_step": 0}, {"attempt": 2, "resume_step": 10}],
    )  # fmt: skip
    plan = {"law": "chinchilla", "params": 600_000, "non_embedding_params": 100_000, "tokens": 30_000,
            "predicted_loss": 20.0, "cluster": {"gpu": "H100-SXM", "gpus": 1}, "wall_clock_days": 1e-7,
            "gpu_hours_total": 1e-6}  # fmt: skip
    data = summary(st, history, plan)
    assert data["resumed_at"] == [{"attempt": 2, "checkpoint_step": 10}]
    assert data["actual"] == {"tokens": 30_000, "steps": 30, "wall_seconds": 90.0, "gpu_hours": 0.0,
                              "final_loss": 6.5}  # fmt: skip
    from tokensmith.planner.scaling import get_law

    assert data["plan"]["predicted_loss"] == pytest.approx(
        get_law("chinchilla").loss(600_000, 30_000), abs=1e-4
    )
    text = summary_text(data, tmp_path / "r.html")
    assert (
        "attempt 2 resumed from checkpoint step 10" in text and "arc_easy_local" in text and "r.html" in text
    )
    ys = predicted_losses(plan, [1e3, 1e4, 1e5])
    assert ys is not None and ys[0] > ys[1] > ys[2]  # more data, lower predicted loss
    assert predicted_losses({"law": "nope", "params": 1}, [1.0]) is None
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        '{"type": "train", "step": 5, "loss": 7.0}\n{"type": "eval", "step": 10, "valid_loss": 6.75}\n{"type'
    )
    valid = read_valid_losses(metrics)
    assert valid == [(10, 6.75)]
    html = write_html(tmp_path / "r.html", "tiny", st, history, plan, valid).read_text()
    assert "plotly" in html and "chinchilla L(N=600000, D)" in html and "Restarting" in html
    assert '<script src="https' not in html and len(html) > 1_000_000  # plotly.js embedded


def test_a_spec_the_operator_rejects_fails_invalid_spec_with_exit_78(tmp_path: Path) -> None:
    """check_spec (shared with the operator) rejects it before any process starts."""
    spec = {**CKPT, "parallelism": {"tensor": 3}, "data": {"tokens": 4096}}
    out = _cli(str(_job(tmp_path, spec)), "--local", "--workdir", str(tmp_path / "runs"), "--format", "json")
    assert out.returncode == 78, out.stderr
    summary = json.loads(out.stdout)
    assert summary["phase"] == "Failed" and summary["reason"] == "InvalidSpec" and summary["attempts"] == 0
    status = json.loads((tmp_path / "runs" / "t" / "status.json").read_text())
    assert status["lastFailure"]["reason"] == "InvalidSpec" and "tensor" in status["message"]


def test_one_runner_per_job_and_fresh_wipes_under_the_lock(tmp_path: Path) -> None:
    import fcntl

    from tokensmith.operator.local.runner import LOCK_FILE, LocalRunner

    spec = {**CKPT, "parallelism": {"tensor": 3}, "data": {"tokens": 4096}}  # rejected at once: no process
    job = mf.load_job(_job(tmp_path, spec), tmp_path / "runs")
    job.run_dir.mkdir(parents=True)
    (job.checkpoint_dir / "step-00000004").mkdir()
    (job.run_dir / "history.jsonl").write_text("{}\n")
    with (job.run_dir / LOCK_FILE).open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another runner holds this job
        with pytest.raises(TokensmithError, match="already being run"):
            LocalRunner(job, fresh=True).run()
        assert (job.checkpoint_dir / "step-00000004").is_dir()  # --fresh touched nothing
    result = LocalRunner(job, fresh=True).run()
    assert result.status.phase == "Failed"
    assert not (job.checkpoint_dir / "step-00000004").exists()
    assert "{}" not in (job.run_dir / "history.jsonl").read_text()  # a new history


def test_demo_checks_its_promises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokensmith.operator.local.demo import check

    status_path = tmp_path / "tiny" / "status.json"
    (tmp_path / "tiny" / "local").mkdir(parents=True)
    history = tmp_path / "tiny" / "local" / "history.jsonl"
    ok = {"phase": "Succeeded", "evaluations": [{"step": 10, "phase": "Succeeded"}]}
    status_path.write_text(json.dumps(ok))
    history.write_text('{"type": "attempt", "attempt": 1, "resume_step": 0}\n')
    assert check(status_path, tmp_path, 1.0) == 1
    assert "no attempt resumed from a checkpoint" in capsys.readouterr().out
    with history.open("a") as handle:
        handle.write('{"type": "attempt", "attempt": 2, "resume_step": 10}\n')
    assert check(status_path, tmp_path, 1.0) == 0
    assert "attempt 2 resumed from checkpoint step 10" in capsys.readouterr().out
    status_path.write_text(json.dumps({**ok, "evaluations": [{"step": 10, "phase": "Failed"}]}))
    assert check(status_path, tmp_path, 1.0) == 1
    balanced = {
        "gpuHours": 1.0,
        "productiveGPUHours": 0.75,
        "goodput": 0.75,
        "lostGPUHours": {"redone": 0.2, "restart": 0.05},
        "goodputLedger": {"totalGPUHours": 1.0},
    }
    status_path.write_text(json.dumps({**ok, **balanced}))
    assert check(status_path, tmp_path, 1.0) == 1
    assert "the runner recorded no goodput samples" in capsys.readouterr().out
    sample = {"type": "ledger", "time": "2026-01-01T00:00:00+00:00"}
    with history.open("a") as handle:  # the runner's last sample before it exited, one cause short
        handle.write(json.dumps({**sample, "gpu_hours": {"productive": 0.75, "redone": 0.2}}) + "\n")
    assert check(status_path, tmp_path, 1.0) == 1
    assert "the runner's last sample: restart off by -0.05" in capsys.readouterr().out
    with history.open("a") as handle:
        handle.write(
            json.dumps({**sample, "gpu_hours": {"productive": 0.75, "redone": 0.2, "restart": 0.05}}) + "\n"
        )
    assert check(status_path, tmp_path, 1.0) == 0
    assert "goodput 0.75 (GPU-hours lost: redone 0.2000, restart 0.0500)" in capsys.readouterr().out
    status_path.write_text(json.dumps({**ok, **balanced, "productiveGPUHours": 0.7}))
    assert check(status_path, tmp_path, 1.0) == 1
    assert "the goodput ledger does not add up" in capsys.readouterr().out


def test_orphans_of_a_dead_runner_are_stopped(tmp_path: Path) -> None:
    from tokensmith.operator.local.processes import Gang

    job = mf.load_job(_job(tmp_path, {**CKPT, "data": {"tokens": 4096}}), tmp_path / "runs")
    gang = Gang(job)
    job.run_dir.mkdir(parents=True)
    config = gang.config_path(1)
    # a stand-in for a launcher whose runner was SIGKILLed: its command line names this job's config
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(config)], start_new_session=True
    )
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)  # same pid file, other command
    doc = {"t-a1-w0": {"pid": orphan.pid, "config": str(config)},
           "t-a1-w1": {"pid": stranger.pid, "config": str(config)}}  # fmt: skip
    gang.pids_file.write_text(json.dumps(doc))
    try:
        assert gang.stop_orphans() == ["t-a1-w0"]
        assert orphan.wait(timeout=10) == -15  # SIGTERM first
        assert stranger.poll() is None  # never a process that is not ours
        assert not gang.pids_file.exists()
    finally:
        stranger.kill()
        orphan.kill()


def test_the_runner_keeps_the_live_settings_file_that_its_workers_watch(tmp_path: Path) -> None:
    """The local twin of the operator's live ConfigMap: `everyMinutes: auto` -> a live.json in the run
    directory, named in every worker's environment, rewritten (atomically) only when the interval the
    status carries changes; a fixed interval -> neither."""
    from tokensmith.operator.local.runner import LocalRunner
    from tokensmith.operator.observed import Decision

    job = mf.load_job(
        EXAMPLE, tmp_path / "runs", sets=("checkpoint.everyMinutes=auto", "checkpoint.initialMinutes=55")
    )
    runner = LocalRunner(job)
    path = job.run_dir / "live.json"

    def apply(minutes: float | None) -> dict[str, Any]:
        st = LLMTrainingJobStatus(phase="Running", attempt=1, checkpoint_every_minutes=minutes)
        runner.apply(st, Decision(status=st))
        return json.loads(path.read_text())

    assert apply(None) == {"checkpoint": {"every_minutes": 55.0}}  # initialMinutes until a decision
    assert runner.gang.worker_env(1, 0)["TOKENSMITH_LIVE_SETTINGS"] == str(path)
    assert apply(12.345) == {"checkpoint": {"every_minutes": 12.35}}
    before = path.stat()
    assert apply(12.345) == {"checkpoint": {"every_minutes": 12.35}}
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # untouched
    # the next attempt's trainer config starts from the same interval
    assert runner.gang.job.trainer_config().checkpoint.every_minutes == 12.35

    fixed = mf.load_job(EXAMPLE, tmp_path / "fixed")
    plain = LocalRunner(fixed)
    st = LLMTrainingJobStatus(phase="Running", attempt=1)
    plain.apply(st, Decision(status=st))
    assert not (fixed.run_dir / "live.json").exists()
    assert "TOKENSMITH_LIVE_SETTINGS" not in plain.gang.worker_env(1, 0)
