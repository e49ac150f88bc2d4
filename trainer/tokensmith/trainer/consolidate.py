"""Consolidated weights: when a save writes `model.safetensors`, and how a reader rebuilds the full
weights of a checkpoint that has none (consolidate on read), with torch alone (no DeepSpeed import).

Writing consolidated weights at every checkpoint costs a second copy of the model on the blocked or
background path (under ZeRO-3 a gather of every parameter onto rank 0; under TP/PP a read-back of the
whole `portable/` state), for a file nothing needs while the run trains. torchtitan saves sharded DCP
checkpoints and converts to one file on export (`checkpoint.last_save_model_only`, `scripts/`); OLMo-core
likewise saves sharded state and unshards on conversion. We do the same: `checkpoint.consolidate_every`
(default 0) writes `model.safetensors` only at every Mth checkpoint of the run and at the final one, and
every reader (eval, export, post-save verification, the operator's evaluation jobs) rebuilds the weights
from what every checkpoint holds anyway (`read_weights`):

- `model.safetensors`, when the checkpoint has it;
- `portable/zero/<name>/fp32.pt` (tensor/pipeline-parallel runs: full fp32 weights per parameter,
  parallel/portable.py);
- ZeRO-3 (`ds/zero_pp_rank_<r>_mp_rank_00_{model,optim}_states.pt`): each rank's flat fp32 partition
  (`fp32_flat_groups`), cut per parameter in `param_shapes` order, ceil(numel / world) elements per rank,
  the last rank's padded: the reconstruction DeepSpeed's own `zero_to_fp32.py` performs;
- ZeRO 0-2 (`ds/mp_rank_00_model_states.pt`): the whole module state (`module`), which DeepSpeed keeps
  unpartitioned in the training dtype (exactly the tensors `model.safetensors` would hold).

DeepSpeed's optimizer files pickle three of its own classes (the loss scaler, the ZeRO stage enum, a
fragment address) beside plain tensors. They are read with `torch.load(weights_only=True)`, which
refuses every other global, with inert stand-ins registered under those three names
(`torch.serialization.safe_globals`), so the reader neither needs nor imports DeepSpeed and runs no
code from the file. Under bf16 the ZeRO-3 route returns the fp32 master weights (a gathered
`model.safetensors` would hold the 16-bit ones); the ZeRO 0-2 route returns the 16-bit module.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tokensmith.core.errors import TokensmithError
from tokensmith.trainer.checkpoint import DS_TAG, PORTABLE, WEIGHTS

if TYPE_CHECKING:
    import torch

MODULE_STATES = "mp_rank_00_model_states.pt"
_ZERO3_OPTIM = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")
# DeepSpeed classes pickled into ZeRO optimizer files; read as inert objects (nothing of them is used).
DEEPSPEED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)

Trigger = Literal["schedule", "final", "sigterm"]
Source = Literal["safetensors", "portable", "zero3", "module"]


def wanted(index: int, every: int, trigger: str) -> bool:
    """Whether checkpoint number `index` (1-based, counted over the run's lineage, resumes included)
    writes `model.safetensors`: the final checkpoint always (what a finished run hands to export), every
    `every`th one when `every` > 0, and never the SIGTERM save (it must fit the grace period; readers
    consolidate it on read like any other)."""
    if trigger == "final":
        return True
    if trigger == "sigterm":
        return False
    return every > 0 and index % every == 0


def source(ckpt: Path) -> Source:
    """Where `read_weights` takes the weights of `ckpt` from (the cheapest complete source)."""
    if (ckpt / WEIGHTS).is_file():
        return "safetensors"
    if (ckpt / PORTABLE / "zero").is_dir():
        return "portable"
    if (ckpt / DS_TAG / "zero_pp_rank_0_mp_rank_00_model_states.pt").is_file():
        return "zero3"
    if (ckpt / DS_TAG / MODULE_STATES).is_file():
        return "module"
    raise TokensmithError(
        f"checkpoint {ckpt} holds no weights (no {WEIGHTS}, no DeepSpeed model states, no {PORTABLE}/); "
        "it is incomplete or not a Tokensmith checkpoint"
    )


def read_weights(ckpt: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The full weights of `ckpt` by parameter name (CPU tensors), from whichever source it has."""
    kind = source(ckpt)
    if kind == "safetensors":
        from safetensors.torch import load_file

        return load_file(str(ckpt / WEIGHTS), device="cpu")
    if kind == "portable":
        return portable_weights(ckpt / PORTABLE, names)
    if kind == "zero3":
        return zero3_weights(ckpt / DS_TAG)
    module: dict[str, torch.Tensor] = load_restricted(ckpt / DS_TAG / MODULE_STATES)["module"]
    return {k: v.clone() for k, v in module.items()}  # not views into the mmap'ed file


def load_restricted(path: Path) -> Any:
    """A DeepSpeed (or our portable) file read with `torch.load(weights_only=True)`: only tensors,
    containers and the inert DeepSpeed stand-ins allowed (mmap'ed: only the tensors used are read)."""
    import torch

    allowed: list[Any] = [(_inert(name), name) for name in DEEPSPEED_GLOBALS]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _inert(qualified: str) -> type:
    """A class that accepts whatever the unpickler hands it (constructor arguments, state) and ignores it."""

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def setstate(self: Any, state: Any) -> None:
        pass

    return type(qualified.rsplit(".", 1)[1], (), {"__init__": init, "__setstate__": setstate})


def portable_weights(directory: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The full fp32 weights by name from a `portable/` directory (TP/PP runs; parallel/portable.py
    writes it): what a TP/PP checkpoint's model.safetensors holds, and what readers rebuild without it."""
    return {name: _portable(directory, name) for name in names}


def _portable(directory: Path, name: str) -> torch.Tensor:
    blob = load_restricted(directory / "zero" / name / "fp32.pt")
    tensor: torch.Tensor = blob["param"] if isinstance(blob, dict) else blob
    return tensor.clone()  # not a view into the mmap'ed file


def zero3_weights(ds_dir: Path) -> dict[str, torch.Tensor]:
    """Full fp32 weights from a ZeRO-3 checkpoint's per-rank flat partitions (zero_to_fp32's rule)."""
    import torch

    ranks = sorted(int(m.group(1)) for p in ds_dir.iterdir() if (m := _ZERO3_OPTIM.match(p.name)))
    world = len(ranks)
    if not ranks or ranks != list(range(world)):
        raise TokensmithError(f"{ds_dir}: ZeRO-3 optimizer partitions of ranks {ranks} (expected 0..n-1)")
    shapes: dict[str, Any] = {}
    for group in load_restricted(ds_dir / "zero_pp_rank_0_mp_rank_00_model_states.pt")["param_shapes"]:
        shapes.update(group)
    flats = []
    for rank in ranks:
        optim = load_restricted(ds_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
        flats.append(torch.cat([g.reshape(-1) for g in optim["optimizer_state_dict"]["fp32_flat_groups"]]))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        numel = math.prod(shape)
        part = math.ceil(numel / world)  # every rank holds `part` elements; the tail of the last is padding
        out[name] = torch.cat([flat[offset : offset + part] for flat in flats])[:numel].view(*shape).clone()
        offset += part
    if offset != flats[0].numel():
        raise TokensmithError(
            f"{ds_dir}: the ZeRO-3 partitions hold {flats[0].numel()} elements per rank, the parameters "
            f"{offset}; the checkpoint is corrupt or from an unsupported DeepSpeed version"
        )
    return out
