"""`tokensmith export --hf`: the exported model loads with transformers and gives our logits (1e-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.trainer.checkpoint import write_model_checkpoint
from tokensmith.trainer.config import TrainerConfig
from tokensmith.trainer.export import choose_architecture
from tokensmith.trainer.model import Transformer

from .conftest import VOCAB

BASE = dict(n_layers=2, d_model=48, n_heads=4, vocab_size=VOCAB, seq_len=32)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("llama", {}),
    ("llama", {"n_kv_heads": 2, "tie_embeddings": False, "bias": True}),
    ("llama", {"activation": "geglu"}),
    ("gpt2", {"norm": "layernorm", "activation": "gelu", "position": "learned", "bias": True}),
    ("gpt2", {"norm": "layernorm", "activation": "relu", "position": "learned", "n_kv_heads": 2}),
    ("gpt-neox", {"norm": "layernorm", "activation": "gelu", "position": "rope", "bias": True}),
]


def _checkpoint(root: Path, model_fields: dict[str, Any], tokenizer: Path | None) -> tuple[Path, Transformer]:
    torch.manual_seed(0)
    cfg = TrainerConfig.model_validate({"model": {**BASE, **model_fields}})
    model = Transformer(cfg.model)
    with torch.no_grad():  # non-trivial norms and biases, so a mapping mistake shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    write_model_checkpoint(root, model, cfg, step=7, tokens=1234, tokenizer=tokenizer)
    return root, model.eval()


@pytest.mark.parametrize(("arch", "fields"), CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(CASES)])
def test_exported_model_matches_native_logits(
    tmp_path: Path, pydoc_data: Path, arch: str, fields: dict[str, Any]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, native = _checkpoint(tmp_path / "ck", fields, pydoc_data / "tokenizer.json")
    out = tmp_path / "hf"
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(root), "--hf", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {arch} model (step 7)" in result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("def f(x):\n    return sorted(x, key=len)", return_tensors="pt").input_ids[:, :32]
    assert tok.decode(ids[0]).startswith("def f(x)")
    with torch.no_grad():
        ours = native(ids)
        theirs = hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()


def test_unexportable_models_are_refused_with_the_reason(tmp_path: Path) -> None:
    root, _ = _checkpoint(tmp_path / "ck", {"position": "alibi"}, None)
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(root), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 2
    assert "alibi positions" in result.output
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(
    ("fields", "arch", "message"),
    [
        ({"norm_position": "post"}, "auto", "post-LN"),
        ({"activation": "gelu"}, "auto", r"rmsnorm \+ gelu"),
        ({}, "gpt2", "--arch gpt2 needs"),
    ],
)
def test_choose_architecture_explains_refusals(fields: dict[str, Any], arch: str, message: str) -> None:
    from tokensmith.planner.arch import ModelConfig

    with pytest.raises(ValueError, match=message):
        choose_architecture(ModelConfig(**{**BASE, **fields}), arch)


def test_export_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    root, _ = _checkpoint(tmp_path / "ck", {}, None)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(root), "--hf", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").read_text() == "mine"
