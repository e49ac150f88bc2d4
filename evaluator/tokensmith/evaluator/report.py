"""The evaluation result document: built from lm-evaluation-harness' output (pure functions), its short
form for a Kubernetes termination message, and the table people read.

Full document (`--output`, `--format json`), schema `tokensmith.eval/v1`:

    {"schema": "tokensmith.eval/v1", "checkpoint": ..., "step": 1200, "tokens": ..., "model_config_hash": ...,
     "lm_eval_version": "0.4.x", "created": ISO-8601, "wall_time_s": 12.3, "device": "cpu", "batch_size": 32,
     "limit": null,
     "results": {"arc_easy_local": {"acc": 0.41, "acc_stderr": 0.08, "acc_norm": 0.44, ...},
                 "perplexity": {"token_perplexity": 31.2, "bits_per_byte": 1.51, ...}},
     "num_fewshot": {"arc_easy_local": 25, ...}, "items": {"arc_easy_local": 32, ...}}

Short form (termination message, < 4 KiB): `{"schema", "step", "model_config_hash", "wall_time_s",
"results": {task: {metric: value rounded to 4 digits}}}` without standard errors; tasks are dropped from
the end, and `"truncated": true` set, only if even that does not fit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

SCHEMA = "tokensmith.eval/v1"
TERMINATION_LIMIT = 4096  # bytes; Kubernetes keeps at most 4096 bytes of a termination message
PERPLEXITY_TASK = "perplexity"
PERPLEXITY_METRICS = ("token_perplexity", "bits_per_byte", "byte_perplexity", "nll_per_token")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def task_metrics(raw: Mapping[str, Any]) -> dict[str, float]:
    """One task's lm-eval results (`{"acc,none": 0.4, "acc_stderr,none": 0.1, "alias": ...}`) as
    `{"acc": 0.4, "acc_stderr": 0.1}`: filter suffixes dropped ("none" is the only filter of the
    multiple-choice tasks), non-numbers ("N/A" standard errors, names) left out."""
    out: dict[str, float] = {}
    for key, value in raw.items():
        if "," not in key:
            continue
        metric, filt = key.split(",", 1)
        number = _number(value)
        if number is None:
            continue
        out[metric if filt == "none" else f"{metric},{filt}"] = number
    return out


def from_lm_eval(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`results`, `num_fewshot` and `items` sections from the dict `lm_eval.simple_evaluate` returns."""
    tasks = {name: task_metrics(raw) for name, raw in results.get("results", {}).items()}
    n_shot = {name: int(k) for name, k in results.get("n-shot", {}).items() if name in tasks}
    samples = results.get("n-samples", {})
    items = {name: int(samples[name]["effective"]) for name in tasks if name in samples}
    return {"results": tasks, "num_fewshot": n_shot, "items": items}


def build_document(
    *,
    model_info: Mapping[str, Any],
    lm_eval_results: Mapping[str, Any] | None,
    perplexity: Mapping[str, Any] | None,
    lm_eval_version: str,
    wall_time_s: float,
    created: str,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    sections = (
        from_lm_eval(lm_eval_results) if lm_eval_results else {"results": {}, "num_fewshot": {}, "items": {}}
    )
    extra: dict[str, Any] = {}
    if perplexity:
        sections["results"][PERPLEXITY_TASK] = {
            k: float(perplexity[k]) for k in PERPLEXITY_METRICS if _number(perplexity.get(k)) is not None
        }
        sections["items"][PERPLEXITY_TASK] = int(perplexity.get("documents", 0))
        extra["perplexity_data"] = {
            k: perplexity[k] for k in ("path", "documents", "tokens", "bytes") if k in perplexity
        }
    return {
        "schema": SCHEMA,
        "checkpoint": model_info.get("checkpoint"),
        "checkpoint_kind": model_info.get("checkpoint_kind"),
        "step": model_info.get("step"),
        "tokens": model_info.get("tokens"),
        "model_config_hash": model_info.get("model_config_hash"),
        "parameters": model_info.get("parameters"),
        "lm_eval_version": lm_eval_version,
        "created": created,
        "wall_time_s": round(wall_time_s, 3),
        **dict(settings),
        **sections,
        **extra,
    }


def short_form(doc: Mapping[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """Compact JSON of the headline numbers that fits in `limit` bytes (see the module docstring)."""
    results = {
        task: {m: round(v, 4) for m, v in metrics.items() if not m.endswith("_stderr")}
        for task, metrics in doc.get("results", {}).items()
    }
    short: dict[str, Any] = {
        "schema": doc.get("schema", SCHEMA),
        "step": doc.get("step"),
        "model_config_hash": doc.get("model_config_hash"),
        "wall_time_s": doc.get("wall_time_s"),
        "results": results,
    }

    def encode(data: Mapping[str, Any]) -> str:
        return json.dumps(data, separators=(",", ":"), sort_keys=False)

    text = encode(short)
    names = list(results)
    while len(text.encode()) > limit and names:
        results.pop(names.pop())
        short["truncated"] = True
        text = encode(short)
    return text


def table_rows(doc: Mapping[str, Any]) -> list[list[Any]]:
    """One row per task and metric: task, n-shot, items, metric, value, stderr."""
    rows: list[list[Any]] = []
    for task, metrics in doc.get("results", {}).items():
        shots = doc.get("num_fewshot", {}).get(task, "")
        items = doc.get("items", {}).get(task, "")
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            stderr = metrics.get(f"{metric}_stderr")
            rows.append(
                [task, shots, items, metric, round(value, 4), "" if stderr is None else round(stderr, 4)]
            )
    return rows


TABLE_HEADERS = ["task", "n-shot", "items", "metric", "value", "stderr"]


def render_table(doc: Mapping[str, Any]) -> str:
    from tokensmith.core.output import table

    step = doc.get("step")
    head = (
        f"checkpoint {doc.get('checkpoint')}"
        + (f" (step {step})" if step is not None else "")
        + f"  lm-eval {doc.get('lm_eval_version')}  {doc.get('wall_time_s')} s"
    )
    return head + "\n" + table(table_rows(doc), TABLE_HEADERS)
