"""Vectorised cluster-shape search: every (GPUs, TP, PP, DP, ZeRO stage, micro-batch, recompute,
interleaved pipeline chunks, expert-parallel and context-parallel degree) candidate is one element of
numpy arrays; memory, step time, MFU, failures, cost and energy are evaluated for all of them at once
(no Python loop per candidate), then filtered and ranked. The precision (bf16 or fp8) is fixed per
search.

Layout scope (`layouts`):
- "trainable" (default): the layout is one `tokensmith train` runs: `capability.supported`, the rules
  the operator and the trainer check too (TP inside a node and dividing the heads, PP at most the
  layers, which ZeRO stages combine with TP and PP, no interleaved stages, no EP/CP/FP8/MoE), so the
  search never proposes a shape the trainer refuses;
- "any": runs on any stack (Megatron-LM's interleaved schedule, DeepSeek-V3's FP8 MoE): only the
  physical rules (TP divides the heads and stays in a node, PP at most the layers, v chunks of whole
  layers with m >= p, EP divides the experts and DP x CP, CP splits the sequence into 2 CP chunks).
Both: at least one micro-batch per data-parallel replica in the global batch, and the per-GPU memory
(memory.py) fits the GPU. World = TP x CP x PP x DP (Megatron-LM's order); EP lives inside DP x CP.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tokensmith.planner import capability, costs, energy, memory, performance, reliability
from tokensmith.planner.gpus import GPU
from tokensmith.planner.performance import GPUScalars, ModelScalars

TP_DEGREES = (1, 2, 4, 8)
PP_DEGREES = (1, 2, 4, 8, 16, 32, 64)
ZERO_STAGES = (0, 1, 2, 3)
MICRO_BATCHES = (1, 2, 4, 8, 16)
RECOMPUTE = (0, 1, 2)  # none, full, selective (memory.RC_*)
# Interleaved chunks the trainer runs (DeepSpeed's 1F1B only: 1); other stacks: up to 4 (Megatron-LM).
VIRTUAL_STAGES = tuple(range(1, capability.MAX_VIRTUAL_STAGES + 1))
ANY_VIRTUAL_STAGES = (1, 2, 4)
EP_DEGREES = (1, 2, 4, 8, 16, 32, 64)
CP_DEGREES = (1, 2, 4, 8)
CP_FROM_SEQ = 16_384  # context parallelism is searched from this context length up
LAYOUTS = ("trainable", "any")
AXES = (
    "gpus",
    "tp",
    "pp",
    "zero",
    "micro_batch",
    "recompute",
    "virtual",
    "ep",
    "cp",
)  # one array per axis, one entry per candidate


@dataclass(frozen=True)
class Economics:
    """Prices, power and reliability assumptions applied to every candidate."""

    price_per_gpu_hour: float
    owned: bool = False
    purchase_usd: float = 0.0
    lifetime_years: float = costs.DEFAULT_LIFETIME_YEARS
    pue: float = energy.DEFAULT_PUE
    carbon_kg_per_kwh: float = energy.DEFAULT_CARBON_KG_PER_KWH
    energy_usd_per_mwh: float = energy.DEFAULT_ENERGY_USD_PER_MWH
    gpu_power_w: float | None = None  # fixed average draw; None: utilisation-dependent model
    node_overhead: float = energy.NODE_OVERHEAD  # x TDP per GPU
    mtbf_gpu_hours: float = reliability.LLAMA3_GPU_HOURS_PER_FAILURE
    restart_minutes: float = reliability.DEFAULT_RESTART_MINUTES
    checkpoint_minutes: float | None = None  # None: Daly's optimum


def gpu_count_grid(gpus_per_node: int, max_gpus: int = 65_536) -> list[int]:
    """GPU counts tried when the user fixes none: 1, 2, 4, then whole nodes in steps of 2^k and 3 x 2^k."""
    counts = {c for c in (1, 2, 4) if c < gpus_per_node}
    nodes = 1
    while nodes * gpus_per_node <= max_gpus:
        counts.add(nodes * gpus_per_node)
        if 3 * nodes * gpus_per_node // 2 <= max_gpus and nodes >= 2:
            counts.add(3 * nodes * gpus_per_node // 2)
        nodes *= 2
    return sorted(counts)


def axis_values(layouts: str = "trainable", experts: int = 0, seq_len: int = 0) -> dict[str, tuple[int, ...]]:
    """The values searched on each layout axis for a scope and model: EP only for MoE models (powers
    of two dividing the experts), CP only from `CP_FROM_SEQ` tokens of context, interleaving, EP and CP
    only with `layouts="any"` (the trainer runs none of them)."""
    anything = layouts == "any"
    return {
        "virtual": ANY_VIRTUAL_STAGES if anything else VIRTUAL_STAGES,
        "ep": tuple(e for e in EP_DEGREES if experts and experts % e == 0) or (1,) if anything else (1,),
        "cp": CP_DEGREES if anything and seq_len >= CP_FROM_SEQ else (1,),
    }


def candidate_grid(
    gpu_counts: list[int],
    virtual: tuple[int, ...] = VIRTUAL_STAGES,
    ep: tuple[int, ...] = (1,),
    cp: tuple[int, ...] = (1,),
    **fixed: tuple[int, ...],
) -> dict[str, Any]:
    """The cross product of the search space as an open mesh: one integer array per axis, each
    shaped to broadcast against the others (gpus on axis 0, ..., CP on axis 8). `evaluate`
    computes every intermediate at the smallest shape it depends on (e.g. GEMM efficiency per TP
    degree) and only the final quantities at the full size, which is what makes it fast. `fixed`
    narrows any other axis (e.g. `tp=(8,)` to evaluate a published layout)."""
    import numpy as np

    values = {
        "tp": TP_DEGREES,
        "pp": PP_DEGREES,
        "zero": ZERO_STAGES,
        "micro_batch": MICRO_BATCHES,
        "recompute": RECOMPUTE,
        "virtual": virtual,
        "ep": ep,
        "cp": cp,
    }
    values.update(fixed)
    axes = np.meshgrid(
        np.asarray(gpu_counts, dtype=np.int64),
        *(np.asarray(values[k], dtype=np.int64) for k in AXES[1:]),
        indexing="ij",
        sparse=True,
    )
    grid = dict(zip(AXES, axes, strict=True))
    # The GPU count is the outer axis: its index saves a sort in `evaluate`.
    grid["gpu_index"] = np.arange(len(gpu_counts)).reshape(axes[0].shape)
    grid["gpu_counts"] = np.asarray(gpu_counts, dtype=np.int64)
    return grid


def grid_size(grid: dict[str, Any]) -> int:
    import numpy as np

    return int(np.prod(np.broadcast_shapes(*(grid[k].shape for k in AXES))))


def flat_grid(grid: dict[str, Any]) -> dict[str, Any]:
    """The candidates as flat arrays of equal length (same order as `evaluate`'s output)."""
    import numpy as np

    shape = np.broadcast_shapes(*(grid[k].shape for k in AXES))
    return {k: np.broadcast_to(grid[k], shape).reshape(-1) for k in AXES}


def evaluate(
    grid: dict[str, Any],
    model: ModelScalars,
    gpu: GPU,
    gpus_per_node: int,
    tokens: float,
    global_batch_tokens: float,
    econ: Economics,
    mfu: float | None = None,
    max_tp: int = max(TP_DEGREES),
    max_pp: int = max(PP_DEGREES),
    *,
    layouts: str = "trainable",
    precision: str = "bf16",
) -> Candidates:
    """Evaluate every candidate; returns the grid's arrays plus one array per derived quantity.

    With `mfu` given (against the peak of `precision`), time follows from it (the performance model
    still ranks shapes and memory still filters them); otherwise from the performance model. MFU is
    6 x active parameters x tokens over the dense peak of the precision used (`mfu`) and over the BF16
    peak (`mfu_bf16`)."""
    import numpy as np

    # Float copies once (every formula below is floating point); integer grid kept for the output.
    gpus, tp, pp = (grid[k].astype(np.float64) for k in ("gpus", "tp", "pp"))
    zero, mb, rc = (grid[k].astype(np.float64) for k in ("zero", "micro_batch", "recompute"))
    virtual, ep, cp = (grid[k].astype(np.float64) for k in ("virtual", "ep", "cp"))
    fp8 = 1 if precision == "fp8" else 0
    peak = gpu.peak_for(precision)
    g = GPUScalars(
        peak_flops=gpu.peak_flops,
        hbm_bytes_s=gpu.hbm_tbs * 1e12,
        intra_bytes_s=gpu.intra_gbs * 1e9,
        inter_bytes_s=gpu.inter_gbs * 1e9,
        gpus_per_node=gpus_per_node,
        fp8_peak_flops=gpu.fp8_peak_flops,
        gemm_fraction=gpu.gemm_fraction,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        model_par = tp * pp * cp
        dp = np.floor(gpus / model_par)
        n_seq = max(1, round(global_batch_tokens / model.seq_len))
        microbatches = np.floor(n_seq / np.maximum(dp * mb, 1.0))
        if layouts == "trainable":
            layout_ok = capability.supported(
                grid["tp"],
                grid["pp"],
                grid["zero"],
                grid["virtual"],
                model.n_layers,
                model.n_heads,
                model.n_kv_heads,
                gpus_per_node,
                grid["ep"],
                grid["cp"],
                fp8,
                model.experts,
            )
        else:
            layout_ok = physically_possible(grid, model, gpus_per_node)
        valid = (
            (gpus == dp * model_par)
            & (dp >= 1)
            & (tp <= max_tp)
            & (pp <= max_pp)
            & layout_ok
            & (microbatches >= 1)
            # Interleaving needs a pipeline, v chunks of whole layers per stage, and m >= p.
            & ((virtual == 1) | ((pp > 1) & (pp * virtual <= model.n_layers) & (microbatches >= pp)))
            # Experts are spread over data-parallel (x context-parallel) ranks.
            & (np.mod(dp * cp, ep) == 0)
        )
        microbatches = np.maximum(microbatches, 1.0)
        dp = np.maximum(dp, 1.0)
        replicas = dp * cp  # ranks holding the same weights: ZeRO and gradient reduction span them
        states = memory.model_state_bytes(model.params, tp, pp, replicas, zero, model.expert_params, ep, fp8)
        working = memory.zero3_working_bytes(model.largest_operator_params, tp, zero)
        stage_layers = np.ceil(model.n_layers / pp)
        per_layer, scores = model.layer_coefficients(fp8)
        acts = memory.activation_bytes(
            model.seq_len,
            mb,
            model.d_model,
            stage_layers * pp,
            model.vocab_size,
            tp,
            pp,
            microbatches,
            rc,
            virtual,
            per_layer=per_layer,
            scores=scores,
            n_heads=model.n_heads,
            cp=cp,
        )
        need = memory.total_bytes(states, acts, working)
        fits = valid & (need <= gpu.memory_bytes)

        step = performance.step_time(
            model, g, gpus, tp, pp, replicas, zero, mb, microbatches, rc, virtual, ep, cp, fp8
        )
        tokens_step = microbatches * dp * mb * model.seq_len
        model_mfu = 6.0 * model.active * tokens_step / (step * gpus * peak)
        used_mfu = model_mfu if mfu is None else np.full_like(model_mfu, mfu)
        solve_h = 6.0 * model.active * tokens / (gpus * peak * used_mfu) / 3600.0

        # Failures depend on the GPU count only: evaluate them once per distinct count and broadcast
        # (Daly's wall time is linear in the solve time).
        counts, where = (
            np.unique(grid["gpus"], return_inverse=True)
            if "gpu_index" not in grid
            else (grid["gpu_counts"], grid["gpu_index"])
        )
        counts = np.asarray(counts, dtype=np.float64)
        nodes_u = np.ceil(counts / gpus_per_node)
        mtbf_u = reliability.job_mtbf_hours(econ.mtbf_gpu_hours, counts)
        delta_u = reliability.checkpoint_seconds(model.params, nodes_u) / 3600.0
        if econ.checkpoint_minutes is None:
            tau_u = reliability.daly_interval(delta_u, mtbf_u)
        else:
            tau_u = np.full_like(mtbf_u, econ.checkpoint_minutes / 60.0)
        stretch_u = reliability.wall_time(1.0, tau_u, delta_u, econ.restart_minutes / 60.0, mtbf_u)
        nodes, mtbf_h, delta_h, tau_h = nodes_u[where], mtbf_u[where], delta_u[where], tau_u[where]
        wall_h = solve_h * stretch_u[where]
        gpu_hours = solve_h * gpus
        gpu_hours_total = wall_h * gpus

        draw = (
            energy.gpu_draw_watts(gpu.tdp_w, used_mfu * peak / gpu.peak_flops)
            if econ.gpu_power_w is None
            else np.full_like(used_mfu, econ.gpu_power_w)
        )
        mwh = energy.energy_mwh(gpu_hours_total, draw, econ.node_overhead * gpu.tdp_w, econ.pue)
        energy_usd = energy.energy_cost_usd(mwh, econ.energy_usd_per_mwh)
        if econ.owned:
            cost = costs.owned_cost(gpu_hours_total, econ.purchase_usd, econ.lifetime_years, energy_usd)
        else:
            cost = costs.cloud_cost(gpu_hours_total, econ.price_per_gpu_hour)

    out = {k: grid[k] for k in AXES}
    out.update(
        dp=dp.astype(np.int64),
        nodes=nodes.astype(np.int64),
        microbatches=microbatches.astype(np.int64),
        global_batch_tokens=tokens_step,
        memory_gb=need / 1e9,
        valid=valid,
        fits=fits,
        step_seconds=step,
        model_mfu=model_mfu,
        mfu=used_mfu,
        mfu_bf16=used_mfu * peak / gpu.peak_flops,
        solve_hours=solve_h,
        wall_hours=wall_h,
        gpu_hours=gpu_hours,
        gpu_hours_total=gpu_hours_total,
        checkpoint_seconds=delta_h * 3600.0,
        checkpoint_interval_minutes=tau_h * 60.0,
        job_mtbf_hours=mtbf_h,
        expected_interruptions=wall_h / mtbf_h,
        goodput=solve_h / wall_h,
        gpu_watts=draw,
        energy_mwh=mwh,
        energy_usd=energy_usd,
        co2_tonnes=energy.co2_tonnes(mwh, econ.carbon_kg_per_kwh),
        cost_usd=cost,
    )
    return Candidates(out)


def physically_possible(grid: dict[str, Any], model: ModelScalars, gpus_per_node: int) -> Any:
    """The layout rules of any stack (module docstring), element-wise over the grid."""
    tp, pp, virtual, ep, cp = (grid[k] for k in ("tp", "pp", "virtual", "ep", "cp"))
    return (
        (model.n_heads % tp == 0)
        & (tp <= gpus_per_node)
        & (gpus_per_node % tp == 0)
        & (pp <= model.n_layers)
        & (virtual >= 1)
        & ((ep == 1) | ((model.experts > 0) & (model.experts % ep == 0)))
        & (model.seq_len % (2 * cp) == 0)
    )


class Candidates(Mapping[str, Any]):
    """The evaluated candidates: `result[key]` is a flat array (one entry per candidate, in the order of
    the dense grid), made on first access and cached. Quantities that depend on few axes are kept at
    their small broadcast shape until then, and `row(i)` reads one candidate without flattening."""

    def __init__(self, arrays: dict[str, Any]) -> None:
        import numpy as np

        self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.shape: tuple[int, ...] = np.broadcast_shapes(*(v.shape for v in self._arrays.values()))
        self._flat: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._flat:
            import numpy as np

            self._flat[key] = np.broadcast_to(self._arrays[key], self.shape).reshape(-1)
        return self._flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def size(self) -> int:
        import math

        return math.prod(self.shape)

    def row(self, index: int) -> dict[str, Any]:
        """Every quantity of candidate `index` (a flat index) as plain Python numbers."""
        import numpy as np

        where = np.unravel_index(index, self.shape)
        out = {}
        for key, value in self._arrays.items():
            pad = (1,) * (len(self.shape) - value.ndim) + value.shape
            at = tuple(i if n > 1 else 0 for i, n in zip(where, pad, strict=True))
            out[key] = value.reshape(pad)[at].item()
        return out


def pareto_front(result: Mapping[str, Any]) -> Any:
    """Indices of the fitting candidates on the time/cost Pareto front, fastest first."""
    import numpy as np

    idx = np.flatnonzero(result["fits"])
    if idx.size == 0:
        return idx
    order = idx[np.lexsort((result["cost_usd"][idx], result["wall_hours"][idx]))]
    cost = result["cost_usd"][order]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], cost[:-1])))
    return order[cost < best_before]


def pick(result: Mapping[str, Any], mask: Any, key: str, tie: str) -> int | None:
    """Index of the candidate within `mask` & fits minimising `key` (then `tie`), or None."""
    import numpy as np

    idx = np.flatnonzero(result["fits"] & mask)
    if idx.size == 0:
        return None
    # Prefer the better-modelled shape among equals (matters when --mfu makes times identical).
    order = np.lexsort((-result["model_mfu"][idx], result[tie][idx], result[key][idx]))
    return int(idx[order[0]])
