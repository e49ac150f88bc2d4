"""Render the DeepSpeed configuration from ours (a pure function; the loop passes it to
`deepspeed.initialize`). Keys: https://www.deepspeed.ai/docs/config-json/."""

from __future__ import annotations

from typing import Any, Literal

from tokensmith.trainer.config import TrainerConfig, deep_merge

Dtype = Literal["bf16", "fp16", "fp32"]


def choose_precision(requested: str, cuda: bool, bf16_supported: bool) -> Dtype:
    """`auto`: bf16 on GPUs that support it (Ampere and newer), else fp32. fp16 and bf16 need a GPU."""
    if requested == "auto":
        return "bf16" if cuda and bf16_supported else "fp32"
    if requested in ("bf16", "fp16") and not cuda:
        from tokensmith.core.errors import ConfigError

        raise ConfigError(
            f"train.precision={requested} needs a GPU; on CPU use fp32 (or auto, which picks it)"
        )
    return requested  # type: ignore[return-value]


def render(cfg: TrainerConfig, world_size: int, precision: Dtype) -> dict[str, Any]:
    """DeepSpeed's config dict for this run (`deepspeed.extra` merged last, for experts)."""
    accumulation = cfg.grad_accumulation(world_size)
    zero: dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.zero_stage == 3:
        # consolidated checkpoints (checkpoint.consolidate_every, the final one) gather the weights
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    out: dict[str, Any] = {
        # per data-parallel replica: tensor and pipeline ranks of one replica share its batch
        "train_batch_size": cfg.train.micro_batch * cfg.data_parallel(world_size) * accumulation,
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": cfg.train.grad_clip,
        "zero_optimization": zero,
        # Our AdamW (torch's) under ZeRO: DeepSpeed only vouches for its own optimizers by default.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": precision == "bf16"},
        # Dynamic loss scaling (Micikevicius et al. 2018): loss_scale 0 means dynamic.
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 2**31 - 1,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    return deep_merge(out, cfg.deepspeed.extra)
