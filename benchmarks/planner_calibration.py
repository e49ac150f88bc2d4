"""Calibrate the planner's performance model against published runs and print the error table.

Run by hand: `.venv/bin/python benchmarks/planner_calibration.py [--fit]`. With --fit it grid-searches
EFF_MAX, EFF_HALF_WIDTH and DP_OVERLAP (minimising the mean absolute log error of MFU) and prints the
best constants; without it, it reports the error of the constants in performance.py.
"""

from __future__ import annotations

import itertools
import math
import sys

from tokensmith.planner import performance
from tokensmith.planner.calibration import PUBLISHED_RUNS, VALIDATION_RUNS, predicted_mfu


def errors() -> list[tuple[str, float, float]]:
    rows = []
    for run in PUBLISHED_RUNS:
        got = predicted_mfu(run)
        rows.append((run.name, run.mfu, got))
    return rows


def score() -> float:
    return sum(abs(math.log(got / want)) for _, want, got in errors()) / len(PUBLISHED_RUNS)


def main() -> None:
    if "--fit" in sys.argv:
        best = None
        for eff, half, overlap in itertools.product(
            [0.4, 0.45, 0.5, 0.55, 0.6], [64, 128, 192], [0.5, 0.75, 1.0]
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
    print(f"{'run':22} {'published MFU':>14} {'model MFU':>10} {'error':>8}")
    for name, want, got in errors():
        print(f"{name:22} {want:14.3f} {got:10.3f} {100 * (got / want - 1):7.1f}%")
    print(f"mean |log error| {score():.3f}")
    print("held out of the fit:")
    for run in VALIDATION_RUNS:
        got = predicted_mfu(run)
        print(f"{run.name:22} {run.mfu:14.3f} {got:10.3f} {100 * (got / run.mfu - 1):7.1f}%")


if __name__ == "__main__":
    main()
