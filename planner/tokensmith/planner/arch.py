"""Decoder-only transformer architecture: the one description, parameter count and FLOPs count
used by the planner (to size and cost a run), the trainer (to build the model and report MFU)
and the operator (the `model` section of an `LLMTrainingJob`).

Conventions (stated once, here):
- Parameters are counted exactly for the model the trainer builds: attention and MLP matrices,
  their biases when `bias` is on, every norm's weights (LayerNorm also has a bias; pre-LN models
  have a final norm before the head, post-LN ones do not), the token
  embedding, a learned position table when `position == "learned"`, and the output head when it is
  not tied to the token embedding.
- "Embedding parameters" are the token embedding, a learned position table and an untied output
  head; "non-embedding parameters" are all the others. Kaplan et al. 2020 (arXiv:2001.08361, §2.1)
  fit their laws on the non-embedding count.
- Training FLOPs per token follow the PaLM MFU convention (Chowdhery et al. 2022, arXiv:2204.02311,
  Appendix B): 6 x (matmul parameters, output projection included) + 12 x n_layers x d_attn x seq_len,
  i.e. forward 2 FLOPs per multiply-add, backward twice the forward, and the attention score
  (QK^T) and attention-over-values (AV) products counted over the full sequence (no causal
  discount, as Megatron-LM and PaLM count them). Activation recomputation adds one more forward
  pass to the *hardware* FLOPs but not to the *model* FLOPs that MFU is defined on.
- Mixture of experts (`experts > 0`): every `moe_layer_freq`-th block after the first
  `dense_layers` replaces its MLP by `experts` routed experts (each an MLP of width
  `expert_ffn_hidden`), `shared_experts` always-active experts of the same width, and a bias-free
  router (d_model x experts). Total parameters count every expert; *active* parameters (the MoE
  papers' convention: Mixtral's 12.9B of 46.7B, DeepSeek-V3's 37B of 671B) count the `experts_per_token`
  routed experts a token uses, the shared experts and the router. FLOPs per token are those of the
  active parameters (6 x active matmul parameters + the attention term): the routed experts' GEMMs
  see each token k times, no expert sees it otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Norm = Literal["rmsnorm", "layernorm"]
NormPosition = Literal["pre", "post"]
Activation = Literal["gelu", "relu", "swiglu", "geglu"]
Position = Literal["rope", "learned", "sinusoidal", "alibi"]

GLU_ACTIVATIONS = ("swiglu", "geglu")


class ModelConfig(BaseModel):
    """Architecture of a decoder-only transformer.

    Give a `preset` and/or explicit fields; explicit fields override the preset's. Fields left out
    (and not set by a preset) take the defaults below, which describe the `tiny` CPU model.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    preset: str | None = Field(None, description="Named architecture to start from (see `PRESETS`).")
    n_layers: int = Field(2, ge=1, description="Transformer blocks.")
    d_model: int = Field(64, ge=1, description="Hidden size.")
    n_heads: int = Field(4, ge=1, description="Attention (query) heads.")
    n_kv_heads: int | None = Field(
        None, ge=1, description="Key/value heads (grouped-query attention); default: n_heads."
    )
    ffn_hidden: int | None = Field(
        None,
        ge=1,
        description="MLP inner width; default: 4 x d_model, or 8/3 x d_model rounded up to 64 for GLUs.",
    )
    vocab_size: int = Field(4096, ge=2, description="Vocabulary size (the tokenizer's).")
    seq_len: int = Field(128, ge=1, description="Context length in tokens.")
    norm: Norm = "rmsnorm"
    norm_position: NormPosition = Field("pre", description="pre-LN (default, stable) or post-LN (original).")
    norm_eps: float = Field(1e-5, gt=0)
    activation: Activation = "swiglu"
    position: Position = "rope"
    rope_theta: float = Field(10000.0, gt=0)
    tie_embeddings: bool = True
    bias: bool = Field(False, description="Biases in the attention and MLP projections.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    experts: int = Field(0, ge=0, description="Routed experts per MoE layer (0: a dense model).")
    experts_per_token: int | None = Field(
        None, ge=1, description="Routed experts each token uses (top-k); default 2 when experts > 0."
    )
    shared_experts: int = Field(0, ge=0, description="Always-active experts per MoE layer (DeepSeekMoE).")
    expert_ffn_hidden: int | None = Field(
        None, ge=1, description="MLP width of one expert; default: ffn_hidden."
    )
    moe_layer_freq: int = Field(1, ge=1, description="Every k-th block (after dense_layers) is MoE.")
    dense_layers: int = Field(0, ge=0, description="Leading blocks that keep a dense MLP (DeepSeek-V3: 3).")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            name = str(data["preset"]).lower()
            if name not in PRESETS:
                raise ValueError(
                    f"unknown model preset {data['preset']!r}; known presets: {', '.join(PRESETS)}"
                )
            merged = dict(PRESETS[name])
            merged.update({k: v for k, v in data.items() if v is not None})
            merged["preset"] = name
            return merged
        return data

    @model_validator(mode="after")
    def _check_and_fill(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                "change one of them so that each head gets an equal share"
            )
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}) "
                "for grouped-query attention"
            )
        if self.position == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"RoPE needs an even head dimension; got {self.d_model // self.n_heads}")
        if self.ffn_hidden is None:
            self.ffn_hidden = default_ffn_hidden(self.d_model, self.activation)
        if self.experts:
            if self.experts_per_token is None:
                self.experts_per_token = min(2, self.experts)
            if self.experts_per_token > self.experts:
                raise ValueError(
                    f"experts_per_token ({self.experts_per_token}) exceeds experts ({self.experts})"
                )
            if self.expert_ffn_hidden is None:
                self.expert_ffn_hidden = self.ffn_hidden
            if self.dense_layers >= self.n_layers:
                raise ValueError(
                    f"dense_layers ({self.dense_layers}) leaves no MoE block of the {self.n_layers}"
                )
        elif self.shared_experts or self.experts_per_token:
            raise ValueError("shared_experts / experts_per_token need experts > 0 (routed experts)")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or default_ffn_hidden(self.d_model, self.activation)

    @property
    def is_glu(self) -> bool:
        return self.activation in GLU_ACTIVATIONS

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def moe_layers(self) -> int:
        """Blocks whose MLP is a mixture of experts (0 for a dense model)."""
        if not self.experts:
            return 0
        return len(range(self.dense_layers, self.n_layers, self.moe_layer_freq))

    @property
    def top_k(self) -> int:
        return self.experts_per_token or 0

    @property
    def expert_ffn(self) -> int:
        return self.expert_ffn_hidden or self.ffn


def default_ffn_hidden(d_model: int, activation: str, multiple_of: int = 64) -> int:
    """4d for plain MLPs; for GLUs 2/3 of 4d (same parameter count), rounded up to `multiple_of`
    as in Shazeer 2020 (arXiv:2002.05202) and Llama (Touvron et al. 2023)."""
    if activation in GLU_ACTIVATIONS:
        return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)
    return 4 * d_model


# Published shapes. Sources: GPT-2 (Radford et al. 2019, Table 2; vocab 50257 padded to 50304 as in
# nanoGPT for tensor-core-friendly shapes); Llama 2 (Touvron et al. 2023, Table 1 and the released
# configs: 7B/13B MHA, 70B GQA with 8 KV heads); the 1B follows Llama 3.2 1B's released config.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, vocab_size=4096, seq_len=128),
    "gpt2-124m": dict(
        n_layers=12,
        d_model=768,
        n_heads=12,
        n_kv_heads=12,
        ffn_hidden=3072,
        vocab_size=50304,
        seq_len=1024,
        norm="layernorm",
        activation="gelu",
        position="learned",
        tie_embeddings=True,
        bias=True,
    ),
    "gpt2-350m": dict(
        n_layers=24,
        d_model=1024,
        n_heads=16,
        n_kv_heads=16,
        ffn_hidden=4096,
        vocab_size=50304,
        seq_len=1024,
        norm="layernorm",
        activation="gelu",
        position="learned",
        tie_embeddings=True,
        bias=True,
    ),
    "llama-1b": dict(
        n_layers=16,
        d_model=2048,
        n_heads=32,
        n_kv_heads=8,
        ffn_hidden=8192,
        vocab_size=128256,
        seq_len=2048,
        rope_theta=500000.0,
        tie_embeddings=True,
    ),
    "llama-7b": dict(
        n_layers=32,
        d_model=4096,
        n_heads=32,
        n_kv_heads=32,
        ffn_hidden=11008,
        vocab_size=32000,
        seq_len=4096,
        tie_embeddings=False,
    ),
    "llama-13b": dict(
        n_layers=40,
        d_model=5120,
        n_heads=40,
        n_kv_heads=40,
        ffn_hidden=13824,
        vocab_size=32000,
        seq_len=4096,
        tie_embeddings=False,
    ),
    "llama-70b": dict(
        n_layers=80,
        d_model=8192,
        n_heads=64,
        n_kv_heads=8,
        ffn_hidden=28672,
        vocab_size=32000,
        seq_len=4096,
        tie_embeddings=False,
    ),
    # Mixtral 8x7B (Jiang et al. 2024, arXiv:2401.04088, Table 1 and the released config): 46.7B total,
    # 12.9B active parameters.
    "mixtral-8x7b": dict(
        n_layers=32,
        d_model=4096,
        n_heads=32,
        n_kv_heads=8,
        ffn_hidden=14336,
        vocab_size=32000,
        seq_len=4096,
        rope_theta=1e6,
        tie_embeddings=False,
        experts=8,
        experts_per_token=2,
    ),
    # DeepSeek-V3 (DeepSeek-AI 2024, arXiv:2412.19437, §4.2): 61 layers, d 7168, 128 heads, the first 3
    # blocks dense (MLP 18432), then 256 routed experts of width 2048 (8 per token) and 1 shared expert,
    # vocabulary 129,280, 4K pre-training context. Its multi-head latent attention is represented by
    # standard attention of the same width (672.1B total, 0.2% over 671B; 38.7B active, 5% over 37B, as
    # MHA projections outweigh MLA's low-rank ones; MLA's attention FLOPs
    # are about 3x larger, so model FLOPs here are a lower bound).
    "deepseek-v3": dict(
        n_layers=61,
        d_model=7168,
        n_heads=128,
        n_kv_heads=128,
        ffn_hidden=18432,
        vocab_size=129280,
        seq_len=4096,
        tie_embeddings=False,
        experts=256,
        experts_per_token=8,
        shared_experts=1,
        expert_ffn_hidden=2048,
        dense_layers=3,
    ),
}


@dataclass(frozen=True)
class ParamCounts:
    total: int
    embedding: int
    non_embedding: int
    active: int = 0  # parameters one token uses (= total for a dense model)
    expert: int = 0  # routed-expert parameters of all MoE blocks (sharded by expert parallelism)


def _norm_params(m: ModelConfig) -> int:
    return 2 * m.d_model if m.norm == "layernorm" else m.d_model


def _attention_params(m: ModelConfig) -> int:
    d, hd = m.d_model, m.head_dim
    q_out, kv_out = m.n_heads * hd, m.kv_heads * hd
    biases = q_out + 2 * kv_out + d if m.bias else 0  # q, k, v, o
    return d * q_out + 2 * d * kv_out + q_out * d + biases


def mlp_params(m: ModelConfig, width: int | None = None) -> int:
    """One MLP (dense block or one expert) of inner width `width` (default ffn_hidden)."""
    f = width or m.ffn
    biases = (2 if m.is_glu else 1) * f + m.d_model if m.bias else 0  # up (and gate), down
    return (3 if m.is_glu else 2) * m.d_model * f + biases


def layer_params(m: ModelConfig) -> int:
    """Parameters of one dense transformer block."""
    return _attention_params(m) + mlp_params(m) + 2 * _norm_params(m)


def moe_layer_params(m: ModelConfig) -> tuple[int, int]:
    """(total, active) parameters of one MoE block: attention, norms, router, shared experts, and all
    (total) or `experts_per_token` (active) routed experts."""
    common = _attention_params(m) + 2 * _norm_params(m) + m.d_model * m.experts
    expert = mlp_params(m, m.expert_ffn)
    common += m.shared_experts * expert
    return common + m.experts * expert, common + m.top_k * expert


def param_counts(m: ModelConfig) -> ParamCounts:
    """Exact parameter count of the model the trainer builds (see the module docstring)."""
    embedding = m.vocab_size * m.d_model
    if m.position == "learned":
        embedding += m.seq_len * m.d_model
    if not m.tie_embeddings:
        embedding += m.vocab_size * m.d_model
    # Pre-LN ends with a final norm before the head; post-LN blocks already end in a norm.
    final_norm = _norm_params(m) if m.norm_position == "pre" else 0
    n_moe = m.moe_layers
    moe_total, moe_active = moe_layer_params(m) if n_moe else (0, 0)
    dense = (m.n_layers - n_moe) * layer_params(m) + final_norm
    non_embedding = dense + n_moe * moe_total
    active = embedding + dense + n_moe * moe_active
    expert = n_moe * m.experts * mlp_params(m, m.expert_ffn)
    return ParamCounts(
        total=embedding + non_embedding,
        embedding=embedding,
        non_embedding=non_embedding,
        active=active,
        expert=expert,
    )


def matmul_params(m: ModelConfig) -> int:
    """Weights that take part in a matrix multiply per token: every block's projections (for MoE
    blocks the router, the shared experts and the `experts_per_token` routed experts a token visits)
    plus the output projection (even when tied, the logits are a d_model x vocab product)."""
    d, hd = m.d_model, m.head_dim
    q_out, kv_out = m.n_heads * hd, m.kv_heads * hd
    attn = d * q_out + 2 * d * kv_out + q_out * d
    mlp = (3 if m.is_glu else 2) * d * m.ffn
    n_moe = m.moe_layers
    expert = (3 if m.is_glu else 2) * d * m.expert_ffn
    moe = d * m.experts + (m.shared_experts + m.top_k) * expert
    return m.n_layers * attn + (m.n_layers - n_moe) * mlp + n_moe * moe + m.vocab_size * d


def attention_flops_per_token(m: ModelConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per token of QK^T and AV over the full context: 2 products x 2 FLOPs x
    seq x d_attn per layer (PaLM, Appendix B)."""
    seq = seq_len or m.seq_len
    return 4.0 * m.n_layers * m.n_heads * m.head_dim * seq


def forward_flops_per_token(m: ModelConfig, seq_len: int | None = None) -> float:
    return 2.0 * matmul_params(m) + attention_flops_per_token(m, seq_len)


def flops_per_token(m: ModelConfig, seq_len: int | None = None) -> float:
    """Model FLOPs per trained token (forward + backward = 3 x forward): the numerator of MFU.

    Equals 6 x matmul_params + 12 x n_layers x d_attn x seq_len (PaLM's MFU formula)."""
    return 3.0 * forward_flops_per_token(m, seq_len)


def hardware_flops_per_token(m: ModelConfig, recompute: bool = False, seq_len: int | None = None) -> float:
    """FLOPs the hardware executes per token: full activation recomputation repeats the forward
    pass (4 x forward instead of 3 x), which is what HFU counts (Korthikanti et al. 2022)."""
    return (4.0 if recompute else 3.0) * forward_flops_per_token(m, seq_len)


def training_flops(m: ModelConfig, tokens: float) -> float:
    """Model FLOPs to train on `tokens` tokens with this architecture."""
    return flops_per_token(m) * tokens
