"""Goodput soak, long version: a simulated month of a 64-node x 8-GPU job on seeded failure schedules
(Llama 3 mix, chaos.py), adaptive checkpoint interval (cadence.py) vs the planner's fixed Daly interval
vs the planner's prediction (Daly 2006 eq. 13, planner.reliability.wall_time).

This drives the discrete-event run model (chaos.simulate), not the kopf operator: the real operator on
the emulated cluster runs on the wall clock and cannot cover a simulated month in minutes (see
docs/benchmarks.md). Two failure rates: the prior's (Llama 3, 50,700 GPU-hours per failure) and 4x it.

    .venv/bin/python benchmarks/goodput_soak.py [--seeds 5] [--days 30] [--format json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime

from tokensmith.operator import cadence, chaos
from tokensmith.planner.reliability import LLAMA3_GPU_HOURS_PER_FAILURE, daly_interval, wall_time

GPUS = 64 * 8
DELTA_S = 120.0
RESTART_H = 10 / 60


def adaptive(prior: cadence.Prior) -> chaos.Policy:
    current: list[float | None] = [None]

    def policy(failures: int, wall_hours: float) -> float:
        target = cadence.target_minutes(prior, GPUS, failures, wall_hours * GPUS)
        current[0] = cadence.next_minutes(current[0], target)
        return current[0] / 60.0

    return policy


def run(seeds: int, days: float) -> list[dict[str, float | int | str]]:
    prior = cadence.Prior(LLAMA3_GPU_HOURS_PER_FAILURE, DELTA_S)
    prior_tau = float(daly_interval(DELTA_S / 3600, LLAMA3_GPU_HOURS_PER_FAILURE / GPUS))
    work = days * 24.0
    rows: list[dict[str, float | int | str]] = []
    for factor in (1, 4):
        true_job_mtbf = LLAMA3_GPU_HOURS_PER_FAILURE / factor / GPUS
        predicted = work / float(wall_time(work, prior_tau, DELTA_S / 3600, RESTART_H, true_job_mtbf))
        for seed in range(1, seeds + 1):
            failures = chaos.schedule(seed, true_job_mtbf, horizon_hours=work * 3)
            fixed = chaos.simulate(work, failures, DELTA_S / 3600, RESTART_H, lambda n, t: prior_tau)
            adapt = chaos.simulate(work, failures, DELTA_S / 3600, RESTART_H, adaptive(prior))
            rows.append(
                {
                    "rate": f"{factor}x prior",
                    "seed": seed,
                    "failures": adapt.failures,
                    "goodput_fixed": round(fixed.goodput, 4),
                    "goodput_adaptive": round(adapt.goodput, 4),
                    "goodput_predicted_fixed": round(predicted, 4),
                    "final_interval_min": round(
                        adapt.intervals[-1] * 60 if adapt.intervals else prior_tau * 60, 1
                    ),
                    "daly_true_min": round(float(daly_interval(DELTA_S / 3600, true_job_mtbf)) * 60, 1),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--format", choices=("table", "json"), default="table")
    args = ap.parse_args()
    started = time.process_time()
    rows = run(args.seeds, args.days)
    cpu = time.process_time() - started
    meta = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "load": os.getloadavg()[0], "cpu_s": cpu}
    if args.format == "json":
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(meta)
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))


if __name__ == "__main__":
    main()
