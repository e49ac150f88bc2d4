"""GPU catalogue: memory, dense BF16 peak, power, interconnect and indicative prices.

Peaks are the vendors' dense (no 2:4 sparsity) BF16 tensor figures from their datasheets (V100 has no
BF16; its FP16 tensor peak is used): NVIDIA A100 datasheet (312 TFLOP/s), H100 datasheet (SXM 989,
PCIe 756), H200 datasheet (989), HGX B200 (2,250 per GPU), V100 SXM2 (125), L40S datasheet (362),
AMD Instinct MI300X datasheet (1,307.4). Memory bandwidth and TDP come from the same sheets.

`fp8_tflops` is the dense FP8 tensor peak from the same datasheets (twice the BF16 figure: H100 SXM
and H200 1,979, H100 PCIe 1,513, B200 4,500, MI300X 2,614.9, L40S 733); 0 where the GPU has no FP8
tensor cores (A100, V100). H800 and A800 are the export variants of H100 SXM and A100 SXM (same
compute and memory, NVLink cut to 400 GB/s, i.e. 200 GB/s per direction; NVIDIA's H800/A800
product briefs); the H800 network figure is DeepSeek-V3's cluster (DeepSeek-AI 2024, arXiv:2412.19437,
§3.1: 8 x 400 Gb/s InfiniBand per 8-GPU node, 50 GB/s per GPU).

`intra_gbs` is the per-GPU, per-direction bandwidth to the other GPUs of its node (NVLink / Infinity
Fabric / PCIe), `inter_gbs` the per-GPU network bandwidth between nodes (one 200 Gb/s HDR NIC per
A100, one 400 Gb/s NDR NIC per H100/H200/MI300X, 800 Gb/s per B200 in their reference systems;
100 Gb/s per V100 and L40S as typical for those systems). Both are link rates: the performance model
applies an achievable-fraction factor.

`gemm_fraction` is the share of the dense peak that large BF16 GEMMs reach at the clocks the GPU
sustains under load: about 0.9 for A100 (cuBLAS reaches 280 of 312 TFLOP/s) and V100, about 0.7 for the
700 W Hopper parts (H100/H800/H200 GEMMs run at about 700 of 989 TFLOP/s: power-capped clocks), 0.75
for B200, and about 0.5 for MI300X (about 650 of 1,307 TFLOP/s in published hipBLASLt GEMM sweeps).
These are the public GEMM microbenchmark figures, rounded; the end-to-end efficiency curve in
performance.py multiplies them.

Prices are indicative: `price_usd_hour` a typical 2025 on-demand cloud price per GPU-hour and
`purchase_usd` a typical purchase price per GPU including its share of server and network. They are
stated as assumptions in every plan and meant to be overridden (`--price-per-gpu-hour`,
`--purchase-price`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gb: float
    peak_tflops: float  # dense BF16 (FP16 for V100)
    hbm_tbs: float
    tdp_w: float
    intra_gbs: float
    inter_gbs: float
    gpus_per_node: int
    price_usd_hour: float
    purchase_usd: float
    vendor: str
    fp8_tflops: float = 0.0  # dense FP8 (0: no FP8 tensor cores)
    gemm_fraction: float = 0.9  # best large BF16 GEMM throughput / dense peak (see module docstring)

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops * 1e12

    @property
    def fp8_peak_flops(self) -> float:
        return self.fp8_tflops * 1e12

    def peak_for(self, precision: str) -> float:
        """Dense peak FLOP/s of `precision` ("bf16" or "fp8")."""
        return self.fp8_peak_flops if precision == "fp8" else self.peak_flops

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CATALOGUE: dict[str, GPU] = {
    g.name.lower(): g
    for g in (
        GPU("A100-40GB", 40, 312, 1.555, 400, 300, 25, 8, 1.80, 20_000, "NVIDIA"),
        GPU("A100-80GB", 80, 312, 2.039, 400, 300, 25, 8, 2.20, 25_000, "NVIDIA"),
        GPU("A800-80GB", 80, 312, 2.039, 400, 200, 25, 8, 2.00, 22_000, "NVIDIA"),
        GPU("H100-SXM", 80, 989, 3.35, 700, 450, 50, 8, 3.00, 40_000, "NVIDIA", 1979, gemm_fraction=0.7),
        GPU("H800", 80, 989, 3.35, 700, 200, 50, 8, 2.80, 38_000, "NVIDIA", 1979, gemm_fraction=0.7),
        GPU("H100-PCIE", 80, 756, 2.0, 350, 64, 50, 8, 2.50, 32_000, "NVIDIA", 1513, gemm_fraction=0.7),
        GPU("H200", 141, 989, 4.8, 700, 450, 50, 8, 3.80, 45_000, "NVIDIA", 1979, gemm_fraction=0.7),
        GPU("B200", 180, 2250, 8.0, 1000, 900, 100, 8, 6.00, 60_000, "NVIDIA", 4500, gemm_fraction=0.75),
        GPU("MI300X", 192, 1307.4, 5.3, 750, 448, 50, 8, 2.80, 30_000, "AMD", 2614.9, gemm_fraction=0.5),
        GPU("L40S", 48, 362, 0.864, 350, 32, 12.5, 8, 1.20, 12_000, "NVIDIA", 733, gemm_fraction=0.8),
        GPU("V100-32GB", 32, 125, 0.9, 300, 150, 12.5, 8, 1.00, 8_000, "NVIDIA"),
    )
}
ALIASES = {
    "a100": "a100-80gb",
    "a100-80g": "a100-80gb",
    "a100-40g": "a100-40gb",
    "h100": "h100-sxm",
    "h100-sxm5": "h100-sxm",
    "h100sxm": "h100-sxm",
    "h100pcie": "h100-pcie",
    "v100": "v100-32gb",
    "b200-sxm": "b200",
    "h200-sxm": "h200",
    "h800-sxm": "h800",
    "a800": "a800-80gb",
}


def get_gpu(name: str) -> GPU:
    """The catalogue entry for `name` (case-insensitive); ValueError lists the known names."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in CATALOGUE:
        known = ", ".join(g.name for g in CATALOGUE.values())
        raise ValueError(f"unknown GPU {name!r}; known GPUs: {known} (`tokensmith plan --list-gpus`)")
    return CATALOGUE[key]
