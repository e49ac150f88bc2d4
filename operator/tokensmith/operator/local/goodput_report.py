"""The goodput part of the local report: where the job's GPU-hours went over wall-clock time (a stacked
timeline by cause, timeline.py) and the plan's predictions against what the run showed.

Predictions come from the plan the job was emitted from: `tokensmith plan --format json` (`--plan`), or
else the `tokensmith.dev/plan-*` annotations `tokensmith plan --emit-job` writes (planner/emit.py). The
plan's interruption count is for the whole planned run on its cluster; the report also scales it to
the GPU-hours this run used (interruptions are Poisson in GPU-hours at the plan's MTBF per GPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tokensmith.operator.goodput import total_gpu_hours
from tokensmith.operator.local import timeline
from tokensmith.operator.spec import LLMTrainingJobStatus

COLOURS = {
    timeline.PRODUCTIVE: "#2ca02c",
    "redone": "#d62728",
    "rollback": "#9467bd",
    "restart": "#ff7f0e",
    "checkpoint": "#1f77b4",
}


def predictions(plan: Mapping[str, Any] | None, annotations: Mapping[str, str] | None) -> dict[str, Any]:
    """The plan's predictions keyed as in its JSON (empty without a plan): `--plan` JSON first, else the
    job's annotations."""
    from tokensmith.planner.emit import read_predictions

    if plan is not None:
        cluster = plan.get("cluster") or {}
        gpus = cluster.get("gpus")
        mtbf = plan.get("job_mtbf_hours")
        out = {k: plan.get(k) for k in (
            "goodput", "expected_interruptions", "gpu_hours_total", "cost_usd", "wall_clock_days", "mfu",
            "checkpoint_write_seconds", "checkpoint_interval_minutes", "tokens_per_second",
        )}  # fmt: skip
        out.update(gpus=gpus, gpu=cluster.get("gpu"))
        out["mtbf_gpu_hours"] = float(mtbf) * float(gpus) if mtbf is not None and gpus else None
        return {k: v for k, v in out.items() if v is not None}
    return read_predictions(dict(annotations or {}))


def rows(status: LLMTrainingJobStatus, predicted: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Predicted vs observed, one dict per quantity: name, predicted, observed, note."""
    total = total_gpu_hours(status)
    obs = status.observed
    mtbf = predicted.get("mtbf_gpu_hours")
    scaled = total / float(mtbf) if mtbf else None
    lost_cost = sum(status.lost_cost_usd.values()) if status.lost_cost_usd else None
    plan_cost = predicted.get("cost_usd")
    plan_good = predicted.get("goodput")
    where = f" on {predicted.get('gpus'):g}x {predicted.get('gpu')}" if predicted.get("gpus") else ""
    return [
        {
            "name": "interruptions",
            "predicted": predicted.get("expected_interruptions"),
            "observed": obs.interruptions if obs else status.restarts,
            "note": f"plan: whole run{where}; at its MTBF, {scaled:.3g} expected in the {total:.4g} "
            f"GPU-hours run here"
            if scaled is not None
            else "",
        },
        {
            "name": "MTBF (GPU-hours per interruption)",
            "predicted": mtbf,
            "observed": obs.mtbf_gpu_hours if obs else None,
            "note": "observed: none before the first interruption",
        },
        {"name": "goodput", "predicted": plan_good, "observed": status.goodput, "note": "productive / total"},
        {
            "name": "checkpoint write (s)",
            "predicted": predicted.get("checkpoint_write_seconds"),
            "observed": obs.mean_checkpoint_seconds if obs else None,
            "note": "observed: seconds training was blocked per save",
        },
        {
            "name": "checkpoint interval (min)",
            "predicted": predicted.get("checkpoint_interval_minutes"),
            "observed": status.checkpoint_every_minutes,
            "note": "observed: the adaptive interval for the next attempt",
        },
        {
            "name": "GPU-hours (devices x time counted)",
            "predicted": predicted.get("gpu_hours_total"),
            "observed": total,
            "note": "on CPU a GPU-hour is a process-hour",
        },
        {
            "name": "cost (USD)",
            "predicted": plan_cost,
            "observed": status.cost_usd,
            "note": "observed: needs budget.pricePerGPUHour",
        },
        {
            "name": "cost lost to failures (USD)",
            "predicted": plan_cost * (1.0 - plan_good)
            if plan_cost is not None and plan_good is not None
            else None,
            "observed": lost_cost,
            "note": "plan: cost x (1 - goodput)",
        },
    ]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_html(table: Sequence[Mapping[str, Any]], source: str) -> str:
    cells = "".join(
        f"<tr><td>{r['name']}</td><td>{_fmt(r['predicted'])}</td><td>{_fmt(r['observed'])}</td>"
        f"<td class='note'>{r['note']}</td></tr>"
        for r in table
    )
    return (
        "<table class='pvo'><caption>Predicted (" + source + ") vs observed</caption>"
        "<tr><th></th><th>predicted</th><th>observed</th><th></th></tr>" + cells + "</table>"
    )


def _naive(moment: datetime) -> datetime:
    """UTC as a naive datetime: plotly.js reads no time-zone suffix on a date axis."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def figure(
    points: Sequence[timeline.Sample], events: Sequence[Mapping[str, Any]], goodput: float | None
) -> Any:
    """Left: cumulative GPU-hours by cause over wall-clock time, stacked (the top edge is the total).
    Right: goodput so far (productive / total) against the plan's prediction."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.62, 0.38],
        subplot_titles=(
            "GPU-hours by what they turned out to be, stacked (top edge: total)",
            "goodput so far: productive / total",
        ),
    )
    xs = [_naive(p.time) for p in points]
    present = [k for k in timeline.KEYS if any(abs(p.hours.get(k, 0.0)) > 0 for p in points)]
    present += sorted({k for p in points for k in p.hours} - set(timeline.KEYS))
    for key in present:
        fig.add_trace(
            go.Scatter(x=xs, y=[p.hours.get(key, 0.0) for p in points], name=key, stackgroup="ledger",
                       mode="lines", line={"width": 0.5, "color": COLOURS.get(key)},
                       hovertemplate="%{x}<br>" + key + ": %{y:.4g} GPU-hours<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
    so_far = [(x, p.hours.get(timeline.PRODUCTIVE, 0.0) / p.total) for x, p in zip(xs, points, strict=True)
              if p.total > 0]  # fmt: skip
    fig.add_trace(
        go.Scatter(x=[x for x, _ in so_far], y=[g for _, g in so_far], name="goodput (observed)",
                   mode="lines+markers", line={"color": COLOURS[timeline.PRODUCTIVE]}),
        row=1, col=2,
    )  # fmt: skip
    if goodput is not None and xs:
        fig.add_trace(
            go.Scatter(x=[xs[0], xs[-1]], y=[goodput, goodput], name="goodput (plan)", mode="lines",
                       line={"dash": "dash", "color": "black"}),
            row=1, col=2,
        )  # fmt: skip
    for ev in events:
        if ev.get("reason") not in ("Restarting", "RollingBack", "Suspended", "Succeeded", "Failed"):
            continue
        try:
            when = _naive(datetime.fromisoformat(str(ev.get("time")).replace("Z", "+00:00")))
        except ValueError:
            continue
        fig.add_vline(x=when, line={"color": "grey", "dash": "dot"}, row=1, col=1)
        fig.add_annotation(x=when, y=1, yref="y domain", text=str(ev["reason"]), showarrow=False,
                           textangle=-90, xanchor="left", font={"size": 9, "color": "grey"},
                           row=1, col=1)  # fmt: skip
    fig.update_xaxes(title_text="time (UTC)")
    fig.update_yaxes(title_text="GPU-hours (cumulative)", row=1, col=1)
    fig.update_yaxes(title_text="goodput", range=[0, 1.05], row=1, col=2)
    fig.update_layout(height=460, template="plotly_white", legend={"orientation": "h", "y": -0.2})
    return fig


def points_of(
    history_ledger: Sequence[Mapping[str, Any]], status: LLMTrainingJobStatus, end: datetime | None
) -> list[timeline.Sample]:
    """The timeline to plot: the runner's samples, from zero at the start to the final status."""
    samples = [s for s in (timeline.from_record(r) for r in history_ledger) if s is not None]
    last = max([s.time for s in samples] + ([end] if end is not None else []), default=None)
    final = timeline.sample(status, last) if last is not None else None
    return timeline.series(samples, final, status.start_time)


def section_html(
    status: LLMTrainingJobStatus,
    history_ledger: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    plan: Mapping[str, Any] | None,
    annotations: Mapping[str, str] | None,
    end: datetime | None,
) -> str:
    """The goodput section (heading, figure without plotly.js, the table)."""
    predicted = predictions(plan, annotations)
    points = points_of(history_ledger, status, end)
    source = "--plan JSON" if plan is not None else ("the job's plan annotations" if predicted else "no plan")
    head = (
        f"<h2>Goodput {_fmt(status.goodput)}: productive {_fmt(status.productive_gpu_hours)} of "
        f"{total_gpu_hours(status):.4g} GPU-hours; lost "
        + (", ".join(f"{k} {v:.3g}" for k, v in status.lost_gpu_hours.items() if v > 0) or "none")
        + "</h2>"
    )
    fig = figure(points, events, predicted.get("goodput")) if points else None
    body = fig.to_html(full_html=False, include_plotlyjs=False) if fig is not None else "<p>no ledger yet</p>"
    return head + body + table_html(rows(status, predicted), source)


STYLE = (
    "<style>body{font-family:sans-serif} table.pvo{border-collapse:collapse;margin:8px 0 24px 40px;"
    "font-size:13px} table.pvo td,table.pvo th{border-bottom:1px solid #ddd;padding:3px 10px;"
    "text-align:right}"
    " table.pvo td:first-child,td.note{text-align:left} td.note{color:#666;font-size:11px}"
    " caption{text-align:left;font-weight:bold;padding:4px 10px} h2{font-size:17px;margin:10px 40px}</style>"
)
