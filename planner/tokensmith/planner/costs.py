"""Dollar cost: rented (cloud price per GPU-hour, energy included in the price) or owned hardware
(purchase price amortised linearly over its lifetime, plus the energy bill)."""

from __future__ import annotations

from typing import Any

HOURS_PER_YEAR = 8760.0
DEFAULT_LIFETIME_YEARS = 4.0  # typical depreciation schedule for accelerators


def cloud_cost(gpu_hours: Any, price_per_gpu_hour: float) -> Any:
    return gpu_hours * price_per_gpu_hour


def owned_cost(gpu_hours: Any, purchase_usd: float, lifetime_years: float, energy_usd: Any) -> Any:
    """Amortised hardware (purchase / lifetime hours, per GPU-hour used) plus energy."""
    return gpu_hours * purchase_usd / (lifetime_years * HOURS_PER_YEAR) + energy_usd
