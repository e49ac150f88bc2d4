"""The curation report: per-step accounting from datatrove's stats files, `report.json` and `report.html`.

Every step lists documents in and out and the reasons for removal; the numbers add up by construction
(`documents_in == documents_out + sum(removed)`), and a test holds the pipeline to it.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokensmith.core.io import atomic_write_text
from tokensmith.trainer.data.context import input_bytes
from tokensmith.trainer.data.pii import PII_KINDS

if TYPE_CHECKING:
    from tokensmith.trainer.data.context import RunContext
    from tokensmith.trainer.data.shards import ShardManifest

REPORT_VERSION = 1


def _total(value: Any) -> float:
    if isinstance(value, Mapping):
        return float(value.get("total", 0))
    return float(value or 0)


def stage_stats(logs: Path, stage: str) -> list[dict[str, float]]:
    """Each step's counters summed over the stage's ranks (datatrove writes `stats/{rank}.json`)."""
    summed: list[dict[str, float]] = []
    for path in sorted((logs / stage / "stats").glob("*.json")):
        for i, step in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            while len(summed) <= i:
                summed.append({})
            for key, value in step.get("stats", {}).items():
                summed[i][key] = summed[i].get(key, 0.0) + _total(value)
    return summed


def _chars(stats: Mapping[str, float]) -> int | None:
    """Characters of the documents a step passed on; None where datatrove's step does not count them."""
    value = stats.get("doc_len")
    if value is None:
        return 0 if stats.get("total", 0) and not stats.get("forwarded", stats.get("documents", 0)) else None
    return int(value)


def estimate_tokens(steps: list[dict[str, Any]], tokens_out: int) -> None:
    """Add `tokens_out_est` to each step: its characters out x the final tokens-per-character ratio.

    Tokens exist only after the last step; this estimate uses the curated text's own ratio.
    """
    measured = [s["chars_out"] for s in steps if s.get("chars_out")]
    if not measured or not tokens_out:
        return
    ratio = tokens_out / measured[-1]
    for step in steps:
        chars = step.get("chars_out")
        step["tokens_out_est"] = round(chars * ratio) if chars is not None else None


def step_entry(name: str, stats: Mapping[str, float], default_reason: str) -> dict[str, Any]:
    """{name, documents_in, documents_out, removed} from one datatrove filter/formatter's counters."""
    total = int(stats.get("total", 0))
    dropped = int(stats.get("dropped", 0))
    reasons = {k.removeprefix("dropped_"): int(v) for k, v in stats.items() if k.startswith("dropped_") and v}
    unexplained = dropped - sum(reasons.values())
    if unexplained > 0:
        reasons[default_reason] = reasons.get(default_reason, 0) + unexplained
    return {
        "name": name,
        "documents_in": total,
        "documents_out": total - dropped,
        "removed": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "chars_out": _chars(stats),
    }


def read_entry(stats: Mapping[str, float]) -> dict[str, Any]:
    kept = int(stats.get("documents", 0))
    removed = {
        "bad_json_line": int(stats.get("bad_lines", 0)),
        "empty_or_missing_text": int(stats.get("empty_or_missing_text", 0)),
    }
    removed = {k: v for k, v in removed.items() if v}
    return {
        "name": "read",
        "documents_in": kept + sum(removed.values()),
        "documents_out": kept,
        "removed": removed,
        "chars_out": _chars(stats),
    }


def language_table(stats: Mapping[str, float]) -> dict[str, dict[str, int]]:
    """{language: {documents, kept}} from the language step's `language_XX` / `kept_XX` counters,
    most frequent first."""
    table = {
        key.removeprefix("language_"): {"documents": int(value), "kept": int(stats.get(f"kept_{key[9:]}", 0))}
        for key, value in stats.items()
        if key.startswith("language_") and value
    }
    return dict(sorted(table.items(), key=lambda kv: (-kv[1]["documents"], kv[0])))


def languages_of(ctx: RunContext) -> dict[str, dict[str, int]]:
    """The per-language table of the run (empty when language ID is off or nothing ran)."""
    if not ctx.config.language.enabled:
        return {}
    filter_stats = stage_stats(ctx.work / "logs", "filter")
    index = 2 if ctx.config.normalize.enabled else 1  # read, [normalize], language
    return language_table(filter_stats[index]) if len(filter_stats) > index else {}


def accounting_steps(ctx: RunContext) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The steps in pipeline order and the PII counts, from the stats of every stage that ran."""
    cfg, logs = ctx.config, ctx.work / "logs"
    filter_stats = stage_stats(logs, "filter")
    steps: list[dict[str, Any]] = []
    if not filter_stats:
        return steps, dict.fromkeys(PII_KINDS, 0)
    steps.append(read_entry(filter_stats[0]))
    index = 1
    for flag in ("normalize", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb"):
        if getattr(cfg, flag).enabled:
            steps.append(step_entry(flag, filter_stats[index], flag))
            index += 1
    if cfg.exact_dedup.enabled:
        exact = stage_stats(logs, "exact_filter")
        if exact:
            steps.append(step_entry("exact_dedup", exact[1], "exact_duplicate"))
    final = stage_stats(logs, "finalize")
    pii = dict.fromkeys(cfg.pii.kinds if cfg.pii.enabled else (), 0)
    position = 1
    if cfg.near_dedup.enabled and final:
        steps.append(step_entry("near_dedup", final[position], "near_duplicate"))
        position += 1
    if cfg.pii.enabled and final:
        entry = step_entry("pii", final[position], "pii")
        entry["documents_with_pii"] = int(final[position].get("documents_with_pii", 0))
        steps.append(entry)
        for kind in cfg.pii.kinds:
            pii[kind] = int(final[position].get(f"pii_{kind}", 0))
    return steps, pii


def cluster_sizes(clusters_folder: Path) -> dict[str, int]:
    """Near-duplicate clusters by size: {size: number of clusters} from MinHash stage 3's `.sizes` files."""
    docs_by_size: Counter[int] = Counter()
    for path in clusters_folder.glob("*.sizes"):
        data = path.read_bytes()
        for _doc, size in struct.iter_unpack("<II", data):
            docs_by_size[size] += 1
    return {str(size): count // size for size, count in sorted(docs_by_size.items())}


def bad_line_locations(folder: Path, limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        found.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return found[:limit]


def token_length_summary(out: Path) -> dict[str, Any]:
    import numpy as np

    from tokensmith.trainer.data.shards import ShardSet

    lengths = []
    for split in ("train", "valid"):
        try:
            shards = ShardSet.open(out / split)
        except Exception:
            continue
        for shard in shards.shards:
            if shard.num_documents:
                lengths.append(np.diff(np.asarray(shard.doc_ends, dtype=np.int64), prepend=0))
    if not lengths:
        return {"documents": 0}
    values = np.concatenate(lengths)
    edges = np.unique(np.geomspace(1, max(2, int(values.max()) + 1), num=25).astype(np.int64))
    counts, edges = np.histogram(values, bins=edges)
    return {
        "documents": int(values.size),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "max": int(values.max()),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def build_report(
    ctx: RunContext, manifests: Mapping[str, ShardManifest] | None, seconds: float
) -> dict[str, Any]:
    steps, pii = accounting_steps(ctx)
    documents_in = steps[0]["documents_in"] if steps else 0
    documents_out = steps[-1]["documents_out"] if steps else 0
    splits: dict[str, dict[str, Any]] = {
        name: {
            "documents": m.num_documents,
            "tokens": m.num_tokens,
            "shards": len([s for s in m.shards if s.num_documents]),
            "dtype": m.dtype,
        }
        for name, m in (manifests or {}).items()
    }
    tokens_out = sum(int(s["tokens"]) for s in splits.values())
    estimate_tokens(steps, tokens_out)
    nbytes = input_bytes(ctx.files)
    first = next(iter((manifests or {}).values()), None)
    return {
        "version": REPORT_VERSION,
        "inputs": ctx.files,
        "input_bytes": nbytes,
        "documents_in": documents_in,
        "documents_out": documents_out,
        "tokens_out": tokens_out,
        "steps": steps,
        "pii": pii,
        "languages": languages_of(ctx),
        "bad_lines": bad_line_locations(ctx.work / "bad_lines", ctx.config.max_bad_line_locations),
        "duplicate_clusters": {"near": cluster_sizes(ctx.work / "minhash_clusters")},
        "near_dedup": {
            "n_grams": ctx.config.near_dedup.n_grams,
            "bands": ctx.config.near_dedup.lsh()[0],
            "rows": ctx.config.near_dedup.lsh()[1],
            "threshold": round(ctx.config.near_dedup.effective_threshold, 4),
        },
        "splits": splits,
        "tokenizer": {
            "file": "tokenizer.json",
            "vocab_size": first.vocab_size if first else None,
            "eos_id": first.eos_id if first else None,
            "trained": ctx.config.tokenizer.path is None,
        },
        "token_lengths": token_length_summary(ctx.out),
        "seconds": round(seconds, 3),
        "stage_seconds": {k: round(v, 3) for k, v in ctx.timings.items()},
        "mb_per_s": round(nbytes / 1e6 / seconds, 3) if seconds > 0 and ctx.timings else None,
        "config": ctx.config.model_dump(mode="json"),
    }


def render_html(report: Mapping[str, Any]) -> str:
    """A self-contained plotly page (plotly.js inlined once)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = report["steps"]
    reasons: Counter[str] = Counter()
    for step in steps:
        for reason, count in step["removed"].items():
            reasons[f"{step['name']}: {reason}"] += count
    top = reasons.most_common(15)
    lengths = report.get("token_lengths", {}).get("histogram", {"edges": [], "counts": []})
    clusters = report["duplicate_clusters"]["near"]
    fig = make_subplots(
        rows=3,
        cols=2,
        subplot_titles=(
            "Documents after each step",
            "Top reasons for removal",
            "PII redacted, by kind",
            "Near-duplicate clusters by size",
            "Document length (tokens)",
            "Documents by language (all / kept)",
        ),
        vertical_spacing=0.12,
    )
    fig.add_trace(go.Bar(x=[s["name"] for s in steps], y=[s["documents_out"] for s in steps]), 1, 1)
    fig.add_trace(go.Bar(y=[r for r, _ in top][::-1], x=[c for _, c in top][::-1], orientation="h"), 1, 2)
    fig.add_trace(go.Bar(x=list(report["pii"]), y=list(report["pii"].values())), 2, 1)
    fig.add_trace(go.Bar(x=list(clusters), y=list(clusters.values())), 2, 2)
    edges = lengths["edges"]
    labels = [f"{edges[i]}-{edges[i + 1]}" for i in range(len(edges) - 1)]
    fig.add_trace(go.Bar(x=labels, y=lengths["counts"]), 3, 1)
    languages = report.get("languages", {})
    fig.add_trace(go.Bar(x=list(languages), y=[v["documents"] for v in languages.values()]), 3, 2)
    fig.add_trace(go.Bar(x=list(languages), y=[v["kept"] for v in languages.values()]), 3, 2)
    fig.update_layout(height=1100, showlegend=False, title="tokensmith curate")
    summary = (
        f"<p>{report['documents_in']} documents in, {report['documents_out']} out, "
        f"{report['tokens_out']} tokens written in {report['seconds']} s.</p>"
    )
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>tokensmith curate report</title></head>"
        f"<body><h1>Curation report</h1>{summary}{body}</body></html>\n"
    )


def write_report(out: Path, report: Mapping[str, Any]) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.html", render_html(report))
