"""Consolidated weights only every Mth checkpoint and at the end (`checkpoint.consolidate_every`), and
consolidate on read: eval and export of a checkpoint without `model.safetensors` see bit-identical
weights, rebuilt from DeepSpeed's files (ZeRO 0-3) with torch alone, DeepSpeed not importable."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tokensmith.core.errors import TokensmithError
from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer import consolidate, postsave
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.model import Transformer

from .conftest import VOCAB, read_metrics, run_cli, tiny_sets


@pytest.mark.parametrize(
    ("index", "every", "trigger", "want"),
    [
        (1, 0, "schedule", False),  # default: only the final checkpoint
        (7, 0, "schedule", False),
        (7, 0, "final", True),
        (3, 3, "schedule", True),
        (6, 3, "schedule", True),
        (4, 3, "schedule", False),
        (1, 1, "schedule", True),  # every checkpoint (the behaviour before the knob)
        (3, 3, "sigterm", False),  # the SIGTERM save must fit the grace period
        (2, 0, "sigterm", False),
    ],
)
def test_which_checkpoints_consolidate(index: int, every: int, trigger: str, want: bool) -> None:
    assert consolidate.wanted(index, every, trigger) is want


def test_a_checkpoint_without_any_weights_is_one_clear_error(tmp_path: Path) -> None:
    cfg = TrainerConfig.model_validate({"model": {"preset": "tiny", "d_model": 32, "n_layers": 1}})
    path = ck.write_model_checkpoint(tmp_path, Transformer(cfg.model), cfg, step=1)
    (path / ck.WEIGHTS).unlink()
    with pytest.raises(TokensmithError, match="holds no weights"):
        ck.load_model(path)


def test_portable_state_is_read_when_there_is_no_safetensors(tmp_path: Path) -> None:
    """The layout-free state of a TP/PP run ({"param": fp32} per parameter) is a complete source."""
    cfg = TrainerConfig.model_validate({"model": {"preset": "tiny", "d_model": 32, "n_layers": 1}})
    torch.manual_seed(0)
    model = Transformer(cfg.model)
    path = ck.write_model_checkpoint(tmp_path, model, cfg, step=1)
    (path / ck.WEIGHTS).unlink()
    for name, value in model.state_dict().items():
        (path / ck.PORTABLE / "zero" / name).mkdir(parents=True)
        torch.save({"param": value.float()}, path / ck.PORTABLE / "zero" / name / "fp32.pt")
    assert consolidate.source(path) == "portable"
    loaded = ck.load_model(path).model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(loaded[name], value), name


# Runs in a fresh interpreter where `import deepspeed` fails: for each checkpoint, the weights the
# readers see (eval's loader and the export) with and without model.safetensors.
_READER = r"""
import json, shutil, sys, tempfile
from pathlib import Path
sys.modules["deepspeed"] = None  # any import of deepspeed now raises
import torch
from safetensors.torch import load_file
from tokensmith.trainer import checkpoint as ck, consolidate
from tokensmith.trainer.export import export_checkpoint
from tokensmith.evaluator.checkpoint import load_for_eval

root, out = Path(sys.argv[1]), {}
for path in ck.complete(root):
    entry = {"consolidated": ck.read_manifest(path)["consolidated"], "source": consolidate.source(path)}
    model = load_for_eval(path).forward  # the evaluator's loader: manifest verified, weights rebuilt
    entry["eval_ok"] = bool(torch.isfinite(model(torch.arange(8)[None])).all())
    if (path / ck.WEIGHTS).is_file():
        saved = load_file(str(path / ck.WEIGHTS))
        bare = Path(tempfile.mkdtemp()) / path.name
        shutil.copytree(path, bare, ignore=shutil.ignore_patterns(ck.WEIGHTS))
        entry["bare_source"] = consolidate.source(bare)
        rebuilt = ck.model_from_weights(bare, ck.read_config(bare).model).state_dict()
        entry["identical"] = sorted(saved) == sorted(rebuilt) and all(
            torch.equal(saved[k], rebuilt[k]) and saved[k].dtype == rebuilt[k].dtype for k in saved
        )
        ours = load_file(str(export_checkpoint(bare, bare.parent / "hf-bare").path / ck.WEIGHTS))
        theirs = load_file(str(export_checkpoint(path, bare.parent / "hf").path / ck.WEIGHTS))
        entry["export_identical"] = sorted(ours) == sorted(theirs) and all(
            torch.equal(ours[k], theirs[k]) for k in ours
        )
    out[path.name] = entry
print(json.dumps({"deepspeed_loaded": "deepspeed" in sys.modules and sys.modules["deepspeed"] is not None,
                  "checkpoints": out}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_consolidate_every_and_consolidate_on_read(pydoc_data: Path, tmp_path: Path, stage: int) -> None:
    """Two ranks, a checkpoint every step, consolidate_every 3: model.safetensors at the 3rd checkpoint
    and the final (4th) only; every checkpoint (post-save verification included) reads back, and the
    rebuilt weights of a consolidated one equal its model.safetensors bit for bit. Saves are
    asynchronous (the default) and stage into buffers allocated after the first step."""
    ckpt = tmp_path / "ck"
    sets = tiny_sets(
        pydoc_data,
        ckpt,
        **{
            "train.max_steps": 4,
            "checkpoint.every_steps": 1,
            "checkpoint.keep": 4,
            "checkpoint.consolidate_every": 3,
            "health.verify_after_save": "true",
            "deepspeed.zero_stage": stage,
        },
    )
    done = run_cli(["train", *sets, "--nproc", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    # GPT-2 initialisation under every stage (ZeRO-3's zero.Init once left nn.Embedding's N(0, 1): 32)
    first = next(r for r in read_metrics(ckpt / "metrics.jsonl") if r["type"] == "train")
    assert first["step"] == 1 and abs(first["loss"] - math.log(VOCAB)) < 0.05, first
    records = [r for r in read_metrics(ckpt / "metrics.jsonl") if r["type"] == "checkpoint"]
    assert [(r["step"], r["consolidated"], r["healthy"]) for r in records] == [
        (1, False, True),
        (2, False, True),
        (3, True, True),
        (4, True, True),
    ]
    assert [(ckpt / ck.checkpoint_name(s) / ck.WEIGHTS).is_file() for s in (1, 2, 3, 4)] == [0, 0, 1, 1]
    # The async staging buffers were allocated after step 1, before the first save (which waited for
    # them): no save allocated staging memory but the first consolidated one (rank 0 stages the weights
    # into buffers of their own, reused by the next consolidated save).
    staging = [r for r in read_metrics(ckpt / "metrics.jsonl") if r["type"] == "staging"]
    assert [r["step"] for r in staging] == [1] and not (ckpt / ".staging-probe").exists()
    assert [r["staging_alloc_bytes"] == 0 for r in records] == [True, True, False, True]
    assert ck.read_state(ckpt / "step-00000002")["checkpoints"] == 2
    _corrupted_shard_is_caught(ckpt / "step-00000001", tmp_path / "corrupt")
    reader = subprocess.run(
        [sys.executable, "-c", _READER, str(ckpt)], capture_output=True, text=True, timeout=300
    )
    assert reader.returncode == 0, reader.stderr[-3000:]
    result = json.loads(reader.stdout.strip().splitlines()[-1])
    assert result["deepspeed_loaded"] is False
    native = "zero3" if stage == 3 else "module"
    seen = result["checkpoints"]
    assert sorted(seen) == [ck.checkpoint_name(s) for s in (1, 2, 3, 4)]
    for name in ("step-00000001", "step-00000002"):
        assert seen[name] == {"consolidated": False, "source": native, "eval_ok": True}
    for name in ("step-00000003", "step-00000004"):
        assert seen[name]["consolidated"] is True and seen[name]["source"] == "safetensors"
        assert seen[name]["bare_source"] == native and seen[name]["eval_ok"] is True
        assert seen[name]["identical"] is True, name
        assert seen[name]["export_identical"] is True, name


def _corrupted_shard_is_caught(step: Path, work: Path) -> None:
    """Flipped bytes in the DeepSpeed file the weights are rebuilt from (the unpartitioned module under
    ZeRO 0-2, rank 0's fp32 partition under ZeRO-3), its checksum then rewritten: the manifest still
    verifies, post-save verification does not."""
    copy = work / step.name
    shutil.copytree(step, copy)
    cfg = ck.read_config(copy)
    rows = torch.randint(
        0, cfg.model.vocab_size, (4, cfg.model.seq_len + 1), generator=torch.Generator().manual_seed(0)
    )
    in_memory = postsave.batch_loss(ck.load_model(copy).model, rows)
    assert postsave.verify(copy, cfg.model, rows, in_memory, "fp32") is None
    if consolidate.source(copy) == "zero3":
        rel = "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt"
        tensor = consolidate.load_restricted(copy / rel)["optimizer_state_dict"]["fp32_flat_groups"][0]
    else:
        rel = "ds/mp_rank_00_model_states.pt"
        tensor = consolidate.load_restricted(copy / rel)["module"]["tok_emb.weight"]
    raw = bytearray((copy / rel).read_bytes())
    at = raw.find(tensor.reshape(-1)[:256].numpy().tobytes())  # torch's zip stores tensors uncompressed
    assert at > 0
    raw[at : at + 1024] = b"\x7f" * 1024  # float32 0x7f7f7f7f: about 3.4e38
    (copy / rel).write_bytes(bytes(raw))
    manifest = ck.read_manifest(copy)
    manifest["files"][rel] = ck.file_digest(copy / rel)
    (copy / ck.MANIFEST).write_text(json.dumps(manifest))
    assert ck.verify(copy) == []
    problem = postsave.verify(copy, cfg.model, rows, in_memory, "fp32")
    assert problem is not None and "holds corrupted tensors" in problem, problem


def test_copy_is_self_contained(tmp_path: Path) -> None:
    """What the reader test relies on: a checkpoint copied without model.safetensors still resolves."""
    cfg = TrainerConfig.model_validate({"model": {"preset": "tiny", "d_model": 32, "n_layers": 1}})
    path = ck.write_model_checkpoint(tmp_path / "a", Transformer(cfg.model), cfg, step=2)
    copy = tmp_path / "b" / path.name
    shutil.copytree(path, copy)
    assert ck.resolve(copy) == copy and ck.read_manifest(copy)["consolidated"] is True
