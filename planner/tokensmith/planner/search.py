"""Vectorised cluster-shape search: every (GPUs, TP, PP, DP, ZeRO stage, micro-batch, recompute,
interleaved pipeline chunks)
candidate is one element of numpy arrays; memory, step time, MFU, failures, cost and energy are
evaluated for all of them at once (no Python loop per candidate), then filtered and ranked.

Constraints applied (why):
- the layout is one the trainer runs: `capability.supported`, the rules the operator and the trainer
  check too (TP inside a node and dividing the heads, PP at most the layers, which ZeRO stages combine
  with TP and PP, no interleaved stages), so the search never proposes a shape the trainer refuses;
- at least one micro-batch per data-parallel replica in the global batch;
- the per-GPU memory (memory.py) fits the GPU.
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
RECOMPUTE = (0, 1)
# Interleaved chunks the trainer runs (DeepSpeed's 1F1B only: 1); the memory and time models keep the
# general form for when it grows.
VIRTUAL_STAGES = tuple(range(1, capability.MAX_VIRTUAL_STAGES + 1))
AXES = (
    "gpus",
    "tp",
    "pp",
    "zero",
    "micro_batch",
    "recompute",
    "virtual",
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


def candidate_grid(gpu_counts: list[int]) -> dict[str, Any]:
    """The cross product of the search space as an open mesh: one integer array per axis, each
    shaped to broadcast against the others (gpus on axis 0, ..., interleaving on axis 6). `evaluate`
    computes every intermediate at the smallest shape it depends on (e.g. GEMM efficiency per TP
    degree) and only the final quantities at the full size, which is what makes it fast."""
    import numpy as np

    axes = np.meshgrid(
        np.asarray(gpu_counts, dtype=np.int64),
        np.asarray(TP_DEGREES, dtype=np.int64),
        np.asarray(PP_DEGREES, dtype=np.int64),
        np.asarray(ZERO_STAGES, dtype=np.int64),
        np.asarray(MICRO_BATCHES, dtype=np.int64),
        np.asarray(RECOMPUTE, dtype=np.int64),
        np.asarray(VIRTUAL_STAGES, dtype=np.int64),
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
) -> Candidates:
    """Evaluate every candidate; returns the grid's arrays plus one array per derived quantity.

    With `mfu` given, time follows from it (the performance model still ranks shapes and memory still
    filters them); otherwise from the performance model."""
    import numpy as np

    # Float copies once (every formula below is floating point); integer grid kept for the output.
    gpus, tp, pp = (grid[k].astype(np.float64) for k in ("gpus", "tp", "pp"))
    zero, mb, rc = (grid[k].astype(np.float64) for k in ("zero", "micro_batch", "recompute"))
    virtual = grid["virtual"].astype(np.float64)
    g = GPUScalars(
        peak_flops=gpu.peak_flops,
        hbm_bytes_s=gpu.hbm_tbs * 1e12,
        intra_bytes_s=gpu.intra_gbs * 1e9,
        inter_bytes_s=gpu.inter_gbs * 1e9,
        gpus_per_node=gpus_per_node,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        model_par = tp * pp
        dp = np.floor(gpus / model_par)
        n_seq = max(1, round(global_batch_tokens / model.seq_len))
        microbatches = np.floor(n_seq / np.maximum(dp * mb, 1.0))
        valid = (
            (gpus == dp * model_par)
            & (dp >= 1)
            & (tp <= max_tp)
            & (pp <= max_pp)
            & capability.supported(
                grid["tp"],
                grid["pp"],
                grid["zero"],
                grid["virtual"],
                model.n_layers,
                model.n_heads,
                model.n_kv_heads,
                gpus_per_node,
            )
            & (microbatches >= 1)
            # Interleaving needs a pipeline, v chunks of whole layers per stage, and m >= p.
            & ((virtual == 1) | ((pp > 1) & (pp * virtual <= model.n_layers) & (microbatches >= pp)))
        )
        microbatches = np.maximum(microbatches, 1.0)
        dp = np.maximum(dp, 1.0)
        states = memory.model_state_bytes(model.params, tp, pp, dp, zero)
        stage_layers = np.ceil(model.n_layers / pp)
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
        )
        need = memory.total_bytes(states, acts)
        fits = valid & (need <= gpu.memory_bytes)

        step = performance.step_time(model, g, gpus, tp, pp, dp, zero, mb, microbatches, rc, virtual)
        tokens_step = microbatches * dp * mb * model.seq_len
        model_mfu = 6.0 * model.params * tokens_step / (step * gpus * gpu.peak_flops)
        used_mfu = model_mfu if mfu is None else np.full_like(model_mfu, mfu)
        solve_h = 6.0 * model.params * tokens / (gpus * gpu.peak_flops * used_mfu) / 3600.0

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
            energy.gpu_draw_watts(gpu.tdp_w, used_mfu)
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
