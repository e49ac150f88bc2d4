"""Goodput soak, long version (issue 15): the real kopf operator, in its own process, on the emulated
cluster drives a 64-node x 8-GPU job for a simulated month on a compressed clock, while the harness
(tokensmith.operator.soak) plays the trainer and injects seeded failures with Llama 3's mix (chaos.py).
Per seed and failure rate (the prior's, Llama 3's 50,700 GPU-hours per failure, and 4x it), the same
schedule is run twice: with the planner's fixed Daly interval for the prior, and with the adaptive one
(cadence.py, starting from the same interval). Reported: interruptions survived, gangs created,
duplicate gangs, steps lost per failure against the bound (one interval + the step in flight), goodput
fixed / adaptive / the planner's prediction, the operator's API requests per reconcile (counted at the
emulator) and its process CPU seconds per simulated hour.

    .venv/bin/python benchmarks/goodput_soak.py [--seeds 3] [--first-seed 1] [--days 30] [--rates 1,4]
    .venv/bin/python benchmarks/goodput_soak.py --model   # the pure model only (chaos.simulate)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from tokensmith.operator import cadence, chaos, goodput, soak
from tokensmith.planner.reliability import (
    DEFAULT_RESTART_MINUTES,
    LLAMA3_GPU_HOURS_PER_FAILURE,
    daly_interval,
    wall_time,
)

GPUS = 64 * 8
DELTA_S = 120.0
FAST_S = 576.0  # simulated seconds per harness tick while the gang trains (a month: ~4,500 ticks)


def predicted_goodput(hours: float, tau_h: float, restart_h: float, job_mtbf_h: float) -> float:
    """Daly 2006 eq. 13 (planner.reliability.wall_time): solve time / wall time."""
    return hours / float(wall_time(hours, tau_h, DELTA_S / 3600, restart_h, job_mtbf_h))


def _progress(mode: str) -> Any:
    return lambda h: print(f"  {mode} {h:6.0f} simulated hours", file=sys.stderr)


def adaptive_policy(prior: cadence.Prior) -> chaos.Policy:
    current: list[float | None] = [None]

    def policy(n: int, wall_h: float) -> float:
        target = cadence.target_minutes(prior, GPUS, n, wall_h * GPUS)
        minutes = cadence.next_minutes(current[0], target)
        current[0] = minutes
        return minutes / 60.0

    return policy


def soak_row(factor: int, seed: int, days: float, fast_s: float) -> dict[str, Any]:
    hours = days * 24.0
    prior_job_mtbf = LLAMA3_GPU_HOURS_PER_FAILURE / GPUS
    true_job_mtbf = prior_job_mtbf / factor
    prior_tau = float(daly_interval(DELTA_S / 3600, prior_job_mtbf))
    row: dict[str, Any] = {"rate": f"{factor}x prior", "seed": seed}
    for mode in ("fixed", "adaptive"):
        cfg = soak.SoakConfig(
            hours=hours,
            mtbf_job_hours=true_job_mtbf,
            every_minutes=prior_tau * 60,
            seed=seed,
            delta_s=DELTA_S,
            adaptive=mode == "adaptive",
            prior_mtbf_gpu_hours=LLAMA3_GPU_HOURS_PER_FAILURE,
            fast_s=fast_s,
        )
        res = asyncio.run(soak.run(cfg, progress=_progress(mode)))
        st = res.status
        total = goodput.total_gpu_hours_of(st)
        restarts = max(len(res.failures), 1)
        row[mode] = {
            "failures": len(res.failures),
            "interruptions": res.interruptions,
            "gangs": res.attempts,
            "duplicates": res.duplicates,
            "stalls": res.stalls,
            "max_lost_steps": max(res.lost_steps, default=0),
            "lost_over_bound": sum(n > b for n, b in zip(res.lost_steps, res.lost_bounds, strict=True)),
            "lost_bound_steps": max(res.lost_bounds, default=0),
            "mean_lost_steps": round(sum(res.lost_steps) / max(len(res.lost_steps), 1), 1),
            "goodput": st["goodput"],
            "ledger_error": abs(st["productiveGPUHours"] + sum(st["lostGPUHours"].values()) - total),
            "model_goodput": round(  # eq. 13 at what this run showed: MTBF, restart time, its intervals
                predicted_goodput(
                    hours,
                    sum(res.intervals) / max(len(res.intervals), 1) / 60,
                    st["lostGPUHours"]["restart"] / GPUS / restarts,
                    st["observed"]["mtbfGPUHours"] / GPUS if st["observed"].get("mtbfGPUHours") else 1e9,
                ),
                4,
            ),
            "final_interval_min": round(res.intervals[-1], 1) if res.intervals else None,
            "restart_min": round(st["lostGPUHours"]["restart"] / GPUS / restarts * 60, 1),
            "reconciles": res.reconciles,
            "requests": res.requests,
            "requests_per_reconcile": round(res.requests_per_reconcile, 3),
            "cpu_s": round(res.operator_cpu_s, 2),
            "cpu_s_per_sim_hour": round(res.operator_cpu_s / res.sim_hours, 4),
            "reconciles_per_sim_hour": round(res.reconciles / res.sim_hours, 1),
            "real_s": round(res.real_s, 1),
        }
    row["planner_predicted"] = round(
        predicted_goodput(hours, prior_tau, DEFAULT_RESTART_MINUTES / 60, prior_job_mtbf), 4
    )
    row["daly_true_min"] = round(float(daly_interval(DELTA_S / 3600, true_job_mtbf)) * 60, 1)
    row["prior_interval_min"] = round(prior_tau * 60, 1)
    return row


def model_rows(seeds: int, days: float) -> list[dict[str, Any]]:
    """The pure discrete-event model (chaos.simulate) on the same schedules: no operator."""
    prior = cadence.Prior(LLAMA3_GPU_HOURS_PER_FAILURE, DELTA_S)
    prior_tau = float(daly_interval(DELTA_S / 3600, LLAMA3_GPU_HOURS_PER_FAILURE / GPUS))
    restart_h = DEFAULT_RESTART_MINUTES / 60
    work, rows = days * 24.0, []
    for factor in (1, 4):
        true_job_mtbf = LLAMA3_GPU_HOURS_PER_FAILURE / factor / GPUS
        for seed in range(1, seeds + 1):
            failures = chaos.schedule(seed, true_job_mtbf, horizon_hours=work * 3)
            fixed = chaos.simulate(work, failures, DELTA_S / 3600, restart_h, lambda n, t: prior_tau)
            adapt = chaos.simulate(work, failures, DELTA_S / 3600, restart_h, adaptive_policy(prior))
            predicted = predicted_goodput(work, prior_tau, restart_h, true_job_mtbf)
            rows.append(
                {
                    "rate": f"{factor}x prior",
                    "seed": seed,
                    "failures": adapt.failures,
                    "goodput_fixed": round(fixed.goodput, 4),
                    "goodput_adaptive": round(adapt.goodput, 4),
                    "predicted_fixed": round(predicted, 4),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--rates", default="1,4", help="failure rates as multiples of the prior's")
    ap.add_argument("--fast-s", type=float, default=FAST_S, help="simulated seconds per tick while training")
    ap.add_argument("--model", action="store_true", help="the pure model only (no operator)")
    ap.add_argument("--format", choices=("table", "json"), default="table")
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "days": args.days,
        "fast_s": args.fast_s,
    }
    started = time.monotonic()
    if args.model:
        rows = model_rows(args.seeds, args.days)
    else:
        rows = []
        for factor in (int(x) for x in args.rates.split(",")):
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                print(f"rate {factor}x seed {seed}", file=sys.stderr)
                rows.append(soak_row(factor, seed, args.days, args.fast_s))
                print(json.dumps(rows[-1]), file=sys.stderr)
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    meta["wall_s"] = round(time.monotonic() - started, 1)
    if args.format == "json":
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(meta)
    if args.model:
        for r in rows:
            print(" | ".join(str(v) for v in r.values()))
        return
    head = ("rate | seed | failures | gangs | dup | max lost/bound (fixed) | goodput fixed | adaptive "
            "| planner | final adaptive min (Daly true) | req/reconcile | CPU s/sim h")  # fmt: skip
    print(head)
    for r in rows:
        f, a = r["fixed"], r["adaptive"]
        print(
            f"{r['rate']} | {r['seed']} | {f['failures']} | {f['gangs']}/{a['gangs']} | "
            f"{f['duplicates']}/{a['duplicates']} | {f['max_lost_steps']}/{f['lost_bound_steps']} | "
            f"{f['goodput']:.4f} | {a['goodput']:.4f} | {r['planner_predicted']:.4f} | "
            f"{a['final_interval_min']} ({r['daly_true_min']}) | "
            f"{f['requests_per_reconcile']:.2f}/{a['requests_per_reconcile']:.2f} | "
            f"{f['cpu_s_per_sim_hour']:.3f}/{a['cpu_s_per_sim_hour']:.3f}"
        )


if __name__ == "__main__":
    main()
