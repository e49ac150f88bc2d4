"""Turn a plan into an `LLMTrainingJob` manifest (the operator's resource).

The manifest is built and validated through the operator's own models
(`tokensmith.operator.spec.LLMTrainingJobSpec` / `build_manifest`), so what `--emit-job` writes is what
the CRD accepts; the trainer section is a real `TrainerConfig`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from tokensmith.planner.planning import Plan

BUDGET_HEADROOM = 1.10  # the operator stops a job at its budget; leave room for the plan's uncertainty
ANNOTATION = "tokensmith.dev/plan-"
# The plan's predictions a job carries as annotations (`tokensmith.dev/plan-<key>`), named as in the
# plan's JSON: the local report and `tokensmith plan --from-run` compare them with what the run shows.
NUMERIC_PREDICTIONS = (
    "predicted-loss",
    "wall-clock-days",
    "cost-usd",
    "mfu",
    "gpus",
    "gpu-hours-total",
    "tokens-per-second",
    "goodput",
    "expected-interruptions",
    "mtbf-gpu-hours",
    "checkpoint-write-seconds",
    "checkpoint-interval-minutes",
)


def plan_annotations(plan: Plan) -> dict[str, str]:
    """The plan's predictions as job annotations (see `NUMERIC_PREDICTIONS`; law and GPU as text)."""
    c = plan.cluster
    values = {
        "predicted-loss": f"{plan.predicted_loss:.4f}",
        "wall-clock-days": f"{plan.wall_clock_days:.2f}",
        "cost-usd": f"{plan.cost_usd:.0f}",
        "mfu": f"{plan.mfu:.3f}",
        "gpus": str(c.gpus),
        "gpu-hours-total": f"{plan.gpu_hours_total:.6g}",
        "tokens-per-second": f"{plan.tokens_per_second:.6g}",
        "goodput": f"{plan.goodput:.4f}",
        "expected-interruptions": f"{plan.expected_interruptions:.4g}",
        "mtbf-gpu-hours": f"{plan.job_mtbf_hours * c.gpus:.6g}",
        "checkpoint-write-seconds": f"{plan.checkpoint_write_seconds:.4g}",
        "checkpoint-interval-minutes": f"{plan.checkpoint_interval_minutes:.4g}",
    }
    return {ANNOTATION + "law": plan.law, ANNOTATION + "gpu": c.gpu} | {
        ANNOTATION + k: v for k, v in values.items()
    }


def read_predictions(annotations: dict[str, str] | None) -> dict[str, Any]:
    """The predictions `plan_annotations` wrote, keyed as in the plan's JSON (`cost-usd` -> `cost_usd`);
    unparsable numbers are left out."""
    out: dict[str, Any] = {}
    for key, value in (annotations or {}).items():
        if not key.startswith(ANNOTATION):
            continue
        name = key.removeprefix(ANNOTATION)
        if name in ("law", "gpu"):
            out[name] = value
        elif name in NUMERIC_PREDICTIONS:
            try:
                out[name.replace("-", "_")] = float(value)
            except ValueError:
                continue
    return out


def job_name(plan: Plan) -> str:
    """A DNS-1123 name such as `llm-6b7-140b`."""

    def short(x: float) -> str:
        for suffix, scale in (("t", 1e12), ("b", 1e9), ("m", 1e6), ("k", 1e3)):
            if x >= scale:
                return (
                    f"{x / scale:.3g}".replace(".", suffix) if x / scale < 100 else f"{x / scale:.0f}{suffix}"
                )
        return f"{x:.0f}"

    name = f"llm-{short(plan.params)}-{short(plan.tokens)}"
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:63].strip("-")


def untrainable(plan: Plan) -> list[str]:
    """What in `plan` `tokensmith train` cannot run (`capability.problems`; empty: it runs it)."""
    from tokensmith.planner import capability

    c = plan.cluster
    layout = capability.Layout(
        tensor=c.tensor_parallel,
        pipeline=c.pipeline_parallel,
        data=c.data_parallel,
        zero_stage=c.zero_stage,
        recompute=c.recompute,  # type: ignore[arg-type]
        virtual_stages=c.virtual_stages,
        expert=c.expert_parallel,
        context=c.context_parallel,
        precision=plan.precision,
    )
    m = plan.model
    return capability.problems(
        layout,
        m["n_layers"],
        m["n_heads"],
        m.get("n_kv_heads"),
        gpus_per_node=c.gpus_per_node,
        world_size=c.gpus,
        experts=int(m.get("experts") or 0),
    )


def build_job(plan: Plan, name: str | None = None, checkpoint_claim: str | None = None) -> dict[str, Any]:
    """The manifest for `plan`: model, token budget, parallelism, cluster shape, checkpoint interval
    (Daly's optimum from the plan) and a GPU-hour / dollar budget with `BUDGET_HEADROOM`. ValueError
    (one line) when the plan's layout is one `tokensmith train` does not run (`untrainable`)."""
    from tokensmith.operator.spec import LLMTrainingJobSpec, build_manifest
    from tokensmith.trainer.config import TrainerConfig

    problems = untrainable(plan)
    if problems:
        raise ValueError(
            "tokensmith train cannot run this plan: "
            + "; ".join(problems)
            + " (re-plan without --layouts any for a job it runs)"
        )
    name = name or job_name(plan)
    c = plan.cluster
    tokens = math.ceil(plan.tokens)
    every_minutes = round(plan.checkpoint_interval_minutes, 1)
    trainer = TrainerConfig.model_validate(
        {
            "model": plan.model,
            "train": {
                "tokens": tokens,
                "micro_batch": c.micro_batch,
                "global_batch_tokens": c.global_batch_tokens,
            },
            "deepspeed": {"zero_stage": c.zero_stage},
            "parallelism": {"recompute": c.recompute},
            "checkpoint": {"every_minutes": every_minutes},
        }
    )
    budget: dict[str, Any] = {"maxGPUHours": round(plan.gpu_hours_total * BUDGET_HEADROOM, 1)}
    price = plan.assumptions.get("price_per_gpu_hour", {}).get("value")
    if price is not None and plan.assumptions.get("ownership", {}).get("value") == "cloud":
        budget["pricePerGPUHour"] = float(price)
        budget["maxCostUSD"] = round(plan.cost_usd * BUDGET_HEADROOM, 2)
    spec = LLMTrainingJobSpec.model_validate(
        {
            "model": plan.model,
            "data": {"tokens": tokens},
            "trainer": trainer.model_dump(mode="json", exclude={"model"}),
            "parallelism": {
                "tensor": c.tensor_parallel,
                "pipeline": c.pipeline_parallel,
                "zeroStage": c.zero_stage,
                "microBatch": c.micro_batch,
                "globalBatchTokens": c.global_batch_tokens,
            },
            "cluster": {"nodes": c.nodes, "gpusPerNode": c.gpus_per_node},
            "checkpoint": {
                "volume": {"persistentVolumeClaim": {"claimName": checkpoint_claim or f"{name}-checkpoints"}},
                # the operator steers the interval from the failures and saves it sees (cadence.py),
                # starting from this plan's Daly interval with its MTBF and write time as the prior
                "everyMinutes": "auto",
                "initialMinutes": every_minutes,
                "priorMTBFGPUHours": round(plan.job_mtbf_hours * c.nodes * c.gpus_per_node, 1),
                "priorSeconds": round(max(plan.checkpoint_write_seconds, 1.0), 1),
            },
            "budget": budget,
        }
    )
    return build_manifest(name, spec, annotations=plan_annotations(plan))
