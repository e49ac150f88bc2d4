"""Published training runs used to calibrate and check the performance model.

MFU here is in the 6ND convention the runs' own figures use: 6 x params x tokens / (GPU-seconds x
dense peak). Where a paper does not give the GPU count, the model is evaluated at the counts listed
and the best shape is taken (the planner recommends efficient shapes, and the published runs were
tuned too).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokensmith.planner import search
from tokensmith.planner.gpus import get_gpu
from tokensmith.planner.performance import ModelScalars
from tokensmith.planner.shapes import shape_for_params


@dataclass(frozen=True)
class PublishedRun:
    name: str
    params: float
    tokens: float
    gpu: str
    gpu_counts: tuple[int, ...]
    seq_len: int
    vocab_size: int
    global_batch_tokens: float
    mfu: float  # 6ND convention
    source: str


def _mfu(params: float, tokens: float, gpu_hours: float, peak_tflops: float) -> float:
    return 6.0 * params * tokens / (gpu_hours * 3600.0 * peak_tflops * 1e12)


LLAMA2_COUNTS = (256, 512, 1024, 2048)

PUBLISHED_RUNS: tuple[PublishedRun, ...] = (
    PublishedRun(
        "llama-2-7b",
        6.74e9,
        2e12,
        "A100-80GB",
        LLAMA2_COUNTS,
        4096,
        32000,
        4e6,
        _mfu(6.74e9, 2e12, 184_320, 312),
        "Touvron et al. 2023 (Llama 2), Table 2: 184,320 GPU-hours",
    ),
    PublishedRun(
        "llama-2-13b",
        13.0e9,
        2e12,
        "A100-80GB",
        LLAMA2_COUNTS,
        4096,
        32000,
        4e6,
        _mfu(13.0e9, 2e12, 368_640, 312),
        "Touvron et al. 2023, Table 2: 368,640 GPU-hours",
    ),
    PublishedRun(
        "llama-2-34b",
        34.0e9,
        2e12,
        "A100-80GB",
        LLAMA2_COUNTS,
        4096,
        32000,
        4e6,
        _mfu(34.0e9, 2e12, 1_038_336, 312),
        "Touvron et al. 2023, Table 2: 1,038,336 GPU-hours",
    ),
    PublishedRun(
        "llama-2-70b",
        70.0e9,
        2e12,
        "A100-80GB",
        LLAMA2_COUNTS,
        4096,
        32000,
        4e6,
        _mfu(70.0e9, 2e12, 1_720_320, 312),
        "Touvron et al. 2023, Table 2: 1,720,320 GPU-hours",
    ),
    PublishedRun(
        "llama-65b",
        65.2e9,
        1.4e12,
        "A100-80GB",
        (2048,),
        2048,
        32000,
        4e6,
        6.0 * 65.2e9 * 380 / 312e12,
        "Touvron et al. 2023 (LLaMA), §2.4: 380 tokens/s/GPU on 2048 A100-80GB",
    ),
    PublishedRun(
        "bloom-176b",
        176e9,
        366e9,
        "A100-80GB",
        (384,),
        2048,
        250880,
        2048 * 2048,
        _mfu(176e9, 366e9, 1_082_990, 312),
        "Luccioni et al. 2022: 1,082,990 GPU-hours on 384 A100-80GB",
    ),
    PublishedRun(
        "megatron-gpt3-175b",
        175e9,
        300e9,
        "A100-80GB",
        (1024,),
        2048,
        51200,
        1536 * 2048,
        0.75 * 140 / 312 / 1.031,
        "Narayanan et al. 2021, Table 1: 140 TFLOP/s/GPU with recomputation",
    ),
)


def _six_nd_share(params: float, seq_len: int, vocab: int) -> float:
    """6N / (model FLOPs per token) for the planner's shape of this size: converts an MFU reported with
    attention counted (PaLM convention) into the 6ND convention used here."""
    from tokensmith.planner.arch import flops_per_token, param_counts

    cfg = shape_for_params(params, vocab_size=vocab, seq_len=seq_len)
    return 6.0 * param_counts(cfg).total / flops_per_token(cfg)


# Held out of the fit (H100, long context): reported to show how far the model carries.
VALIDATION_RUNS: tuple[PublishedRun, ...] = (
    PublishedRun(
        "llama-3-405b-16k-gpus",
        405e9,
        15.6e12,
        "H100-SXM",
        (16_384,),
        8192,
        128256,
        16 * 2**20,
        0.38 * _six_nd_share(405e9, 8192, 128256),
        "Dubey et al. 2024 (Llama 3), Table 4: 38% BF16 MFU on 16,384 H100 (attention counted)",
    ),
    PublishedRun(
        "llama-3-405b-8k-gpus",
        405e9,
        15.6e12,
        "H100-SXM",
        (8_192,),
        8192,
        128256,
        16 * 2**20,
        0.43 * _six_nd_share(405e9, 8192, 128256),
        "Dubey et al. 2024 (Llama 3), Table 4: 43% BF16 MFU on 8,192 H100 (attention counted)",
    ),
)


def predicted_mfu(run: PublishedRun) -> float:
    """The performance model's best MFU for a published run's model, data and GPU counts."""
    import numpy as np

    gpu = get_gpu(run.gpu)
    cfg = shape_for_params(run.params, vocab_size=run.vocab_size, seq_len=run.seq_len)
    econ = search.Economics(price_per_gpu_hour=gpu.price_usd_hour)
    res = search.evaluate(
        search.candidate_grid(list(run.gpu_counts)),
        ModelScalars.from_config(cfg),
        gpu,
        gpu.gpus_per_node,
        run.tokens,
        run.global_batch_tokens,
        econ,
    )
    ok = res["fits"]
    # Scale to the published parameter count's convention (6ND with the paper's N).
    return float(np.max(np.where(ok, res["model_mfu"], 0.0)))
