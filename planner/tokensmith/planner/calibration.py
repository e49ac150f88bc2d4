"""Published training runs used to calibrate and check the performance model.

MFU here is in the 6ND convention the runs' own figures use: 6 x params x tokens / (GPU-seconds x
dense peak). Where a paper does not give the GPU count, the model is evaluated at the counts listed
and the best shape is taken (the planner recommends efficient shapes, and the published runs were
tuned too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    model: dict[str, Any] | None = None  # the published architecture (None: the planner's shape)
    layout: dict[str, tuple[int, ...]] | None = None  # published layout axes (searched with "any")
    flash_attention: bool = True
    throughput: bool = False  # a measured throughput (no failures in it), not whole-run GPU-hours


def _mfu(params: float, tokens: float, gpu_hours: float, peak_tflops: float) -> float:
    return 6.0 * params * tokens / (gpu_hours * 3600.0 * peak_tflops * 1e12)


# Llama 2's GPU count is not published; LLaMA (same team and clusters) used 2,048 A100-80GB (§2.4).
LLAMA2_COUNTS = (2048,)

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
        throughput=True,
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
        "Luccioni et al. 2022: 1,082,990 GPU-hours on 384 A100-80GB; layout TP4 x PP12 x DP8, ZeRO-1, "
        "micro-batch 2, activation checkpointing (BigScience tr11-176B-ml config)",
        model=dict(
            n_layers=70,
            d_model=14336,
            n_heads=112,
            ffn_hidden=4 * 14336,
            vocab_size=250880,
            seq_len=2048,
            norm="layernorm",
            activation="gelu",
            position="alibi",
            tie_embeddings=True,
            bias=True,
        ),
        layout={
            "tp": (4,),
            "pp": (12,),
            "zero": (1,),
            "micro_batch": (2,),
            "recompute": (1,),
            "virtual": (1,),
        },
        flash_attention=False,
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
        "Narayanan et al. 2021, §5.1: 140 TFLOP/s/GPU with recomputation, TP8 (PP searched)",
        model=dict(
            n_layers=96,
            d_model=12288,
            n_heads=96,
            ffn_hidden=4 * 12288,
            vocab_size=51200,
            seq_len=2048,
            norm="layernorm",
            activation="gelu",
            position="learned",
            tie_embeddings=True,
            bias=True,
            dropout=0.1,
        ),
        layout={"tp": (8,), "recompute": (1,)},
        flash_attention=False,
        throughput=True,
    ),
)


def predicted_mfu(run: PublishedRun) -> float:
    """The performance model's best MFU for a published run's model, data and GPU counts (within its
    published layout when it has one), times the goodput at the default failure rate when the figure
    is whole-run GPU-hours (they include the run's failures and restarts)."""
    import numpy as np

    from tokensmith.planner.arch import ModelConfig

    gpu = get_gpu(run.gpu)
    if run.model is not None:
        cfg = ModelConfig(**run.model)
    else:
        cfg = shape_for_params(run.params, vocab_size=run.vocab_size, seq_len=run.seq_len)
    econ = search.Economics(price_per_gpu_hour=gpu.price_usd_hour)
    layouts = "any" if run.layout is not None else "trainable"
    axes = search.axis_values(layouts, cfg.experts, cfg.seq_len)
    axes.update(run.layout or {})
    res = search.evaluate(
        search.candidate_grid(list(run.gpu_counts), **axes),
        ModelScalars.from_config(cfg, flash_attention=run.flash_attention),
        gpu,
        gpu.gpus_per_node,
        run.tokens,
        run.global_batch_tokens,
        econ,
        layouts=layouts,
    )
    ok = res["fits"]
    whole_run = 1.0 if run.throughput else res["goodput"]
    # MFU in the paper's convention: 6 x its parameter count, which the shapes match within 1%.
    return float(np.max(np.where(ok, res["model_mfu"] * whole_run, 0.0)))


# ---------------------------------------------------------------------------------------------------
# Held-out validation: published runs with their architecture, GPU count and (where published) layout.
# None of them was used to set a constant; docs/planner.md reports the table `validation_table` makes.


@dataclass(frozen=True)
class ValidationRun:
    """A published run: its model, cluster and layout, and the figure to reproduce: per-GPU throughput
    (`tokens_per_gpu_s`) or GPU-hours for `tokens` tokens (`gpu_hours`). `layout` fixes search axes
    (tp, pp, zero, recompute, virtual, ep, cp, micro_batch, each a tuple); the others are searched."""

    name: str
    model: dict[str, Any]
    gpu: str
    gpus: int
    global_batch_tokens: float
    layout: dict[str, tuple[int, ...]]
    source: str
    tokens_per_gpu_s: float | None = None
    gpu_hours: float | None = None
    tokens: float = 0.0
    precision: str = "bf16"
    flash_attention: bool = True
    fits: bool = True  # the run fit in memory as published


def _mpt(n_layers: int, d_model: int, n_heads: int, seq: int) -> dict[str, Any]:
    """MPT (MosaicML's llm-foundry yamls): LayerNorm, GELU MLP 4d, tied embeddings, no biases, vocab
    50368; counted with a learned position table as the benchmark's NumParams column does."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        ffn_hidden=4 * d_model,
        vocab_size=50368,
        seq_len=seq,
        norm="layernorm",
        activation="gelu",
        position="learned",
        tie_embeddings=True,
        bias=False,
    )


def _gpt(n_layers: int, d_model: int, n_heads: int) -> dict[str, Any]:
    """Megatron-LM's GPT models (Narayanan et al. 2021; Korthikanti et al. 2022): seq 2048, vocab 51200,
    LayerNorm, GELU MLP 4d, learned positions, biases, dropout 0.1."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        ffn_hidden=4 * d_model,
        vocab_size=51200,
        seq_len=2048,
        norm="layernorm",
        activation="gelu",
        position="learned",
        tie_embeddings=True,
        bias=True,
        dropout=0.1,
    )


def _megatron_tokens_per_gpu_s(
    tflops: float, n_layers: int, d_model: int, seq: int = 2048, vocab: int = 51200, recompute: bool = True
) -> float:
    """Narayanan et al. 2021, eq. in §5.1: F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)) FLOPs per iteration
    with recomputation (72 and V/(12 l h) without, Korthikanti et al. 2022, §6): the per-GPU throughput
    they report back into tokens per second per GPU."""
    if recompute:
        per_token = (
            96.0 * n_layers * d_model**2 * (1 + seq / (6 * d_model) + vocab / (16 * n_layers * d_model))
        )
    else:
        per_token = (
            72.0 * n_layers * d_model**2 * (1 + seq / (6 * d_model) + vocab / (12 * n_layers * d_model))
        )
    return tflops * 1e12 / per_token


FSDP = {"tp": (1,), "pp": (1,), "zero": (3,), "cp": (1,), "ep": (1,), "virtual": (1,)}
MOSAIC = "MosaicML llm-foundry, scripts/train/benchmarking/README.md"
NARAYANAN = "Narayanan et al. 2021 (arXiv:2104.04473), Table 1"
KORTHIKANTI = "Korthikanti et al. 2022 (arXiv:2205.05198), Tables 3 and 5"
LLAMA3 = "Dubey et al. 2024 (Llama 3, arXiv:2407.21783), Table 4"
LLAMA3_405B = dict(
    n_layers=126,
    d_model=16384,
    n_heads=128,
    n_kv_heads=8,
    ffn_hidden=53248,
    vocab_size=128256,
    seq_len=8192,
    tie_embeddings=False,
)


def _llama3(tflops: float, seq: int) -> float:
    from tokensmith.planner.arch import ModelConfig, flops_per_token

    return tflops * 1e12 / flops_per_token(ModelConfig(**{**LLAMA3_405B, "seq_len": seq}))


def _tokens_per_gpu_from_mfu(mfu: float, layers: int, d: int, peak: float = 312e12) -> float:
    """Korthikanti et al. 2022 report MFU with model FLOPs 72 B s l h^2 (1 + s/(6h) + V/(12 l h))."""
    return _megatron_tokens_per_gpu_s(mfu * peak / 1e12, layers, d, recompute=False)


VALIDATION: tuple[ValidationRun, ...] = (
    # MosaicML's tables (FSDP FULL_SHARD = ZeRO-3, FlashAttention; "Activation Checkpointing" = full).
    ValidationRun("mpt-7b a100-80 x8", _mpt(32, 4096, 32, 2048), "A100-80GB", 8, 96 * 2048,
                  {**FSDP, "recompute": (0,), "micro_batch": (6,)}, f"{MOSAIC}, A100 80GB: 4641 T/s/GPU",
                  tokens_per_gpu_s=4641),
    ValidationRun("mpt-13b a100-80 x8 4k", _mpt(40, 5120, 40, 4096), "A100-80GB", 8, 240 * 4096,
                  {**FSDP, "recompute": (1,), "micro_batch": (8,)}, f"{MOSAIC}, A100 80GB: 2060 T/s/GPU",
                  tokens_per_gpu_s=2060),
    ValidationRun("mpt-30b a100-80 x8", _mpt(48, 7168, 64, 2048), "A100-80GB", 8, 504 * 2048,
                  {**FSDP, "recompute": (1,), "micro_batch": (2, 4)}, f"{MOSAIC}, A100 80GB: 916 T/s/GPU",
                  tokens_per_gpu_s=916),
    ValidationRun("mpt-70b a100-80 x64", _mpt(80, 8192, 64, 2048), "A100-80GB", 64, 2048 * 2048,
                  {**FSDP, "recompute": (1,), "micro_batch": (8,)}, f"{MOSAIC}, A100 80GB: 410 T/s/GPU",
                  tokens_per_gpu_s=410),
    ValidationRun("mpt-7b a100-40 x128", _mpt(32, 4096, 32, 2048), "A100-40GB", 128, 2304 * 2048,
                  {**FSDP, "recompute": (1,), "micro_batch": (16,)}, f"{MOSAIC}, A100 40GB: 3623 T/s/GPU",
                  tokens_per_gpu_s=3623),
    ValidationRun("mpt-13b a100-40 x64", _mpt(40, 5120, 40, 2048), "A100-40GB", 64, 1024 * 2048,
                  {**FSDP, "recompute": (1,), "micro_batch": (16,)}, f"{MOSAIC}, A100 40GB: 1976 T/s/GPU",
                  tokens_per_gpu_s=1976),
    ValidationRun("mpt-7b h100 x8", _mpt(32, 4096, 32, 2048), "H100-SXM", 8, 48 * 2048,
                  {**FSDP, "recompute": (0,), "micro_batch": (4, 8)}, f"{MOSAIC}, H100 BF16: 10643 T/s/GPU",
                  tokens_per_gpu_s=10643),
    ValidationRun("mpt-13b h100 x64", _mpt(40, 5120, 40, 2048), "H100-SXM", 64, 128 * 2048,
                  {**FSDP, "recompute": (0,), "micro_batch": (2,)}, f"{MOSAIC}, H100 BF16: 4800 T/s/GPU",
                  tokens_per_gpu_s=4800),
    ValidationRun("mpt-30b h100 x32", _mpt(48, 7168, 64, 2048), "H100-SXM", 32, 1344 * 2048,
                  {**FSDP, "recompute": (1,), "micro_batch": (8, 16)}, f"{MOSAIC}, H100 BF16: 2308 T/s/GPU",
                  tokens_per_gpu_s=2308),
    ValidationRun("mpt-70b h100 x64", _mpt(80, 8192, 64, 2048), "H100-SXM", 64, 2048 * 2048,
                  {**FSDP, "recompute": (1,), "micro_batch": (8,)}, f"{MOSAIC}, H100 BF16: 1039 T/s/GPU",
                  tokens_per_gpu_s=1039),
    ValidationRun("mpt-3b h100 x8 fp8", _mpt(32, 2560, 20, 2048), "H100-SXM", 8, 480 * 2048,
                  {**FSDP, "recompute": (0,), "micro_batch": (8, 16)}, f"{MOSAIC}, H100 FP8: 30586 T/s/GPU",
                  tokens_per_gpu_s=30586, precision="fp8"),
    # Megatron-LM (full recomputation, interleaved 1F1B where it helps; no FlashAttention in 2021).
    ValidationRun("megatron 1.7B x32", _gpt(24, 2304, 24), "A100-80GB", 32, 512 * 2048,
                  {"tp": (1,), "pp": (1,), "recompute": (1,), "cp": (1,), "ep": (1,)},
                  f"{NARAYANAN}: 137 TFLOP/s per GPU", flash_attention=False,
                  tokens_per_gpu_s=_megatron_tokens_per_gpu_s(137, 24, 2304)),
    ValidationRun("megatron 18.4B x256", _gpt(40, 6144, 48), "A100-80GB", 256, 1024 * 2048,
                  {"tp": (8,), "pp": (1,), "recompute": (1,), "cp": (1,), "ep": (1,)},
                  f"{NARAYANAN}: 135 TFLOP/s per GPU", flash_attention=False,
                  tokens_per_gpu_s=_megatron_tokens_per_gpu_s(135, 40, 6144)),
    ValidationRun("megatron 145.6B x1536", _gpt(80, 12288, 96), "A100-80GB", 1536, 2304 * 2048,
                  {"tp": (8,), "pp": (8,), "recompute": (1,), "cp": (1,), "ep": (1,)},
                  f"{NARAYANAN}: 148 TFLOP/s per GPU", flash_attention=False,
                  tokens_per_gpu_s=_megatron_tokens_per_gpu_s(148, 80, 12288)),
    ValidationRun("megatron 529.6B x2520", _gpt(105, 20480, 128), "A100-80GB", 2520, 2520 * 2048,
                  {"tp": (8,), "pp": (35,), "recompute": (1,), "cp": (1,), "ep": (1,)},
                  f"{NARAYANAN}: 163 TFLOP/s per GPU", flash_attention=False,
                  tokens_per_gpu_s=_megatron_tokens_per_gpu_s(163, 105, 20480)),
    ValidationRun("megatron 1008B x3072", _gpt(128, 25600, 160), "A100-80GB", 3072, 3072 * 2048,
                  {"tp": (8,), "pp": (64,), "recompute": (1,), "cp": (1,), "ep": (1,)},
                  f"{NARAYANAN}: 163 TFLOP/s per GPU", flash_attention=False,
                  tokens_per_gpu_s=_megatron_tokens_per_gpu_s(163, 128, 25600)),
    # Korthikanti et al. 2022: sequence parallelism + selective recomputation, MFU as published.
    ValidationRun("korthikanti 22B x8", _gpt(48, 6144, 64), "A100-80GB", 8, 4 * 2048,
                  {"tp": (8,), "pp": (1,), "recompute": (2,), "cp": (1,), "ep": (1,)},
                  f"{KORTHIKANTI}: MFU 41.5%", flash_attention=False,
                  tokens_per_gpu_s=_tokens_per_gpu_from_mfu(0.415, 48, 6144)),
    ValidationRun("korthikanti 175B x64", _gpt(96, 12288, 96), "A100-80GB", 64, 64 * 2048,
                  {"tp": (8,), "pp": (8,), "recompute": (2,), "cp": (1,), "ep": (1,)},
                  f"{KORTHIKANTI}: MFU 51.4%", flash_attention=False,
                  tokens_per_gpu_s=_tokens_per_gpu_from_mfu(0.514, 96, 12288)),
    ValidationRun("korthikanti 530B x280", _gpt(105, 20480, 128), "A100-80GB", 280, 280 * 2048,
                  {"tp": (8,), "pp": (35,), "recompute": (2,), "cp": (1,), "ep": (1,)},
                  f"{KORTHIKANTI}: MFU 56.0%", flash_attention=False,
                  tokens_per_gpu_s=_tokens_per_gpu_from_mfu(0.560, 105, 20480)),
    ValidationRun("korthikanti 1T x512", _gpt(128, 25600, 160), "A100-80GB", 512, 512 * 2048,
                  {"tp": (8,), "pp": (64,), "recompute": (2,), "cp": (1,), "ep": (1,)},
                  f"{KORTHIKANTI}: MFU 56.3%", flash_attention=False,
                  tokens_per_gpu_s=_tokens_per_gpu_from_mfu(0.563, 128, 25600)),
    # Llama 3 405B on H100 (TP8, PP16, interleaved; CP16 for 128K context): TFLOP/s per GPU as published.
    ValidationRun("llama-3-405b x8192", LLAMA3_405B, "H100-SXM", 8192, 16 * 2**20,
                  {"tp": (8,), "pp": (16,), "cp": (1,), "ep": (1,)},
                  f"{LLAMA3}: 430 TFLOP/s per GPU", tokens_per_gpu_s=_llama3(430, 8192)),
    ValidationRun("llama-3-405b x16384", LLAMA3_405B, "H100-SXM", 16384, 16 * 2**20,
                  {"tp": (8,), "pp": (16,), "cp": (1,), "ep": (1,)},
                  f"{LLAMA3}: 400 TFLOP/s per GPU", tokens_per_gpu_s=_llama3(400, 8192)),
    ValidationRun("llama-3-405b 128K x16384", {**LLAMA3_405B, "seq_len": 131072}, "H100-SXM", 16384,
                  16 * 2**20, {"tp": (8,), "pp": (16,), "cp": (16,), "ep": (1,)},
                  f"{LLAMA3}: 380 TFLOP/s per GPU", tokens_per_gpu_s=_llama3(380, 131072)),
    # DeepSeek-V3: FP8 MoE on 2,048 H800, PP16 (DualPipe), EP64 over 8 nodes, ZeRO-1, no TP; 180K
    # H800 GPU-hours per trillion tokens of pre-training (14.8T: 2.664M of the 2.788M total).
    ValidationRun("deepseek-v3 x2048 fp8", {"preset": "deepseek-v3"}, "H800", 2048, 15360 * 4096,
                  {"tp": (1,), "pp": (16,), "ep": (64,), "cp": (1,), "zero": (1,)},
                  "DeepSeek-AI 2024 (arXiv:2412.19437), §1 and §3: 2.664M H800 GPU-hours for 14.8T tokens",
                  gpu_hours=2.664e6, tokens=14.8e12, precision="fp8"),
)  # fmt: skip


@dataclass(frozen=True)
class ValidationResult:
    run: ValidationRun
    predicted: float  # tokens/s/GPU or GPU-hours, as the run published
    published: float
    memory_gb: float
    fits: bool
    mfu: float  # 6ND, against the peak of the run's precision
    layout: str

    @property
    def error(self) -> float:
        return self.predicted / self.published - 1.0


def validate(run: ValidationRun) -> ValidationResult:
    """The performance and memory models on a published run: the fastest candidate within the run's
    layout (`layouts="any"`) that fits, or, when none fits, the fastest candidate (reported as not
    fitting)."""
    import numpy as np

    from tokensmith.planner.arch import ModelConfig

    gpu = get_gpu(run.gpu)
    cfg = ModelConfig(**run.model)
    scal = ModelScalars.from_config(cfg, flash_attention=run.flash_attention)
    axes = search.axis_values("any", cfg.experts, cfg.seq_len)
    axes.update(run.layout)
    grid = search.candidate_grid([run.gpus], **axes)
    tokens = run.tokens or 1e12
    res = search.evaluate(
        grid,
        scal,
        gpu,
        gpu.gpus_per_node,
        tokens,
        run.global_batch_tokens,
        search.Economics(price_per_gpu_hour=gpu.price_usd_hour, mtbf_gpu_hours=1e15),
        layouts="any",
        precision=run.precision,
    )
    ok = res["fits"] if res["fits"].any() else res["valid"]
    speed = res["global_batch_tokens"] / res["step_seconds"] / res["gpus"]
    best = int(np.argmax(np.where(ok, speed, -1.0)))
    row = res.row(best)
    predicted = float(row["gpu_hours"]) if run.gpu_hours else float(speed[best])
    layout = (
        f"TP{row['tp']} PP{row['pp']}" + (f"x{row['virtual']}" if row["virtual"] > 1 else "")
        + (f" CP{row['cp']}" if row["cp"] > 1 else "") + f" DP{row['dp']}"
        + (f" EP{row['ep']}" if row["ep"] > 1 else "") + f" Z{row['zero']} mb{row['micro_batch']}"
        + f" rc-{('none', 'full', 'selective')[row['recompute']]}"
    )  # fmt: skip
    return ValidationResult(
        run=run,
        predicted=predicted,
        published=float(run.gpu_hours or run.tokens_per_gpu_s or 0.0),
        memory_gb=float(row["memory_gb"]),
        fits=bool(row["fits"]),
        mfu=float(row["model_mfu"]),
        layout=layout,
    )


def validation_table() -> list[ValidationResult]:
    return [validate(run) for run in VALIDATION]
