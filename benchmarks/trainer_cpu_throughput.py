"""Trainer overhead on CPU: tokens/s of `tokensmith train` (DeepSpeed engine, our loop, metrics,
checkpoint bookkeeping) against a plain PyTorch loop over the same model, data, batch and optimizer,
measured in the same run, alternating, steady state only (the first steps are warm-up).

Both sides run one thread and are measured in tokens per CPU-second of their own process as well as per
wall-clock second: on a shared machine the wall-clock figure swings with other people's load, the CPU
figure much less (the table shows both; the ratio quoted is the CPU one).

    .venv/bin/python benchmarks/trainer_cpu_throughput.py [--steps 40] [--repeats 2] [--zero 0 2]

Goal (issue 5): ratio >= 0.9. Prints a table and writes JSON with --output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DS_ACCELERATOR", "cpu")
THREADS = "1"
MODEL = {
    "model.vocab_size": 512,
    "model.seq_len": 128,
    "model.d_model": 128,
    "model.n_heads": 4,
    "model.n_kv_heads": 4,
    "model.n_layers": 2,
}
MICRO = 8


def curate(work: Path) -> Path:
    """pydoc_data curated by `tokensmith curate` (the same real text as the tests)."""
    import pydoc_data.topics as topics

    out = work / "curated"
    if (out / "train" / "shards.json").is_file():
        return out
    source = work / "pydoc.jsonl"
    source.write_text("".join(json.dumps({"text": topics.topics[k]}) + "\n" for k in sorted(topics.topics)))
    cmd = [sys.executable, "-m", "tokensmith.cli", "curate", str(source), "--out", str(out)]
    cmd += ["--vocab-size", "512", "--word-tokenizer", "regex", "--no-progress"]
    for step in ("language", "gopher_quality", "gopher_repetition", "c4", "fineweb"):
        cmd += ["--skip", step]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def run_ours(data: Path, work: Path, steps: int, zero: int, warmup: int) -> tuple[float, float]:
    """Steady-state tokens per wall second and per CPU second of `tokensmith train` (one process), from
    its own metrics log."""
    ckpt = Path(tempfile.mkdtemp(dir=work, prefix=f"ours-z{zero}-"))
    values = {
        **MODEL,
        "data.train_path": data / "train",
        "checkpoint.dir": ckpt,
        "train.micro_batch": MICRO,
        "train.global_batch_tokens": MICRO * MODEL["model.seq_len"],
        "train.max_steps": steps,
        "train.log_every_steps": 5,
        "train.precision": "fp32",
        "deepspeed.zero_stage": zero,
    }
    cmd = [sys.executable, "-m", "tokensmith.cli", "train", "--preset", "tiny"]
    for key, value in values.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": THREADS}
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    windows = [r for r in train if r["step"] > warmup]
    # Each record covers the 5 steps since the previous one: the harmonic mean is tokens / time.
    wall = len(windows) / sum(1.0 / r["tokens_per_s"] for r in windows)
    start = next(r for r in train if r["step"] == warmup)
    cpu = (windows[-1]["tokens"] - start["tokens"]) / (windows[-1]["cpu_s"] - start["cpu_s"])
    return wall, cpu


def run_plain(data: Path, steps: int, warmup: int) -> tuple[float, float]:
    """The peer: the same Transformer, windows, sample order, AdamW groups, clipping and schedule in a
    bare PyTorch loop (no DeepSpeed, no logging, no checkpoints)."""
    import torch
    import torch.nn.functional as F

    from tokensmith.planner.arch import ModelConfig
    from tokensmith.trainer.data.shards import ShardSet
    from tokensmith.trainer.model import Transformer, decay_groups
    from tokensmith.trainer.sampler import Windows, sample_ids
    from tokensmith.trainer.schedule import lr_at

    torch.set_num_threads(int(THREADS))
    cfg = ModelConfig(preset="tiny", **{k.split(".")[1]: v for k, v in MODEL.items()})
    torch.manual_seed(1234)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(decay_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    windows = Windows(ShardSet.open(data / "train"), cfg.seq_len)
    tokens, started, cpu_started = 0, 0.0, 0.0
    for step in range(steps):
        if step == warmup:
            tokens, started, cpu_started = 0, time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, 1e-3, steps, 20, 0.1)
        ids = sample_ids(torch.arange(step * MICRO, (step + 1) * MICRO).numpy(), windows.num_samples, 1234)
        rows = torch.from_numpy(windows.batch(ids))
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += MICRO * cfg.seq_len
    return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu_started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--zero", type=int, nargs="+", default=[0, 2], help="ZeRO stages to measure")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tokensmith-bench-trainer")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = curate(args.work)
    wall: dict[str, list[float]] = {"plain": [], **{f"zero{z}": [] for z in args.zero}}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    for _ in range(args.repeats):  # alternate, so load changes hit both sides alike
        for key, measure in [("plain", lambda: run_plain(data, args.steps, args.warmup))] + [
            (f"zero{z}", lambda z=z: run_ours(data, args.work, args.steps, z, args.warmup)) for z in args.zero
        ]:
            w, c = measure()
            wall[key].append(w)
            cpu[key].append(c)
    plain_wall, plain_cpu = statistics.median(wall["plain"]), statistics.median(cpu["plain"])
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": MODEL,
        "micro_batch": MICRO,
        "steps": args.steps,
        "warmup": args.warmup,
        "tokens_per_wall_s": wall,
        "tokens_per_cpu_s": cpu,
    }
    print(f"{'loop':<18}{'tok/CPU-s':>11}{'ratio':>7}{'tok/wall-s':>12}{'ratio':>7}   per-run tok/CPU-s")
    for key in wall:
        c, w = statistics.median(cpu[key]), statistics.median(wall[key])
        name = "plain PyTorch" if key == "plain" else f"tokensmith ZeRO-{key[4:]}"
        report[f"{key}_cpu_ratio"], report[f"{key}_wall_ratio"] = c / plain_cpu, w / plain_wall
        runs = [round(x) for x in cpu[key]]
        print(f"{name:<18}{c:>11,.0f}{c / plain_cpu:>7.2f}{w:>12,.0f}{w / plain_wall:>7.2f}   {runs}")
    print(report["machine"])
    if args.output:
        from tokensmith.core.io import atomic_write_text

        atomic_write_text(args.output, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
