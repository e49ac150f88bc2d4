"""The trainer's nn.Module against the planner's one parameter formula, and its forward pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tokensmith.planner.arch import ModelConfig, param_counts
from tokensmith.trainer.model import Transformer, alibi_slopes, decay_groups

SMALL = dict(n_layers=2, d_model=32, n_heads=4, vocab_size=97, seq_len=16)

VARIANTS: list[dict[str, Any]] = [
    {},
    {"norm_position": "post"},
    {"norm": "layernorm"},
    {"norm": "layernorm", "norm_position": "post", "bias": True},
    {"activation": "gelu"},
    {"activation": "relu", "bias": True},
    {"activation": "geglu"},
    {"activation": "swiglu", "bias": True, "tie_embeddings": False},
    {"position": "learned"},
    {"position": "sinusoidal"},
    {"position": "alibi", "n_heads": 8},
    {"position": "alibi", "n_heads": 2, "d_model": 36},
    {"n_kv_heads": 2},
    {"n_kv_heads": 1, "tie_embeddings": False},
    {"ffn_hidden": 48, "activation": "gelu", "norm": "layernorm", "position": "learned", "bias": True},
    {"dropout": 0.1},
]


def _ids(v: dict[str, Any]) -> str:
    return ",".join(f"{k}={x}" for k, x in v.items()) or "default"


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_parameter_count_matches_planner(variant: dict[str, Any]) -> None:
    cfg = ModelConfig(**{**SMALL, **variant})
    model = Transformer(cfg)
    assert model.num_parameters() == param_counts(cfg).total


@pytest.mark.parametrize("preset", ["tiny", "gpt2-124m"])
def test_parameter_count_matches_planner_for_presets(preset: str) -> None:
    cfg = ModelConfig(preset=preset)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert model.num_parameters() == param_counts(cfg).total


def test_gpt2_124m_is_the_published_size() -> None:
    # 124,439,808 with the 50,257 vocabulary; the preset pads it to 50,304 (+47 x 768).
    cfg = ModelConfig(preset="gpt2-124m")
    assert param_counts(cfg).total == 124_439_808 + (50304 - 50257) * 768


@pytest.mark.parametrize("variant", VARIANTS[:12], ids=_ids)
def test_forward_shape_and_causality(variant: dict[str, Any]) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(**{**SMALL, **variant})
    model = Transformer(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    logits = model(idx)
    assert logits.shape == (2, 12, cfg.vocab_size)
    assert torch.isfinite(logits).all()
    # Changing a later token never changes earlier logits.
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % cfg.vocab_size
    assert torch.allclose(model(changed)[:, :8], logits[:, :8], atol=1e-5)
    assert not torch.allclose(model(changed)[:, 8:], logits[:, 8:], atol=1e-5)


def test_too_long_sequence_is_refused() -> None:
    model = Transformer(ModelConfig(**SMALL))
    with pytest.raises(ValueError, match=r"longer than model\.seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_alibi_slopes_follow_the_paper() -> None:
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert len(alibi_slopes(6)) == 6


def test_weight_decay_only_on_matrices() -> None:
    cfg = ModelConfig(**{**SMALL, "norm": "layernorm", "bias": True, "position": "learned"})
    model = Transformer(cfg)
    decay, no_decay = decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed and all(n.endswith("weight") and "norm" not in n for n in decayed)
    assert "tok_emb.weight" not in decayed and "pos_emb.weight" not in decayed
    assert "blocks.0.attn.qkv.weight" in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_activation_recomputation_gives_the_same_gradients(mode: str) -> None:
    """Full (every block) and selective (attention's softmax/dropout core) recomputation change what is
    stored, not the numbers; with dropout on, the replayed dropout masks must match too."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**SMALL, "dropout": 0.1})
    model = Transformer(cfg).train()
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    torch.manual_seed(1)
    model(idx).sum().backward()
    plain = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.set_recompute(mode)
    assert model.activation_checkpointing == (mode == "full")
    torch.manual_seed(1)
    model(idx).sum().backward()
    again = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, again, strict=True))
