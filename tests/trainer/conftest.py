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


def write_pydoc_shards(out: Path, vocab_size: int = VOCAB) -> Path:
    """Train a small byte-level BPE on pydoc_data's topics and write train/valid shards with it, in the
    format `tokensmith curate` writes (datatrove .ds files + shards.json + tokenizer.json)."""
    import pydoc_data.topics as topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tokensmith.trainer.data.shards import write_manifest, write_shard

    texts = [topics.topics[k] for k in sorted(topics.topics)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    eos = tokenizer.token_to_id("<|endoftext|>")
    docs = [[*enc.ids, eos] for enc in tokenizer.encode_batch(texts)]
    valid = [d for i, d in enumerate(docs) if i % 20 == 7]  # every 20th document, spread over topics
    train = [d for i, d in enumerate(docs) if i % 20 != 7]
    for split, part in (("train", train), ("valid", valid)):
        directory = out / split
        directory.mkdir(exist_ok=True)
        write_shard(directory, "000_pydoc.ds", part, vocab_size, "pydoc-bpe")
        write_manifest(
            directory, ["000_pydoc.ds"], vocab_size, eos, tokenizer="../tokenizer.json", split=split
        )
    return out


@pytest.fixture(scope="session")
def pydoc_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pydoc_shards(tmp_path_factory.mktemp("pydoc"))


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
    args: list[str], env: dict[str, str] | None = None, timeout: float = 240
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
