"""A layout-free copy of the training state, written beside DeepSpeed's own checkpoint by runs with
tensor or pipeline parallelism, so that a checkpoint resumes exactly under any other layout.

Format: DeepSpeed's universal checkpoint layout per parameter (what `ds_to_universal` writes for
plain data-parallel runs), under the parameter's name in the unsharded `Transformer`:

    <dir>/zero/<name>/fp32.pt        {"param": full fp32 master weight}
    <dir>/zero/<name>/exp_avg.pt     {"param": full Adam first moment}
    <dir>/zero/<name>/exp_avg_sq.pt  {"param": full Adam second moment}

DeepSpeed's own `ds_to_universal` cannot convert pipeline checkpoints into these names (a pipeline
engine names parameters by layer index, `3.block.attn.qkv.weight`), and its loader maps a universal
checkpoint only onto a module with the same names; so we write and read this format ourselves, with
DeepSpeed's tensor-fragment API (`safe_get/set_full_fp32_param`, `..._optimizer_state`) for the ZeRO
partitions and the AutoTP layers' own gather/partition for the tensor-parallel shards.

Saving is collective: every rank calls `save`, parameters are visited in module order (identical on
the ranks of a data- or tensor-parallel group), and each stage's parameters are written by its ranks
in turn. The Adam step count is not stored: every optimizer step advances it by one (fp32/bf16), so
it is the trainer's step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tokensmith.trainer.parallel.engine import Built

STATES = ("fp32", "exp_avg", "exp_avg_sq")
ZERO = "zero"


def _local(built: Built, p: Any, state: str) -> Any:
    """This rank's tensor-parallel shard of `state` of `p`, complete over the data-parallel group."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    if hasattr(p, "_hp_mapping"):  # ZeRO 1/2: the master weights and moments are partitioned over DP
        if state == "fp32":
            return safe_get_full_fp32_param(p)
        return safe_get_full_optimizer_state(p, state)
    if state == "fp32":
        return p.data.float()
    return built.optimizer.state[p][state]


def _gather(built: Built, p: Any, local: Any) -> Any:
    """The full tensor from every tensor-parallel rank's shard (collective over the TP group); the
    AutoTP layer owning `p` knows how it was cut, so `p` lends it the shard for the call."""
    return _through_layer(built, p, local, lambda layer: layer.gather_params([p]), contiguous=True)


def _split(built: Built, p: Any, full: Any) -> Any:
    """This rank's shard of a full tensor, cut the way `p` was."""
    return _through_layer(built, p, full, lambda layer: layer._tp_partition([p]), contiguous=False)


def _through_layer(built: Built, p: Any, value: Any, op: Any, contiguous: bool) -> Any:
    """`value` put into `p` for the duration of `op(layer)` (the AutoTP layer that owns `p` reshapes it
    in place), and what `p` then holds; `p` keeps its own data. Unsharded parameters pass unchanged."""
    from tokensmith.trainer.parallel.tensor import is_sharded

    layer = built.owners.get(id(p))
    if layer is None or not is_sharded(p):
        return value
    kept = p.data
    try:
        lent = value.to(kept.dtype)
        p.data = lent.contiguous() if contiguous else lent.clone()
        op(layer)
        return p.data.clone()
    finally:
        p.data = kept


def fp32_partitions(optimizer: Any) -> list[Any]:
    """The flat fp32 master partitions of DeepSpeed's ZeRO 1/2 or bf16 optimizer (none without them)."""
    for attribute in ("single_partition_of_fp32_groups", "fp32_groups_flat_partition"):
        flats = getattr(optimizer, attribute, None)
        if flats:
            return list(flats)
    return []


def _link(built: Built) -> None:
    """Make ZeRO 1/2 expose the Adam moments per parameter. DeepSpeed links them lazily after an
    optimizer step; before the first step of a resumed run the moments do not exist yet, so they are
    created (as zeros, overwritten by `load`) the way torch's AdamW would."""
    import torch

    opt = built.optimizer
    flats = fp32_partitions(opt)
    if not flats:
        return
    for flat in flats:
        state = opt.optimizer.state[flat]
        if "exp_avg" not in state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(flat)
            state["exp_avg_sq"] = torch.zeros_like(flat)
    opt._hp_optimizer_states_linked = False
    opt._lazy_init_hp_params_optimizer_state()


def save(built: Built, directory: Path, tied_elsewhere: set[str]) -> None:
    """Write this rank's share of the layout-free state under `directory` (collective)."""
    import torch

    _link(built)
    layout = built.layout
    stage_ranks = layout.data * layout.tensor
    me = built.dp_rank * layout.tensor + built.tp_rank
    for index, (name, p) in enumerate(built.named_parameters()):
        writer = index % stage_ranks == me and name not in tied_elsewhere
        for state in STATES:
            full = _gather(built, p, _local(built, p, state)).detach().float().cpu()
            if writer:
                target = directory / ZERO / name / f"{state}.pt"
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                torch.save({"param": full}, tmp)
                os.replace(tmp, target)


def read(directory: Path, name: str, state: str) -> Any:
    import torch

    blob = torch.load(directory / ZERO / name / f"{state}.pt", map_location="cpu", weights_only=False)
    return blob["param"] if isinstance(blob, dict) else blob


def load(built: Built, directory: Path, step: int) -> None:
    """Set this rank's weights and Adam state from a layout-free (or DeepSpeed universal) state."""
    import torch
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    _link(built)
    zero_partitioned = False
    for name, p in built.named_parameters():
        values = {s: _split(built, p, read(directory, name, s)) for s in STATES}
        with torch.no_grad():
            p.data.copy_(values["fp32"].to(p.dtype))
        if hasattr(p, "_hp_mapping"):
            zero_partitioned = True
            safe_set_full_fp32_param(p, values["fp32"].to(p.device))
            for s in STATES[1:]:
                safe_set_full_optimizer_state(p, values[s].to(p.device), s)
        else:
            built.optimizer.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": values["exp_avg"].to(p.device),
                "exp_avg_sq": values["exp_avg_sq"].to(p.device),
            }
    if zero_partitioned:
        inner = built.optimizer.optimizer
        for state in inner.state.values():
            if "step" in state:
                state["step"] = torch.full_like(torch.as_tensor(state["step"]), float(step))


def resume_route(
    saved: dict[str, Any], now: tuple[int, int, int], zero_stage: int, has_portable: bool
) -> str:
    """How a checkpoint written under `saved` (its trainer_state: world_size, tensor, pipeline) is
    loaded by a run with layout `now` = (world size, tensor, pipeline):

    - "native": the same layout, or plain data parallelism without ZeRO (DeepSpeed's own state is whole);
    - "portable": the checkpoint holds the layout-free state (a TP/PP run wrote it);
    - "universal": plain DP -> plain DP with ZeRO partitions: DeepSpeed's ds_to_universal + load_universal;
    - "universal-portable": plain DP (ZeRO >= 1) -> TP/PP: ds_to_universal's output read as portable state.

    ConfigError (78) for a plain DP ZeRO-0 checkpoint resumed under TP/PP (no per-parameter state)."""
    from tokensmith.core.errors import ConfigError

    before = (int(saved.get("world_size", 0)), int(saved.get("tensor", 1)), int(saved.get("pipeline", 1)))
    plain_now = now[1] == 1 and now[2] == 1
    if before == now:
        return "native"
    if has_portable:
        return "portable"
    if zero_stage >= 1:
        return "universal" if plain_now else "universal-portable"
    if plain_now:
        return "native"
    raise ConfigError(
        f"this checkpoint was written by a data-parallel ZeRO-0 run of {before[0]} processes, which keeps no "
        "layout-free state; resume it with parallelism.tensor=1 and parallelism.pipeline=1"
    )
