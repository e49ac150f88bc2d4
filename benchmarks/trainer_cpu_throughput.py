"""Trainer overhead on CPU: tokens/s of `tokensmith train` (DeepSpeed engine, our loop, metrics,
checkpoint bookkeeping) against a plain PyTorch loop over the same model, data, batch and optimizer,
measured in the same run, alternating, steady state only (the first steps are warm-up).

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
THREADS = "2"
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
    for step in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
        cmd += ["--skip", step]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def run_ours(data: Path, work: Path, steps: int, zero: int, warmup: int) -> float:
    """Steady-state tokens/s of `tokensmith train` (one process), from its own metrics log."""
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
    windows = [r for r in records if r["type"] == "train" and r["step"] > warmup]
    # Each record covers the 5 steps since the previous one: the harmonic mean is tokens / time.
    return len(windows) / sum(1.0 / r["tokens_per_s"] for r in windows)


def run_plain(data: Path, steps: int, warmup: int) -> float:
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
    tokens, started = 0, 0.0
    for step in range(steps):
        if step == warmup:
            tokens, started = 0, time.perf_counter()
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
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from the measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--zero", type=int, nargs="+", default=[0, 2], help="ZeRO stages to measure")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tokensmith-bench-trainer")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = curate(args.work)
    results: dict[str, list[float]] = {"plain": [], **{f"zero{z}": [] for z in args.zero}}
    for _ in range(args.repeats):  # alternate, so load changes hit both sides alike
        results["plain"].append(run_plain(data, args.steps, args.warmup))
        for z in args.zero:
            results[f"zero{z}"].append(run_ours(data, args.work, args.steps, z, args.warmup))
    plain = statistics.median(results["plain"])
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": MODEL,
        "micro_batch": MICRO,
        "steps": args.steps,
        "warmup": args.warmup,
        "runs": results,
        "plain_tokens_per_s": plain,
    }
    print(f"{'loop':<22}{'tokens/s (median)':>20}{'ratio vs plain':>16}   runs")
    print(f"{'plain PyTorch':<22}{plain:>20,.0f}{1.0:>16.2f}   {[round(x) for x in results['plain']]}")
    for z in args.zero:
        ours = statistics.median(results[f"zero{z}"])
        report[f"zero{z}_ratio"] = ours / plain
        runs = [round(x) for x in results[f"zero{z}"]]
        print(f"{f'tokensmith ZeRO-{z}':<22}{ours:>20,.0f}{ours / plain:>16.2f}   {runs}")
    print(report["machine"])
    if args.output:
        from tokensmith.core.io import atomic_write_text

        atomic_write_text(args.output, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
