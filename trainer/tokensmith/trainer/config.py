"""The trainer's configuration: one pydantic model covering model, data, optimisation, DeepSpeed
and checkpointing. The same model is embedded in the `LLMTrainingJob` spec (`spec.trainer`), so
it is kept self-describing: every field has a description, a default, and bounds that the CRD
schema carries to the API server.

This module imports no heavy library (it is loaded by the CLI, the planner and the operator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokensmith.planner.arch import ModelConfig

Precision = Literal["auto", "bf16", "fp16", "fp32"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    train_path: str | None = Field(
        None, description="Directory (or fsspec URL) of training token shards written by `tokensmith curate`."
    )
    valid_path: str | None = Field(None, description="Directory of validation token shards.")
    tokenizer_path: str | None = Field(
        None, description="tokenizer.json; default: the one `tokensmith curate` wrote beside the shards."
    )


class TrainConfig(_Section):
    tokens: int | None = Field(
        None,
        ge=1,
        description="Token budget; training stops when it is reached. One of tokens/max_steps is needed.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps; overrides `tokens` when both are set."
    )
    seed: int = Field(1234, ge=0)
    micro_batch: int = Field(8, ge=1, description="Sequences per process per forward/backward pass.")
    global_batch_tokens: int = Field(
        8192,
        ge=1,
        description="Tokens per optimizer step over all processes; must be a multiple of "
        "micro_batch x seq_len x world size (gradient accumulation makes up the rest).",
    )
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay ends at lr x min_lr_ratio.")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only).")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip; 0 disables it.")
    precision: Precision = Field("auto", description="auto: bf16 on GPUs that support it, else fp32.")
    eval_every_steps: int = Field(0, ge=0, description="Validation loss every N steps; 0 disables it.")
    eval_batches: int = Field(8, ge=1)
    log_every_steps: int = Field(10, ge=1)


class DeepSpeedConfig(_Section):
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage (Rajbhandari et al. 2019).")
    activation_checkpointing: bool = Field(False, description="Recompute activations in the backward pass.")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload the optimizer states to CPU.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Merged last into the rendered DeepSpeed config (expert use)."
    )


class CheckpointConfig(_Section):
    dir: str = Field("checkpoints", description="Checkpoint directory (on a shared volume in a cluster).")
    every_steps: int = Field(
        0, ge=0, description="Checkpoint every N steps; 0 disables step-based checkpoints."
    )
    every_minutes: float = Field(
        0, ge=0, description="Checkpoint every N minutes; 0 disables time-based ones."
    )
    keep: int = Field(3, ge=1, description="Complete checkpoints to keep (the newest K).")
    on_sigterm: bool = Field(True, description="Write a checkpoint on SIGTERM when the grace period allows.")


class TrainerConfig(_Section):
    """Everything one training run needs. YAML/JSON file, preset, then `--set` overrides."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="tiny"))
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        per_step = self.train.micro_batch * self.model.seq_len
        if self.train.global_batch_tokens % per_step:
            raise ValueError(
                f"train.global_batch_tokens ({self.train.global_batch_tokens}) must be a multiple of "
                f"train.micro_batch x model.seq_len "
                f"({self.train.micro_batch} x {self.model.seq_len} = {per_step})"
            )
        return self

    @classmethod
    def load(cls, path: str | Path) -> TrainerConfig:
        import yaml

        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
