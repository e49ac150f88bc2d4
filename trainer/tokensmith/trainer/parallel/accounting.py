"""Model-state memory per rank: what the engine holds (measured) and what it should hold (pure).

The planner (`tokensmith.planner.memory.model_state_bytes`) budgets 2 + 2 + 12 bytes per parameter
(bf16 weights and gradients; fp32 master weights and Adam's two moments; Rajbhandari et al. 2019,
§3.1) over params / (TP x PP) parameters per rank. `state_bytes` is the same formula with the bytes of
the precision actually run (fp32 on CPU: 4 + 4 + 8 without ZeRO, where the fp32 weights are the
master copy, and 4 + 4 + 12 under ZeRO 1/2, which keep their own fp32 partition beside the model) and
with the parameters a rank actually holds (`local_parameters`): tensor parallelism shards the block
matrices and the vocabulary but replicates norms, learned positions and row-parallel biases;
pipeline stages are balanced by FLOPs, not parameters, and the tied embedding lives on the first and
the last stage.
"""

from __future__ import annotations

from typing import Any

from tokensmith.planner.capability import Layout
from tokensmith.trainer.config import TrainerConfig

SHARDED_SUFFIXES = (
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.o.weight",
    "mlp.fc.weight",
    "mlp.fc.bias",
    "mlp.proj.weight",
    "tok_emb.weight",
    "lm_head.weight",
)


def bytes_per_parameter(precision: str, zero_stage: int) -> tuple[int, int, int]:
    """(weights, gradients, optimizer state incl. any fp32 master copy) bytes per parameter."""
    if precision == "fp32":
        return (4, 4, 12 if zero_stage >= 1 else 8)
    return (2, 2, 12)  # bf16/fp16 weights and gradients, fp32 master + Adam moments (the planner's)


def state_bytes(precision: str, zero_stage: int, local: int, dp: int) -> dict[str, float]:
    """Per-rank bytes of weights, gradients and optimizer state of `local` parameters, ZeRO over `dp`
    (the planner's formula with the precision's bytes)."""
    w, g, o = bytes_per_parameter(precision, zero_stage)
    z = zero_stage
    return {
        "params": w * local / (dp if z >= 3 else 1),
        "grads": g * local / (dp if z >= 2 else 1),
        "optimizer": o * local / (dp if z >= 1 else 1),
    }


def stage_of_parameters(cfg: TrainerConfig, layout: Layout) -> dict[str, list[int]]:
    """Parameter name -> the pipeline stages holding it."""
    import torch

    from tokensmith.trainer.model import Transformer
    from tokensmith.trainer.parallel.pipeline import layer_costs, stage_bounds

    m = cfg.model
    with torch.device("meta"):
        names = [n for n, _ in Transformer(m).named_parameters()]
    if layout.pipeline == 1:
        return {n: [0] for n in names}
    bounds = stage_bounds(layer_costs(m), layout.pipeline)

    def stage(layer: int) -> int:
        return next(s for s in range(layout.pipeline) if bounds[s] <= layer < bounds[s + 1])

    head = m.n_layers + 2
    out: dict[str, list[int]] = {}
    for n in names:
        if n.startswith("blocks."):
            layers = [1 + int(n.split(".")[1])]
        elif n.startswith("norm_f."):
            layers = [m.n_layers + 1]
        elif n.startswith("lm_head."):
            layers = [head]
        elif n.startswith("tok_emb.") and m.tie_embeddings:
            layers = [0, head]
        else:
            layers = [0]
        out[n] = sorted({stage(layer) for layer in layers})
    return out


def local_parameters(cfg: TrainerConfig, layout: Layout, pp_rank: int) -> int:
    """Parameters held by a rank of pipeline stage `pp_rank` (any tensor rank: shards are equal)."""
    import torch

    from tokensmith.trainer.model import Transformer

    with torch.device("meta"):
        sizes = {n: p.numel() for n, p in Transformer(cfg.model).named_parameters()}
    total = 0
    for name, stages in stage_of_parameters(cfg, layout).items():
        if pp_rank in stages:
            sharded = name.endswith(SHARDED_SUFFIXES)
            total += sizes[name] // layout.tensor if sharded else sizes[name]
    return total


class Recorder:
    """Measures the bytes a running engine holds: module parameters, the gradients the optimizer
    steps on (recorded inside its step, before DeepSpeed frees them: the parameters' .grad without
    ZeRO, ZeRO's fp32 gradient partition with it, so under ZeRO-1 the reduced partition rather than
    the full gradient that exists during the backward pass) and the optimizer's tensors (ZeRO's fp32
    partitions and every state tensor)."""

    def __init__(self, built: Any) -> None:
        self.built = built
        self.grads = 0
        inner = getattr(built.optimizer, "optimizer", built.optimizer)
        self.inner = inner
        original = inner.step

        def step(*args: Any, **kwargs: Any) -> Any:
            # ZeRO steps one parameter group at a time: add them up
            self.grads += sum(
                p.grad.numel() * p.grad.element_size()
                for group in inner.param_groups
                for p in group["params"]
                if p.grad is not None
            )
            return original(*args, **kwargs)

        self.original = original
        inner.step = step

    def measure(self) -> dict[str, int]:
        """Call after the first optimizer step (and only once: it removes the step hook)."""
        self.inner.step = self.original
        seen: set[int] = set()
        params = 0
        for p in self.built.engine.module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel() * p.element_size()
        optimizer = 0
        from tokensmith.trainer.parallel.portable import fp32_partitions

        for flat in fp32_partitions(self.built.optimizer):
            optimizer += flat.numel() * flat.element_size()
        for state in self.inner.state.values():
            for value in state.values():
                if hasattr(value, "numel") and value.dim() > 0:
                    optimizer += value.numel() * value.element_size()
        return {"params": params, "grads": self.grads, "optimizer": optimizer}
