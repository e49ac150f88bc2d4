"""Planner benchmarks (run by hand: `.venv/bin/python benchmarks/planner_search.py`).

1. Cold start of `tokensmith plan --params 7B --format json` and of `tokensmith --help` (median of 7).
2. Cluster-shape candidates evaluated per second by the vectorised search (memory, step time, MFU,
   failures, cost, energy for every candidate), against
   - llm-analysis (PyPI, the peer the issue names) evaluating candidates of the same grid one by one
     with `LLMAnalysis.training(...)`; it conflicts with datatrove's huggingface-hub pin, so it is
     installed into a throwaway venv (`/tmp/bench-venv`, created here if missing) and run there;
   - a per-candidate Python loop over our own formulae (the same `search.evaluate` on one-element
     arrays), the nearest baseline of our own.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BENCH_VENV = Path(os.environ.get("TOKENSMITH_BENCH_VENV", "/tmp/bench-venv"))
PEER_SAMPLE = 300  # candidates given to the one-by-one evaluators

PEER_CODE = r"""
import json, sys, time, logging
from llm_analysis.analysis import LLMAnalysis, ActivationRecomputation, DSZeRO
from llm_analysis.config import (ModelConfig, ParallelismConfig, get_gpu_config_by_name,
                                 get_dtype_config_by_name)
logging.disable(logging.CRITICAL)
job = json.load(sys.stdin)
m = job["model"]
model = ModelConfig(name="bench", num_layers=m["n_layers"], n_head=m["n_heads"], hidden_dim=m["d_model"],
                    vocab_size=m["vocab_size"], max_seq_len=m["seq_len"], num_key_value_heads=m["n_kv_heads"],
                    expansion_ratio=m["ffn_hidden"] / m["d_model"])
gpu = get_gpu_config_by_name("a100-sxm-80gb")
dtype = get_dtype_config_by_name("w16a16e16")
ok = failed = 0
start = time.perf_counter()
for c in job["candidates"]:
    try:
        par = ParallelismConfig(tp_size=c["tp"], pp_size=c["pp"], dp_size=c["dp"])
        a = LLMAnalysis(model, gpu, dtype, par, flops_efficiency=0.5, hbm_memory_efficiency=0.9)
        a.training(batch_size_per_gpu=c["micro_batch"], gradient_accumulation_steps=c["microbatches"],
                   seq_len=m["seq_len"], total_num_tokens=job["tokens"],
                   activation_recomputation=ActivationRecomputation({0: 0, 1: 4, 2: 1}[c["recompute"]]),
                   ds_zero=DSZeRO(c["zero"]), mlp_gated_linear_units=True)
        ok += 1
    except Exception:
        failed += 1
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "ok": ok, "failed": failed}))
"""


def median_run(cmd: list[str], n: int = 7) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ensure_peer_venv() -> tuple[Path | None, str]:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        # A venv's interpreter cannot make an independent venv everywhere: try the base interpreter.
        base = Path(getattr(sys, "_base_executable", sys.executable))
        made = subprocess.run([str(base), "-m", "venv", str(BENCH_VENV)], capture_output=True, text=True)
        if made.returncode:
            made = subprocess.run(["python3", "-m", "venv", str(BENCH_VENV)], capture_output=True, text=True)
        if made.returncode:
            return None, made.stderr.strip().splitlines()[-1]
    check = subprocess.run([str(python), "-c", "import llm_analysis"], capture_output=True, text=True)
    if check.returncode:
        got = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "llm-analysis"], capture_output=True, text=True
        )
        if got.returncode:
            return None, got.stderr.strip().splitlines()[-1]
    version = subprocess.run(
        [str(python), "-m", "pip", "show", "llm-analysis"], capture_output=True, text=True
    ).stdout.split("\n")[1]
    return python, version


def main() -> None:
    import numpy as np

    from tokensmith.planner import arch, search
    from tokensmith.planner.arch import ModelConfig
    from tokensmith.planner.gpus import get_gpu
    from tokensmith.planner.performance import ModelScalars

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )

    cold = median_run([str(BIN / "tokensmith"), "plan", "--params", "7B", "--format", "json"])
    help_ = median_run([str(BIN / "tokensmith"), "--help"])
    plan_help = median_run([str(BIN / "tokensmith"), "plan", "--help"])

    cfg = ModelConfig(preset="llama-7b")
    counts = arch.param_counts(cfg)
    model = ModelScalars.from_config(cfg)
    assert model.params == counts.total
    gpu = get_gpu("A100-80GB")
    econ = search.Economics(price_per_gpu_hour=2.2)
    tokens, batch = 2e12, 4e6
    grid = search.candidate_grid(list(range(8, 16_384 + 1, 8)))  # every whole node up to 2,048 nodes
    n = search.grid_size(grid)
    flat = search.flat_grid(grid)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        res = search.evaluate(grid, model, gpu, 8, tokens, batch, econ)
        search.pareto_front(res)
        best = min(best, time.perf_counter() - start)
    vector_rate = n / best

    # The issue-16 dimensions: a MoE model (Mixtral 8x7B at 32K context) with every layout of any stack
    # (interleaving, EP, CP) in FP8 on H100.
    moe_cfg = ModelConfig(preset="mixtral-8x7b", seq_len=32768)
    moe = ModelScalars.from_config(moe_cfg)
    moe_axes = search.axis_values("any", moe_cfg.experts, moe_cfg.seq_len)
    moe_grid = search.candidate_grid(list(range(8, 1024 + 1, 8)), **moe_axes)
    moe_n = search.grid_size(moe_grid)
    moe_best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        moe_res = search.evaluate(
            moe_grid, moe, get_gpu("H100"), 8, 1e12, 16e6, econ, layouts="any", precision="fp8"
        )
        search.pareto_front(moe_res)
        moe_best = min(moe_best, time.perf_counter() - start)
    moe_rate = moe_n / moe_best

    rng = np.random.default_rng(0)
    valid = np.flatnonzero(res["valid"])
    sample = rng.choice(valid, PEER_SAMPLE, replace=False)
    start = time.perf_counter()
    for i in sample:
        search.evaluate({k: flat[k][i : i + 1] for k in search.AXES}, model, gpu, 8, tokens, batch, econ)
    loop_rate = PEER_SAMPLE / (time.perf_counter() - start)

    python, version = ensure_peer_venv()
    peer_line = ""
    if python is not None:
        job = {
            "model": cfg.model_dump(),
            "tokens": tokens,
            "candidates": [
                {
                    k: int(res[k][i])
                    for k in ("tp", "pp", "dp", "zero", "micro_batch", "microbatches", "recompute")
                }
                for i in sample
            ],
        }
        out = subprocess.run(
            [str(python), "-c", PEER_CODE], input=json.dumps(job), capture_output=True, text=True
        )
        if out.returncode == 0:
            peer = json.loads(out.stdout.strip().splitlines()[-1])
            peer_rate = PEER_SAMPLE / peer["seconds"]
            peer_line = (
                f"| llm-analysis ({version.strip()}), one `LLMAnalysis.training` per candidate "
                f"({peer['ok']} ok, {peer['failed']} raised) | {peer_rate:,.0f} | "
                f"{vector_rate / peer_rate:,.0f}x |"
            )
        else:
            peer_line = f"| llm-analysis failed: {out.stderr.strip().splitlines()[-1]} | - | - |"
    else:
        peer_line = f"| llm-analysis could not be installed: {version} | - | - |"

    print()
    print("| start-up (median of 7) | seconds |")
    print("|---|---|")
    print(f"| `tokensmith plan --params 7B --format json` | {cold:.2f} |")
    print(f"| `tokensmith --help` | {help_:.2f} |")
    print(f"| `tokensmith plan --help` | {plan_help:.2f} |")
    print()
    print(
        f"| search over {n:,} candidates (Llama-2-7B shape, A100-80GB) | candidates/s | tokensmith speed-up |"
    )
    print("|---|---|---|")
    print(
        f"| tokensmith vectorised `search.evaluate` + Pareto front (best of 3: {best:.3f} s) "
        f"| {vector_rate:,.0f} | 1x |"
    )
    print(
        f"| our formulae, one candidate at a time (Python loop, {PEER_SAMPLE} candidates) "
        f"| {loop_rate:,.0f} | "
        f"{vector_rate / loop_rate:,.0f}x |"
    )
    print(peer_line)
    print()
    print(
        f"| search over {moe_n:,} candidates (Mixtral 8x7B at 32K, H100 FP8, `layouts=any`: interleaving "
        f"{moe_axes['virtual']}, EP {moe_axes['ep']}, CP {moe_axes['cp']}) | {moe_rate:,.0f} candidates/s "
        f"(best of 3: {moe_best:.2f} s) |"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores shared with other work)")


if __name__ == "__main__":
    main()
