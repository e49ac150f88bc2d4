"""Tensor and pipeline parallelism on CPU: tokens per CPU-second of TP=2 and PP=2 against DP=2 for the same
model and global batch, in one run, and the pipeline bubble measured against the planner's
(p - 1) / (m + p - 1).

Throughput: each layout trains `--steps` steps with `tokensmith train --nproc 2` (gloo, one thread per
process) and once more with `--warmup` steps; the CPU seconds of all processes (getrusage of the waited-for
children) of the short run are subtracted from the long one, so start-up (imports, DeepSpeed set-up,
checkpoint) cancels and what is left is the steady-state steps. Layouts alternate over `--repeats`.

Bubble: PP=2 trains with m = 1, 2, 4, 8 micro-batches per step, each run under torchrun in this file's
worker mode, which times DeepSpeed's pipeline instructions on every stage: the measured bubble of a stage
is 1 - (forward + backward seconds) / (schedule seconds without the optimizer step), steady-state steps
only. It counts waiting for the neighbour stage, the point-to-point sends/receives and loading
micro-batches, so it is at least the planner's (p - 1) / (m + p - 1), which is idle time alone with
balanced stages and free communication. Wall-clock: needs a quiet machine to mean much.

    .venv/bin/python benchmarks/trainer_parallel.py [--steps 30] [--warmup 10] [--repeats 2] [--output f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
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


def worker(out: Path, warmup: int) -> None:
    """Under torchrun: train with the pipeline engine's instructions timed; write this rank's sums."""
    from deepspeed.runtime.pipe import schedule
    from deepspeed.runtime.pipe.engine import PipelineEngine

    from tokensmith.trainer.config import resolve_config
    from tokensmith.trainer.loop import train as run_training

    times = {"compute": 0.0, "optimizer": 0.0, "schedule": 0.0, "steps": 0}

    def timed(fn: Any, key: str) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                if self.global_steps >= warmup:
                    times[key] += time.perf_counter() - started
                    times["steps"] += key == "schedule"

        return wrapper

    table = PipelineEngine._INSTRUCTION_MAP
    table[schedule.ForwardPass] = timed(table[schedule.ForwardPass], "compute")
    table[schedule.BackwardPass] = timed(table[schedule.BackwardPass], "compute")
    table[schedule.OptimizerStep] = timed(table[schedule.OptimizerStep], "optimizer")
    PipelineEngine._exec_schedule = timed(PipelineEngine._exec_schedule, "schedule")
    cfg = resolve_config(sets=json.loads(os.environ["BENCH_SETS"]))
    run_training(cfg)
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(json.dumps(times))


def measured_bubble(data: Path, work: Path, m: int, steps: int, warmup: int) -> list[float]:
    """Per-stage bubble of PP=2 with m micro-batches (worker mode under torchrun)."""
    ckpt = Path(tempfile.mkdtemp(dir=work, prefix=f"bubble-m{m}-"))
    values = {
        "model.preset": "tiny",  # first: a model preset resets the model section
        **MODEL,
        "data.train_path": str(data / "train"),
        "checkpoint.dir": str(ckpt),
        "train.micro_batch": MICRO,
        "train.global_batch_tokens": m * MICRO * MODEL["model.seq_len"],
        "train.max_steps": steps,
        "train.log_every_steps": 1,
        "train.precision": "fp32",
        "deepspeed.zero_stage": 1,
        "parallelism.pipeline": 2,
    }
    sets = [f"{k}={v}" for k, v in values.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "BENCH_SETS": json.dumps(sets)}
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    cmd += [__file__, "--worker", str(ckpt), "--warmup", str(warmup)]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    out = []
    for rank in range(2):
        t = json.loads((ckpt / f"rank{rank}.json").read_text())
        out.append(1 - t["compute"] / (t["schedule"] - t["optimizer"]))
    return out


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
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-bubble", action="store_true")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.warmup)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    data = curate(args.work)
    load = os.getloadavg()
    sequences = args.micro_batches * MICRO
    tokens = (args.steps - args.warmup) * sequences * MODEL["model.seq_len"]
    per_cpu: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for _ in range(0 if args.skip_throughput else args.repeats):
        for name, extra in LAYOUTS.items():
            long, _ = train(data, args.work, args.steps, sequences, extra)
            short, _ = train(data, args.work, args.warmup, sequences, extra)
            per_cpu[name].append(tokens / (long - short))
    throughput = {k: statistics.median(v) for k, v in per_cpu.items() if v}

    bubble = {}
    for m in () if args.skip_bubble else (1, 2, 4, 8):
        stages = measured_bubble(data, args.work, m, args.warmup + 10, args.warmup)
        bubble[m] = {"measured_per_stage": stages, "planner": 1 / (m + 1)}

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load,
        "load_average_end": os.getloadavg(),
        "tokens_per_cpu_second": throughput,
        "ratio_to_dp2": {k: v / throughput["DP2"] for k, v in throughput.items() if "DP2" in throughput},
        "bubble": bubble,
    }
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
