"""Tensor and pipeline parallelism on a multi-GPU machine: tokens/s and MFU of `tokensmith train` for
DP, TP, PP and TP x PP layouts of the same model, global batch and precision, one run each.

    .venv/bin/python benchmarks/trainer_parallel_gpu.py [--preset llama-1b] [--gpus 8] \
        [--layouts 1x1 2x1 1x2 2x2 4x1 ...] [--steps 30] [--micro-batch 2] [--seq-len 2048]

A layout TPxPP uses DP = gpus / (TP x PP); the global batch is `--micro-batch` x `--micro-batches` x gpus
sequences for every layout (DP replicas x micro-batches per replica), so the work per step is equal.
MFU is the trainer's (planner FLOPs per token over the catalogue's dense BF16 peak, per GPU). Layouts the
capability rules refuse are reported with their reason. Random tokens in curate's shard format
(throughput does not depend on the text). Needs `--gpus` CUDA GPUs; without them it says so and exits 2.
Prints JSON lines, one per layout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="llama-1b")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--layouts", nargs="+", default=["1x1", "2x1", "1x2", "2x2", "4x1", "1x4"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--micro-batches", type=int, default=8, help="per GPU-equivalent replica")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--zero", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tokensmith-bench-3d")
    args = parser.parse_args()

    import numpy as np
    import torch

    if torch.cuda.device_count() < args.gpus:
        print(
            f"needs {args.gpus} CUDA GPUs, found {torch.cuda.device_count()}: nothing measured",
            file=sys.stderr,
        )
        return 2
    from tokensmith.core.errors import ConfigError
    from tokensmith.planner.arch import ModelConfig
    from tokensmith.trainer.config import resolve_config
    from tokensmith.trainer.data.shards import write_manifest, write_shard

    vocab = ModelConfig(preset=args.preset).vocab_size
    data = args.work / "data" / "train"
    sequences = args.micro_batch * args.micro_batches * args.gpus
    if not (data / "shards.json").is_file():
        data.mkdir(parents=True, exist_ok=True)
        tokens_needed = (args.steps + 1) * sequences * (args.seq_len + 1)
        rng = np.random.default_rng(0)
        docs = [rng.integers(0, vocab, size=65536) for _ in range(tokens_needed // 65536 + 2)]
        write_shard(data, "000.ds", docs, vocab, "random")
        write_manifest(data, ["000.ds"], vocab, eos_id=None)
    for layout in args.layouts:
        tp, pp = (int(x) for x in layout.split("x"))
        ckpt = Path(tempfile.mkdtemp(dir=args.work, prefix=f"ck-{layout}-"))
        sets = {
            "data.train_path": data,
            "checkpoint.dir": ckpt,
            "model.seq_len": args.seq_len,
            "train.micro_batch": args.micro_batch,
            "train.global_batch_tokens": sequences * args.seq_len,
            "train.max_steps": args.steps,
            "train.warmup_steps": 2,
            "train.log_every_steps": 5,
            "train.precision": "bf16",
            "deepspeed.zero_stage": args.zero,
            "parallelism.tensor": tp,
            "parallelism.pipeline": pp,
            "checkpoint.every_steps": 0,
        }
        overrides = [f"{k}={v}" for k, v in sets.items()]
        try:
            resolve_config(preset=args.preset, sets=overrides).grad_accumulation(args.gpus)
        except ConfigError as err:
            print(json.dumps({"layout": layout, "refused": err.message}))
            continue
        cmd = [
            sys.executable,
            "-m",
            "tokensmith.cli",
            "train",
            "--preset",
            args.preset,
            "--nproc",
            str(args.gpus),
        ]
        for override in overrides:
            cmd += ["--set", override]
        subprocess.run(cmd, check=True, env={**os.environ})
        records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
        steady = [r for r in records if r["type"] == "train" and r["step"] > args.warmup]
        mfu = [r["mfu"] for r in steady if r.get("mfu") is not None]
        state = next((r for r in records if r["type"] == "model_state"), {})
        print(
            json.dumps(
                {
                    "layout": layout,
                    "tensor": tp,
                    "pipeline": pp,
                    "data": args.gpus // (tp * pp),
                    "device": torch.cuda.get_device_name(),
                    "tokens_per_s": len(steady) / sum(1.0 / r["tokens_per_s"] for r in steady),
                    "mfu": sum(mfu) / len(mfu) if mfu else None,
                    "memory_gb": max(r["memory_gb"] for r in steady),
                    "model_state_bytes_rank0": state.get("ranks", [None])[0],
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
