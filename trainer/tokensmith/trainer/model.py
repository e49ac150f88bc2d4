"""The decoder-only transformer that `tokensmith train` builds from a `ModelConfig`.

One module covers the design choices users weigh: pre-LN (Xiong et al. 2020, arXiv:2002.04745) or
post-LN (Vaswani et al. 2017); RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467) or LayerNorm; GELU,
ReLU, SwiGLU or GeGLU (Shazeer 2020, arXiv:2002.05202); rotary (Su et al. 2021, arXiv:2104.09864),
learned, sinusoidal (Vaswani et al. 2017, §3.5) or ALiBi (Press et al. 2021, arXiv:2108.12409)
positions; grouped-query attention (Ainslie et al. 2023, arXiv:2305.13245); tied or untied
embeddings; dropout. Attention goes through `torch.nn.functional.scaled_dot_product_attention`,
so GPUs get the flash / memory-efficient kernels.

The parameter count of this module equals `tokensmith.planner.arch.param_counts(cfg).total` for every
configuration (tests/trainer/test_model.py checks it); the planner's FLOPs formula counts the same
matrices. Layout choices that the Hugging Face export relies on:
- q, k and v are one fused projection (`attn.qkv`, rows: q heads, then k heads, then v heads);
- a GLU's gate and up projections are one fused matrix (`mlp.fc`, rows: gate, then up);
- rotary embeddings rotate the two halves of each head (the "rotate_half" convention of GPT-NeoX and
  the Hugging Face Llama), not interleaved pairs;
- a tied output head reuses `tok_emb.weight` (there is no separate `lm_head` tensor).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from tokensmith.planner.arch import ModelConfig

INIT_STD = 0.02  # GPT-2 / nanoGPT initialisation


class RMSNorm(nn.Module):
    """x / rms(x) * g, computed in fp32 for stability under bf16 (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables [seq_len, head_dim] for the rotate-half form of RoPE (Su et al. 2021, eq. 34)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().float(), emb.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate [B, H, T, D] by position; cos/sin are [T, D]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def sinusoidal_table(seq_len: int, dim: int) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...) (Vaswani et al. 2017, §3.5)."""
    pos = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(seq_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table.float()


def alibi_slopes(n_heads: int) -> Tensor:
    """Head-specific slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two,
    and for other n the closest power of two plus every other slope of the next one (Press et al. 2021)."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def alibi_bias(n_heads: int, seq_len: int) -> Tensor:
    """Additive attention bias [H, T, T]: -slope x distance below the diagonal, -inf above it."""
    pos = torch.arange(seq_len)
    distance = (pos.view(1, -1) - pos.view(-1, 1)).float()  # j - i, <= 0 on the causal side
    bias = alibi_slopes(n_heads).view(-1, 1, 1) * distance
    return bias.masked_fill(distance > 0, float("-inf"))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        q_out, kv_out = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        self.qkv = nn.Linear(cfg.d_model, q_out + 2 * kv_out, bias=cfg.bias)
        self.o = nn.Linear(q_out, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.recompute_attention = False  # selective recomputation (set by Transformer.set_recompute)
        self.head_start = 0  # first head of this module (tensor parallelism keeps a slice of them)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, bias: Tensor | None) -> Tensor:
        b, t, _ = x.shape
        q_out, kv_out = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([q_out, kv_out, kv_out], dim=-1)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope[0][:t], rope[1][:t]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask = None if bias is None else self._bias(bias, t).to(q.dtype)
        if self.recompute_attention and self.training:
            # Selective recomputation (Korthikanti et al. 2022, §4.2): keep q, k, v; recompute the
            # scores, softmax, dropout and weighted sum in the backward pass instead of storing the
            # [B, H, T, T] softmax and dropout mask. The dropout mask is replayed exactly because
            # torch's checkpoint restores the RNG state.
            y = activation_checkpoint(self._core, q, k, v, mask, use_reentrant=False)
        else:
            y = self._core(q, k, v, mask)
        return self.o(y.transpose(1, 2).reshape(b, t, q_out))

    def _core(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """softmax(q k^T / sqrt(d) + mask) v with dropout on the probabilities (SDPA)."""
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )

    def _bias(self, bias: Tensor, t: int) -> Tensor:
        return bias[self.head_start : self.head_start + self.n_heads, :t, :t]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.activation, self.ffn = cfg.activation, cfg.ffn
        self.fc = nn.Linear(cfg.d_model, (2 if cfg.is_glu else 1) * cfg.ffn, bias=cfg.bias)
        self.proj = nn.Linear(cfg.ffn, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        if self.activation == "swiglu":
            gate, up = h.split(self.ffn, dim=-1)
            h = F.silu(gate) * up
        elif self.activation == "geglu":
            gate, up = h.split(self.ffn, dim=-1)
            h = F.gelu(gate) * up
        elif self.activation == "gelu":
            h = F.gelu(h)
        else:
            h = F.relu(h)
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.norm1, self.norm2 = make_norm(cfg), make_norm(cfg)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, bias: Tensor | None) -> Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), rope, bias))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, rope, bias)))
        return self.norm2(x + self.drop(self.mlp(x)))


class Transformer(nn.Module):
    """`Transformer(cfg)(idx: LongTensor[B, T]) -> logits[B, T, vocab_size]` (T <= cfg.seq_len)."""

    # Non-persistent buffers, present only for the position scheme that uses them.
    rope_cos: Tensor
    rope_sin: Tensor
    sin_pos: Tensor
    alibi: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.activation_checkpointing = False
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.position == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # Post-LN blocks end in a norm already; only pre-LN needs a final one (arch.py counts the same).
        self.norm_f = make_norm(cfg) if cfg.norm_position == "pre" else None
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        # Position tables are buffers (not parameters) and are not saved: they are a function of cfg.
        if cfg.position == "rope":
            cos, sin = rope_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if cfg.position == "sinusoidal":
            self.register_buffer("sin_pos", sinusoidal_table(cfg.seq_len, cfg.d_model), persistent=False)
        if cfg.position == "alibi":
            self.register_buffer("alibi", alibi_bias(cfg.n_heads, cfg.seq_len), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual output projections scaled by 1/sqrt(2 x layers)
        (Radford et al. 2019, §2.3), zero biases, unit norm gains."""
        residual_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if p.dim() < 2 and "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            elif p.dim() < 2:
                nn.init.zeros_(p)
            elif name.endswith(("attn.o.weight", "mlp.proj.weight")):
                nn.init.normal_(p, std=residual_std)
            else:
                nn.init.normal_(p, std=INIT_STD)

    def forward(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.cfg.seq_len:
            raise ValueError(f"sequence of {t} tokens is longer than model.seq_len ({self.cfg.seq_len})")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=idx.device))
        elif self.cfg.position == "sinusoidal":
            x = x + self.sin_pos[:t].to(x.dtype)
        x = self.drop(x)
        rope = (self.rope_cos, self.rope_sin) if self.cfg.position == "rope" else None
        bias = self.alibi if self.cfg.position == "alibi" else None
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = activation_checkpoint(block, x, rope, bias, use_reentrant=False)
            else:
                x = block(x, rope, bias)
        if self.norm_f is not None:
            x = self.norm_f(x)
        return output_logits(self.tok_emb, self.lm_head, x)

    def set_recompute(self, mode: str) -> None:
        """Activation recomputation: "none"; "selective" (attention's softmax/dropout core of every
        block, Korthikanti et al. 2022); "full" (every block's input kept, the block recomputed)."""
        self.activation_checkpointing = mode == "full"
        for block in self.blocks:
            cast(Block, block).attn.recompute_attention = mode == "selective"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def output_logits(tok_emb: nn.Module, lm_head: nn.Module | None, x: Tensor) -> Tensor:
    """The output head: the token table (tied) or `lm_head`; under tensor parallelism both are
    vocabulary-parallel layers that return full logits (parallel/tensor.py)."""
    if lm_head is not None:
        out: Tensor = (
            lm_head(x) if hasattr(lm_head, "mp_group") else F.linear(x, cast(Tensor, lm_head.weight))
        )
        return out
    logits = getattr(tok_emb, "logits", None)
    if logits is not None:
        tied: Tensor = logits(x)
        return tied
    return F.linear(x, cast(Tensor, tok_emb.weight))


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices only, not on norms, biases or the token and
    position embedding tables (as GPT-3, Megatron-LM and nanoGPT do)."""
    return named_decay_groups(model.named_parameters(), weight_decay)


def named_decay_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float
) -> list[dict[str, Any]]:
    """`decay_groups` over (name in the unsharded `Transformer`, parameter) pairs: what a tensor- or
    pipeline-parallel engine holds, named as in the model it was cut from."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in named:
        if not p.requires_grad:
            continue
        is_embedding = name.startswith(("tok_emb.", "pos_emb."))
        (decay if p.dim() >= 2 and not is_embedding else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
