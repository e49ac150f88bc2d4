"""`tokensmith plan --from-run STATUS`: refit a plan's assumptions from a running or finished job's status
document (status.json of `tokensmith run --local`, or the `status` of `kubectl get llmjob -o yaml`) and
re-forecast the finish time and cost (pure apart from reading the file).

Refitted: throughput (tokens per second, the trainer's last report), MTBF per GPU (the operator's
`status.observed.mtbfGPUHours`), checkpoint cost (`status.observed.meanCheckpointSeconds`) and goodput
(`status.goodput`). Forecast: remaining tokens / (tokens per second x goodput) of wall time, and that time
x the job's devices x the observed price (costUSD / gpuHours). MFU is not refitted here (it needs the
model's FLOPs per token: compare the tokens per second with the plan's).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class FromRunError(ValueError):
    """The file is not a job status this can read (one line, exit 2)."""


@dataclass(frozen=True)
class Forecast:
    tokens_done: int
    tokens_total: int | None
    tokens_per_second: float | None
    goodput: float | None
    mtbf_gpu_hours: float | None
    mean_checkpoint_seconds: float | None
    gpu_hours: float
    devices: float | None
    price_per_gpu_hour: float | None
    remaining_hours: float | None
    remaining_cost_usd: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_status(path: Path) -> dict[str, Any]:
    """A status document: JSON or YAML, bare or as a whole object with a `status` key."""
    try:
        text = path.read_text()
    except OSError as err:
        raise FromRunError(f"--from-run {path}: cannot read it ({err.strerror})") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise FromRunError(f"--from-run {path}: neither JSON nor YAML") from err
    if isinstance(doc, dict) and isinstance(doc.get("status"), dict):
        doc = doc["status"]
    if not isinstance(doc, dict) or "phase" not in doc:
        raise FromRunError(f"--from-run {path}: not a job status (no phase); give status.json or llmjob YAML")
    return doc


def forecast(status: dict[str, Any]) -> Forecast:
    progress = status.get("progress") or {}
    done = int(progress.get("tokens") or 0)
    total = progress.get("totalTokens")
    rate = progress.get("tokensPerSecond")
    good = status.get("goodput")
    observed = status.get("observed") or {}
    gpu_hours = float(status.get("gpuHours") or 0.0)
    cost = status.get("costUSD")
    price = float(cost) / gpu_hours if cost is not None and gpu_hours > 0 else None
    ledger = status.get("goodputLedger") or {}
    start, seen = status.get("startTime"), ledger.get("time")
    devices = None
    if ledger.get("totalGPUHours") and start and seen:
        from datetime import datetime

        hours = (datetime.fromisoformat(seen) - datetime.fromisoformat(start)).total_seconds() / 3600
        devices = round(float(ledger["totalGPUHours"]) / hours) if hours > 0 else None
    remaining = None
    if total and rate:
        remaining = max(int(total) - done, 0) / (float(rate) * (good or 1.0)) / 3600.0
    remaining_cost = remaining * devices * price if remaining is not None and devices and price else None
    return Forecast(
        tokens_done=done,
        tokens_total=int(total) if total else None,
        tokens_per_second=float(rate) if rate else None,
        goodput=good,
        mtbf_gpu_hours=observed.get("mtbfGPUHours"),
        mean_checkpoint_seconds=observed.get("meanCheckpointSeconds"),
        gpu_hours=gpu_hours,
        devices=devices,
        price_per_gpu_hour=price,
        remaining_hours=remaining,
        remaining_cost_usd=remaining_cost,
    )


def text(f: Forecast) -> str:
    def fmt(v: Any, unit: str = "") -> str:
        return "unknown" if v is None else (f"{v:.4g}{unit}" if isinstance(v, float) else f"{v}{unit}")

    return "\n".join(
        [
            f"tokens: {f.tokens_done} of {fmt(f.tokens_total)} at {fmt(f.tokens_per_second)} tokens/s",
            f"goodput {fmt(f.goodput)}, MTBF {fmt(f.mtbf_gpu_hours)} GPU-hours, "
            f"checkpoint {fmt(f.mean_checkpoint_seconds)} s",
            f"remaining: {fmt(f.remaining_hours)} h, ${fmt(f.remaining_cost_usd)}",
        ]
    )
