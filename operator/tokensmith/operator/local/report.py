"""The run's summary (plan vs what happened, evaluation table) and its one-page HTML report.

Inputs are the runner's own records: `history.jsonl` (every trainer report line, tagged with its
attempt, and every Event with its time) and the final status. A plan (`tokensmith plan --format
json --output plan.json`) adds its predictions: tokens, time, and the loss of its scaling law
L(N, D) evaluated along the measured tokens D for the plan's N. Chinchilla-type laws are fitted on
10^7-10^10-parameter models with a 32k-token vocabulary on web text (Hoffmann et al. 2022), so at
demo scale the predicted *level* is off (different tokenizer and data); the shape is what compares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokensmith.operator.spec import LLMTrainingJobStatus


@dataclass(frozen=True)
class History:
    progress: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)  # goodput samples (timeline.py)


def read_history(path: Path) -> History:
    hist = History()
    if not path.exists():
        return hist
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        kind = rec.get("type")
        if kind == "progress":
            hist.progress.append(rec)
        elif kind == "checkpoint":
            hist.checkpoints.append(rec)
        elif kind == "event":
            hist.events.append(rec)
        elif kind == "attempt":
            hist.attempts.append(rec)
        elif kind == "ledger":
            hist.ledger.append(rec)
    return hist


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def read_valid_losses(metrics: Path) -> list[tuple[int, float]]:
    """(step, valid_loss) from the trainer's metrics.jsonl (what survives resumes: the trainer drops
    records past the step it resumed from)."""
    out: list[tuple[int, float]] = []
    if not metrics.exists():
        return out
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("type") == "eval" and isinstance(rec.get("valid_loss"), int | float):
            out.append((int(rec["step"]), float(rec["valid_loss"])))
    return out


def _naive(value: Any) -> datetime | None:
    """UTC as a naive datetime: plotly.js reads no time-zone suffix on a date axis."""
    moment = _when(value)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment is not None else None


def predicted_losses(plan: Mapping[str, Any], tokens: Sequence[float]) -> list[float] | None:
    """The plan's law L(N, D) for its N along the given token counts (None without a usable plan)."""
    from tokensmith.planner.scaling import get_law

    try:
        law = get_law(str(plan["law"]))
        n = float(plan["non_embedding_params"] if getattr(law, "non_embedding", False) else plan["params"])
    except (KeyError, ValueError, TypeError):
        return None
    return [law.loss(n, max(float(d), 1.0)) for d in tokens]


def resume_steps(history: History) -> list[tuple[int, int]]:
    """(attempt, checkpoint step it resumed from) for every attempt that did not start from scratch."""
    return sorted(
        (int(r["attempt"]), int(r["resume_step"]))
        for r in history.attempts
        if int(r.get("resume_step", 0)) > 0
    )


def summary(
    status: LLMTrainingJobStatus,
    history: History,
    plan: Mapping[str, Any] | None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Plan vs actual, restarts, goodput (predicted vs observed: goodput_report.py) and evaluations as
    plain data (for --format json and the table)."""
    from tokensmith.operator.local import goodput_report

    prog = status.progress
    wall = None
    if status.start_time is not None:
        end = status.completion_time or _when(history.events[-1]["time"] if history.events else None)
        if end is not None:
            wall = (end - status.start_time).total_seconds()
    actual = {
        "tokens": prog.tokens if prog else 0,
        "steps": prog.step if prog else 0,
        "wall_seconds": round(wall, 1) if wall is not None else None,
        "gpu_hours": round(status.gpu_hours, 5),
        "final_loss": round(prog.loss, 4) if prog and prog.loss is not None else None,
    }
    out: dict[str, Any] = {
        "phase": status.phase,
        "reason": status.conditions[-1].reason if status.conditions else None,
        "message": status.message,
        "attempts": status.attempt,
        "restarts": status.restarts,
        "last_checkpoint": status.last_checkpoint.step if status.last_checkpoint else None,
        "resumed_at": [{"attempt": a, "checkpoint_step": s} for a, s in resume_steps(history)],
        "rollbacks": [
            {
                "attempt": r.attempt,
                "step": r.step,
                "kind": r.kind,
                "cause": r.cause,
                "samples": r.samples,
                "resume_step": r.resume_step,
                "lost_gpu_hours": round(r.lost_gpu_hours, 6),
            }
            for r in status.rollback_records
        ],
        "skip_samples": status.skip_samples,
        "lost_gpu_hours": {k: round(v, 6) for k, v in status.lost_gpu_hours.items()},
        "goodput": {
            "goodput": status.goodput,
            "productive_gpu_hours": status.productive_gpu_hours,
            "predicted_vs_observed": goodput_report.rows(
                status, goodput_report.predictions(plan, annotations)
            ),
        },
        "actual": actual,
        "evaluations": [
            {"step": e.step, "phase": e.phase, "results": e.results, "message": e.message}
            for e in status.evaluations
        ],
    }
    if plan is not None:
        predicted = predicted_losses(plan, [actual["tokens"] or plan.get("tokens", 1)])
        out["plan"] = {
            "params": plan.get("params"),
            "tokens": plan.get("tokens"),
            "predicted_loss": round(predicted[0], 4) if predicted else plan.get("predicted_loss"),
            "law": plan.get("law"),
            "gpu": (plan.get("cluster") or {}).get("gpu"),
            "gpus": (plan.get("cluster") or {}).get("gpus"),
            "wall_seconds": round(float(plan["wall_clock_days"]) * 86400, 3)
            if plan.get("wall_clock_days") is not None
            else None,
            "gpu_hours": plan.get("gpu_hours_total"),
        }
    return out


def _metric_rows(evaluations: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in evaluations:
        for task, metrics in sorted((e.get("results") or {}).items()):
            if isinstance(metrics, Mapping):
                shown = ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                )
            else:
                shown = str(metrics)
            rows.append([e["step"], task, shown])
        if not e.get("results"):
            rows.append([e["step"], "-", f"{e['phase']}: {e.get('message') or ''}".strip()])
    return rows


def summary_text(data: Mapping[str, Any], report_path: Path | None) -> str:
    """The human summary printed at the end of a run."""
    from tokensmith.core.output import table
    from tokensmith.core.units import format_si

    act = data["actual"]
    lines = [
        f"job {data['phase']}"
        + (f" ({data['reason']})" if data.get("reason") else "")
        + f" after {data['attempts']} attempt(s), {data['restarts']} restart(s): {data.get('message') or ''}",
    ]
    for r in data["resumed_at"]:
        lines.append(f"  attempt {r['attempt']} resumed from checkpoint step {r['checkpoint_step']}")
    for r in data.get("rollbacks", []):
        samples = f", samples [{r['samples'][0]}, {r['samples'][1]})" if r.get("samples") else ""
        back = r["resume_step"] if r["resume_step"] is not None else "scratch"
        lines.append(
            f"  attempt {r['attempt']} diverged ({r['kind']}) at step {r['step']}{samples}: rolled back to "
            f"{back}, cause {r['cause']}, {r['lost_gpu_hours']:.4g} GPU-hours lost"
        )
    if data.get("skip_samples"):
        lines.append(f"  skipped sample ranges: {data['skip_samples']}")
    plan = data.get("plan")
    rows: list[list[Any]] = []

    def fmt(v: Any, unit: str = "") -> str:
        if v is None:
            return "-"
        return f"{format_si(float(v))}{unit}" if isinstance(v, int | float) else str(v)

    if plan:
        rows.append(["tokens", fmt(plan["tokens"]), fmt(act["tokens"])])
        where = f" ({plan.get('gpus')}x {plan.get('gpu')})" if plan.get("gpu") else ""
        rows.append([f"time{where} vs here", fmt(plan["wall_seconds"], "s"), fmt(act["wall_seconds"], "s")])
        rows.append(["GPU-hours", fmt(plan["gpu_hours"]), fmt(act["gpu_hours"])])
        rows.append([f"loss ({plan.get('law')} law)", fmt(plan["predicted_loss"]), fmt(act["final_loss"])])
        lines += ["", table(rows, ["", "plan", "actual"])]
        lines.append(
            "(on CPU a 'GPU-hour' is a process-hour; the law is fitted far above this scale and on other "
            "data and tokenizers, so compare the loss curve's shape in the report, not its level)"
        )
    else:
        rows = [[k, fmt(v)] for k, v in act.items()]
        lines += ["", table(rows, ["", "actual"])]
    good = data.get("goodput") or {}
    if good.get("goodput") is not None:
        compared = [
            [r["name"], fmt(r["predicted"]), fmt(r["observed"])] for r in good["predicted_vs_observed"]
        ]
        lines += ["", "goodput, predicted vs observed:", table(compared, ["", "predicted", "observed"])]
    if data["evaluations"]:
        lines += ["", "evaluations:", table(_metric_rows(data["evaluations"]), ["step", "task", "metrics"])]
    if report_path is not None:
        lines += ["", f"report: {report_path}"]
    return "\n".join(lines)


def write_html(
    path: Path,
    job_name: str,
    status: LLMTrainingJobStatus,
    history: History,
    plan: Mapping[str, Any] | None,
    valid_losses: Sequence[tuple[int, float]] = (),
    annotations: Mapping[str, str] | None = None,
) -> Path:
    """One self-contained page: the goodput section (GPU-hours by cause over time, stacked; the plan's
    predicted interruptions, goodput and cost against what happened: goodput_report.py), then loss (and
    the plan's law), learning rate, tokens/s with restarts marked on the time axis, evaluation metrics
    over steps, the trainer's held-out loss."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from tokensmith.core.io import atomic_write_text

    fig = make_subplots(
        rows=3,
        cols=2,
        subplot_titles=(
            "training loss vs tokens",
            "learning rate vs step",
            "throughput (tokens/s) vs time; restarts marked",
            "evaluation accuracy vs step",
            "held-out perplexity vs step",
            "held-out loss (trainer's validation) vs step",
        ),
        vertical_spacing=0.09,
    )
    attempts = sorted({int(r.get("attempt", 0)) for r in history.progress})
    for a in attempts:
        recs = [r for r in history.progress if int(r.get("attempt", 0)) == a]
        name = f"attempt {a}"
        fig.add_trace(
            go.Scatter(x=[r["tokens"] for r in recs], y=[r.get("loss") for r in recs], name=f"loss, {name}",
                       mode="lines+markers"),
            row=1, col=1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=[r["step"] for r in recs], y=[r.get("lr") for r in recs], name=f"lr, {name}"),
            row=1, col=2,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=[_naive(r.get("time")) for r in recs], y=[r.get("tokens_per_s") for r in recs],
                       name=f"tokens/s, {name}", mode="lines+markers"),
            row=2, col=1,
        )  # fmt: skip
    if plan is not None and history.progress:
        xs = sorted({float(r["tokens"]) for r in history.progress})
        ys = predicted_losses(plan, xs)
        if ys is not None:
            fig.add_trace(
                go.Scatter(x=xs, y=ys, name=f"plan: {plan.get('law')} L(N={plan.get('params')}, D)",
                           line={"dash": "dash"}),
                row=1, col=1,
            )  # fmt: skip
    for ev in history.events:
        if ev.get("reason") in ("Restarting", "RollingBack", "AttemptStarted", "Suspended", "BudgetExceeded"):
            colour = {"Restarting": "red", "RollingBack": "purple", "AttemptStarted": "green"}.get(
                ev["reason"], "orange"
            )
            when = _naive(ev.get("time"))
            if when is None:
                continue
            fig.add_vline(x=when, line={"color": colour, "dash": "dot"}, row=2, col=1)
            fig.add_annotation(x=when, y=1, yref="y3 domain", text=ev["reason"], showarrow=False,
                               textangle=-90, xanchor="left", font={"size": 9, "color": colour},
                               row=2, col=1)  # fmt: skip
    acc: dict[str, list[tuple[int, float]]] = {}
    ppl: dict[str, list[tuple[int, float]]] = {}
    for e in status.evaluations:
        for task, metrics in (e.results or {}).items():
            if not isinstance(metrics, Mapping):
                continue
            for key, value in metrics.items():
                if not isinstance(value, int | float):
                    continue
                if key == "acc":
                    acc.setdefault(task, []).append((e.step, float(value)))
                elif key in ("token_perplexity", "bits_per_byte"):
                    ppl.setdefault(f"{task} {key}", []).append((e.step, float(value)))
    for task, pts in sorted(acc.items()):
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=f"{task} acc",
                                 mode="lines+markers"), row=2, col=2)  # fmt: skip
    for key, pts in sorted(ppl.items()):
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=key,
                                 mode="lines+markers"), row=3, col=1)  # fmt: skip
    if valid_losses:
        fig.add_trace(
            go.Scatter(x=[p[0] for p in valid_losses], y=[p[1] for p in valid_losses], name="valid loss",
                       mode="lines+markers"),
            row=3, col=2,
        )  # fmt: skip
    fig.update_xaxes(title_text="tokens", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_xaxes(title_text="time (UTC)", row=2, col=1)
    fig.update_xaxes(title_text="checkpoint step", row=2, col=2)
    fig.update_xaxes(title_text="checkpoint step", row=3, col=1)
    fig.update_yaxes(title_text="loss (nats/token)", row=1, col=1)
    fig.update_yaxes(type="log", row=3, col=1)
    fig.update_xaxes(title_text="step", row=3, col=2)
    title = (
        f"{job_name}: {status.phase}, {status.attempt} attempt(s), {status.restarts} restart(s), "
        f"{status.gpu_hours:.4f} GPU-hours"
    )
    fig.update_layout(title="training", height=1200, template="plotly_white")
    note = (
        "<p style='font-family:sans-serif;font-size:12px'>Measured: the trainer's progress reports "
        "(every attempt, including steps redone after a restart). Predicted: the plan's scaling law "
        "L(N, D) at the plan's N; fitted at far larger scale on other data, so compare the shape, "
        "not the level.</p>"
    )
    from plotly.offline import get_plotlyjs

    from tokensmith.operator.local import goodput_report

    times = [t for t in (_when(r.get("time")) for r in (*history.events, *history.ledger)) if t is not None]
    end = status.completion_time or max(times, default=None)
    goodput = goodput_report.section_html(status, history.ledger, history.events, plan, annotations, end)
    training = fig.to_html(full_html=False, include_plotlyjs=False)
    html = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{job_name}: tokensmith run</title>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script>{goodput_report.STYLE}</head>"
        f"<body><h1 style='font-size:20px;margin:10px 40px'>{title}</h1>{goodput}{note}{training}"
        "</body></html>"
    )
    atomic_write_text(path, html)
    return path
