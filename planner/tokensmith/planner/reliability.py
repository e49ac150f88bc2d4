"""Failures during training: job MTBF, the optimal checkpoint interval, and the resulting goodput.

- Per-GPU MTBF default: Llama 3 (Dubey et al. 2024, arXiv:2407.21783, §3.3.4) saw 419 unexpected
  interruptions in 54 days on 16,384 H100s: 16,384 x 54 x 24 / 419 = 50,700 GPU-hours per failure.
  (Meta's RSC-1 A100 cluster, Kokolis et al. 2024, arXiv:2410.21680: 6.5 failures per 1000 node-days,
  i.e. about 29,500 GPU-hours, is the pessimistic alternative.) A job of n GPUs fails every
  M = MTBF_gpu / n hours, failures being independent and exponential.
- Optimal checkpoint interval: Daly 2006 (FGCS 22(3), doi:10.1016/j.future.2004.11.016), eq. 37:
  tau = sqrt(2 delta M) [1 + (1/3) sqrt(delta / 2M) + (1/9) (delta / 2M)] - delta for delta < 2M, else M;
  Young 1974 (CACM 17(9)) is its first term.
- Wall-clock time with failures: Daly's eq. 13, T_w = M e^(R/M) (e^((tau + delta)/M) - 1) T_s / tau, for
  solve time T_s, checkpoint write time delta and restart time R; goodput = T_s / T_w.
All functions work element-wise on numpy arrays.
"""

from __future__ import annotations

import math
from typing import Any

LLAMA3_GPU_HOURS_PER_FAILURE = 16_384 * 54 * 24 / 419  # about 50,700
DEFAULT_RESTART_MINUTES = 10.0  # Daly's examples use R = 10 min; a gang restart plus reload is of that order
CHECKPOINT_BYTES_PER_PARAM = 14  # bf16 weights + fp32 master weights, Adam m and v
CHECKPOINT_FIXED_SECONDS = 30.0  # barrier, metadata, fsync of the manifest
DEFAULT_NODE_WRITE_GBS = 5.0  # per-node write bandwidth to shared storage, GB/s
DEFAULT_STORAGE_GBS = 1000.0  # aggregate cap of the storage system, GB/s (Llama 3 reports 2-7 TB/s)


def job_mtbf_hours(mtbf_gpu_hours: float, gpus: Any) -> Any:
    return mtbf_gpu_hours / gpus


def checkpoint_seconds(
    params: float,
    nodes: Any,
    node_write_gbs: float = DEFAULT_NODE_WRITE_GBS,
    storage_gbs: float = DEFAULT_STORAGE_GBS,
) -> Any:
    """Time to write one full checkpoint (model + optimiser states), all nodes writing their shards."""
    import numpy as np

    bandwidth = np.minimum(nodes * node_write_gbs, storage_gbs) * 1e9
    return CHECKPOINT_FIXED_SECONDS + CHECKPOINT_BYTES_PER_PARAM * params / bandwidth


def young_interval(delta: float, mtbf: float) -> float:
    """Young 1974: tau = sqrt(2 delta M)."""
    return math.sqrt(2.0 * delta * mtbf)


def daly_interval(delta: Any, mtbf: Any) -> Any:
    """Daly 2006, eq. 37 (same time unit for all arguments)."""
    import numpy as np

    delta = np.asarray(delta, dtype=float)
    mtbf = np.asarray(mtbf, dtype=float)
    x = delta / (2.0 * mtbf)
    tau = np.sqrt(2.0 * delta * mtbf) * (1.0 + np.sqrt(x) / 3.0 + x / 9.0) - delta
    return np.where(delta < 2.0 * mtbf, tau, mtbf)


def wall_time(solve: Any, tau: Any, delta: Any, restart: Any, mtbf: Any) -> Any:
    """Daly 2006, eq. 13: expected wall-clock time of `solve` hours of work (same unit throughout).
    Uses expm1 so that a huge MTBF gives solve (1 + delta / tau) without cancellation."""
    import numpy as np

    # Overflow to inf is the right answer for hopeless shapes (they are never chosen); keep it quiet.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return mtbf * np.exp(restart / mtbf) * np.expm1((tau + delta) / mtbf) * solve / tau
