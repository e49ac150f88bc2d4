"""Run health end to end with real DeepSpeed on CPU: the fault injectors make the run skip and go on
(policy skip, two ranks agreeing through the step's one all-reduce) or stop with exit 65 (policy
rollback); resume from `latest_healthy` through TOKENSMITH_RESUME_FROM; a fault that follows the data
repeats until `data.skip_samples` skips it, deterministically; `keep: 1` keeps the newest healthy
checkpoint as well."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokensmith.core.errors import EXIT_DIVERGED
from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.sampler import take_positions
from tokensmith.trainer.sources import open_training_data

from .conftest import read_metrics, run_cli, tiny_sets

pytestmark = pytest.mark.slow

# tiny_sets: 256-token global batches of 32-token sequences = 8 samples per step: step s reads [8(s-1), 8s).


def test_policy_skip_skips_bad_steps_on_two_ranks_and_keeps_the_newest_healthy(
    pydoc_data: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ck"
    sets = tiny_sets(
        pydoc_data,
        ckpt,
        **{
            "train.max_steps": 14,
            "checkpoint.every_steps": 4,
            "checkpoint.keep": 1,
            "health.policy": "skip",
            "health.spike_min_history": 3,
            "health.inject_nan_at_step": 5,
            "health.inject_spike_at_step": 9,
            "health.inject_bad_samples": "[84,85]",  # step 11 reads [80, 88)
            "health.verify_after_save": "true",
        },
    )
    report = tmp_path / "report.jsonl"
    done = run_cli(["train", *sets, "--nproc", "2"], env={"TOKENSMITH_REPORT_FILE": str(report)})
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(ckpt / "metrics.jsonl")
    health = [(r["step"], r["kind"], r["action"]) for r in records if r["type"] == "health"]
    assert health == [(5, "nonfinite", "skip"), (9, "spike", "skip"), (11, "nonfinite", "skip")]
    train = {r["step"]: r for r in records if r["type"] == "train"}
    assert train[14]["skipped_steps"] == 3 and np.isfinite(train[14]["loss"])
    assert train[5]["loss"] is None  # the only step of that log window was skipped
    saved = {r["step"]: r["healthy"] for r in records if r["type"] == "checkpoint"}
    assert saved == {4: True, 8: False, 12: False, 14: True}
    saves = [r for r in records if r["type"] == "checkpoint"]  # asynchronous by default
    assert all(r["async"] and 0 < r["blocked_s"] <= r["durable_s"] for r in saves), saves
    events = [e for e in read_metrics(report) if e["type"] == "checkpoint"]
    assert [(e["step"], e["healthy"]) for e in events] == sorted(saved.items())
    # keep: 1 keeps the newest checkpoint; the newest healthy one is step 14 itself
    assert [p.name for p in ck.complete(ckpt)] == ["step-00000014"]
    assert (ckpt / ck.LATEST_HEALTHY).read_text().strip() == "step-00000014"
    assert json.loads((ckpt / "step-00000014" / ck.MANIFEST).read_text())["healthy"] is True


def _rollback_sets(data: Path, ckpt: Path, **extra: object) -> list[str]:
    values = {
        "train.max_steps": 10,
        "checkpoint.every_steps": 4,
        "checkpoint.keep": 1,
        "health.policy": "rollback",
        "health.max_bad_steps": 0,
        "train.record_samples": "true",
        **extra,
    }
    return tiny_sets(data, ckpt, **values)


def _diverged(report: Path) -> list[dict]:
    return [
        {k: v for k, v in e.items() if k != "time"} for e in read_metrics(report) if e["type"] == "diverged"
    ]


def test_policy_rollback_exits_65_and_transient_faults_pass_on_replay(
    pydoc_data: Path, tmp_path: Path
) -> None:
    ckpt, report = tmp_path / "ck", tmp_path / "report.jsonl"
    env = {"TOKENSMITH_REPORT_FILE": str(report)}
    extra = {
        "checkpoint.every_steps": 3,
        "health.spike_min_history": 3,
        "health.inject_spike_at_step": 5,
        "health.inject_nan_at_step": 6,
    }
    sets = _rollback_sets(pydoc_data, ckpt, **extra)
    first = run_cli(["train", *sets], env=env)
    assert first.returncode == EXIT_DIVERGED, first.stderr[-3000:]
    assert _diverged(report) == [{"type": "diverged", "step": 5, "kind": "spike", "samples": [32, 40]}]
    assert (ckpt / ck.LATEST_HEALTHY).read_text().strip() == "step-00000003"
    env["TOKENSMITH_RESUME_FROM"] = "latest_healthy"
    second = run_cli(["train", *sets], env=env)  # the spike does not repeat; the NaN at 6 fires now
    assert second.returncode == EXIT_DIVERGED, second.stderr[-3000:]
    assert "resumed from" in second.stderr and "step-00000003" in second.stderr
    assert _diverged(report)[1:] == [
        {"type": "diverged", "step": 6, "kind": "nonfinite", "samples": [40, 48]}
    ]
    third = run_cli(["train", *sets], env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    records = read_metrics(ckpt / "metrics.jsonl")
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 11)) and np.isfinite(train[-1]["loss"])
    assert not [r for r in records if r["type"] == "health"]  # records of the abandoned steps are dropped


def test_a_fault_that_follows_the_data_repeats_until_its_samples_are_skipped(
    pydoc_data: Path, tmp_path: Path
) -> None:
    ckpt, report = tmp_path / "ck", tmp_path / "report.jsonl"
    env = {"TOKENSMITH_REPORT_FILE": str(report)}
    extra = {"health.inject_bad_samples": "[44,45]", "checkpoint.async_save": "false"}  # synchronous saves
    sets = _rollback_sets(pydoc_data, ckpt, **extra)
    first = run_cli(["train", *sets], env=env)
    assert first.returncode == EXIT_DIVERGED, first.stderr[-3000:]
    assert "diverged" in first.stderr and "samples [40, 48)" in first.stderr
    env["TOKENSMITH_RESUME_FROM"] = "latest_healthy"
    replay = run_cli(["train", *sets], env=env)
    assert replay.returncode == EXIT_DIVERGED, replay.stderr[-3000:]
    want = {"type": "diverged", "step": 6, "kind": "nonfinite", "samples": [40, 48]}
    assert _diverged(report) == [want, want]  # same step, same samples: the data, not the machine

    skipped = run_cli(["train", *sets, "--set", "data.skip_samples=[[40,48]]"], env=env)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    train = {r["step"]: r for r in read_metrics(ckpt / "metrics.jsonl") if r["type"] == "train"}
    assert sorted(train) == list(range(1, 11))
    # Steps 5.. read positions 32..39, then 48.. (40..47 skipped), in the sampler's usual order.
    cfg = TrainerConfig.model_validate(
        {
            "data": {"train_path": str(pydoc_data / "train")},
            "model": {"vocab_size": 512, "seq_len": 32, "d_model": 32, "n_heads": 2, "n_kv_heads": 2},
            "train": {"micro_batch": 4, "global_batch_tokens": 256, "max_steps": 10},
        }
    )
    data = open_training_data(cfg, check_budget=False)
    for step in range(5, 11):
        positions = take_positions(32 + 8 * (step - 5) if step == 5 else 48 + 8 * (step - 6), 8, [[40, 48]])
        assert train[step]["samples"] == data.batch(positions)[2].tolist(), step
    saves = [r for r in read_metrics(ckpt / "metrics.jsonl") if r["type"] == "checkpoint"]
    assert saves and all(not r["async"] and r["blocked_s"] == r["durable_s"] for r in saves)
    manifest = json.loads((ck.complete(ckpt)[0] / ck.MANIFEST).read_text())
    assert manifest["skip_samples"] == [[40, 48]] and manifest["healthy"] is True
    state = json.loads((ck.complete(ckpt)[0] / ck.STATE).read_text())
    assert state["skip_samples"] == [[40, 48]] and state["samples_seen"] == 88
