"""Learning-rate schedule: linear warm-up, then cosine decay to a fraction of the peak.

A pure function of the step (no scheduler state to checkpoint): resume sets the same rate an
uninterrupted run would. Cosine decay to 10% of the peak follows GPT-3 (Brown et al. 2020, §B) and
Llama 2 (Touvron et al. 2023, §2.2); linear warm-up follows Goyal et al. 2017.
"""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based) of `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    floor = peak * min_ratio
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
