"""Post-save verification catches a corrupted tensor that the checksums cannot (flipped bytes in the
weights file whose checksum is then rewritten), and passes an intact checkpoint."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer import postsave
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.model import Transformer


def _checkpoint(tmp_path: Path) -> tuple[Path, TrainerConfig, Transformer, torch.Tensor]:
    cfg = TrainerConfig.model_validate({"model": {"preset": "tiny", "d_model": 64, "n_layers": 2}})
    torch.manual_seed(0)
    model = Transformer(cfg.model).eval()
    path = ck.write_model_checkpoint(tmp_path / "ck", model, cfg, step=7)
    rows = torch.randint(0, cfg.model.vocab_size, (4, 33))
    return path, cfg, model, rows


def _flip_tensor_bytes(weights: Path, name: str) -> None:
    """Overwrite the first 256 bytes of tensor `name`'s data in a safetensors file (same size)."""
    raw = bytearray(weights.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    start = 8 + header_len + header[name]["data_offsets"][0]
    raw[start : start + 256] = b"\x7f" * 256  # float32 0x7f7f7f7f: about 3.4e38
    weights.write_bytes(bytes(raw))


def test_intact_checkpoint_passes(tmp_path: Path) -> None:
    path, cfg, model, rows = _checkpoint(tmp_path)
    in_memory = postsave.batch_loss(model, rows)
    assert postsave.verify(path, cfg.model, rows, in_memory, "fp32") is None


def test_corrupted_tensor_with_rewritten_checksum_is_caught(tmp_path: Path) -> None:
    path, cfg, model, rows = _checkpoint(tmp_path)
    in_memory = postsave.batch_loss(model, rows)
    name = next(k for k in model.state_dict() if k.endswith("weight") and "blocks.0" in k)
    _flip_tensor_bytes(path / ck.WEIGHTS, name)
    ck.write_rank_marker(path, 0, 1)  # the corruption happened before hashing: checksums agree
    ck.finalize(path, 1, 7)
    assert ck.verify(path) == []
    problem = postsave.verify(path, cfg.model, rows, in_memory, "fp32")
    assert problem is not None and "corrupted tensors" in problem


def test_unreadable_weights_are_a_problem_too(tmp_path: Path) -> None:
    path, cfg, _, rows = _checkpoint(tmp_path)
    (path / ck.WEIGHTS).write_bytes(b"\x00" * 64)
    problem = postsave.verify(path, cfg.model, rows, 1.0, "fp32")
    assert problem is not None and "cannot be loaded" in problem


def test_tolerance_depends_on_the_stored_precision() -> None:
    assert postsave.compare(3.0, 3.0001, "fp32") is None
    assert postsave.compare(3.0, 3.01, "fp32") is not None
    assert postsave.compare(3.0, 3.01, "bf16") is None
    assert postsave.compare(3.0, float("nan"), "bf16") is not None
