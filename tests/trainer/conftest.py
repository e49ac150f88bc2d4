"""Fixtures: real English text (CPython's pydoc_data) as token shards, and runners for the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

VOCAB = 512


def curate_pydoc(out: Path, vocab_size: int = VOCAB) -> Path:
    """CPython's pydoc_data topics (real English reference text) curated by `tokensmith curate` into
    train/valid token shards with a small byte-level BPE. The prose-quality rules (Gopher, C4, FineWeb)
    are skipped: they are tuned for web pages and drop most of this code-heavy documentation."""
    import pydoc_data.topics as topics

    out.mkdir(parents=True, exist_ok=True)
    source = out / "pydoc.jsonl"
    source.write_text(
        "".join(json.dumps({"id": k, "text": topics.topics[k]}) + "\n" for k in sorted(topics.topics))
    )
    args = [source, "--out", out / "curated", "--vocab-size", vocab_size, "--valid-fraction", 0.08]
    args += ["--word-tokenizer", "regex", "--no-progress"]
    for step in ("language", "gopher_quality", "gopher_repetition", "c4", "fineweb"):
        args += ["--skip", step]
    done = run_cli(["curate", *map(str, args)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out / "curated"


@pytest.fixture(scope="session")
def pydoc_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return curate_pydoc(tmp_path_factory.mktemp("pydoc"))


def tiny_sets(data: Path, ckpt: Path, **extra: Any) -> list[str]:
    """--set arguments for a tiny, fast CPU run on `data`."""
    values: dict[str, Any] = {
        "data.train_path": data / "train",
        "data.valid_path": data / "valid",
        "checkpoint.dir": ckpt,
        "model.vocab_size": VOCAB,
        "model.seq_len": 32,
        "model.d_model": 32,
        "model.n_heads": 2,
        "model.n_kv_heads": 2,
        "train.micro_batch": 4,
        "train.global_batch_tokens": 256,
        "train.warmup_steps": 2,
        "train.log_every_steps": 1,
        "train.precision": "fp32",
        "deepspeed.zero_stage": 2,
    }
    values.update(extra)
    out: list[str] = []
    for key, value in values.items():
        out += ["--set", f"{key}={value}"]
    return out


def run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 480
) -> subprocess.CompletedProcess[str]:
    """`tokensmith ARGS` in a fresh interpreter (DeepSpeed and torchrun want their own process)."""
    full_env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tokensmith.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
