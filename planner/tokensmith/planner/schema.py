"""The planner's typed inputs and outputs: `Request` (what the user gave), `Plan` (the result, whose
`to_dict()` is the `--format json` object) and `PlanError` (bad input, one line)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tokensmith.planner.arch import ModelConfig


class PlanError(ValueError):
    """Inputs that cannot give a plan; the message names the problem and what to change."""


class Request(BaseModel):
    """Inputs of a plan; None means "derive it" (or "use the default", recorded in assumptions)."""

    model_config = ConfigDict(extra="forbid")

    params: float | None = None
    tokens: float | None = None
    compute: float | None = None
    budget_usd: float | None = None
    gpu_hours: float | None = None
    deadline_days: float | None = None
    gpu: str | None = None
    gpus: int | None = None
    gpus_per_node: int | None = None
    mfu: float | None = None
    law: str | None = None
    tokens_per_param: float | None = None
    inference_tokens: float | None = None
    price_per_gpu_hour: float | None = None
    owned: bool = False
    purchase_price: float | None = None
    lifetime_years: float | None = None
    pue: float | None = None
    carbon_intensity: float | None = None
    energy_price: float | None = None
    gpu_power_w: float | None = None
    node_overhead: float | None = None
    mtbf_gpu_hours: float | None = None
    restart_minutes: float | None = None
    checkpoint_minutes: float | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    global_batch_tokens: float | None = None
    max_tensor_parallel: int | None = None
    max_pipeline_parallel: int | None = None
    model: str | None = None  # an arch.PRESETS name: the architecture, instead of --params
    experts: int | None = None
    experts_per_token: int | None = None
    shared_experts: int | None = None
    precision: str | None = None
    layouts: str | None = None


class ClusterPlan(BaseModel):
    gpu: str
    gpus: int
    nodes: int
    gpus_per_node: int
    tensor_parallel: int
    pipeline_parallel: int
    data_parallel: int
    zero_stage: int
    micro_batch: int
    gradient_accumulation: int
    global_batch_tokens: int
    recompute: str = Field(description="Activation recomputation: none, selective or full")
    virtual_stages: int = Field(1, description="Interleaved pipeline chunks per stage (1: plain 1F1B)")
    expert_parallel: int = Field(1, description="Expert-parallel degree (MoE; inside DP x CP)")
    context_parallel: int = Field(1, description="Context-parallel degree (sequence split over GPUs)")


class Plan(BaseModel):
    """A complete plan; `to_dict()` is the `--format json` object (SI units, plain numbers)."""

    law: str
    law_source: str
    params: int
    active_params: int = Field(description="Parameters one token uses (= params for a dense model)")
    non_embedding_params: int
    embedding_params: int
    precision: str = Field(description="bf16, or fp8 GEMMs with bf16 weights and fp32 optimiser states")
    layouts: str = Field(description="trainable (what tokensmith train runs) or any (any stack)")
    tokens: float
    tokens_per_param: float
    flops: float = Field(
        description="6 x active params x tokens, the convention of scaling laws and published budgets"
    )
    law_flops: float = Field(description="6 N D with N in the law's convention (non-embedding for kaplan)")
    model_flops: float = Field(description="arch.training_flops: PaLM convention, attention included")
    predicted_loss: float
    model: dict[str, Any]
    cluster: ClusterPlan
    mfu: float = Field(description="6ND MFU against the dense peak of the precision used")
    mfu_bf16: float = Field(description="the same throughput against the dense BF16 peak")
    mfu_source: str
    mfu_palm: float
    hfu: float = Field(
        description="hardware FLOPs utilisation: recomputation counted (Korthikanti et al. 2022)"
    )
    tokens_per_second: float
    tokens_per_gpu_second: float
    memory_per_gpu_gb: float
    step_seconds: float
    steps: int
    gpu_hours: float
    gpu_hours_total: float
    compute_days: float
    wall_clock_days: float
    cost_usd: float
    cost_breakdown: dict[str, float]
    energy_mwh: float
    energy_cost_usd: float
    gpu_power_w: float
    co2_tonnes: float
    checkpoint_interval_minutes: float
    checkpoint_write_seconds: float
    job_mtbf_hours: float
    expected_interruptions: float
    goodput: float
    token_budget: dict[str, Any] | None = Field(
        None,
        description="When the budget set the tokens: what it buys, the law's optimum at that compute "
        "and the predicted-loss penalty",
    )
    alternatives: list[dict[str, Any]]
    pareto_front: list[dict[str, Any]]
    assumptions: dict[str, dict[str, Any]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def model_config_obj(self) -> ModelConfig:
        return ModelConfig(**self.model)

    def to_frame(self) -> Any:
        """One row (flattened keys, e.g. `cluster.gpus`) as a pandas DataFrame."""
        import pandas as pd

        from tokensmith.core.output import flatten

        row = self.to_dict()
        for key in ("alternatives", "pareto_front", "assumptions", "notes"):
            row.pop(key)
        return pd.DataFrame([flatten(row)])
