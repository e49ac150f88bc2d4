"""Tensor and pipeline parallelism end to end (real DeepSpeed on CPU, gloo): the same seed and data give
the loss curve of a data-parallel run under TP=2, PP=2 and TP2 x PP2, and a run killed under one layout
resumes under another exactly (PP=2 -> DP=2, TP=2 -> TP=1, DP=2 -> PP=2)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tokensmith.planner.capability import Layout, rank_coordinates
from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer import consolidate
from tokensmith.trainer.parallel.accounting import local_parameters, state_bytes

from .conftest import read_metrics, run_cli, tiny_sets

pytestmark = pytest.mark.slow

STEPS = 6


def _sets(data: Path, ckpt: Path, nproc: int, **extra: Any) -> list[str]:
    values = {
        "train.max_steps": STEPS,
        "deepspeed.zero_stage": 1,  # the one stage every layout takes (PP: 0-1, TP: 0-2)
        "checkpoint.every_steps": 3,
        "train.record_samples": True,
        **extra,
    }
    return [*tiny_sets(data, ckpt, **values), "--nproc", str(nproc)]


def _train(path: Path) -> dict[int, dict[str, Any]]:
    return {r["step"]: r for r in read_metrics(path / "metrics.jsonl") if r["type"] == "train"}


@pytest.fixture(scope="module")
def dp2_run(pydoc_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = tmp_path_factory.mktemp("dp2")
    done = run_cli(["train", *_sets(pydoc_data, ckpt, 2)])
    assert done.returncode == 0, done.stderr[-3000:]
    _model_state_matches(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def dp2(dp2_run: Path) -> dict[int, dict[str, Any]]:
    return _train(dp2_run)


def _model_state_matches(path: Path) -> list[dict[str, int]]:
    """The bytes each rank's engine held after its first step are the per-precision planner formula
    over the parameters that rank holds (fp32: 4 B weights, 4 B gradients, 12 B fp32 partition + Adam
    moments under ZeRO-1). ZeRO pads its flat partitions to an alignment; the tiny model needs none."""
    record = next(r for r in read_metrics(path / "metrics.jsonl") if r["type"] == "model_state")
    cfg = ck.read_config(ck.complete(path)[0])
    layout = Layout(record["tensor"], record["pipeline"], record["data"], zero_stage=cfg.deepspeed.zero_stage)
    for rank, held in enumerate(record["ranks"]):
        local = local_parameters(cfg, layout, rank_coordinates(rank, layout)[0])
        want = state_bytes("fp32", layout.zero_stage, local, layout.data)
        assert held["params"] == want["params"], rank
        assert held["optimizer"] == want["optimizer"], rank
        # measured where the optimizer consumes them: ZeRO-1's reduced fp32 partition
        assert held["grads"] == 4 * local / (layout.data if layout.zero_stage >= 1 else 1), rank
    return list(record["ranks"])


def _same_curve(got: dict[int, dict[str, Any]], want: dict[int, dict[str, Any]]) -> None:
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step]["samples"] == want[step]["samples"], step
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-3), step
    # Not a flat curve: the comparison above would be vacuous if nothing trained.
    assert want[STEPS]["loss"] < want[1]["loss"]


def _killed_then_resumed(data: Path, ckpt: Path, first: dict[str, Any], second: dict[str, Any]) -> str:
    """Run under `first` until SIGKILL after step 4 (checkpoint at 3), then resume under `second`."""
    dead = run_cli(["train", *_sets(data, ckpt, **first)], env={"TOKENSMITH_FAIL_AT_STEP": "4"})
    assert dead.returncode not in (0, 78), dead.stderr[-3000:]
    assert [p.name for p in ck.complete(ckpt)] == ["step-00000003"]
    again = run_cli(["train", *_sets(data, ckpt, **second)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "step-00000003" in again.stderr
    return again.stderr


def test_tensor_parallel_matches_data_parallel_then_resumes_without_it(
    pydoc_data: Path, tmp_path: Path, dp2: dict[int, dict[str, Any]]
) -> None:
    """TP=2 (one replica of two ranks) reproduces DP=2 step by step; killed at step 4, its step-3
    checkpoint resumes on one process without tensor parallelism (TP=2 -> TP=1) on the same curve."""
    stderr = _killed_then_resumed(pydoc_data, tmp_path, {"nproc": 2, "parallelism.tensor": 2}, {"nproc": 1})
    assert "saved by 2 processes, now 1" in stderr
    _same_curve(_train(tmp_path), dp2)
    _model_state_matches(tmp_path)
    assert (tmp_path / "step-00000003" / ck.PORTABLE / "zero" / "blocks.0.attn.qkv.weight").is_dir()
    # Export and eval read the weights of any layout, full and unsharded: the TP=2 step-3 checkpoint (not
    # the final one: no model.safetensors) through its layout-free state, consolidated on read.
    assert not (tmp_path / "step-00000003" / ck.WEIGHTS).exists()
    assert consolidate.source(tmp_path / "step-00000003") == "portable"
    loaded = ck.load_model(tmp_path / "step-00000003")
    assert loaded.model.blocks[0].attn.qkv.weight.shape == (3 * 32, 32)


def test_pipeline_parallel_matches_data_parallel_then_resumes_as_data_parallel(
    pydoc_data: Path, tmp_path: Path, dp2: dict[int, dict[str, Any]]
) -> None:
    """PP=2 (1F1B over 2 micro-batches) reproduces DP=2; killed, it resumes as DP=2 (PP=2 -> DP=2)."""
    _killed_then_resumed(pydoc_data, tmp_path, {"nproc": 2, "parallelism.pipeline": 2}, {"nproc": 2})
    _same_curve(_train(tmp_path), dp2)
    _model_state_matches(tmp_path)
    assert ck.verify(tmp_path / "step-00000006") == []


def test_data_parallel_checkpoint_resumes_as_pipeline(
    pydoc_data: Path, tmp_path: Path, dp2_run: Path, dp2: dict[int, dict[str, Any]]
) -> None:
    """The DP=2 run's step-3 checkpoint (ZeRO-1, no layout-free state: DeepSpeed's ds_to_universal
    converts it) resumes under PP=2 on the same curve (DP=2 -> PP=2)."""
    ckpt = tmp_path / "ck"
    shutil.copytree(dp2_run, ckpt)
    shutil.rmtree(ckpt / "step-00000006")
    again = run_cli(["train", *_sets(pydoc_data, ckpt, 2, **{"parallelism.pipeline": 2})])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "step-00000003" in again.stderr
    _same_curve(_train(ckpt), dp2)


def test_tensor_and_pipeline_on_four_processes_match_data_parallel(
    pydoc_data: Path, tmp_path: Path, dp2_run: Path, dp2: dict[int, dict[str, Any]]
) -> None:
    done = run_cli(
        ["train", *_sets(pydoc_data, tmp_path, 4, **{"parallelism.tensor": 2, "parallelism.pipeline": 2})]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _same_curve(_train(tmp_path), dp2)
    _model_state_matches(tmp_path)
    # The weights export and eval read are the DP=2 run's, parameter by parameter: the final checkpoints'
    # model.safetensors, and the step-3 ones rebuilt on read (TP x PP: portable/; DP ZeRO-1: DeepSpeed's
    # module states).
    for step in ("step-00000006", "step-00000003"):
        ours = ck.load_model(tmp_path / step).model.state_dict()
        theirs = ck.load_model(dp2_run / step).model.state_dict()
        assert ours.keys() == theirs.keys()
        for name, value in theirs.items():
            assert (ours[name] - value).abs().max() < 1e-5, (step, name)
    assert consolidate.source(tmp_path / "step-00000003") == "portable"
    assert consolidate.source(dp2_run / "step-00000003") == "module"


def test_tensor_parallel_layers_match_the_unsharded_model() -> None:
    """Logits and replicated parameters' gradients of the TP=2 model equal the unsharded model's for
    GQA + SwiGLU + ALiBi + biases, GELU + learned positions + LayerNorm, and an MLP width 2 does not
    divide (DeepSpeed splits it unevenly)."""
    worker = Path(__file__).with_name("tp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", _port()]
    done = subprocess.run(
        [*cmd, str(worker)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3, done.stdout
    for line in lines:
        assert line["logits"] < 1e-5 and line["grads"] < 1e-5, line


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize(
    ("nproc", "extra", "reason"),
    [
        (2, {"parallelism.tensor": 4}, "must divide the attention heads (2)"),
        (1, {"parallelism.pipeline": 2}, "world size 1 is not a multiple of tensor x pipeline"),
        (2, {"parallelism.pipeline": 2, "deepspeed.zero_stage": 2}, "cannot be combined with pipeline"),
        (2, {"parallelism.pipeline": 3}, "exceeds the model's 2 layers"),
    ],
)
def test_bad_layouts_exit_78_with_one_line(
    pydoc_data: Path, tmp_path: Path, nproc: int, extra: dict[str, Any], reason: str
) -> None:
    done = run_cli(["train", *_sets(pydoc_data, tmp_path, nproc, **extra)], timeout=120)
    assert done.returncode == 78, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if reason in line]
    assert errors, done.stderr[-2000:]
