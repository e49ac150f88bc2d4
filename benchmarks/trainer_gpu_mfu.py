"""MFU of `tokensmith train` on one GPU: a Llama-style ~1B model (the `llama-1b` preset's shape) in bf16.

    .venv/bin/python benchmarks/trainer_gpu_mfu.py [--steps 30] [--micro-batch 4] [--seq-len 2048]

MFU uses the planner's formula (tokensmith.planner.arch.flops_per_token, PaLM Appendix B) and the GPU
catalogue's dense BF16 peak (H100 SXM: 989 TFLOP/s). Goal (issue 5): >= 45% on one H100, the range
torchtitan and Megatron-LM report. The data are random tokens in curate's shard format (throughput
does not depend on the text). Needs a CUDA GPU; on a machine without one it says so and exits 2.
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
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--zero", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tokensmith-bench-mfu")
    args = parser.parse_args()

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: the MFU benchmark needs one (nothing was measured)", file=sys.stderr)
        return 2
    from tokensmith.planner.arch import ModelConfig
    from tokensmith.trainer.data.shards import write_manifest, write_shard

    vocab = ModelConfig(preset="llama-1b").vocab_size
    data = args.work / "data" / "train"
    data.mkdir(parents=True, exist_ok=True)
    tokens_needed = (args.steps + 1) * args.micro_batch * (args.seq_len + 1)
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, vocab, size=4096) for _ in range(tokens_needed // 4096 + 2)]
    write_shard(data, "000.ds", docs, vocab, "random")
    write_manifest(data, ["000.ds"], vocab, eos_id=None)

    ckpt = Path(tempfile.mkdtemp(dir=args.work, prefix="ck-"))
    sets = {
        "data.train_path": data,
        "checkpoint.dir": ckpt,
        "model.seq_len": args.seq_len,
        "train.micro_batch": args.micro_batch,
        "train.global_batch_tokens": args.micro_batch * args.seq_len,
        "train.max_steps": args.steps,
        "train.warmup_steps": 2,
        "train.log_every_steps": 5,
        "train.precision": "bf16",
        "deepspeed.zero_stage": args.zero,
        "parallelism.recompute": "full" if args.activation_checkpointing else "none",
        "checkpoint.every_steps": 0,
    }
    cmd = [sys.executable, "-m", "tokensmith.cli", "train", "--preset", "llama-1b"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    subprocess.run(cmd, check=True, env={**os.environ})
    records = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if r["type"] == "train" and r["step"] > args.warmup]
    mfu = [r["mfu"] for r in steady if r.get("mfu") is not None]
    tps = len(steady) / sum(1.0 / r["tokens_per_s"] for r in steady)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "tokens_per_s": tps,
                "mfu": sum(mfu) / len(mfu) if mfu else None,
                "memory_gb": max(r["memory_gb"] for r in steady),
                "micro_batch": args.micro_batch,
                "seq_len": args.seq_len,
                "zero": args.zero,
                "activation_checkpointing": args.activation_checkpointing,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
