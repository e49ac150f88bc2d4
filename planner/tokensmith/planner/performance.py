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
spans nodes, at the bandwidth of all the NICs the group's members on one node share (NCCL runs one
ring channel per NIC); `DP_OVERLAP` of the compute time hides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokensmith.planner import arch
from tokensmith.planner.arch import ModelConfig

# Calibrated against published runs (see docs/planner.md, "Calibration"): the best dense BF16 GEMM
# efficiency reached in end-to-end training and the local width at which half of it is lost.
EFF_MAX = 0.70
EFF_HALF_WIDTH = 256.0
LINK_EFFICIENCY = 0.75  # achieved collective bus bandwidth / link rate (NCCL tests on NVLink and IB)
DP_OVERLAP = 0.5  # fraction of the backward pass that hides the gradient reduction
# FP8 GEMMs reach this fraction of the BF16 GEMMs' efficiency relative to their (twice higher) peak:
# scaling, casts and amax bookkeeping (calibrated on MosaicML's H100 FP8 table, docs/planner.md).
FP8_EFFICIENCY = 0.65
A2A_EXPOSED = 1.0  # share of the MoE all-to-all not hidden with one model chunk per stage
OPTIMIZER_BYTES_PER_PARAM = (
    3 * 16
)  # Adam update: read and write 16 bytes of state per parameter, about 3 passes


@dataclass(frozen=True)
class ModelScalars:
    """What the performance and memory models need to know about the model. The first eight fields
    describe a dense GPT-style model (MLP 4d, dropout on: Korthikanti's 34 s b h per layer); the rest
    refine it and default to that."""

    params: float  # total parameters
    forward_flops_per_token: float  # arch.forward_flops_per_token (active parameters for MoE)
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    seq_len: int
    vocab_size: int
    ffn: float = 0.0  # MLP width (0: 4 d)
    glu: bool = False
    dropout: bool = True
    flash_attention: bool = True  # s x s scores neither stored nor recomputed by selective recompute
    active_params: float = 0.0  # parameters one token uses (0: params)
    expert_params: float = 0.0  # routed-expert parameters (split by EP)
    experts: int = 0
    top_k: int = 0
    shared_experts: int = 0
    moe_layers: int = 0
    expert_ffn: float = 0.0
    attention_forward_flops_per_token: float = 0.0  # the s x s part of the forward FLOPs

    @classmethod
    def from_config(cls, cfg: ModelConfig, flash_attention: bool = True) -> ModelScalars:
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
            ffn=float(cfg.ffn),
            glu=cfg.is_glu,
            dropout=cfg.dropout > 0,
            flash_attention=flash_attention,
            active_params=float(counts.active),
            expert_params=float(counts.expert),
            experts=cfg.experts,
            top_k=cfg.top_k,
            shared_experts=cfg.shared_experts,
            moe_layers=cfg.moe_layers,
            expert_ffn=float(cfg.expert_ffn),
            attention_forward_flops_per_token=arch.attention_flops_per_token(cfg),
        )

    @property
    def active(self) -> float:
        return self.active_params or self.params

    @property
    def mlp_width(self) -> float:
        return self.ffn or 4.0 * self.d_model

    @property
    def largest_operator_params(self) -> float:
        """Parameters of the largest single weight (ZeRO-3 gathers operators one at a time): an MLP
        projection (gate and up fused for GLUs), an attention projection, or the embedding."""
        mlp = (2.0 if self.glu else 1.0) * self.d_model * max(self.mlp_width, self.expert_ffn)
        return max(mlp, float(self.d_model * self.d_model), float(self.vocab_size * self.d_model))

    def layer_coefficients(self, fp8: Any = 0) -> tuple[Any, float]:
        """`memory.layer_coefficients` averaged over the blocks (MoE blocks pass k + shared experts)."""
        from tokensmith.planner import memory

        kv_width = self.n_kv_heads * (self.d_model // self.n_heads)
        dense_layers = self.n_layers - self.moe_layers
        dense, scores = memory.layer_coefficients(
            self.d_model, kv_width, self.mlp_width, self.glu, self.dropout, fp8
        )
        if not self.moe_layers:
            return dense, 0.0 if self.flash_attention else scores
        moe, _ = memory.layer_coefficients(
            self.d_model,
            kv_width,
            self.expert_ffn,
            self.glu,
            self.dropout,
            fp8,
            mlp_copies=float(self.top_k + self.shared_experts),
        )
        mean = (dense_layers * dense + self.moe_layers * moe) / self.n_layers
        return mean, 0.0 if self.flash_attention else scores


@dataclass(frozen=True)
class GPUScalars:
    peak_flops: float  # dense BF16
    hbm_bytes_s: float
    intra_bytes_s: float
    inter_bytes_s: float
    gpus_per_node: int
    fp8_peak_flops: float = 0.0  # dense FP8 (0: none)
    gemm_fraction: float = 0.9  # gpus.GPU.gemm_fraction


def efficiency(local_width: Any) -> Any:
    """Fraction of dense BF16 peak reached by the layer GEMMs for a local hidden width h/t."""
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
    ep: Any = 1,
    cp: Any = 1,
    fp8: Any = 0,
) -> Any:
    """Seconds per optimizer step for each candidate (arrays broadcast). `virtual` is the number of
    model chunks per pipeline stage of the interleaved 1F1B schedule (Narayanan et al. 2021, §2.2.2):
    the bubble shrinks to (p - 1)/(v m) at v times the point-to-point traffic. `recompute`: 0 none,
    1 full, 2 selective; `ep` expert-parallel, `cp` context-parallel degree; `fp8` 1 for FP8 GEMMs."""
    tokens_mb = m.seq_len * micro_batch / cp  # tokens of one micro-batch on one CP rank
    full = recompute == 1
    selective = recompute == 2
    stage_layers = _ceil(m.n_layers / pp)  # the slowest stage sets the pace when L % p != 0
    imbalance = stage_layers * pp / m.n_layers
    attn_fwd = m.attention_forward_flops_per_token
    gemm_fwd = m.forward_flops_per_token - attn_fwd
    # Full recomputation repeats the forward; selective repeats the s x s part unless FlashAttention
    # (which recomputes it inside its own backward, already in the 3x) is used.
    gemm_passes = 3.0 + full
    attn_passes = 3.0 + full + selective * (0.0 if m.flash_attention else 1.0)
    scale = tokens_mb * imbalance / (tp * pp)
    eff = efficiency(m.d_model / tp) * g.gemm_fraction
    gemm_rate = _where(fp8, g.fp8_peak_flops * FP8_EFFICIENCY, g.peak_flops) * eff
    compute = scale * (gemm_fwd * gemm_passes / gemm_rate + attn_fwd * attn_passes / (g.peak_flops * eff))

    act_bytes = 2.0 * tokens_mb * m.d_model  # one bf16 activation tensor s x b x h
    collectives = 4.0 * (2.0 + full)  # AG + RS, twice per layer, per pass (fwd, bwd, recomputed fwd)
    tp_link = _where(tp <= g.gpus_per_node, g.intra_bytes_s, g.inter_bytes_s) * LINK_EFFICIENCY
    tp_comm = stage_layers * collectives * 0.5 * act_bytes * (tp - 1) / tp / tp_link
    pp_link = _where(tp * cp * pp <= g.gpus_per_node, g.intra_bytes_s, g.inter_bytes_s) * LINK_EFFICIENCY
    pp_comm = (pp > 1) * 2.0 * virtual * act_bytes / tp / pp_link

    # Context parallelism (ring attention, Liu et al. 2023; Megatron-LM's CP): each layer passes the
    # K and V chunks around the ring forward and their gradients backward, overlapped with the
    # attention compute it feeds.
    kv_width = m.n_kv_heads * (m.d_model // m.n_heads)
    cp_link = _where(tp * cp <= g.gpus_per_node, g.intra_bytes_s, g.inter_bytes_s) * LINK_EFFICIENCY
    cp_bytes = (2.0 + 2.0 + 2.0 * full) * 2.0 * tokens_mb * kv_width / tp * (cp - 1)
    attn_time = scale * attn_fwd * attn_passes / (g.peak_flops * eff)
    cp_comm = _maximum(stage_layers * cp_bytes / cp_link - attn_time, 0.0)

    # Expert parallelism: each MoE block dispatches every token to its k experts and combines the
    # results (two all-to-alls forward, two backward, two more in a recomputed forward), (EP - 1)/EP
    # of the bytes leaving the GPU; NVLink for the peers in the node, the network for the rest.
    # Dispatch runs in FP8 with FP8 training (DeepSeek-V3, §3.3). With two or more model chunks per
    # stage (interleaving; DeepSeek-V3's DualPipe, §3.2.1) one chunk's all-to-all runs under another's
    # compute, so only what exceeds the compute shows; with one chunk `A2A_EXPOSED` of it shows.
    moe_stage_layers = m.moe_layers * stage_layers / m.n_layers
    a2a_bytes = (4.0 + 2.0 * full) * tokens_mb / tp * m.top_k * m.d_model * _where(fp8, 1.5, 2.0)
    in_node = _minimum(ep, _maximum(g.gpus_per_node // (tp * cp), 1))
    remote = (ep - in_node) / ep
    local = (in_node - 1) / ep
    a2a_time = a2a_bytes * _maximum(
        local / (g.intra_bytes_s * LINK_EFFICIENCY), remote / (g.inter_bytes_s * LINK_EFFICIENCY)
    )
    a2a = moe_stage_layers * a2a_time
    ep_comm = _where(virtual > 1, _maximum(a2a - compute, 0.0), A2A_EXPOSED * a2a)

    slot = compute + tp_comm + pp_comm + cp_comm + ep_comm
    pipeline = (microbatches + (pp - 1) / virtual) * slot

    # ZeRO data-parallel traffic, in units of the local bf16 parameter bytes, moved (d - 1)/d ring-wise:
    # stages 0/1 all-reduce the gradients once per step (2 units); stage 2 reduce-scatters them every
    # micro-batch (1) and all-gathers the updated weights once (1); stage 3 also all-gathers the weights
    # in every micro-batch's forward and backward (3 per micro-batch). The routed experts reduce over
    # the expert-data-parallel group DP/EP.
    dense_bytes = 2.0 * (m.params - m.expert_params) / (tp * pp)
    expert_bytes = 2.0 * m.expert_params / (tp * pp * ep)
    edp = _maximum(dp / ep, 1.0)
    per_step = _where(zero <= 1, 2.0, _where(zero == 2, 1.0, 0.0))
    per_mb = _where(zero <= 1, 0.0, _where(zero == 2, 1.0, 3.0))
    units = per_step + per_mb * microbatches
    volume = units * ((dp - 1) / dp * dense_bytes + (edp - 1) / edp * expert_bytes)
    # Across nodes, NCCL's rings (one channel per NIC) move a group's data through all the NICs of the
    # node its members share, so the bus bandwidth is that of the members' NICs together, up to NVLink.
    members_per_node = _maximum(g.gpus_per_node / (tp * cp), 1.0)
    network = _minimum(g.intra_bytes_s, members_per_node * g.inter_bytes_s)
    dp_link = _where(gpus <= g.gpus_per_node, g.intra_bytes_s, network) * LINK_EFFICIENCY
    dp_comm = volume / dp_link
    exposed_dp = _maximum(dp_comm - DP_OVERLAP * microbatches * compute, 0.0)

    local_params = (m.params - m.expert_params) / (tp * pp) + m.expert_params / (tp * pp * ep)
    optimizer = OPTIMIZER_BYTES_PER_PARAM * local_params / _maximum(dp * (zero >= 1) / ep, 1) / g.hbm_bytes_s
    return pipeline + exposed_dp + optimizer


def _where(cond: Any, a: Any, b: Any) -> Any:
    import numpy as np

    return np.where(cond, a, b)


def _minimum(a: Any, b: Any) -> Any:
    import numpy as np

    return np.minimum(a, b)


def _ceil(a: Any) -> Any:
    import numpy as np

    return np.ceil(a)


def _maximum(a: Any, b: Any) -> Any:
    import numpy as np

    return np.maximum(a, b)
