"""Post-save verification (`health.verify_after_save`): rank 0 reloads the weights a checkpoint just
wrote and compares the loss of one fixed batch under them with the in-memory model's loss.

A checksum proves that the bytes on disk are the bytes that were written, not that the right bytes
were written: a tensor corrupted in memory on its way to the file (a bad GPU, a bit flip in host
memory, a bug in the gather) is checksummed faithfully. Evaluating the reloaded weights catches it, as
GPT-NeoX's optional checkpoint validation does. The comparison is on the loss (one forward on a few
sequences, cheap beside the save) with a tolerance for the weights' storage precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokensmith.trainer import checkpoint as ck


def batch_loss(model: Any, rows: Any) -> float:
    """Mean next-token cross-entropy of `model` on `rows` [B, L+1] (eval mode, no gradients)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
    return float(loss)


def saved_weights_loss(ckpt: Path, model_cfg: Any, rows: Any) -> float:
    """The loss of `rows` under the weights saved in `ckpt` (float32 on the CPU): `model.safetensors`
    when the save consolidated, else the full weights rebuilt from the sharded state, as eval and export
    read them (consolidate.py).

    Raises when the files cannot be read as the model's weights (a corrupt header or missing tensors)."""
    import torch

    model = ck.model_from_weights(ckpt, model_cfg).to(dtype=torch.float32).eval()
    return batch_loss(model, rows.cpu())


def tolerance(precision: str) -> float:
    """Relative tolerance between the two losses: fp32 weights round-trip exactly (the forward may still
    run other kernels); 16-bit consolidated weights (ZeRO-3) do not."""
    return 1e-4 if precision == "fp32" else 2e-2


def compare(in_memory: float, on_disk: float, precision: str) -> str | None:
    """A problem, or None when the saved weights reproduce the in-memory loss."""
    import math

    if not math.isfinite(on_disk) or abs(on_disk - in_memory) > tolerance(precision) * max(
        1.0, abs(in_memory)
    ):
        return (
            f"the saved weights give loss {on_disk:.6g} on the verification batch, the in-memory model "
            f"{in_memory:.6g}: the checkpoint holds corrupted tensors"
        )
    return None


def verify(ckpt: Path, model_cfg: Any, rows: Any, in_memory: float, precision: str) -> str | None:
    """Reload and compare (rank 0): a problem, or None."""
    try:
        on_disk = saved_weights_loss(ckpt, model_cfg, rows)
    except Exception as err:  # a corrupt file can fail in many ways (header, shapes, dtypes)
        return f"the saved weights cannot be loaded: {err}"
    return compare(in_memory, on_disk, precision)
