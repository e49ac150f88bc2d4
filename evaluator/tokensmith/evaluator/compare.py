"""`tokensmith eval compare RUN_DIR`: how each metric moves over checkpoint steps.

Reads every `tokensmith.eval/v1` JSON document under RUN_DIR (what `tokensmith eval --output` and the
operator's evaluation Jobs write), keeps one per (step, task) — the newest by `created` when a step was
evaluated twice — and draws one panel per task with a line per metric against the step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError
from tokensmith.evaluator.report import SCHEMA


def find_documents(run_dir: str | Path) -> list[dict[str, Any]]:
    root = Path(run_dir)
    if not root.is_dir():
        raise TokensmithError(f"{root} is not a directory; pass the directory that holds eval result JSON")
    docs = []
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA and data.get("step") is not None:
            data["_path"] = str(path)
            docs.append(data)
    return docs


def series(docs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """task -> metric -> [(step, value)] sorted by step; the newest document wins per (step, task)."""
    latest: dict[tuple[int, str], Mapping[str, Any]] = {}
    for doc in sorted(docs, key=lambda d: str(d.get("created", ""))):
        for task, metrics in doc.get("results", {}).items():
            latest[(int(doc["step"]), task)] = metrics
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for (step, task), metrics in sorted(latest.items()):
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            out.setdefault(task, {}).setdefault(metric, []).append((step, float(value)))
    return out


def rows(data: Mapping[str, Mapping[str, list[tuple[int, float]]]]) -> list[dict[str, Any]]:
    return [
        {"task": task, "metric": metric, "step": step, "value": value}
        for task, metrics in data.items()
        for metric, points in metrics.items()
        for step, value in points
    ]


def figure_html(data: Mapping[str, Mapping[str, list[tuple[int, float]]]], title: str) -> str:
    """Self-contained plotly HTML: one panel per task, one line per metric."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = list(data)
    fig = make_subplots(rows=max(1, len(tasks)), cols=1, subplot_titles=tasks, shared_xaxes=False)
    for r, task in enumerate(tasks, start=1):
        for metric, points in data[task].items():
            fig.add_trace(
                go.Scatter(
                    x=[s for s, _ in points],
                    y=[v for _, v in points],
                    mode="lines+markers",
                    name=f"{task} {metric}",
                    legendgroup=task,
                ),
                row=r,
                col=1,
            )
        fig.update_xaxes(title_text="step", row=r, col=1)
    fig.update_layout(title=title, height=max(350, 280 * len(tasks)))
    return str(fig.to_html(include_plotlyjs=True, full_html=True))
