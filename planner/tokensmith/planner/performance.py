"""Performance model: time of one optimizer step for a cluster shape, hence model FLOPs utilisation.

Element-wise over numpy arrays (one entry per candidate shape). The step is a 1F1B pipeline
(Narayanan et al. 2021, arXiv:2104.04473): (m + (p - 1)/v) slots of one micro-batch's work on one
stage, i.e. the bubble (p - 1)/(v m) of the ideal time with v interleaved chunks per stage, followed
by the part of the data-parallel gradient reduction that does not overlap the backward pass, and the
optimizer update.

One micro-batch on one stage costs
- compute: its hardware FLOPs (3 x forward, 4 x with full recomputation; `arch.hardware_flops_per_token`)
  at `efficiency(d_model / t)` of the GPU's dense peak. GEMM efficiency falls for narrow local
  matrices; `EFF_MAX` and `EFF_HALF_WIDTH` are calibrated against published runs
  (docs/planner.md reports the fit and its error);
- tensor parallelism with sequence parallelism (Korthikanti et al. 2022): per layer two all-gathers and
  two reduce-scatters of s b h bf16 values forward, the same backward (and again in a recomputed
  forward), each moving (t - 1)/t of its bytes over the intra-node links; not overlapped (Megatron);
- pipeline: one send of s b h / t bf16 values per stage boundary forward and one backward.

Data parallelism (ring collectives, (d - 1)/d of the bytes each): stages 0/1 all-reduce the bf16
gradients once per step; stage 2 reduce-scatters them every micro-batch and all-gathers the weights
once; stage 3 all-gathers the weights in every micro-batch's forward and backward as well
(Rajbhandari et al. 2019, §7: 1.5x the all-reduce volume per pass). Over the network when the group
spans nodes; `DP_OVERLAP` of the compute time hides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokensmith.planner import arch
from tokensmith.planner.arch import ModelConfig

# Calibrated against published runs (see docs/planner.md, "Calibration"): the best dense BF16 GEMM
# efficiency reached in end-to-end training and the local width at which half of it is lost.
EFF_MAX = 0.45
EFF_HALF_WIDTH = 128.0
LINK_EFFICIENCY = 0.75  # achieved collective bus bandwidth / link rate (NCCL tests on NVLink and IB)
DP_OVERLAP = 0.5  # fraction of the backward pass that hides the gradient reduction
OPTIMIZER_BYTES_PER_PARAM = (
    3 * 16
)  # Adam update: read and write 16 bytes of state per parameter, about 3 passes


@dataclass(frozen=True)
class ModelScalars:
    """What the performance and memory models need to know about the model."""

    params: float  # total parameters
    forward_flops_per_token: float  # arch.forward_flops_per_token
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    seq_len: int
    vocab_size: int

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ModelScalars:
        """Counts from `tokensmith.planner.arch`, the one implementation."""
        counts = arch.param_counts(cfg)
        return cls(
            params=float(counts.total),
            forward_flops_per_token=arch.forward_flops_per_token(cfg),
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.kv_heads,
            seq_len=cfg.seq_len,
            vocab_size=cfg.vocab_size,
        )


@dataclass(frozen=True)
class GPUScalars:
    peak_flops: float
    hbm_bytes_s: float
    intra_bytes_s: float
    inter_bytes_s: float
    gpus_per_node: int


def efficiency(local_width: Any) -> Any:
    """Fraction of dense peak reached by the layer GEMMs for a local hidden width h/t."""
    return EFF_MAX * local_width / (local_width + EFF_HALF_WIDTH)


def step_time(
    m: ModelScalars,
    g: GPUScalars,
    gpus: Any,
    tp: Any,
    pp: Any,
    dp: Any,
    zero: Any,
    micro_batch: Any,
    microbatches: Any,
    recompute: Any,
    virtual: Any = 1,
) -> Any:
    """Seconds per optimizer step for each candidate (arrays broadcast). `virtual` is the number of
    model chunks per pipeline stage of the interleaved 1F1B schedule (Narayanan et al. 2021, §2.2.2):
    the bubble shrinks to (p - 1)/(v m) at v times the point-to-point traffic."""
    tokens_mb = m.seq_len * micro_batch
    passes = 3.0 + recompute
    stage_layers = _ceil(m.n_layers / pp)  # the slowest stage sets the pace when L % p != 0
    imbalance = stage_layers * pp / m.n_layers
    flops_mb_stage = tokens_mb * m.forward_flops_per_token * passes * imbalance / (tp * pp)
    compute = flops_mb_stage / (g.peak_flops * efficiency(m.d_model / tp))

    act_bytes = 2.0 * tokens_mb * m.d_model  # one bf16 activation tensor s x b x h
    collectives = 4.0 * (2.0 + recompute)  # AG + RS, twice per layer, per pass (fwd, bwd, recomputed fwd)
    tp_link = _where(tp <= g.gpus_per_node, g.intra_bytes_s, g.inter_bytes_s) * LINK_EFFICIENCY
    tp_comm = stage_layers * collectives * 0.5 * act_bytes * (tp - 1) / tp / tp_link
    pp_link = _where(tp * pp <= g.gpus_per_node, g.intra_bytes_s, g.inter_bytes_s) * LINK_EFFICIENCY
    pp_comm = (pp > 1) * 2.0 * virtual * act_bytes / tp / pp_link

    slot = compute + tp_comm + pp_comm
    pipeline = (microbatches + (pp - 1) / virtual) * slot

    # ZeRO data-parallel traffic, in units of the local bf16 parameter bytes, moved (d - 1)/d ring-wise:
    # stages 0/1 all-reduce the gradients once per step (2 units); stage 2 reduce-scatters them every
    # micro-batch (1) and all-gathers the updated weights once (1); stage 3 also all-gathers the weights
    # in every micro-batch's forward and backward (3 per micro-batch).
    local_bytes = 2.0 * m.params / (tp * pp)
    per_step = _where(zero <= 1, 2.0, _where(zero == 2, 1.0, 0.0))
    per_mb = _where(zero <= 1, 0.0, _where(zero == 2, 1.0, 3.0))
    volume = (per_step + per_mb * microbatches) * (dp - 1) / dp * local_bytes
    dp_link = _where(gpus <= g.gpus_per_node, g.intra_bytes_s, g.inter_bytes_s) * LINK_EFFICIENCY
    dp_comm = volume / dp_link
    exposed_dp = _maximum(dp_comm - DP_OVERLAP * microbatches * compute, 0.0)

    optimizer = (
        OPTIMIZER_BYTES_PER_PARAM * m.params / (tp * pp) / _maximum(dp * (zero >= 1), 1) / g.hbm_bytes_s
    )
    return pipeline + exposed_dp + optimizer


def _where(cond: Any, a: Any, b: Any) -> Any:
    import numpy as np

    return np.where(cond, a, b)


def _ceil(a: Any) -> Any:
    import numpy as np

    return np.ceil(a)


def _maximum(a: Any, b: Any) -> Any:
    import numpy as np

    return np.maximum(a, b)
