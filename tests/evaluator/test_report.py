"""The result document, its termination-message short form and the table (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokensmith.evaluator import report
from tokensmith.evaluator.compare import find_documents, series
from tokensmith.evaluator.termination import ENV, termination_path, write_termination_message

LM_EVAL = {
    "results": {
        "arc_easy_local": {
            "alias": "arc_easy_local",
            "acc,none": 0.5,
            "acc_stderr,none": 0.1,
            "acc_norm,none": 0.25,
            "acc_norm_stderr,none": "N/A",
        }
    },
    "n-shot": {"arc_easy_local": 25},
    "n-samples": {"arc_easy_local": {"original": 32, "effective": 10}},
}


def document(step: int = 7, **overrides: object) -> dict:
    return report.build_document(
        model_info={"checkpoint": "/c", "step": step, "model_config_hash": "abc"},
        lm_eval_results=LM_EVAL,
        perplexity={
            "token_perplexity": 12.0,
            "bits_per_byte": 1.5,
            "documents": 3,
            "tokens": 90,
            "bytes": 300,
        },
        lm_eval_version="0.4.x",
        wall_time_s=1.23456,
        created=str(overrides.get("created", "2026-01-01T00:00:00+00:00")),
        settings={"device": "cpu"},
    )


def test_document_sections() -> None:
    doc = document()
    assert doc["schema"] == report.SCHEMA
    assert doc["results"]["arc_easy_local"] == {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.25}
    assert doc["num_fewshot"] == {"arc_easy_local": 25}
    assert doc["items"] == {"arc_easy_local": 10, "perplexity": 3}
    assert doc["results"]["perplexity"] == {"token_perplexity": 12.0, "bits_per_byte": 1.5}
    assert doc["perplexity_data"]["tokens"] == 90
    assert doc["step"] == 7 and doc["model_config_hash"] == "abc" and doc["wall_time_s"] == 1.235


def test_short_form_drops_stderr_and_fits() -> None:
    short = json.loads(report.short_form(document()))
    assert short["results"]["arc_easy_local"] == {"acc": 0.5, "acc_norm": 0.25}
    assert short["step"] == 7 and "truncated" not in short


def test_short_form_truncates_many_tasks_below_the_limit() -> None:
    doc = document()
    doc["results"] = {f"mmlu_subject_{i:03d}": {"acc": 0.123456, "acc_norm": 0.5} for i in range(200)}
    text = report.short_form(doc)
    assert len(text.encode()) <= report.TERMINATION_LIMIT
    short = json.loads(text)
    assert short["truncated"] is True and 0 < len(short["results"]) < 200


def test_table_lists_every_metric() -> None:
    text = report.render_table(document())
    assert "arc_easy_local" in text and "acc_norm" in text and "bits_per_byte" in text
    assert "step 7" in text


def test_termination_path_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "termination-log"
    monkeypatch.setenv(ENV, str(target))
    assert termination_path() == target
    assert write_termination_message("{}") == target
    assert target.read_text() == "{}"
    monkeypatch.setenv(ENV, str(tmp_path / "missing-dir" / "log"))
    assert write_termination_message("{}") is None  # never fails the run


def test_compare_keeps_the_newest_document_per_step(tmp_path: Path) -> None:
    old = document(step=5, created="2026-01-01T00:00:00+00:00")
    new = document(step=5, created="2026-01-02T00:00:00+00:00")
    new["results"]["arc_easy_local"]["acc"] = 0.75
    later = document(step=9)
    for name, doc in (("a.json", old), ("b.json", new), ("sub/c.json", later)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(json.dumps(doc))
    (tmp_path / "other.json").write_text('{"not": "ours"}')
    data = series(find_documents(tmp_path))
    assert data["arc_easy_local"]["acc"] == [(5, 0.75), (9, 0.5)]
    assert "acc_stderr" not in data["arc_easy_local"]
