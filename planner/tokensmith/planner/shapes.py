"""Parameter target -> a concrete decoder-only architecture (Llama-style: pre-RMSNorm, SwiGLU, RoPE).

Aspect ratio: published models keep d_model / n_layers near 128 from about 1B parameters up (Llama 2
7B 4096/32 and 13B 5120/40, GPT-3 175B 12288/96, Touvron et al. 2023 Table 1, Brown et al. 2020
Table 2.1) and lower for small models (GPT-2 small 768/12 = 64, Chinchilla's small models about 50,
Hoffmann et al. 2022 Table A9); Kaplan et al. 2020 (Fig. 5) found loss flat within a few percent over
a wide range of aspect ratios, so the exact ratio matters little and is chosen for familiarity.
Head dimension 128 (64 below about 1B parameters), the SwiGLU width 8/3 d rounded up to 256 as in
Llama, and grouped-query attention with 8 KV heads from 30B up (as Llama 2 70B).

Mixture of experts (`moe`: experts, experts_per_token, shared_experts): every block is a MoE block
(Mixtral's layout) whose experts have the dense SwiGLU width divided by k/2, rounded to 64: a top-2
model gets Mixtral's full-width experts, a top-8 one DeepSeekMoE's fine-grained quarter-width experts
(Dai et al. 2024, arXiv:2401.06066, keep the activated width of a top-2 model while splitting experts).
The target is the total, the non-embedding or the active count (`count`).

Every count comes from `tokensmith.planner.arch` (the one implementation); this module only picks the
shape whose exact count is closest to the target.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from tokensmith.planner.arch import ModelConfig, default_ffn_hidden, param_counts

Count = Literal["total", "non_embedding", "active"]

GQA_FROM_PARAMS = 30e9
GQA_KV_HEADS = 8


def target_aspect(params: float) -> float:
    """d_model / n_layers to aim at: 64 at 100M, rising log-linearly to 128 at 3B and above."""
    lo, hi = math.log(1e8), math.log(3e9)
    x = min(max((math.log(max(params, 1.0)) - lo) / (hi - lo), 0.0), 1.0)
    return 64.0 * 2.0**x


def _head_dim(params: float) -> int:
    return 128 if params >= 1e9 else 64


def _config(
    n_layers: int,
    d_model: int,
    head_dim: int,
    params: float,
    vocab: int,
    seq: int,
    moe: dict[str, Any] | None = None,
) -> ModelConfig:
    n_heads = max(1, d_model // head_dim)
    kv = GQA_KV_HEADS if params >= GQA_FROM_PARAMS and n_heads % GQA_KV_HEADS == 0 else n_heads
    extra: dict[str, Any] = {}
    if moe and moe.get("experts"):
        k = int(moe.get("experts_per_token") or 2)
        dense = default_ffn_hidden(d_model, "swiglu", multiple_of=256 if d_model >= 1024 else 64)
        extra = dict(
            experts=int(moe["experts"]),
            experts_per_token=k,
            shared_experts=int(moe.get("shared_experts") or 0),
            expert_ffn_hidden=max(64, 64 * round(dense / max(1.0, k / 2.0) / 64)),
        )
    return ModelConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=kv,
        ffn_hidden=default_ffn_hidden(d_model, "swiglu", multiple_of=256 if d_model >= 1024 else 64),
        vocab_size=vocab,
        seq_len=seq,
        norm="rmsnorm",
        activation="swiglu",
        position="rope",
        tie_embeddings=False,
        bias=False,
        **extra,
    )


def shape_for_params(
    params: float,
    *,
    vocab_size: int = 32000,
    seq_len: int = 4096,
    non_embedding: bool = False,
    moe: dict[str, Any] | None = None,
    count: Count | None = None,
) -> ModelConfig:
    """The architecture whose exact parameter count (total, or non-embedding when `non_embedding`)
    is closest to `params`, preferring the aspect ratio of published models.

    For each depth the width is solved from the dominant 12 d^2-per-layer term (8 d^2 SwiGLU MLP plus
    4 d^2 attention), rounded to the two nearest multiples of the head dimension (a multiple of 8
    heads under GQA), and every candidate is counted exactly; the score is the relative count error
    weighted thirty times the log distance of its aspect ratio from `target_aspect`.
    """
    count = count or ("non_embedding" if non_embedding else "total")
    non_embedding = count == "non_embedding"
    if not (params > 0 and math.isfinite(params)):
        raise ValueError(f"params must be a positive number, got {params!r}")
    if params < 1e5:
        raise ValueError(f"a {params:.3g}-parameter model is too small to shape (at least 100k)")
    head = _head_dim(params)
    # Head counts published models use: a multiple of 8 under GQA (8 KV groups), of 4 from 3B, even
    # from 1B (tensor parallelism splits heads evenly).
    heads_multiple = 8 if params >= GQA_FROM_PARAMS else 4 if params >= 3e9 else 2 if params >= 1e9 else 1
    step = head * heads_multiple
    aspect = target_aspect(params)
    best: tuple[float, ModelConfig] | None = None
    emb_per_d = 0 if non_embedding else 2 * vocab_size
    # Per-layer parameters per d^2 of this family (about 12 for MHA, about 10 under GQA), measured on
    # a probe of the expected width so that the solve below lands next to the exact count.
    d_probe = max(step, round((params * aspect * aspect / 12.0) ** (1.0 / 3.0) / step) * step)
    probe = _config(1, d_probe, head, params, vocab_size, seq_len, moe)
    per_layer = param_counts(probe).active if count == "active" else param_counts(probe).non_embedding
    per_layer -= param_counts(probe).embedding if count == "active" else 0
    coeff = per_layer / d_probe**2
    # Depths within a factor of two of the one the target aspect ratio implies (coeff L (aspect L)^2).
    guess = (params / (coeff * aspect * aspect)) ** (1.0 / 3.0)
    for n_layers in range(max(1, math.floor(guess / 2)), min(256, math.ceil(2 * guess) + 2) + 1):
        # coeff L d^2 + emb_per_d d = params  ->  d
        a, b = coeff * n_layers, float(emb_per_d)
        d_cont = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
        if d_cont / n_layers < aspect / 4:  # far too deep and narrow; deeper only gets worse
            break
        lower = math.floor(d_cont / step) * step
        for d_model in {max(step, lower), lower + step}:
            cfg = _config(n_layers, d_model, head, params, vocab_size, seq_len, moe)
            got = _count(cfg, count)
            score = 30.0 * abs(math.log(got / params)) + abs(math.log((d_model / n_layers) / aspect))
            if best is None or score < best[0]:
                best = (score, cfg)
    if best is None or 30.0 * abs(math.log(_count(best[1], count) / params)) > 3.0:
        raise ValueError(
            f"no decoder shape of 1 to 256 layers has about {params:.3g} parameters with a "
            f"{vocab_size}-token vocabulary (its embeddings alone take about {2 * vocab_size * step:.3g}); "
            "change --params (or --compute) or --vocab-size"
        )
    if moe and moe.get("experts"):
        return best[1]  # experts' width follows the dense width; the layer count absorbs the rest
    return _tune_ffn(best[1], params, count)


def _tune_ffn(cfg: ModelConfig, params: float, non_embedding: Count) -> ModelConfig:
    """Close the last few percent of the count with the MLP width (multiples of 64 within 10% of the
    default; published models vary it the same way, e.g. Llama 3's ffn multiplier)."""
    if abs(_count(cfg, non_embedding) / params - 1.0) < 0.005:
        return cfg
    base = cfg.ffn
    best = cfg
    for width in range(64 * round(0.9 * base / 64), 64 * round(1.1 * base / 64) + 1, 64):
        trial = cfg.model_copy(update={"ffn_hidden": width})
        if abs(_count(trial, non_embedding) - params) < abs(_count(best, non_embedding) - params):
            best = trial
    return best


def _count(cfg: ModelConfig, count: Count) -> int:
    counts = param_counts(cfg)
    return {"total": counts.total, "non_embedding": counts.non_embedding, "active": counts.active}[count]
