"""Run-health costs on CPU (issue 13), both measured with `tokensmith train` itself:

1. Guardrails: tokens per CPU-second with `health.enabled` true vs false, the same run otherwise (one
   process, one thread, ZeRO-2, fp32), alternating repeats, steady state only. Goal: ratio >= 0.98.
2. Checkpoint stall: seconds training is blocked per save with `checkpoint.async_save` false vs true,
   read from the trainer's own checkpoint records (`blocked_s`, `durable_s`), for the tiny model and a
   ~100M-parameter one. Goal: async blocked time <= 20% of the synchronous save. Measured with
   consolidated weights at every checkpoint (`checkpoint.consolidate_every: 1`, the behaviour before the
   knob, so that every save is alike) and with the default (0: only the final save consolidates).

    .venv/bin/python benchmarks/trainer_health.py [--repeats 3] [--skip-large] [--output out.json]

Both write to a temporary directory under --work (the checkpoints of the large model take 1.9 GB each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from trainer_cpu_throughput import MODEL, curate  # the same model and data as issue 5

os.environ.setdefault("DS_ACCELERATOR", "cpu")
MICRO = 8
# ~100M parameters: 14 blocks of d_model 768 (12 x 768^2 x 14 = 99M) with a small vocabulary.
LARGE = {
    "model.vocab_size": 512,
    "model.seq_len": 64,
    "model.d_model": 768,
    "model.n_heads": 12,
    "model.n_kv_heads": 12,
    "model.n_layers": 14,
}


def train(data: Path, work: Path, model: dict[str, Any], micro: int, **extra: Any) -> list[dict[str, Any]]:
    """One `tokensmith train` run (one process, one thread); its metrics records."""
    ckpt = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
    values = {
        **model,
        "data.train_path": data / "train",
        "checkpoint.dir": ckpt,
        "train.micro_batch": micro,
        "train.global_batch_tokens": micro * model["model.seq_len"],
        "train.precision": "fp32",
        "deepspeed.zero_stage": 2,
        **extra,
    }
    cmd = [sys.executable, "-m", "tokensmith.cli", "train", "--preset", "tiny"]
    for key, value in values.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"tokensmith train failed ({done.returncode}): {done.stderr[-2000:]}")
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(ckpt, ignore_errors=True)
    return records


def cpu_throughput(records: list[dict[str, Any]], warmup: int) -> float:
    train = [r for r in records if r["type"] == "train"]
    start = next(r for r in train if r["step"] == warmup)
    return (train[-1]["tokens"] - start["tokens"]) / (train[-1]["cpu_s"] - start["cpu_s"])


def guardrail_cost(data: Path, work: Path, steps: int, warmup: int, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(repeats):
        for key in ("off", "on"):
            records = train(
                data,
                work,
                MODEL,
                MICRO,
                **{"train.max_steps": steps, "train.log_every_steps": 5, "health.enabled": key == "on"},
            )
            runs[key].append(cpu_throughput(records, warmup))
    on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
    return {"tokens_per_cpu_s": runs, "ratio": on / off}


def checkpoint_stall(
    data: Path, work: Path, model: dict[str, Any], micro: int, steps: int, every: int, consolidate: int
) -> dict:
    out: dict[str, Any] = {"consolidate_every": consolidate}
    for mode in ("sync", "async"):
        records = train(
            data,
            work,
            model,
            micro,
            **{
                "train.max_steps": steps,
                "train.log_every_steps": 1,
                "checkpoint.every_steps": every,
                "checkpoint.keep": 1,
                "checkpoint.async_save": mode == "async",
                "checkpoint.consolidate_every": consolidate,
            },
        )
        saves = [r for r in records if r["type"] == "checkpoint"]
        out[mode] = {
            "blocked_s": [r["blocked_s"] for r in saves],
            "durable_s": [r["durable_s"] for r in saves],
            "consolidated": [r.get("consolidated", True) for r in saves],
            # the dry run that sizes the staging buffers after the first step (async only)
            "staging_probe_s": [r["blocked_s"] for r in records if r["type"] == "staging"],
        }
    # Like with like: the saves that do not consolidate (the final one does) when there are such.
    same = [i for i, c in enumerate(out["sync"]["consolidated"]) if c == out["sync"]["consolidated"][0]]
    sync_blocked = statistics.median(out["sync"]["blocked_s"][i] for i in same)
    out["blocked_ratio"] = statistics.median(out["async"]["blocked_s"][i] for i in same[1:]) / sync_blocked
    out["first_blocked_ratio"] = out["async"]["blocked_s"][0] / sync_blocked
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="only the tiny model's checkpoint stall")
    parser.add_argument("--skip-guardrails", action="store_true", help="only the checkpoint stall")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tokensmith-bench-health")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = curate(args.work)
    load_before = os.getloadavg()[0]
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not args.skip_guardrails:
        report["guardrails"] = guardrail_cost(data, args.work, args.steps, args.warmup, args.repeats)
        g = report["guardrails"]
        print(f"guardrails on/off, tokens per CPU-second: {g['ratio']:.3f}  {g['tokens_per_cpu_s']}")
    models = []
    for consolidate in (1, 0):
        key = f"stall_tiny_c{consolidate}"
        report[key] = checkpoint_stall(data, args.work, MODEL, MICRO, 12, 3, consolidate)
        models.append((f"tiny, consolidate_every {consolidate}", report[key]))
        if not args.skip_large:
            key = f"stall_100m_c{consolidate}"
            report[key] = checkpoint_stall(data, args.work, LARGE, 2, 12, 3, consolidate)
            models.append((f"~100M, consolidate_every {consolidate}", report[key]))
    for name, s in models:
        print(
            f"checkpoint {name}: blocked sync {s['sync']['blocked_s']} s, async {s['async']['blocked_s']} s "
            f"(ratio after the first {s['blocked_ratio']:.3f}, first {s['first_blocked_ratio']:.3f}); "
            f"durable sync {s['sync']['durable_s']} s, "
            f"async {s['async']['durable_s']} s; staging probe {s['async']['staging_probe_s']} s"
        )
    report["machine"] = (
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(report["machine"])
    if args.output:
        from tokensmith.core.io import atomic_write_text

        atomic_write_text(args.output, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
