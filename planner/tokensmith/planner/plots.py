"""One self-contained HTML page (plotly, `include_plotlyjs=True`) for a plan: the IsoFLOP curve with
the optimum and the chosen model marked, the time/cost Pareto front of cluster shapes, and the cost
and energy breakdown."""

from __future__ import annotations

from tokensmith.planner import scaling
from tokensmith.planner.planning import Plan


def isoflop_points(plan: Plan, n: int = 80) -> tuple[list[float], list[float]]:
    """(N, loss) along C = 6ND at the plan's compute, N from a tenth to ten times the law's optimum."""
    import numpy as np

    law = scaling.get_law(plan.law, plan.tokens_per_param if plan.law == "tokens-per-param" else 20.0)
    compute = plan.law_flops
    opt = law.optimal(compute).params
    sizes = np.geomspace(opt / 10.0, opt * 10.0, n)
    return [float(x) for x in sizes], [law.loss(float(x), compute / (6.0 * float(x))) for x in sizes]


def render_html(plan: Plan) -> str:
    import plotly.graph_objects as go

    law = scaling.get_law(plan.law, plan.tokens_per_param if plan.law == "tokens-per-param" else 20.0)
    sizes, losses = isoflop_points(plan)
    opt = law.optimal(plan.law_flops)
    n_law = plan.law_flops / (6.0 * plan.tokens)
    iso = go.Figure()
    iso.add_scatter(x=sizes, y=losses, mode="lines", name=f"{plan.law} at {plan.law_flops:.3g} FLOPs")
    iso.add_scatter(
        x=[opt.params],
        y=[opt.loss],
        mode="markers",
        marker={"size": 12, "symbol": "star"},
        name="law's optimum",
    )
    iso.add_scatter(
        x=[n_law], y=[plan.predicted_loss], mode="markers", marker={"size": 10}, name="planned model"
    )
    iso.update_layout(
        title="IsoFLOP: predicted loss against model size",
        xaxis_type="log",
        xaxis_title="parameters (law's convention)",
        yaxis_title="predicted loss (nats/token)",
    )

    front = plan.pareto_front
    par = go.Figure()
    par.add_scatter(
        x=[r["wall_clock_hours"] / 24.0 for r in front],
        y=[r["cost_usd"] for r in front],
        mode="lines+markers",
        text=[
            f"{r['gpus']} GPUs, TP{r['tensor_parallel']} PP{r['pipeline_parallel']} DP{r['data_parallel']} "
            f"ZeRO-{r['zero_stage']} mb{r['micro_batch']}"
            for r in front
        ],
        name="Pareto front",
    )
    par.add_scatter(
        x=[plan.wall_clock_days], y=[plan.cost_usd], mode="markers", marker={"size": 12}, name="chosen"
    )
    par.update_layout(
        title="Cluster shapes: cost against wall-clock time (Pareto front)",
        xaxis_type="log",
        yaxis_type="log",
        xaxis_title="wall-clock days (with failures)",
        yaxis_title="cost (USD)",
    )

    bars = go.Figure()
    bars.add_bar(x=list(plan.cost_breakdown), y=list(plan.cost_breakdown.values()), name="cost (USD)")
    bars.add_bar(
        x=["electricity_usd"], y=[plan.energy_cost_usd], name="electricity (USD, in the price when rented)"
    )
    bars.update_layout(
        title=f"Cost and energy: {plan.energy_mwh:,.1f} MWh, {plan.co2_tonnes:,.1f} t CO2e",
        yaxis_title="USD",
        barmode="group",
    )

    parts = [
        iso.to_html(full_html=False, include_plotlyjs=True),
        par.to_html(full_html=False, include_plotlyjs=False),
        bars.to_html(full_html=False, include_plotlyjs=False),
    ]
    title = f"Tokensmith plan: {plan.params:,} parameters, {plan.tokens:.3g} tokens"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{''.join(parts)}</body></html>"
    )
