"""End-to-end training with real DeepSpeed on CPU (gloo): learning, exact resume, torn checkpoints, SIGTERM.

Each test launches `tokensmith train` in fresh processes (torchrun for --nproc), as users and pods do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer.data.shards import ShardSet

from .conftest import VOCAB, read_metrics, run_cli, tiny_sets

pytestmark = pytest.mark.slow


def _train_records(path: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(path) if r["type"] == "train"}


def _unigram_cross_entropy(data: Path) -> float:
    """Validation cross-entropy of the best context-free model (train-set token frequencies)."""
    train, valid = ShardSet.open(data / "train"), ShardSet.open(data / "valid")
    counts = np.bincount(train.tokens(0, train.num_tokens), minlength=VOCAB).astype(float) + 1.0
    p = counts / counts.sum()
    return float(-np.log(p[valid.tokens(0, valid.num_tokens)]).mean())


def test_two_processes_zero2_learn_real_text(pydoc_data: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    sets = tiny_sets(
        pydoc_data,
        ckpt,
        **{
            "train.max_steps": 200,
            "train.lr": 3e-3,
            "train.log_every_steps": 20,
            "train.eval_batches": 8,
            "checkpoint.every_steps": 100,
            "checkpoint.every_minutes": 0.01,  # also every 0.6 s of training: time-based checkpoints
            "checkpoint.keep": 1,
        },
    )
    report = tmp_path / "report.jsonl"
    done = run_cli(["train", *sets, "--nproc", "2"], env={"TOKENSMITH_REPORT_FILE": str(report)})
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(ckpt / "metrics.jsonl")
    valid = [r["valid_loss"] for r in records if r["type"] == "eval"]
    baseline = _unigram_cross_entropy(pydoc_data)
    assert valid[-1] < baseline - 0.25, (valid, baseline)
    train = [r for r in records if r["type"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.8
    assert train[-1]["tokens"] == 200 * 256 and all(r["tokens_per_s"] > 0 for r in train)
    # ZeRO-2 over two ranks: one optimizer partition per rank, the newest checkpoint only (keep=1).
    assert [p.name for p in ck.candidates(ckpt)] == ["step-00000200"]
    names = {p.name for p in (ckpt / "step-00000200" / "ds").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= names
    assert ck.verify(ckpt / "step-00000200") == []
    saved = [r["step"] for r in records if r["type"] == "checkpoint"]
    assert 100 in saved and saved[-1] == 200
    assert any(step % 100 for step in saved), saved  # at least one came from the timer
    events = read_metrics(report)
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == saved
    assert [e["type"] for e in events if e["type"] != "progress"][-1] == "done"
    assert events[-1] == {"type": "done", "step": 200, "tokens": 51200, "time": events[-1]["time"]}
    loaded = ck.load_model(ckpt)
    assert loaded.step == 200 and loaded.tokenizer_path is not None


def _resume_sets(data: Path, ckpt: Path) -> list[str]:
    # A two-source mixture (0.7/0.3; the second source is the valid split, tokenized alike), so exact
    # resume covers the mixture's draws too (samples are [source, window] pairs).
    sources = f"[{{path: {data / 'train'}, weight: 0.7, name: a}}, "
    sources += f"{{path: {data / 'valid'}, weight: 0.3, name: b}}]"
    return tiny_sets(
        data,
        ckpt,
        **{
            "data.train_path": "null",
            "data.sources": sources,
            "train.max_steps": 8,
            "checkpoint.every_steps": 4,
            "train.record_samples": "true",
            "train.global_batch_tokens": 512,  # 16 sequences: 2 accumulation steps on 2 ranks, 4 on 1
        },
    )


def test_killed_run_resumes_exactly_also_on_another_world_size(pydoc_data: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    killed = tmp_path / "killed"
    done = run_cli(["train", *_resume_sets(pydoc_data, straight), "--nproc", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    dead = run_cli(
        ["train", *_resume_sets(pydoc_data, killed), "--nproc", "2"], env={"TOKENSMITH_FAIL_AT_STEP": "6"}
    )
    assert dead.returncode not in (0, 78), dead.stderr[-3000:]
    assert [p.name for p in ck.complete(killed)] == ["step-00000004"]
    assert max(_train_records(killed / "metrics.jsonl")) == 6  # steps 5 and 6 were done, then lost
    shrunk = tmp_path / "shrunk"
    shutil.copytree(killed, shrunk)

    again = run_cli(["train", *_resume_sets(pydoc_data, killed), "--nproc", "2"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "step-00000004" in again.stderr
    want, got = _train_records(straight / "metrics.jsonl"), _train_records(killed / "metrics.jsonl")
    assert sorted(got) == sorted(want) == list(range(1, 9))
    for step in range(1, 9):
        assert got[step]["samples"] == want[step]["samples"], step
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], abs=1e-5), step
        assert got[step]["lr"] == pytest.approx(want[step]["lr"], rel=1e-12)
    seen = [tuple(i) for s in range(1, 9) for i in want[s]["samples"]]
    assert len(seen) == len(set(seen)) == 8 * 16  # no repeats inside the epoch
    # the realised mixture: 128 samples of 32 tokens dealt 0.7/0.3 to within a sample
    assert want[8]["source_tokens"] == got[8]["source_tokens"]
    assert abs(want[8]["source_tokens"]["a"] / (128 * 32) - 0.7) < 1 / 128
    assert sum(s == 0 for s, _ in seen) == want[8]["source_tokens"]["a"] // 32

    # The same checkpoint resumed by one process (ZeRO partitions converted to a universal checkpoint).
    one = run_cli(["train", *_resume_sets(pydoc_data, shrunk)])
    assert one.returncode == 0, one.stderr[-3000:]
    assert "saved by 2 processes, now 1" in one.stderr
    solo = _train_records(shrunk / "metrics.jsonl")
    for step in range(5, 9):
        assert solo[step]["samples"] == want[step]["samples"], step
        assert solo[step]["loss"] == pytest.approx(want[step]["loss"], abs=1e-5), step


def test_sigterm_checkpoint_then_torn_and_corrupt_ones_are_skipped(pydoc_data: Path, tmp_path: Path) -> None:
    """SIGTERM under torchrun leaves a complete checkpoint and exits 143; then, with the newest checkpoint
    torn (no manifest) and the next one corrupt (truncated), resume falls back to the one before."""
    ckpt = tmp_path / "ck"
    sets = tiny_sets(pydoc_data, ckpt, **{"train.max_steps": 100_000, "checkpoint.every_steps": 2})
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokensmith.cli", "train", *sets, "--nproc", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = ckpt / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(_train_records(metrics)) >= 7:
            break
        time.sleep(0.3)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)  # as the kubelet does to the pod's main process (torchrun)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    final = [r for r in read_metrics(metrics) if r["type"] == "sigterm"]
    assert final and final[0]["saved"] is True
    step = final[0]["step"]
    complete = ck.complete(ckpt)
    assert complete[0].name == ck.checkpoint_name(step) and len(complete) == 3  # keep: 3
    assert ck.verify(complete[0]) == []
    assert json.loads((complete[0] / ck.STATE).read_text())["step"] == step

    newest, corrupt, fallback = complete
    (newest / ck.MANIFEST).unlink()
    optim = next((corrupt / "ds").glob("*optim_states.pt"))
    with optim.open("r+b") as handle:
        handle.truncate(optim.stat().st_size // 2)
    target = step + 2
    again = run_cli(["train", *tiny_sets(pydoc_data, ckpt, **{"train.max_steps": target})])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"skipping checkpoint {newest.name}: {newest.name}: no manifest.json" in again.stderr
    assert f"skipping checkpoint {corrupt.name}" in again.stderr and "bytes" in again.stderr
    assert f"resumed from {fallback}" in again.stderr
    assert (ckpt / ck.LATEST).read_text().strip() == ck.checkpoint_name(target)
    steps = [r["step"] for r in read_metrics(metrics) if r["type"] == "train"]
    assert steps == list(range(1, target + 1))  # lost steps redone once, not logged twice


def test_a_running_trainer_picks_up_a_new_checkpoint_interval(pydoc_data: Path, tmp_path: Path) -> None:
    """Live settings (trainer/live.py; the operator's live ConfigMap, the local runner's file): two ranks
    start with a 60-minute interval, the file is changed mid-run to 0.002 minutes, rank 0 applies it
    (a `live` metrics record) and both ranks checkpoint on the new cadence (a rank that disagreed would
    hang in the save's collectives), with no restart."""
    ckpt = tmp_path / "ck"
    settings = tmp_path / "live" / "live.json"
    settings.parent.mkdir()

    def write(minutes: float) -> None:  # atomic, as both writers are (a rename)
        tmp = settings.with_suffix(".tmp")
        tmp.write_text(json.dumps({"checkpoint": {"every_minutes": minutes}}))
        os.replace(tmp, settings)

    write(60.0)
    sets = tiny_sets(pydoc_data, ckpt, **{"train.max_steps": 100_000, "checkpoint.every_minutes": 60})
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "TOKENSMITH_LIVE_SETTINGS": str(settings),
        "TOKENSMITH_LIVE_CHECK_SECONDS": "0",  # look every step (the default is every 10 s)
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokensmith.cli", "train", *sets, "--nproc", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = ckpt / "metrics.jsonl"

    def wait_for(done: Callable[[list[dict]], bool]) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and done(read_metrics(metrics)):
                return
            time.sleep(0.1)
        proc.kill()
        pytest.fail(proc.communicate()[0][-3000:])

    try:
        wait_for(lambda records: sum(r["type"] == "train" for r in records) >= 3)
        write(0.002)  # 0.12 s
        wait_for(lambda records: sum(r["type"] == "checkpoint" for r in records) >= 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    records = read_metrics(metrics)
    (change,) = [r for r in records if r["type"] == "live"]
    assert (change["setting"], change["old"], change["new"]) == ("checkpoint.every_minutes", 60.0, 0.002)
    timed = [r["step"] for r in records if r["type"] == "checkpoint" and r["trigger"] == "schedule"]
    assert len(timed) >= 2 and min(timed) > change["step"] >= 3, (change, timed)
    assert "live settings: checkpoint.every_minutes 60 -> 0.002" in output
