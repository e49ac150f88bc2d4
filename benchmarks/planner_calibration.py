"""Calibrate the planner's performance model against published runs, then check it on held-out ones.

Run by hand: `.venv/bin/python benchmarks/planner_calibration.py [--fit]`. With --fit it grid-searches
EFF_MAX, EFF_HALF_WIDTH and DP_OVERLAP on the calibration runs (`PUBLISHED_RUNS`, minimising the mean
absolute log error of MFU) and prints the best constants; without it, it reports the constants in
performance.py. Either way it then prints the held-out validation table (`VALIDATION`, never fitted)
as Markdown for docs/planner.md.
"""

from __future__ import annotations

import itertools
import math
import sys

from tokensmith.planner import performance
from tokensmith.planner.calibration import PUBLISHED_RUNS, predicted_mfu, validation_table


def errors() -> list[tuple[str, float, float]]:
    return [(run.name, run.mfu, predicted_mfu(run)) for run in PUBLISHED_RUNS]


def score() -> float:
    return sum(abs(math.log(got / want)) for _, want, got in errors()) / len(PUBLISHED_RUNS)


def main() -> None:
    if "--fit" in sys.argv:
        best = None
        for eff, half, overlap in itertools.product(
            [0.55, 0.6, 0.65, 0.7, 0.75, 0.8], [128, 192, 256, 384, 512], [0.5, 1.0]
        ):
            performance.EFF_MAX, performance.EFF_HALF_WIDTH, performance.DP_OVERLAP = eff, half, overlap
            s = score()
            if best is None or s < best[0]:
                best = (s, eff, half, overlap)
        assert best is not None
        print(
            f"best: mean |log error| {best[0]:.3f} EFF_MAX={best[1]} "
            f"EFF_HALF_WIDTH={best[2]} DP_OVERLAP={best[3]}"
        )
        performance.EFF_MAX, performance.EFF_HALF_WIDTH, performance.DP_OVERLAP = best[1:]
    print("| run | published MFU | model | error |")
    print("|---|---|---|---|")
    for name, want, got in errors():
        print(f"| {name} | {want:.3f} | {got:.3f} | {100 * (got / want - 1):+.1f}% |")
    print(f"\nmean |log error| {score():.3f}\n")
    print("| run | GPUs | published | model | error | layout (best in the published one) | GB | fits |")
    print("|---|---|---|---|---|---|---|---|")
    results = validation_table()
    for r in results:
        unit = "GPU-h" if r.run.gpu_hours else "tok/s/GPU"
        print(
            f"| {r.run.name} | {r.run.gpus:,} x {r.run.gpu} | {r.published:,.4g} {unit} | "
            f"{r.predicted:,.4g} | {100 * r.error:+.0f}% | {r.layout} | {r.memory_gb:.1f} | "
            f"{'yes' if r.fits else 'no'} |"
        )
    within = sum(abs(r.error) <= 0.30 for r in results)
    mean = sum(abs(math.log(1 + r.error)) for r in results) / len(results)
    print(f"\n{within} of {len(results)} within 30%; mean |log error| {mean:.3f}")


if __name__ == "__main__":
    main()
