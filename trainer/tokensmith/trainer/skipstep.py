"""Two things the health guardrails need from DeepSpeed's engine before its optimizer step: the squared
gradient norm of this rank's share of the reduced gradients (so that one SUM all-reduce, which the loop
already does, yields the global norm), and a way to skip the step with weights and optimizer state
untouched.

Skipping uses DeepSpeed's own overflow path (read in deepspeed/runtime/zero/stage_1_and_2.py and
stage3.py, `step()`): when the ZeRO optimizer sees `overflow`, it clears the gradients and partition
buffers and returns without touching the fp32 master weights or Adam's moments, and the engine counts
a skipped step (`engine.skipped_steps`) and keeps its micro-step bookkeeping straight. We force that
branch for one call without its own overflow all-reduce (every rank already agrees through ours).
Without ZeRO the optimizer is torch's AdamW: its `step` is replaced by a no-op for that one call, so the
engine still runs its own bookkeeping (clipping, zeroing the gradients, counting the step). Without ZeRO
under bf16 (GPUs) DeepSpeed's BF16_Optimizer gets its own invalid-norm branch (clear the fp32 and bf16
gradient accumulators, no update); that path is written from DeepSpeed's code but not run here (no GPU).
"""

from __future__ import annotations

from typing import Any


def local_grad_square(engine: Any, world_size: int) -> Any:
    """Sum of squared gradients this rank contributes, such that the SUM over ranks is the global
    squared norm (call after the last micro-step's backward, before `engine.step()`)."""
    import torch

    opt = engine.optimizer
    tensors: list[Any] = []
    averaged = getattr(opt, "averaged_gradients", None)
    if isinstance(averaged, dict) and averaged:
        # ZeRO-1/2/3: this rank's partition of the reduced gradients (padding is zeros).
        tensors = [t for group in averaged.values() if group is not None for t in group if t is not None]
    elif getattr(opt, "cpu_offload", False):
        tensors = [p.grad for p in getattr(opt, "single_partition_of_fp32_groups", []) if p.grad is not None]
    if tensors:
        norms = torch._foreach_norm([t.float() if t.dtype != torch.float32 else t for t in tensors])
        return torch.stack(norms).pow(2).sum()
    # Without ZeRO every rank holds the full all-reduced gradients: each contributes 1/world of it.
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float32)
    return torch.stack(torch._foreach_norm(grads)).float().pow(2).sum() / world_size


def skip_optimizer_step(engine: Any) -> None:
    """Call `engine.step()` at an accumulation boundary so that it applies no update."""
    opt = engine.optimizer
    if hasattr(opt, "_overflow_check_and_loss_scale_update"):  # ZeRO-3

        def forced_stage3(update_scale: bool = True) -> bool:
            opt.overflow = True
            return True if not update_scale else bool(opt._loss_scale_update_and_overflow_cleanup())

        _with_patch(engine, opt, {"_overflow_check_and_loss_scale_update": forced_stage3})
    elif hasattr(opt, "check_overflow") and hasattr(opt, "check_grad_overflow"):  # ZeRO-1/2

        def forced(partition_gradients: bool = True) -> None:
            opt.overflow = True

        _with_patch(engine, opt, {"check_overflow": forced, "check_grad_overflow": True})
    elif hasattr(opt, "clear_hp_grads") and hasattr(opt, "clear_lp_grads"):  # BF16_Optimizer (ZeRO-0, bf16)

        def bf16_overflow(closure: Any = None) -> None:
            # what BF16_Optimizer.step does itself on an invalid gradient norm (no update, grads cleared)
            opt.overflow = True
            opt.clear_hp_grads()
            opt.clear_lp_grads()

        _with_patch(engine, opt, {"step": bf16_overflow})
    else:  # plain torch optimizer (ZeRO-0): the engine clips and zeroes the gradients, AdamW does nothing

        def no_update(closure: Any = None) -> None:
            return None

        _with_patch(engine, opt, {"step": no_update})
        engine.skipped_steps += 1


def _with_patch(engine: Any, opt: Any, attrs: dict[str, Any]) -> None:
    saved = {name: opt.__dict__[name] for name in attrs if name in opt.__dict__}
    try:
        for name, value in attrs.items():
            setattr(opt, name, value)
        engine.step()
    finally:
        for name in attrs:
            if name in saved:
                setattr(opt, name, saved[name])
            else:
                delattr(opt, name)
