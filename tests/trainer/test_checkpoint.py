"""Checkpoint protocol on the filesystem: manifest, latest, keep-K, torn and corrupt detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tokensmith.core.errors import TokensmithError
from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.model import Transformer


def _fake(root: Path, step: int, world: int = 2, finish: bool = True) -> Path:
    """A checkpoint as `world` ranks would leave it (two shard files per rank)."""
    path = root / ck.checkpoint_name(step)
    (path / "ds").mkdir(parents=True)
    for rank in range(world):
        (path / "ds" / f"zero_pp_rank_{rank}_optim_states.pt").write_bytes(bytes([rank]) * (100 + step))
    (path / ck.STATE).write_text(f'{{"step": {step}, "tokens": 0}}')
    if finish:
        for rank in range(world):
            ck.write_rank_marker(path, rank, world)
        ck.finalize(path, world, step)
        ck.set_latest(root, path.name)
    return path


def test_manifest_lists_every_file_with_size_and_checksum(tmp_path: Path) -> None:
    path = _fake(tmp_path, 10)
    import json

    manifest = json.loads((path / ck.MANIFEST).read_text())
    assert set(manifest["files"]) == {
        "ds/zero_pp_rank_0_optim_states.pt",
        "ds/zero_pp_rank_1_optim_states.pt",
        ck.STATE,
    }
    assert manifest["files"]["ds/zero_pp_rank_0_optim_states.pt"]["size"] == 110
    assert len(manifest["files"][ck.STATE]["sha256"]) == 64
    assert (tmp_path / ck.LATEST).read_text().strip() == "step-00000010"
    assert ck.verify(path) == []


def test_finalize_refuses_when_a_rank_did_not_finish(tmp_path: Path) -> None:
    path = _fake(tmp_path, 5, finish=False)
    ck.write_rank_marker(path, 0, 2)
    with pytest.raises(RuntimeError, match="rank 1 did not finish"):
        ck.finalize(path, 2, 5)
    assert not (path / ck.MANIFEST).exists()


def test_torn_and_corrupt_checkpoints_are_detected(tmp_path: Path) -> None:
    good = _fake(tmp_path, 10)
    torn = _fake(tmp_path, 20, finish=False)
    truncated = _fake(tmp_path, 30)
    with (truncated / "ds" / "zero_pp_rank_1_optim_states.pt").open("r+b") as f:
        f.truncate(7)
    flipped = _fake(tmp_path, 40)
    data = (flipped / "ds" / "zero_pp_rank_0_optim_states.pt").read_bytes()
    (flipped / "ds" / "zero_pp_rank_0_optim_states.pt").write_bytes(b"\xff" + data[1:])
    assert "no manifest.json" in ck.verify(torn)[0]
    assert "has 7 bytes" in ck.verify(truncated)[0]
    assert ck.verify(flipped, checksums=False) == []  # same size: only the checksum sees it
    assert "sha256" in ck.verify(flipped)[0]
    # Each rank checks its share; together they cover every file.
    shares = [ck.verify(flipped, True, r, 3) for r in range(3)]
    assert sum(len(s) for s in shares) == 1
    assert ck.verify(good) == []
    assert [p.name for p in ck.candidates(tmp_path)][:2] == ["step-00000040", "step-00000030"]


def test_prune_keeps_the_newest_k_and_old_torn_ones_go(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        _fake(tmp_path, step)
    _fake(tmp_path, 25, finish=False)  # torn, older than the newest complete one
    _fake(tmp_path, 50, finish=False)  # may still be being written
    gone = {p.name for p in ck.prune(tmp_path, keep=2)}
    assert gone == {"step-00000010", "step-00000020", "step-00000025"}
    assert {p.name for p in ck.candidates(tmp_path)} == {"step-00000030", "step-00000040", "step-00000050"}


def test_load_model_follows_latest_and_rejects_empty_dirs(tmp_path: Path) -> None:
    cfg = TrainerConfig.model_validate({"model": {"preset": "tiny", "position": "learned"}})
    torch.manual_seed(0)
    model = Transformer(cfg.model).eval()
    ck.write_model_checkpoint(tmp_path / "ck", model, cfg, step=3, tokens=99)
    newer = ck.write_model_checkpoint(tmp_path / "ck", model, cfg, step=9, tokens=300)
    loaded = ck.load_model(tmp_path / "ck")
    assert loaded.path == newer and loaded.step == 9 and loaded.tokens == 300
    assert not loaded.model.training
    assert loaded.config.model == cfg.model
    x = torch.randint(0, cfg.model.vocab_size, (1, 16))
    assert torch.equal(loaded.model(x), model(x))
    assert ck.load_model(tmp_path / "ck" / "step-00000003").step == 3
    with pytest.raises(TokensmithError, match="holds no complete checkpoint"):
        ck.load_model(tmp_path)
    with pytest.raises(TokensmithError, match="does not exist"):
        ck.load_model(tmp_path / "nope")
