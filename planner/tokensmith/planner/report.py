"""The human-readable plan: the chosen plan, its cluster, costs and failures, then the alternatives
(half and double the model at the same compute) and the assumptions behind the numbers."""

from __future__ import annotations

from typing import Any

from tokensmith.core.output import table
from tokensmith.core.units import format_si
from tokensmith.planner.planning import Plan


def _usd(x: float) -> str:
    return f"${x:,.0f}"


def render(plan: Plan) -> str:
    c, m = plan.cluster, plan.model
    lines: list[str] = []
    for note in plan.notes:
        lines.append(f"note: {note}")
    tb = plan.token_budget
    if tb:
        optimum, opt_n = format_si(tb["optimal_tokens_for_params"]), format_si(tb["compute_optimal_params"])
        lines.append(
            f"Budget-limited: {format_si(tb['tokens'])} tokens ({tb['tokens_vs_optimal']:.2f} x the law's "
            f"{optimum} for this size); the law's optimum at this compute is {opt_n} parameters on "
            f"{format_si(tb['compute_optimal_tokens'])} tokens, loss {tb['compute_optimal_loss']:.3f} "
            f"(+{tb['loss_penalty']:.3f} here)"
        )
    lines.append(
        f"Plan ({plan.law}): {format_si(plan.params)} parameters on {format_si(plan.tokens)} tokens "
        f"({plan.tokens_per_param:.1f} tokens/param), {plan.flops:.3g} FLOPs, "
        f"predicted loss {plan.predicted_loss:.3f}"
    )
    rows: list[tuple[str, Any]] = [
        (
            "model",
            f"{m['n_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads ({m['n_kv_heads']} KV), "
            f"FFN {m['ffn_hidden']}, vocab {m['vocab_size']}, seq {m['seq_len']}"
            + (
                f"; MoE {m['experts']} experts ({m['experts_per_token']} per token"
                + (f", {m['shared_experts']} shared" if m.get("shared_experts") else "")
                + f") of FFN {m['expert_ffn_hidden']}"
                + (f" after {m['dense_layers']} dense blocks" if m.get("dense_layers") else "")
                if m.get("experts")
                else ""
            ),
        ),
        (
            "parameters",
            f"{plan.params:,} ({plan.non_embedding_params:,} non-embedding"
            + (f", {plan.active_params:,} active" if plan.active_params != plan.params else "")
            + ")",
        ),
        ("cluster", f"{c.gpus} x {c.gpu} ({c.nodes} nodes x {c.gpus_per_node})"),
        (
            "parallelism",
            f"TP {c.tensor_parallel} x PP {c.pipeline_parallel}"
            + (f" (interleaved x{c.virtual_stages})" if c.virtual_stages > 1 else "")
            + (f" x CP {c.context_parallel}" if c.context_parallel > 1 else "")
            + f" x DP {c.data_parallel}"
            + (f" (EP {c.expert_parallel})" if c.expert_parallel > 1 else "")
            + f", ZeRO-{c.zero_stage}, "
            f"micro-batch {c.micro_batch} x {c.gradient_accumulation} accumulation, "
            f"recompute {c.recompute}, {plan.precision}",
        ),
        (
            "global batch",
            f"{c.global_batch_tokens:,} tokens, {plan.steps:,} steps of {plan.step_seconds:.2f} s",
        ),
        (
            "MFU",
            f"{plan.mfu:.3f} (6ND against the {plan.precision.upper()} peak"
            + (f"; {plan.mfu_bf16:.3f} against BF16" if plan.precision != "bf16" else "")
            + f"; {plan.mfu_palm:.3f} with attention, HFU {plan.hfu:.3f}), {plan.mfu_source}",
        ),
        ("throughput", f"{plan.tokens_per_second:,.0f} tokens/s ({plan.tokens_per_gpu_second:,.0f} per GPU)"),
        ("memory per GPU", f"{plan.memory_per_gpu_gb:.1f} GB"),
        ("GPU-hours", f"{plan.gpu_hours:,.0f} compute, {plan.gpu_hours_total:,.0f} with failures"),
        ("wall clock", f"{plan.wall_clock_days:.1f} days ({plan.compute_days:.1f} without failures)"),
        (
            "cost",
            f"{_usd(plan.cost_usd)} ("
            + ", ".join(
                f"{k.removesuffix('_usd').replace('_', ' ')} {_usd(v)}"
                for k, v in plan.cost_breakdown.items()
            )
            + ")",
        ),
        (
            "energy",
            f"{plan.energy_mwh:,.1f} MWh ({plan.gpu_power_w:.0f} W per GPU), "
            f"electricity {_usd(plan.energy_cost_usd)}",
        ),
        ("carbon", f"{plan.co2_tonnes:,.1f} t CO2e"),
        (
            "failures",
            f"{plan.expected_interruptions:.1f} expected interruptions "
            f"(job MTBF {plan.job_mtbf_hours:.1f} h), "
            f"goodput {plan.goodput:.3f}",
        ),
        (
            "checkpoints",
            f"every {plan.checkpoint_interval_minutes:.0f} min (Daly), "
            f"{plan.checkpoint_write_seconds:.0f} s each",
        ),
    ]
    lines.append(table(rows))
    alt = [a for a in plan.alternatives if "error" not in a]
    if alt:
        lines.append("")
        lines.append("Same compute, other model sizes:")
        lines.append(
            table(
                [
                    (
                        a["variant"],
                        format_si(a["params"]),
                        format_si(a["tokens"]),
                        round(a["predicted_loss"], 4),
                        a["gpus"],
                        round(a["mfu"], 3),
                        round(a["wall_clock_days"], 1),
                        _usd(a["cost_usd"]),
                        round(a["energy_mwh"], 1),
                    )
                    for a in alt
                ],
                ["variant", "params", "tokens", "loss", "GPUs", "MFU", "days", "cost", "MWh"],
            )
        )
    front = plan.pareto_front
    if len(front) > 1:
        step = max(1, (len(front) - 1) // 6)
        shown = front[::step] if front[::step][-1] is front[-1] else [*front[::step], front[-1]]
        lines.append("")
        lines.append("Cluster shapes on the time/cost Pareto front (fastest first):")
        lines.append(
            table(
                [
                    (
                        r["gpus"],
                        f"TP{r['tensor_parallel']} PP{r['pipeline_parallel']}"
                        + (f"x{r['virtual_stages']}" if r["virtual_stages"] > 1 else "")
                        + f" DP{r['data_parallel']} Z{r['zero_stage']} mb{r['micro_batch']}"
                        + (f" EP{r['expert_parallel']}" if r.get("expert_parallel", 1) > 1 else "")
                        + (f" CP{r['context_parallel']}" if r.get("context_parallel", 1) > 1 else "")
                        + ("" if r["recompute"] == "none" else f" rc-{r['recompute']}"),
                        round(r["mfu"], 3),
                        round(r["wall_clock_hours"] / 24.0, 1),
                        _usd(r["cost_usd"]),
                    )
                    for r in shown
                ],
                ["GPUs", "shape", "MFU", "days", "cost"],
            )
        )
    lines.append("")
    lines.append("Assumptions:")
    lines.append(table([(k, str(v["value"]), v["source"]) for k, v in plan.assumptions.items()]))
    return "\n".join(lines)
