"""Tensor and pipeline parallelism on CPU: tokens per CPU-second of TP=2 and PP=2 against DP=2 for the same
model and global batch, in one run, and the pipeline bubble measured against the planner's
(p - 1) / (m + p - 1).

Throughput: each layout trains `--steps` steps with `tokensmith train --nproc 2` (gloo, one thread per
process) and once more with `--warmup` steps; the CPU seconds of all processes (getrusage of the waited-for
children) of the short run are subtracted from the long one, so start-up (imports, DeepSpeed set-up,
checkpoint) cancels and what is left is the steady-state steps. Layouts alternate over `--repeats`.

Bubble: PP=2 trains with m = 1, 2, 4, 8 micro-batches per step (global batch m x micro); the steady-state
wall time per step is fitted as T(m) = a m + b (a: one micro-batch through the busiest stage, forward and
backward; b: the fill and drain). The measured bubble at m is b / T(m), the planner's
(p - 1) / (m + p - 1) = a (p - 1) / T(m) when stages are balanced and communication is free.

    .venv/bin/python benchmarks/trainer_parallel.py [--steps 30] [--warmup 10] [--repeats 2] [--output f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from trainer_cpu_throughput import MODEL, curate  # the same model and text as issue 5's benchmark

MICRO = 4
LAYOUTS = {"DP2": {}, "TP2": {"parallelism.tensor": 2}, "PP2": {"parallelism.pipeline": 2}}


def train(data: Path, work: Path, steps: int, sequences: int, extra: dict[str, Any]) -> tuple[float, Path]:
    """CPU seconds of all processes of one `tokensmith train --nproc 2` run with a global batch of
    `sequences`, and its checkpoint dir."""
    ckpt = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    values = {
        **MODEL,
        "data.train_path": data / "train",
        "checkpoint.dir": ckpt,
        "train.micro_batch": MICRO,
        # DP2: sequences / (2 x MICRO) micro-batches per replica; TP2/PP2: sequences / MICRO on one replica
        "train.global_batch_tokens": sequences * MODEL["model.seq_len"],
        "train.max_steps": steps,
        "train.log_every_steps": 1,
        "train.precision": "fp32",
        "deepspeed.zero_stage": 1,
        **extra,
    }
    cmd = [sys.executable, "-m", "tokensmith.cli", "train", "--preset", "tiny", "--nproc", "2"]
    for key, value in values.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return cpu, ckpt


def step_seconds(ckpt: Path, warmup: int) -> float:
    """Median wall seconds per step after `warmup` steps (from the per-step metrics)."""
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train" and r["step"] > warmup]
    return statistics.median(r["tokens"] / r["step"] / r["tokens_per_s"] for r in train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--micro-batches", type=int, default=4, help="m per step under TP/PP (DP2: m/2 each)")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "tokensmith-bench-parallel"
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = curate(args.work)
    load = os.getloadavg()
    sequences = args.micro_batches * MICRO
    tokens = (args.steps - args.warmup) * sequences * MODEL["model.seq_len"]
    per_cpu: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for _ in range(args.repeats):
        for name, extra in LAYOUTS.items():
            long, _ = train(data, args.work, args.steps, sequences, extra)
            short, _ = train(data, args.work, args.warmup, sequences, extra)
            per_cpu[name].append(tokens / (long - short))
    throughput = {k: statistics.median(v) for k, v in per_cpu.items()}

    times = {}
    for m in (1, 2, 4, 8):
        _, ckpt = train(data, args.work, args.warmup + 10, m * MICRO, {"parallelism.pipeline": 2})
        times[m] = step_seconds(ckpt, args.warmup)
    ms = sorted(times)
    mean_m, mean_t = statistics.mean(ms), statistics.mean(times[m] for m in ms)
    a = sum((m - mean_m) * (times[m] - mean_t) for m in ms) / sum((m - mean_m) ** 2 for m in ms)
    b = mean_t - a * mean_m
    bubble = {m: {"measured": b / times[m], "planner": 1 / (m + 1), "step_s": times[m]} for m in ms}

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
        "tokens_per_cpu_second": throughput,
        "ratio_to_dp2": {k: v / throughput["DP2"] for k, v in throughput.items()},
        "pipeline_fit": {"a_s_per_microbatch": a, "b_s_fill_drain": b},
        "bubble": bubble,
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
