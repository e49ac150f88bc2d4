"""What parallel layouts `tokensmith train` implements: the one source of truth read by the planner's
search (it never proposes a shape the trainer refuses), the operator's spec check (one-line reasons,
Failed/InvalidSpec) and the trainer's config validation (exit 78).

It sits beside `arch.py` in the dependency-free core (no torch, no numpy import) because all three
components read it; the trainer is what the rules describe.

A layout is (tensor TP, pipeline PP, data DP, ZeRO stage, recompute mode, virtual pipeline stages).
The rules and why each holds:

- TP divides the attention heads and the key/value heads: Megatron-style tensor parallelism splits
  whole heads over the TP ranks (Shoeybi et al. 2019, arXiv:1909.08053, §3), and our trainer does not
  replicate KV heads, so a TP degree above the KV-head count is refused.
- TP stays inside a node: TP divides the GPUs per node, so the process-group layout below puts every
  TP group on one node (its all-reduces sit on the critical path of every layer).
- PP is at most the number of layers (every stage holds at least one transformer block).
- ZeRO stages 2 and 3 only without pipeline parallelism: DeepSpeed's pipeline engine supports ZeRO
  stages 0 and 1 only (DeepSpeed docs, "Pipeline Parallelism": "ZeRO-2 and ZeRO-3 are incompatible
  with pipeline parallelism").
- ZeRO-3 only without tensor parallelism: DeepSpeed's tensor-parallel training supports ZeRO stages
  0-2 (its AutoTP training tutorial); parameter partitioning over DP would re-shard TP shards.
- No interleaved (virtual) pipeline stages: DeepSpeed's pipeline engine runs the 1F1B schedule only
  (Narayanan et al. 2021's interleaved schedule is Megatron-LM's), so `virtual_stages` must be 1.
- No mixture-of-experts model, expert parallelism (EP), context parallelism (CP) or FP8 training:
  the trainer builds dense bf16 models and splits neither experts nor sequences. The planner models
  them (`tokensmith plan --layouts any`) for runs on other stacks (Megatron-LM, DeepSeek-V3's).
- Recomputation: none, selective (Korthikanti et al. 2022, arXiv:2205.05198: recompute attention's
  softmax/dropout only) or full (each block's input kept, the block recomputed in the backward pass).

Process-group layout (the rank order DeepSpeed's `PipeModelDataParallelTopology` uses: axes pipe, data,
model, the last one fastest): `rank = (pp_rank * DP + dp_rank) * TP + tp_rank`. With torchrun's
`rank = node_rank * nproc_per_node + local_rank`, TP groups are consecutive ranks, hence on one node
whenever TP divides nproc_per_node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Recompute = Literal["none", "selective", "full"]

RECOMPUTE_MODES: tuple[Recompute, ...] = ("none", "selective", "full")
TENSOR_DEGREES = (1, 2, 4, 8)  # what the planner searches; the trainer takes any divisor-valid degree
ZERO_WITH_PIPELINE = (0, 1)
ZERO_WITH_TENSOR = (0, 1, 2)
MAX_VIRTUAL_STAGES = 1
MAX_EXPERT_PARALLEL = 1
MAX_CONTEXT_PARALLEL = 1
PRECISIONS = ("bf16",)
MIXTURE_OF_EXPERTS = False


@dataclass(frozen=True)
class Layout:
    """One parallel layout of a run. `data` is the data-parallel degree (world / (tensor x pipeline))."""

    tensor: int = 1
    pipeline: int = 1
    data: int = 1
    zero_stage: int = 0
    recompute: Recompute = "none"
    virtual_stages: int = 1
    expert: int = 1  # expert-parallel degree
    context: int = 1  # context-parallel degree
    precision: str = "bf16"

    @property
    def world_size(self) -> int:
        return self.tensor * self.pipeline * self.data

    @classmethod
    def for_world(
        cls,
        world_size: int,
        tensor: int = 1,
        pipeline: int = 1,
        zero_stage: int = 0,
        recompute: Recompute = "none",
        virtual_stages: int = 1,
    ) -> Layout:
        """The layout of `world_size` processes; `data` is what is left after TP x PP (0 when TP x PP
        does not divide the world size, which `problems` reports)."""
        model = tensor * pipeline
        data = world_size // model if model and world_size % model == 0 else 0
        return cls(tensor, pipeline, data, zero_stage, recompute, virtual_stages)


def supported(
    tp: Any,
    pp: Any,
    zero: Any,
    virtual: Any,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    gpus_per_node: int,
    ep: Any = 1,
    cp: Any = 1,
    fp8: Any = 0,
    experts: int = 0,
) -> Any:
    """The rules above as one boolean expression that works element-wise on numpy arrays (the planner's
    vectorised search) and on plain integers alike. Recompute needs no rule: every mode is implemented.
    `fp8` is 1 for FP8 training; `experts` the model's routed experts (0: dense)."""
    return (
        (tp >= 1)
        & (pp >= 1)
        & (n_heads % tp == 0)
        & (n_kv_heads % tp == 0)
        & (tp <= gpus_per_node)
        & (gpus_per_node % tp == 0)
        & (pp <= n_layers)
        & ((pp == 1) | (zero <= max(ZERO_WITH_PIPELINE)))
        & ((tp == 1) | (zero <= max(ZERO_WITH_TENSOR)))
        & (virtual <= MAX_VIRTUAL_STAGES)
        & (virtual >= 1)
        & (ep <= MAX_EXPERT_PARALLEL)
        & (cp <= MAX_CONTEXT_PARALLEL)
        & ((fp8 == 0) | ("fp8" in PRECISIONS))
        & ((experts == 0) | MIXTURE_OF_EXPERTS)
    )


def problems(
    layout: Layout,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    gpus_per_node: int | None = None,
    world_size: int | None = None,
    experts: int = 0,
) -> list[str]:
    """Every rule `layout` breaks, each as one line saying what to change (empty: the trainer runs it).

    `gpus_per_node` (processes per node) and `world_size` are checked when known: the trainer knows its
    world size, the operator both, the planner's search applies `supported` directly."""
    kv = n_kv_heads or n_heads
    tp, pp = layout.tensor, layout.pipeline
    out: list[str] = []
    if tp < 1 or pp < 1:
        return [f"tensor ({tp}) and pipeline ({pp}) parallel degrees must be at least 1"]
    if n_heads % tp or kv % tp:
        out.append(
            f"tensor parallel degree {tp} must divide the attention heads ({n_heads}) and the key/value "
            f"heads ({kv}); choose a divisor of {_gcd(n_heads, kv)}"
        )
    if gpus_per_node is not None and (tp > gpus_per_node or gpus_per_node % tp):
        out.append(
            f"tensor parallel degree {tp} must divide the processes per node ({gpus_per_node}) so that "
            "each tensor-parallel group stays inside one node"
        )
    if pp > n_layers:
        out.append(f"pipeline parallel degree {pp} exceeds the model's {n_layers} layers")
    if pp > 1 and layout.zero_stage not in ZERO_WITH_PIPELINE:
        out.append(
            f"ZeRO stage {layout.zero_stage} cannot be combined with pipeline parallelism (DeepSpeed's "
            "pipeline engine supports ZeRO 0 and 1); set the ZeRO stage to 1"
        )
    if tp > 1 and layout.zero_stage not in ZERO_WITH_TENSOR:
        out.append(
            f"ZeRO stage {layout.zero_stage} cannot be combined with tensor parallelism (supported: ZeRO "
            "0-2); set the ZeRO stage to 1 or 2"
        )
    if layout.virtual_stages != 1:
        out.append(
            f"virtual pipeline stages ({layout.virtual_stages}) are not implemented (DeepSpeed runs the "
            "1F1B schedule); use 1"
        )
    if experts and not MIXTURE_OF_EXPERTS:
        out.append(
            f"mixture-of-experts models ({experts} experts) are not implemented by tokensmith train; "
            "plan a dense model, or run this one on another stack"
        )
    if layout.expert > MAX_EXPERT_PARALLEL:
        out.append(f"expert parallelism ({layout.expert}) is not implemented by tokensmith train; use 1")
    if layout.context > MAX_CONTEXT_PARALLEL:
        out.append(f"context parallelism ({layout.context}) is not implemented by tokensmith train; use 1")
    if layout.precision not in PRECISIONS:
        out.append(
            f"precision {layout.precision!r} is not implemented by tokensmith train "
            f"(it trains in {', '.join(PRECISIONS)})"
        )
    if layout.recompute not in RECOMPUTE_MODES:
        out.append(f"recompute {layout.recompute!r} is not one of {', '.join(RECOMPUTE_MODES)}")
    if world_size is not None and (world_size % (tp * pp) or world_size < tp * pp):
        out.append(
            f"world size {world_size} is not a multiple of tensor x pipeline = {tp} x {pp} = {tp * pp}"
        )
    return out


def rank_coordinates(rank: int, layout: Layout) -> tuple[int, int, int]:
    """(pipeline rank, data rank, tensor rank) of a global rank (see the module docstring)."""
    tp_rank = rank % layout.tensor
    dp_rank = (rank // layout.tensor) % layout.data
    pp_rank = rank // (layout.tensor * layout.data)
    return pp_rank, dp_rank, tp_rank


def rank_of(pp_rank: int, dp_rank: int, tp_rank: int, layout: Layout) -> int:
    """The global rank at given coordinates (inverse of `rank_coordinates`)."""
    return (pp_rank * layout.data + dp_rank) * layout.tensor + tp_rank


def groups(layout: Layout) -> dict[str, list[list[int]]]:
    """The process groups of a layout: `tensor`, `pipeline` and `data`, each a list of rank lists."""
    world = range(layout.world_size)
    coords = {r: rank_coordinates(r, layout) for r in world}

    def by(keep: tuple[int, ...]) -> list[list[int]]:
        out: dict[tuple[int, ...], list[int]] = {}
        for r, c in coords.items():
            out.setdefault(tuple(c[i] for i in keep), []).append(r)
        return [out[k] for k in sorted(out)]

    return {"tensor": by((0, 1)), "pipeline": by((1, 2)), "data": by((0, 2))}


def _gcd(a: int, b: int) -> int:
    import math

    return math.gcd(a, b)
