"""The trainer's configuration: one pydantic model covering model, data, optimisation, DeepSpeed
and checkpointing. The same model is embedded in the `LLMTrainingJob` spec (`spec.trainer`), so
it is kept self-describing: every field has a description, a default, and bounds that the CRD
schema carries to the API server.

This module imports no heavy library (it is loaded by the CLI, the planner and the operator).
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokensmith.core.errors import ConfigError
from tokensmith.core.units import parse_number
from tokensmith.planner import capability
from tokensmith.planner.arch import PRESETS, ModelConfig

Precision = Literal["auto", "bf16", "fp16", "fp32"]


def _count(value: Any) -> Any:
    """Accept the suffixed numbers people type in YAML and --set (7B, 250k, 1.5e9) for token counts."""
    if isinstance(value, str):
        number = parse_number(value)
        if not number.is_integer():
            raise ValueError(f"{value!r} is not a whole number of tokens")
        return int(number)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Section):
    """One training source of a mixture (`data.sources`)."""

    path: str = Field(..., description="Directory of token shards (`tokensmith curate` output's train/).")
    weight: float = Field(1.0, gt=0, description="Share of the samples (weights are normalised to sum 1).")
    name: str | None = Field(
        None, description="Name in metrics and status; default: the directory name (its parent for train/)."
    )
    epochs: float | None = Field(
        None,
        gt=0,
        description="Passes over this source the run may make; a run that needs more stops before it "
        "starts with a message (exit 78). Default: repeat as often as the weights ask.",
    )

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        path = Path(self.path.rstrip("/"))
        return path.parent.name if path.name in ("train", "valid") and path.parent.name else path.name


class DataConfig(_Section):
    train_path: str | None = Field(
        None,
        description="Directory (or fsspec URL) of training token shards written by `tokensmith curate`; "
        "the one-source shorthand of `sources`.",
    )
    sources: list[SourceConfig] = Field(
        default_factory=list,
        description="Weighted training sources [{path, weight, name, epochs}] mixed per sample "
        "(docs/trainer.md, Mixtures); instead of train_path.",
    )
    valid_path: str | None = Field(None, description="Directory of validation token shards.")
    tokenizer_path: str | None = Field(
        None, description="tokenizer.json; default: the one `tokensmith curate` wrote beside the shards."
    )
    skip_samples: list[list[int]] = Field(
        default_factory=list,
        description="Global sample-position ranges [start, end) the sampler never reads (e.g. data a "
        "diverged step read twice); deterministic, and recorded in every checkpoint.",
    )

    @field_validator("skip_samples")
    @classmethod
    def _ranges(cls, value: list[list[int]]) -> list[list[int]]:
        for pair in value:
            if len(pair) != 2 or not 0 <= pair[0] < pair[1]:
                raise ValueError(f"skip_samples: {pair} is not a range [start, end) with 0 <= start < end")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> DataConfig:
        if self.train_path and self.sources:
            raise ValueError("set data.train_path or data.sources, not both (train_path is one source)")
        labels = [s.label for s in self.sources]
        repeated = sorted({name for name in labels if labels.count(name) > 1})
        if repeated:
            raise ValueError(f"data.sources: names must be unique, {', '.join(repeated)} repeats; set name:")
        return self

    def training_sources(self) -> list[SourceConfig]:
        """`sources`, or `train_path` as one source named "train" (weight 1); empty when neither is set."""
        if self.sources:
            return list(self.sources)
        return [SourceConfig(path=self.train_path, name="train")] if self.train_path else []


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
    metrics_file: str | None = Field(
        None, description="JSON-lines metrics written by rank 0; default: <checkpoint.dir>/metrics.jsonl."
    )
    record_samples: bool = Field(
        False, description="Add the global sample indices of each step to the metrics (debugging, tests)."
    )

    _counts = field_validator("tokens", "global_batch_tokens", mode="before")(_count)


class DeepSpeedConfig(_Section):
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage (Rajbhandari et al. 2019).")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload the optimizer states to CPU.")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Merged last into the rendered DeepSpeed config (expert use)."
    )


class ParallelismConfig(_Section):
    """How the model is split over the processes: tensor x pipeline x data (the rest of the world size).
    What combines with what is `tokensmith.planner.capability` (shared with the planner and operator)."""

    tensor: int = Field(1, ge=1, description="Tensor-parallel degree (divides the heads and the KV heads).")
    pipeline: int = Field(1, ge=1, description="Pipeline-parallel degree (stages, at most the layers).")
    recompute: capability.Recompute = Field(
        "none",
        description="Activation recomputation: none, selective (attention's softmax/dropout, Korthikanti "
        "et al. 2022) or full (every block recomputed in the backward pass).",
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
    grace_seconds: float = Field(
        30.0,
        ge=0,
        description="Time between SIGTERM and SIGKILL (Kubernetes' terminationGracePeriodSeconds, default "
        "30); the env TOKENSMITH_TERMINATION_GRACE_SECONDS overrides it. A SIGTERM checkpoint is written "
        "only when the last save took less than half of what is left.",
    )
    resume_from: str = Field(
        "latest",
        description="Which checkpoint a (re)start resumes from: latest (the newest that verifies), "
        "latest_healthy (the newest healthy one) or a checkpoint directory name (step-00000100); the env "
        "TOKENSMITH_RESUME_FROM overrides it.",
    )
    async_save: bool = Field(
        True,
        description="Stage the state in host memory and write it in a background thread (training "
        "continues); the manifest is still written last, once every rank's files are durable.",
    )
    consolidate_every: int = Field(
        0,
        ge=0,
        description="Write consolidated weights (model.safetensors) at every Mth checkpoint of the run; 0: "
        "only at the final one. The SIGTERM save never does. Every other checkpoint holds only the sharded "
        "state, from which eval, export and the operator's evaluations rebuild the weights on read "
        "(torchtitan and OLMo-core likewise save sharded and convert on export).",
    )
    verify: Literal["checksum", "size"] = Field(
        "checksum",
        description="How resume checks a checkpoint before using it: sha256 of every file (each rank "
        "hashes its share) or sizes only.",
    )


class HealthConfig(_Section):
    """Run-health guardrails (tokensmith.trainer.health has the rules; docs/trainer.md, "Run health")."""

    enabled: bool = Field(
        True,
        description="false: no guardrails at all (only to measure their cost; a NaN then reaches the "
        "weights).",
    )
    policy: Literal["warn", "skip", "rollback"] = Field(
        "skip",
        description="What a loss spike does: warn (apply the step), skip (skip its update) or rollback "
        "(skip, and count it: more than max_bad_steps in bad_window steps stops the run with exit 65). "
        "Non-finite steps are always skipped and always counted.",
    )
    spike_window: int = Field(128, ge=2, description="Healthy steps whose losses define a spike.")
    spike_sigma: float = Field(
        6.0, gt=0, description="A spike: loss > mean + spike_sigma x std of the window."
    )
    spike_min_history: int = Field(
        64, ge=2, description="Spikes are only tested once this many healthy losses are in the window."
    )
    spike_min_std: float = Field(
        0.001,
        ge=0,
        description="Floor of the window's std, relative to |mean| (a flat history is not "
        "a licence to flag noise).",
    )
    max_bad_steps: int = Field(
        4, ge=0, description="More counted bad steps than this within bad_window steps: diverged (65)."
    )
    bad_window: int = Field(100, ge=1, description="Steps over which bad steps are counted.")
    verify_after_save: bool = Field(
        False,
        description="After each save rank 0 reloads the saved weights and compares the loss on one "
        "fixed batch with the in-memory model's; a mismatch marks the checkpoint unhealthy.",
    )
    inject_nan_at_step: int | None = Field(
        None,
        ge=1,
        description="Testing/drills: rank 0's loss is NaN at this step, once per checkpoint.dir "
        "(a transient fault: a replay does not repeat it).",
    )
    inject_spike_at_step: int | None = Field(
        None,
        ge=1,
        description="Testing/drills: rank 0's loss is scaled x100 at this step, once per checkpoint.dir.",
    )
    inject_bad_samples: list[int] | None = Field(
        None,
        description="Testing/drills: global sample positions [start, end) whose reading makes the loss NaN, "
        "every time they are read (the fault follows the data).",
    )

    @field_validator("inject_bad_samples")
    @classmethod
    def _range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 2 or not 0 <= value[0] < value[1]):
            raise ValueError(f"inject_bad_samples: {value} is not a range [start, end) with 0 <= start < end")
        return value


class TrainerConfig(_Section):
    """Everything one training run needs. YAML/JSON file, preset, then `--set` overrides."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="tiny"))
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    parallelism: ParallelismConfig = Field(default_factory=ParallelismConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        per_step = self.train.micro_batch * self.model.seq_len
        if self.train.global_batch_tokens % per_step:
            raise ValueError(
                f"train.global_batch_tokens ({self.train.global_batch_tokens}) must be a multiple of "
                f"train.micro_batch x model.seq_len "
                f"({self.train.micro_batch} x {self.model.seq_len} = {per_step})"
            )
        found = capability.problems(
            self.layout(),
            self.model.n_layers,
            self.model.n_heads,
            self.model.n_kv_heads,
            experts=self.model.experts,  # the trainer builds dense models only
        )
        if found:
            raise ValueError("parallelism: " + "; ".join(found))
        return self

    def layout(self, world_size: int | None = None) -> capability.Layout:
        """The run's parallel layout; the data-parallel degree is known once the world size is."""
        par = self.parallelism
        return capability.Layout.for_world(
            world_size if world_size is not None else par.tensor * par.pipeline,
            tensor=par.tensor,
            pipeline=par.pipeline,
            zero_stage=self.deepspeed.zero_stage,
            recompute=par.recompute,
        )

    def data_parallel(self, world_size: int) -> int:
        """Data-parallel degree of `world_size` processes; ConfigError when TP x PP does not divide it or
        the layout breaks a rule that needs the world size."""
        layout = self.layout(world_size)
        found = capability.problems(
            layout, self.model.n_layers, self.model.n_heads, self.model.n_kv_heads, world_size=world_size
        )
        if found:
            raise ConfigError("parallelism: " + "; ".join(found))
        return layout.data

    @classmethod
    def load(cls, path: str | Path) -> TrainerConfig:
        import yaml

        return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})

    @property
    def sequences_per_step(self) -> int:
        return self.train.global_batch_tokens // self.model.seq_len

    def total_steps(self) -> int:
        """Optimizer steps of the run: `train.max_steps`, else the token budget over the global batch
        (rounded up, so the budget is reached)."""
        if self.train.max_steps is not None:
            return self.train.max_steps
        if self.train.tokens is None:
            raise ConfigError("set train.tokens (a token budget, e.g. 2.5B) or train.max_steps")
        return math.ceil(self.train.tokens / self.train.global_batch_tokens)

    def grad_accumulation(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each data-parallel replica (the pipeline's micro-batches);
        ConfigError when the global batch does not split evenly over micro_batch x data-parallel degree."""
        dp = self.data_parallel(world_size)
        per_pass = self.train.micro_batch * dp
        if self.sequences_per_step % per_pass:
            raise ConfigError(
                f"train.global_batch_tokens ({self.train.global_batch_tokens} = {self.sequences_per_step} "
                f"sequences of {self.model.seq_len}) must be a multiple of train.micro_batch x data-parallel "
                f"degree ({self.train.micro_batch} x {dp} = {per_pass} sequences; data-parallel degree = "
                f"world size {world_size} / (tensor x pipeline)); change train.global_batch_tokens, "
                "train.micro_batch or the number of processes"
            )
        return self.sequences_per_step // per_pass


# Training presets: a model preset (tokensmith.planner.arch.PRESETS) plus the optimisation settings its
# source used. Learning rates and batch sizes: GPT-3 (Brown et al. 2020, Table 2.1) for the GPT-2 shapes
# and the 1B, Llama 2 (Touvron et al. 2023, §2.2: AdamW 0.9/0.95, cosine to 10%, 2000 warm-up steps,
# 4M-token batches, 3e-4 for 7B/13B, 1.5e-4 for 70B). Token budgets: 20 tokens per parameter, the
# compute-optimal ratio of Hoffmann et al. 2022 (Chinchilla).
TRAINER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": {"preset": "tiny"},
        "train": {
            "tokens": 2_000_000,
            "micro_batch": 8,
            "global_batch_tokens": 8192,
            "lr": 1e-3,
            "warmup_steps": 20,
            "log_every_steps": 10,
        },
        "deepspeed": {"zero_stage": 2},
    },
    "gpt2-124m": {
        "model": {"preset": "gpt2-124m"},
        "train": {
            "tokens": 2_500_000_000,
            "micro_batch": 16,
            "global_batch_tokens": 524_288,
            "lr": 6e-4,
            "warmup_steps": 715,
        },
        "deepspeed": {"zero_stage": 1},
    },
    "gpt2-350m": {
        "model": {"preset": "gpt2-350m"},
        "train": {
            "tokens": 7_000_000_000,
            "micro_batch": 8,
            "global_batch_tokens": 524_288,
            "lr": 3e-4,
            "warmup_steps": 715,
        },
        "deepspeed": {"zero_stage": 1},
    },
    "llama-1b": {
        "model": {"preset": "llama-1b"},
        "train": {
            "tokens": 25_000_000_000,
            "micro_batch": 4,
            "global_batch_tokens": 1_048_576,
            "lr": 2e-4,
            "warmup_steps": 2000,
        },
        "deepspeed": {"zero_stage": 2},
    },
    "llama-7b": {
        "model": {"preset": "llama-7b"},
        "train": {
            "tokens": 140_000_000_000,
            "micro_batch": 1,
            "global_batch_tokens": 4_194_304,
            "lr": 3e-4,
            "warmup_steps": 2000,
        },
        "deepspeed": {"zero_stage": 3},
        "parallelism": {"recompute": "full"},
    },
    "llama-13b": {
        "model": {"preset": "llama-13b"},
        "train": {
            "tokens": 260_000_000_000,
            "micro_batch": 1,
            "global_batch_tokens": 4_194_304,
            "lr": 3e-4,
            "warmup_steps": 2000,
        },
        "deepspeed": {"zero_stage": 3},
        "parallelism": {"recompute": "full"},
    },
    "llama-70b": {
        "model": {"preset": "llama-70b"},
        "train": {
            "tokens": 1_400_000_000_000,
            "micro_batch": 1,
            "global_batch_tokens": 4_194_304,
            "lr": 1.5e-4,
            "warmup_steps": 2000,
        },
        "deepspeed": {"zero_stage": 3},
        "parallelism": {"recompute": "full"},
    },
}
assert set(TRAINER_PRESETS) <= set(PRESETS), "every training preset names a model preset"


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, recursively for nested mappings (a value in `top` wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str) -> Any:
    """A --set value: YAML scalar (numbers, true/false, null, lists), and suffixed numbers (7B, 250k)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            number = parse_number(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def known_keys() -> list[str]:
    """Every dotted key `--set` accepts (deepspeed.extra.* also takes free-form keys)."""
    return _known_keys(TrainerConfig)


def apply_set(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one `dotted.key=value` to a nested dict; ConfigError for a malformed or unknown key."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected dotted.key=value, e.g. train.lr=3e-4")
    keys = known_keys()
    if key not in keys and not key.startswith("deepspeed.extra."):
        close = difflib.get_close_matches(key, keys, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `--print-config` shows every key"
        raise ConfigError(f"--set: unknown key {key!r}{hint}")
    out = copy.deepcopy(data)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = parse_value(raw)
    return out


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem: `model.d_model: ...`, without pydantic's URLs and input dumps."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"] if p != "__root__")
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def resolve_config(
    path: str | Path | None = None, preset: str | None = None, sets: Sequence[str] = ()
) -> TrainerConfig:
    """The run's configuration: the training preset, then the file, then each `--set`, validated once.

    Every problem is a `ConfigError` (exit 78) whose message says what to change."""
    import yaml

    data: dict[str, Any] = {}
    if preset is not None:
        name = preset.lower()
        if name not in TRAINER_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known presets: {', '.join(TRAINER_PRESETS)}")
        data = copy.deepcopy(TRAINER_PRESETS[name])
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{file} is not valid YAML/JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{file} must hold a mapping (model:, data:, train:, ...), not {type(loaded).__name__}"
            )
        # A file that names its own model preset starts its model section from it, not from --preset's.
        if isinstance(loaded.get("model"), dict) and loaded["model"].get("preset") and "model" in data:
            data["model"] = {}
        data = deep_merge(data, loaded)
    for assignment in sets:
        if assignment.strip().startswith("model.preset="):
            data["model"] = {}  # a new model preset replaces the model section it came with
        data = apply_set(data, assignment)
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid trainer config: {describe_validation_error(err)}") from err
