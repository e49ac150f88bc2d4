"""Throughput, MFU and memory for the metrics log.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, Appendix B) = achieved model FLOP/s / peak
FLOP/s, with model FLOPs per token from `tokensmith.planner.arch.flops_per_token` (the planner's
formula) and the peak from the planner's GPU catalogue. It is reported only when the peak is known.
"""

from __future__ import annotations

import os
import re
import sys

# torch.cuda.get_device_name() -> catalogue key; first match wins (specific names first).
_DEVICE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100-sxm"),
    (r"h200", "h200"),
    (r"b200", "b200"),
    (r"a100.*40", "a100-40gb"),
    (r"a100", "a100-80gb"),
    (r"mi300x", "mi300x"),
    (r"l40s", "l40s"),
    (r"v100", "v100-32gb"),
)


def peak_flops(device_name: str | None) -> float | None:
    """Dense BF16 peak FLOP/s of one device, or None when unknown (CPU, or a GPU not in the catalogue).

    `TOKENSMITH_PEAK_TFLOPS` overrides it (e.g. for a GPU the catalogue lacks)."""
    if os.environ.get("TOKENSMITH_PEAK_TFLOPS"):
        return float(os.environ["TOKENSMITH_PEAK_TFLOPS"]) * 1e12
    if not device_name:
        return None
    from tokensmith.planner.gpus import get_gpu

    name = device_name.lower()
    for pattern, key in _DEVICE_PATTERNS:
        if re.search(pattern, name):
            return get_gpu(key).peak_flops
    return None


def mfu(tokens_per_s: float, flops_per_token: float, world_size: int, peak: float | None) -> float | None:
    """Achieved model FLOP/s over the gang's peak."""
    if not peak or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_per_token / (world_size * peak)


def max_memory_gb(cuda: bool) -> float:
    """Peak memory of this process: the GPU's allocator peak, else the resident set size on CPU."""
    if cuda:
        import torch

        return float(torch.cuda.max_memory_allocated()) / 2**30
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20  # bytes on macOS, KiB on Linux
