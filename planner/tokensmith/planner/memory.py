"""Per-GPU training memory: model states under ZeRO (with expert parallelism for MoE), ZeRO-3's
working buffers, activations (no, selective or full recomputation; sequence and context parallelism;
the 1F1B and interleaved pipeline schedules), logits, and a runtime reserve. Every function works
element-wise on numpy arrays as well as on plain numbers, so the cluster search evaluates millions of
shapes at once.

Sources and conventions:
- Model states, mixed-precision Adam: 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, m, v)
  = 16 bytes per parameter; ZeRO stages (Rajbhandari et al. 2019, arXiv:1910.02054, Fig. 1) shard the
  optimiser states (1), gradients (2) and parameters (3) over the data-parallel degree, the parameters
  being first divided by the tensor and pipeline degrees (shard over DP, not the world size). FP8
  training (Micikevicius et al. 2022, arXiv:2209.05433; NVIDIA Transformer Engine) keeps these bf16
  weights and fp32 optimiser states and adds a 1-byte FP8 copy of every GEMM weight.
- Mixture of experts: the routed experts are split over the expert-parallel degree EP (which divides
  DP, as in Megatron-LM and DeepSeek-V3) and, like the dense weights, over TP and PP; ZeRO shards the
  expert states over the expert-data-parallel degree DP / EP (Megatron-Core's MoE layout).
- ZeRO-3 working memory: the gathered bf16 parameters and gradient of the largest operator
  (ZeRO-Infinity's "model state working memory", Rajbhandari et al. 2021, arXiv:2104.07857, §3) plus
  the next operator's parameters prefetched (DeepSpeed's stage-3 prefetch): 6 bytes x its parameters.
  For a 530B-class layer (d 20480, MLP 4d) that is 6 x 20480 x 81920 B = 10.1 GB.
- Activations per layer (Korthikanti et al. 2022, arXiv:2205.05198, §4 and Table 2), 16-bit values,
  derived term by term so that grouped-query attention, the MLP width, GLUs and dropout count:
  attention: QKV input 2, Q 2, K and V 2 x 2 r (r = KV width / d), output-projection input 2,
  dropout mask 1 (only with dropout); the s x s attention scores: softmax output 2, and with dropout
  its mask 1 and output 2, per a s^2 b (not stored with FlashAttention, Dao et al. 2022, nor under
  selective recomputation); MLP: input 2, then 2 x 2 f/d (plain: activation input and output; GLU
  adds the gate: 3 x 2 f/d), dropout mask 1; two norms' inputs 4. With dropout, d = h and f = 4h
  this is Korthikanti's 34 s b h + 5 a s^2 b. Tensor parallelism runs with sequence parallelism, so
  every term is divided by t; context parallelism divides the sequence by c. FP8 stores the inputs of
  the linear layers in 1 byte (Transformer Engine). Full recomputation keeps each layer's input,
  2 s b h / t, plus one layer's working set while it is recomputed.
- Pipeline (Korthikanti et al. 2022, §4.2.3): the first stage holds min(p, m) micro-batches of L/p
  layers under 1F1B, i.e. about L layers' worth; the interleaved schedule with v model chunks per
  stage holds L (1 + (p - 1)/(p v)) (their Eq. 5, whose m is the number of interleaving stages).
  The last stage holds one micro-batch of L/p layers plus the logits.
- Logits: fp32 on the last stage, 4 s b V / t bytes; the vocabulary-parallel cross-entropy writes
  their gradient in place (Megatron-LM's fused kernel), so it adds nothing.
- Runtime: CUDA context, NCCL buffers and kernel workspaces `RESERVE_BYTES`, plus `FRAGMENTATION`
  of the computed peak for the caching allocator.
"""

from __future__ import annotations

from typing import Any

BYTES_WEIGHT = 2
BYTES_GRAD = 2
BYTES_OPTIM = 12  # fp32 master copy + Adam m + v
BYTES_FP8_WEIGHT = 1  # FP8 copy of each GEMM weight (Transformer Engine)
RESERVE_BYTES = 1.0e9  # CUDA context (~0.5 GB), NCCL buffers, kernels' workspaces
FRAGMENTATION = 1.05  # caching-allocator fragmentation on top of the computed peak
ZERO3_WORKING_BYTES = 6  # gathered bf16 params + their bf16 gradient + the next op's params

RC_NONE, RC_FULL, RC_SELECTIVE = 0, 1, 2  # recompute codes of the search's `recompute` axis
RECOMPUTE_NAMES = {RC_NONE: "none", RC_FULL: "full", RC_SELECTIVE: "selective"}


def model_state_bytes(
    params: Any,
    tp: Any,
    pp: Any,
    dp: Any,
    zero: Any,
    expert_params: Any = 0.0,
    ep: Any = 1,
    fp8: Any = 0,
) -> Any:
    """Bytes per GPU of weights, gradients and optimiser states (ZeRO 0-3 over `dp`; the routed experts'
    `expert_params` over `ep` and ZeRO over `dp / ep`)."""
    dense = (params - expert_params) / (tp * pp)
    experts = expert_params / (tp * pp * ep)
    per_param = (BYTES_WEIGHT, BYTES_GRAD, BYTES_OPTIM)
    out = 0.0
    z = zero
    for share, group in ((dense, dp), (experts, dp / ep)):
        w, g, o = (b * share for b in per_param)
        # Element-wise choice (works for arrays): stage >= 1 shards optimiser, >= 2 grads, 3 weights.
        out = out + w / (1 + (z >= 3) * (group - 1)) + g / (1 + (z >= 2) * (group - 1))
        out = out + o / (1 + (z >= 1) * (group - 1))
    return out + fp8 * BYTES_FP8_WEIGHT * (dense + experts)


def zero3_working_bytes(largest_operator_params: float, tp: Any, zero: Any) -> Any:
    """ZeRO-3's gathered working set (module docstring); zero for stages 0-2."""
    return (zero >= 3) * ZERO3_WORKING_BYTES * largest_operator_params / tp


def layer_coefficients(
    d_model: int,
    kv_width: int,
    ffn: float,
    glu: bool,
    dropout: bool,
    fp8: Any = 0,
    mlp_copies: float = 1.0,
) -> tuple[Any, float]:
    """(bytes per s b h, bytes per a s^2 b) stored by one layer without recomputation (module
    docstring). `mlp_copies` is the number of MLPs a token passes (k + shared experts in a MoE block,
    averaged over the blocks), `ffn` their width."""
    r = kv_width / d_model
    f = ffn / d_model
    mask = 1.0 if dropout else 0.0
    attention = 6.0 + 4.0 * r + mask
    mlp = mlp_copies * (2.0 + (6.0 if glu else 4.0) * f) + mask
    norms = 4.0
    # FP8: the inputs of QKV, the output projection, and each MLP's two linears are kept in 1 byte.
    saved = fp8 * (2.0 + mlp_copies * (1.0 + f))
    scores = 2.0 + 3.0 * mask
    return attention + mlp + norms - saved, scores


def activation_bytes(
    seq: int,
    micro_batch: Any,
    d_model: int,
    n_layers: int,
    vocab: int,
    tp: Any,
    pp: Any,
    microbatches: Any,
    recompute: Any,
    virtual: Any = 1,
    *,
    per_layer: Any = 34.0,
    scores: float = 0.0,
    n_heads: int = 1,
    cp: Any = 1,
) -> Any:
    """Peak activation bytes of the fullest pipeline stage: the first stage's in-flight layers or the
    last stage's layers plus the logits (the same GPU when there is one stage). `per_layer` and
    `scores` are `layer_coefficients`; `scores` is 0 with FlashAttention. `recompute`: 0 none,
    1 full, 2 selective (the s^2 scores recomputed, not stored)."""
    s_local = seq / cp
    sbh = s_local * micro_batch * d_model
    full = recompute == RC_FULL
    no_scores = recompute == RC_SELECTIVE
    layer = (per_layer * sbh + (1 - no_scores) * scores * n_heads * s_local * seq * micro_batch) / tp
    kept = 2.0 * sbh / tp
    stored_per_layer = full * kept + (1 - full) * layer
    working = full * layer  # the layer being recomputed
    interleave = 1.0 + (virtual > 1) * (pp - 1) / (pp * virtual)
    first_layers = _where(virtual > 1, n_layers * interleave, (n_layers / pp) * _minimum(pp, microbatches))
    logits = 4.0 * s_local * micro_batch * vocab / tp
    first = first_layers * stored_per_layer + working
    last = (n_layers / pp) * stored_per_layer + working + logits
    return _where(pp > 1, _maximum(first, last), first + logits)


def total_bytes(states: Any, activations: Any, working: Any = 0.0) -> Any:
    return FRAGMENTATION * (states + activations + working) + RESERVE_BYTES


def _minimum(a: Any, b: Any) -> Any:
    import numpy as np

    return np.minimum(a, b)


def _maximum(a: Any, b: Any) -> Any:
    import numpy as np

    return np.maximum(a, b)


def _where(cond: Any, a: Any, b: Any) -> Any:
    import numpy as np

    return np.where(cond, a, b)
