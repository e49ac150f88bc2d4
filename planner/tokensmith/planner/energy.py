"""Energy, electricity cost and carbon of a run.

Power per GPU = TDP x draw(MFU) + node overhead, times the data-centre PUE:
- draw(MFU) = IDLE + (1 - IDLE) x min(1, MFU / MFU_AT_TDP). A GPU idles at about a quarter of its TDP
  and a training load drives it to its power limit far below peak FLOPs (memory-bound kernels and
  communication draw power too): published figures are computed at rated power whatever the MFU
  (Llama 2, Touvron et al. 2023, Table 2: 400 W per A100 at MFU 0.39-0.43; BLOOM, Luccioni et al.
  2022: 1,082,990 A100-hours and 433 MWh dynamic energy, i.e. 400 W, at MFU 0.32; GPT-3 on V100,
  Patterson et al. 2021, at MFU about 0.2). MFU_AT_TDP is therefore low; the ramp below it (a
  barely loaded GPU) is our assumption, not a published fit.
- Node overhead (CPUs, memory, NICs, fans, switches) per GPU: NODE_OVERHEAD x TDP by default; DGX A100
  and DGX H100 are specified at 6.5 and 10.2 kW for 3.2 and 5.6 kW of GPUs, so 0.25 x TDP is a
  typical (below-maximum) draw. Papers that count GPU power only correspond to 0 here.
- PUE default 1.1 (Patterson et al. 2021, arXiv:2104.10350, for a modern hyperscale data centre).
- Carbon intensity default 0.429 kg CO2e/kWh (the US average Patterson et al. 2021 use for GPT-3).
- Energy price default 80 USD/MWh (a typical US industrial electricity price, 2024).
"""

from __future__ import annotations

from typing import Any

IDLE_FRACTION = 0.25
MFU_AT_TDP = 0.10
NODE_OVERHEAD = 0.25
DEFAULT_PUE = 1.1
DEFAULT_CARBON_KG_PER_KWH = 0.429
DEFAULT_ENERGY_USD_PER_MWH = 80.0


def gpu_draw_watts(tdp_w: float, mfu: Any) -> Any:
    import numpy as np

    return tdp_w * (IDLE_FRACTION + (1.0 - IDLE_FRACTION) * np.minimum(1.0, np.asarray(mfu) / MFU_AT_TDP))


def energy_mwh(gpu_hours: Any, gpu_watts: Any, overhead_watts: Any, pue: float) -> Any:
    """Facility energy in MWh for `gpu_hours` at the given per-GPU draw plus node overhead."""
    return gpu_hours * (gpu_watts + overhead_watts) * pue / 1e6


def co2_tonnes(mwh: Any, kg_per_kwh: float) -> Any:
    return mwh * kg_per_kwh  # MWh x kg/kWh = t


def energy_cost_usd(mwh: Any, usd_per_mwh: float) -> Any:
    return mwh * usd_per_mwh
