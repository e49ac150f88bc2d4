"""Per-GPU training memory: model states under ZeRO, activations (with and without recomputation),
logits, and a fixed runtime reserve. Every function works element-wise on numpy arrays as well as on
plain numbers, so the cluster search evaluates millions of shapes at once.

Sources:
- Model states, mixed-precision Adam: 2 (bf16 weights) + 2 (bf16 grads) + 12 (fp32 master, m, v)
  = 16 bytes per parameter; ZeRO stages (Rajbhandari et al. 2019, arXiv:1910.02054, Fig. 1) shard the
  optimiser states (1), gradients (2) and parameters (3) over the data-parallel degree, the parameters
  being first divided by the tensor and pipeline degrees (shard over DP, not the world size).
- Activations per layer (Korthikanti et al. 2022, arXiv:2205.05198, Table 2) with tensor and sequence
  parallelism: s b h (34 + 5 a s / h) / t bytes. FlashAttention (Dao et al. 2022) never stores the
  a s^2 attention matrix, so the 5 a s / h term is dropped: 34 s b h / t. Full recomputation keeps only
  each layer's input, 2 s b h / t (sequence-parallel), plus one layer's working set during its
  recomputation.
- Pipeline 1F1B (Narayanan et al. 2021): the first stage holds min(p, m) micro-batches of L/p layers in
  flight, so about L layers' worth whatever p is.
- Logits and their gradient in fp32 on the last stage: 2 x 4 s b V / t bytes (cross-entropy over the
  vocabulary-parallel output layer).
"""

from __future__ import annotations

from typing import Any

BYTES_WEIGHT = 2
BYTES_GRAD = 2
BYTES_OPTIM = 12  # fp32 master copy + Adam m + v
RESERVE_BYTES = 2.0e9  # CUDA context, NCCL buffers, kernels' workspaces
FRAGMENTATION = 1.10  # allocator fragmentation head-room on top of the computed peak


def model_state_bytes(params: Any, tp: Any, pp: Any, dp: Any, zero: Any) -> Any:
    """Bytes per GPU of weights, gradients and optimiser states (ZeRO 0-3 over `dp`)."""
    local = params / (tp * pp)
    w = BYTES_WEIGHT * local
    g = BYTES_GRAD * local
    o = BYTES_OPTIM * local
    z = zero
    # Element-wise choice (works for arrays): stage >= 1 shards optimiser, >= 2 grads, 3 weights.
    return w / (1 + (z >= 3) * (dp - 1)) + g / (1 + (z >= 2) * (dp - 1)) + o / (1 + (z >= 1) * (dp - 1))


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
) -> Any:
    """Peak activation bytes on the first pipeline stage (plus the logits on the last, conservatively
    added to the same GPU when there is one stage). The interleaved schedule with v chunks holds
    (1 + (p - 1)/(p m)) times more (Narayanan et al. 2021)."""
    sbh = seq * micro_batch * d_model
    interleave = 1.0 + (virtual > 1) * (pp - 1) / (pp * microbatches)
    in_flight_layers = (n_layers / pp) * _minimum(pp, microbatches) * interleave
    per_layer_full = 34.0 * sbh / tp
    per_layer_kept = 2.0 * sbh / tp
    stored = in_flight_layers * (recompute * per_layer_kept + (1 - recompute) * per_layer_full)
    working = recompute * per_layer_full  # the layer being recomputed
    logits = 8.0 * seq * micro_batch * vocab / tp
    return stored + working + logits


def total_bytes(states: Any, activations: Any) -> Any:
    return FRAGMENTATION * (states + activations) + RESERVE_BYTES


def _minimum(a: Any, b: Any) -> Any:
    try:
        import numpy as np

        return np.minimum(a, b)
    except ImportError:  # pragma: no cover - numpy is in the planner extra
        return min(a, b)
