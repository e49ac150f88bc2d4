"""Run-health rules (pure): bad-step kinds, policy actions, divergence, healthy intervals; the sampler's
deterministic skip; the report channel's health messages; healthy-aware pruning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer.health import Monitor, Rules, action_for, classify, spike_threshold
from tokensmith.trainer.reporting import FileReporter, checkpoint_patch, divergence_patch
from tokensmith.trainer.sampler import BatchPlan, take_positions

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("loss", "grad_norm", "threshold", "kind"),
    [
        (2.0, 1.0, None, None),
        (2.0, 1.0, 3.0, None),
        (3.5, 1.0, 3.0, "spike"),
        (NAN, 1.0, 3.0, "nonfinite"),
        (INF, 1.0, None, "nonfinite"),
        (2.0, NAN, 3.0, "nonfinite"),
        (2.0, INF, None, "nonfinite"),
        (2.0, None, None, None),
        (50.0, 1.0, None, None),  # no history yet: a high loss is not a spike
    ],
)
def test_classify(loss: float, grad_norm: float | None, threshold: float | None, kind: str | None) -> None:
    assert classify(loss, grad_norm, threshold) == kind


@pytest.mark.parametrize(
    ("kind", "policy", "action"),
    [
        ("nonfinite", "warn", "skip"),
        ("nonfinite", "skip", "skip"),
        ("nonfinite", "rollback", "skip"),
        ("spike", "warn", "warn"),
        ("spike", "skip", "skip"),
        ("spike", "rollback", "skip"),
        ("corrupt", "skip", "warn"),
    ],
)
def test_action_for(kind: str, policy: str, action: str) -> None:
    assert action_for(kind, policy) == action  # type: ignore[arg-type]


def test_spike_threshold_is_a_one_sided_z_score_with_a_std_floor() -> None:
    rules = Rules(spike_window=8, spike_sigma=3.0, spike_min_history=4)
    assert spike_threshold([1.0, 2.0, 3.0], rules) is None  # too short
    history = [2.0, 2.2, 1.8, 2.0]
    std = float(np.std(history, ddof=1))
    assert spike_threshold(history, rules) == pytest.approx(2.0 + 3.0 * std)
    flat = [5.0] * 6
    assert spike_threshold(flat, rules) == pytest.approx(5.0 + 3.0 * 0.001 * 5.0)


def _feed(monitor: Monitor, losses: list[float]) -> list[tuple[str | None, str | None, bool, int | None]]:
    out = []
    for i, loss in enumerate(losses, start=1):
        v = monitor.observe(i, loss, 1.0, (8 * (i - 1), 8 * i))
        out.append((v.kind, v.action, v.apply, v.diverged.step if v.diverged else None))
    return out


WARM = [3.0, 2.9, 3.1, 3.0, 2.95, 3.05]  # six healthy steps: the spike test is armed after four


@pytest.mark.parametrize(
    ("policy", "max_bad", "tail", "want"),
    [
        # skip: spikes and NaN skipped; only NaN counts towards divergence
        ("skip", 1, [30.0, 3.0], [("spike", "skip", False, None), (None, None, True, None)]),
        ("skip", 1, [30.0, 31.0, 32.0], [("spike", "skip", False, None)] * 3),
        (
            "skip",
            1,
            [NAN, 3.0, NAN],
            [
                ("nonfinite", "skip", False, None),
                (None, None, True, None),
                ("nonfinite", "rollback", False, 7),
            ],
        ),
        # warn: spikes applied
        ("warn", 0, [30.0], [("spike", "warn", True, None)]),
        ("warn", 0, [NAN], [("nonfinite", "rollback", False, 7)]),
        # rollback: every bad kind counts; the report names the first bad step in the window
        ("rollback", 1, [30.0, 3.0], [("spike", "skip", False, None), (None, None, True, None)]),
        (
            "rollback",
            1,
            [30.0, 3.0, NAN],
            [("spike", "skip", False, None), (None, None, True, None), ("nonfinite", "rollback", False, 7)],
        ),
        ("rollback", 0, [30.0], [("spike", "rollback", False, 7)]),
    ],
)
def test_monitor_policies(policy: str, max_bad: int, tail: list[float], want: list[tuple]) -> None:
    rules = Rules(
        policy=policy,
        spike_window=8,
        spike_sigma=6.0,
        spike_min_history=4,  # type: ignore[arg-type]
        max_bad_steps=max_bad,
        bad_window=10,
    )
    got = _feed(Monitor(rules), WARM + tail)
    assert got[: len(WARM)] == [(None, None, True, None)] * len(WARM)
    assert got[len(WARM) :] == want


def test_bad_steps_leave_the_window_and_do_not_widen_the_yardstick() -> None:
    rules = Rules(policy="rollback", spike_window=8, spike_min_history=4, max_bad_steps=1, bad_window=3)
    monitor = Monitor(rules)
    _feed(monitor, WARM)
    assert monitor.observe(7, 30.0, 1.0, (0, 8)).kind == "spike"
    assert 30.0 not in monitor.history
    for step in (8, 9, 10):
        assert monitor.observe(step, 3.0, 1.0, (0, 8)).kind is None
    verdict = monitor.observe(11, 30.0, 1.0, (80, 88))  # step 7 is out of the 3-step window now
    assert verdict.kind == "spike" and verdict.diverged is None
    assert monitor.skipped == 2


def test_checkpoint_health_covers_the_interval_and_open_spikes() -> None:
    monitor = Monitor(Rules(policy="warn", spike_window=8, spike_min_history=4))
    _feed(monitor, WARM)
    assert monitor.checkpoint_healthy() is True
    monitor.observe(7, NAN, None, (0, 8))
    monitor.observe(8, 3.0, 1.0, (0, 8))
    assert monitor.checkpoint_healthy() is False  # a skipped step since the previous checkpoint
    assert monitor.checkpoint_healthy() is True  # a new interval
    monitor.observe(9, 30.0, 1.0, (0, 8))  # a spike applied under warn, still open at the save
    assert monitor.checkpoint_healthy() is False


@pytest.mark.parametrize(
    ("start", "count", "skip", "want"),
    [
        (0, 4, [], [0, 1, 2, 3]),
        (0, 4, [[1, 3]], [0, 3, 4, 5]),
        (2, 3, [[0, 5]], [5, 6, 7]),
        (0, 5, [[6, 8], [1, 2]], [0, 2, 3, 4, 5]),
        (0, 6, [[1, 2], [2, 4], [5, 6]], [0, 4, 6, 7, 8, 9]),
        (10, 2, [[0, 5]], [10, 11]),  # ranges behind the start change nothing
        (0, 2, [[0, 2], [2, 3]], [3, 4]),
    ],
)
def test_take_positions(start: int, count: int, skip: list[list[int]], want: list[int]) -> None:
    assert take_positions(start, count, skip).tolist() == want


def test_skipped_positions_are_split_over_ranks_like_contiguous_ones() -> None:
    plan = BatchPlan(micro_batch=2, world_size=2, accumulation=2)
    step = take_positions(0, plan.global_batch, [[3, 5]])
    parts = [plan.local(step, r, a).tolist() for a in range(2) for r in range(2)]
    assert parts == [[0, 1], [2, 5], [6, 7], [8, 9]]
    plain = plan.step_positions(0)
    assert all((plan.local(plain, r, a) == plan.positions(0, r, a)).all() for r in range(2) for a in range(2))


def test_report_channel_messages(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    reporter = FileReporter(out)
    reporter.checkpoint(8, "/ck/step-00000008", healthy=False, blocked_s=0.1, durable_s=0.5)
    reporter.diverged(6, "nonfinite", [40, 48])
    reporter.close()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {k: v for k, v in lines[0].items() if k != "time"} == {
        "type": "checkpoint",
        "step": 8,
        "path": "/ck/step-00000008",
        "healthy": False,
        "blocked_s": 0.1,
        "durable_s": 0.5,
    }
    assert {k: v for k, v in lines[1].items() if k != "time"} == {
        "type": "diverged",
        "step": 6,
        "kind": "nonfinite",
        "samples": [40, 48],
    }
    patch = checkpoint_patch(4, "/ck/step-00000004", healthy=True, blocked_s=0.25, durable_s=1.5)["status"]
    assert patch["lastCheckpoint"]["healthy"] is True and patch["lastCheckpoint"]["blockedSeconds"] == 0.25
    assert patch["lastHealthyCheckpoint"]["step"] == 4
    assert "lastHealthyCheckpoint" not in checkpoint_patch(8, "/x", healthy=False)["status"]
    div = divergence_patch(6, "spike", [40, 48])["status"]["divergence"]
    assert (div["step"], div["kind"], div["samples"]) == (6, "spike", [40, 48])


def _fake(root: Path, step: int, healthy: bool | None) -> Path:
    path = root / ck.checkpoint_name(step)
    path.mkdir(parents=True)
    (path / ck.STATE).write_text(json.dumps({"step": step}))
    ck.write_rank_marker(path, 0, 1)
    ck.finalize(path, 1, step, {} if healthy is None else {"healthy": healthy})
    return path


def test_prune_never_deletes_the_newest_healthy_checkpoint(tmp_path: Path) -> None:
    for step, healthy in ((10, True), (20, True), (30, False), (40, False)):
        _fake(tmp_path, step, healthy)
    assert ck.newest_healthy(tmp_path) == tmp_path / "step-00000020"
    gone = {p.name for p in ck.prune(tmp_path, keep=1)}
    assert gone == {"step-00000010", "step-00000030"}
    assert [p.name for p in ck.complete(tmp_path)] == ["step-00000040", "step-00000020"]
    _fake(tmp_path, 50, None)  # written before the guardrails: counts as healthy
    assert {p.name for p in ck.prune(tmp_path, keep=1)} == {"step-00000020", "step-00000040"}


def test_roll_back_moves_the_abandoned_future_aside(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _fake(tmp_path, step, step == 10)
    moved = ck.roll_back_past(tmp_path, 10)
    assert sorted(p.name for p in moved) == ["step-00000020", "step-00000030"]
    assert [p.name for p in ck.candidates(tmp_path)] == ["step-00000010"]
    assert (tmp_path / ck.ROLLED_BACK / "step-00000030" / ck.MANIFEST).is_file()


def test_each_rank_hashes_its_own_files_and_rank_0_the_unclaimed_rest(tmp_path: Path) -> None:
    path = tmp_path / ck.checkpoint_name(3)
    (path / "ds").mkdir(parents=True)
    for rank in range(2):
        (path / "ds" / f"optim_{rank}.pt").write_bytes(bytes([rank]) * 50)
    (path / "zero_to_fp32.py").write_text("# written outside the checkpoint engine\n")
    ck.write_rank_marker(path, 1, 2, files=["ds/optim_1.pt"])
    with pytest.raises(RuntimeError, match="no marker from"):
        ck.wait_for_markers(path, 2, timeout_s=0.1, poll_s=0.02)
    ck.write_rank_marker(path, 0, 2, files=["ds/optim_0.pt"])
    ck.wait_for_markers(path, 2, timeout_s=1.0)
    with pytest.raises(RuntimeError, match="not hashed by any rank"):
        ck.finalize(path, 2, 3)
    manifest = ck.finalize(path, 2, 3, {"healthy": True}, hash_unclaimed=True)
    assert set(manifest["files"]) == {"ds/optim_0.pt", "ds/optim_1.pt", "zero_to_fp32.py"}
    assert ck.verify(path) == [] and ck.is_healthy(path)


def test_background_writer_runs_in_order_and_surfaces_failures() -> None:
    from tokensmith.trainer.asyncsave import BackgroundWriter

    writer = BackgroundWriter()
    done: list[int] = []
    for i in range(5):
        writer.submit(lambda i=i: done.append(i))
    writer.wait()
    assert done == [0, 1, 2, 3, 4] and not writer.busy

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(fail)
    writer.submit(lambda: done.append(99))  # not run: a failed checkpoint stops the queue
    with pytest.raises(RuntimeError, match="disk full"):
        writer.wait()
    assert 99 not in done
    writer.close()


def test_sigterm_choice_is_reported(tmp_path: Path) -> None:
    from tokensmith.trainer.reporting import sigterm_patch

    patch = sigterm_patch(12, False, 7.5, 20.25)
    assert patch == {
        "status": {
            "progress": {
                "sigterm": {"step": 12, "saved": False, "graceLeftSeconds": 7.5, "expectedSaveSeconds": 20.25}
            }
        }
    }
    out = tmp_path / "r.jsonl"
    reporter = FileReporter(out)
    reporter.sigterm(12, True, 25.0, 1.5)
    reporter.close()
    line = json.loads(out.read_text())
    assert (line["type"], line["saved"], line["grace_left_s"], line["expected_save_s"]) == (
        "sigterm",
        True,
        25.0,
        1.5,
    )


def test_the_trainers_report_lines_fold_into_the_operator_status(tmp_path: Path) -> None:
    """The contract with the operator/local runner: what FileReporter writes, `observe.apply_report`
    turns into the same status fields the Kubernetes reporter patches."""
    from tokensmith.operator import observe
    from tokensmith.operator.spec import LLMTrainingJobStatus

    out = tmp_path / "r.jsonl"
    reporter = FileReporter(out)
    reporter.checkpoint(4, "/ck/step-00000004", healthy=True, blocked_s=0.02, durable_s=0.4)
    reporter.checkpoint(8, "/ck/step-00000008", healthy=False, blocked_s=0.03, durable_s=0.5)
    reporter.diverged(10, "spike", [72, 80])
    reporter.sigterm(10, False, 12.0, 30.0)
    reporter.close()
    status = LLMTrainingJobStatus()
    for line in out.read_text().splitlines():
        status = observe.apply_report(status, json.loads(line))
    assert status.last_checkpoint is not None and status.last_healthy_checkpoint is not None
    assert (status.last_checkpoint.step, status.last_checkpoint.healthy) == (8, False)
    assert (status.last_checkpoint.blocked_seconds, status.last_checkpoint.durable_seconds) == (0.03, 0.5)
    assert status.last_healthy_checkpoint.step == 4
    assert status.divergence is not None
    assert (status.divergence.step, status.divergence.kind, status.divergence.samples) == (
        10,
        "spike",
        [72, 80],
    )
    assert status.progress is not None and status.progress.sigterm is not None
    assert status.progress.sigterm.saved is False and status.progress.sigterm.expected_save_seconds == 30.0
    # the Kubernetes reporter's patches use the same (camelCase) names as the status model
    patch = checkpoint_patch(8, "/ck/step-00000008", healthy=False, blocked_s=0.03, durable_s=0.5)
    dumped = status.last_checkpoint.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert set(patch["status"]["lastCheckpoint"]) == set(dumped)


def test_resume_selection_env_wins_over_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokensmith.core.errors import ConfigError
    from tokensmith.trainer.config import TrainerConfig
    from tokensmith.trainer.loop import RESUME_ENV, Trainer

    for step, healthy in ((10, True), (20, False)):
        _fake(tmp_path, step, healthy)
    (tmp_path / ck.checkpoint_name(30)).mkdir()  # torn: resume's verification skips it later
    cfg = TrainerConfig.model_validate(
        {"checkpoint": {"dir": str(tmp_path), "resume_from": "latest_healthy"}}
    )
    trainer = Trainer(cfg)
    trainer.root = tmp_path
    monkeypatch.delenv(RESUME_ENV, raising=False)
    assert [p.name for p in trainer.resume_candidates()] == ["step-00000030", "step-00000010"]
    monkeypatch.setenv(RESUME_ENV, "latest")
    assert [p.name for p in trainer.resume_candidates()] == [
        "step-00000030",
        "step-00000020",
        "step-00000010",
    ]
    monkeypatch.setenv(RESUME_ENV, "step-00000020")
    assert [p.name for p in trainer.resume_candidates()] == ["step-00000020"]
    monkeypatch.setenv(RESUME_ENV, "step-00000099")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        trainer.resume_candidates()
