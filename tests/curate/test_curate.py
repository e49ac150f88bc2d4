"""`tokensmith curate` end to end on planted data: accounting, dedup, PII, round trip, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tokensmith.cli import cli
from tokensmith.trainer.data.pii import PLACEHOLDERS, redact
from tokensmith.trainer.data.shards import ShardSet
from tokensmith.trainer.data.steps import UnicodeNormalizer

pytestmark = pytest.mark.slow  # one curation run shared by the module, a few seconds

FAST = ["--vocab-size", "512", "--word-tokenizer", "regex", "--workers", "2", "--tasks", "2"]
ORDER = [
    "read",
    "normalize",
    "language",
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "fineweb",
    "exact_dedup",
    "near_dedup",
    "pii",
]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def decoded(out: Path, split: str = "all") -> list[str]:
    result = invoke("data", "cat", str(out), "--split", split)
    assert result.exit_code == 0, result.output
    return [json.loads(line)["text"] for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def run(planted: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    source, facts = planted
    out = tmp_path_factory.mktemp("curated") / "out"
    args = ["curate", str(source), "--out", str(out), "--valid-fraction", "0.25", *FAST, "--format", "json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    return {"out": out, "report": report, "facts": facts, "source": source, "args": args}


def step(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["steps"] if s["name"] == name)


def test_report_counts_add_up(run: dict[str, Any]) -> None:
    report = run["report"]
    assert [s["name"] for s in report["steps"]] == ORDER
    assert report["documents_in"] == 14  # 13 JSON records and one broken line
    for before, after in zip(report["steps"], report["steps"][1:], strict=False):
        assert before["documents_out"] == after["documents_in"], (before, after)
    for s in report["steps"]:
        assert s["documents_in"] == s["documents_out"] + sum(s["removed"].values()), s
    assert report["documents_out"] == report["steps"][-1]["documents_out"]
    assert report["documents_out"] == sum(split["documents"] for split in report["splits"].values())
    assert report["tokens_out"] == sum(split["tokens"] for split in report["splits"].values()) > 0
    assert report["steps"][-1]["tokens_out_est"] == report["tokens_out"]  # the estimate is exact at the end
    assert step(report, "near_dedup")["chars_out"] is None  # datatrove's MinHash filter does not count chars
    # the planted short document fails the first rule that looks at it (Gopher's top 2-gram share)
    assert step(report, "gopher_repetition")["removed"] == {"top_2_gram": 1}
    assert step(report, "gopher_quality")["removed"] == {}
    assert run["facts"]["short"] not in decoded(run["out"])
    on_disk = json.loads((run["out"] / "report.json").read_text())
    assert on_disk["steps"] == report["steps"]


def test_bad_json_line_is_skipped_counted_and_located(run: dict[str, Any]) -> None:
    report = run["report"]
    assert step(report, "read")["removed"] == {"bad_json_line": 1, "empty_or_missing_text": 1}
    (bad,) = report["bad_lines"]
    assert bad["file"] == str(run["source"]) and bad["line"] == run["facts"]["bad_line"]
    assert bad["error"].startswith("not JSON")


def test_exact_and_near_duplicates_removed_same_length_document_kept(run: dict[str, Any]) -> None:
    report, facts = run["report"], run["facts"]
    assert step(report, "exact_dedup")["removed"] == {"exact_duplicate": 1}
    assert step(report, "near_dedup")["removed"] == {"near_duplicate": 1}
    assert report["duplicate_clusters"]["near"] == {"2": 1}
    texts = decoded(run["out"])
    assert texts.count(facts["exact"]) == 1
    assert (facts["near"] in texts) != (facts["near_copy"] in texts)
    assert facts["same_length"] in texts
    assert abs(len(facts["same_length"]) - len(facts["near"])) < 0.2 * len(facts["near"])


def test_every_pii_kind_redacted_lookalikes_left_alone(run: dict[str, Any]) -> None:
    report = run["report"]
    assert report["pii"] == {"email": 1, "credit_card": 1, "national_id": 2, "phone": 2, "ip_address": 2}
    (doc,) = [t for t in decoded(run["out"]) if "<EMAIL>" in t]
    for placeholder in PLACEHOLDERS.values():
        assert placeholder in doc
    for raw in (
        "jane.roe@example.org",
        "555-2671",
        "4111 1111",
        "078-05-1120",
        "AB 12 34",
        "8.8.8.8",
        "2001:4860",
    ):
        assert raw not in doc
    for line in run["facts"]["lookalikes"]:
        assert line in doc


def test_round_trip_gives_back_kept_text_after_normalisation_and_redaction(run: dict[str, Any]) -> None:
    facts = run["facts"]
    texts = decoded(run["out"])
    near = facts["near"] if facts["near"] in texts else facts["near_copy"]
    kept = [facts["exact"], near, facts["same_length"], facts["pii"], facts["decomposed"], *facts["keepers"]]
    normalize = UnicodeNormalizer()
    expected = [redact(normalize.format(t))[0] for t in kept]
    assert sorted(texts) == sorted(expected)
    assert any("caf\u00e9" in t for t in texts) and not any("\r" in t for t in texts)


def test_shards_are_what_the_trainer_reads(run: dict[str, Any]) -> None:
    out, report = run["out"], run["report"]
    for split in ("train", "valid"):
        shards = ShardSet.open(out / split, verify=True)
        assert shards.dtype.name == "uint16" and shards.vocab_size == 512
        assert shards.num_documents == report["splits"][split]["documents"]
        assert shards.tokenizer_path == (out / "tokenizer.json").resolve()
        for i in range(shards.num_documents):
            assert shards.document(i)[-1] == shards.eos_id
        assert shards.tokens(0, shards.num_tokens).size == report["splits"][split]["tokens"]
    assert report["splits"]["valid"]["documents"] >= 1 and report["splits"]["train"]["documents"] >= 5
    assert len(decoded(out, "valid")) == report["splits"]["valid"]["documents"]


def test_data_stats(run: dict[str, Any]) -> None:
    result = invoke("data", "stats", str(run["out"]), "--format", "json", "--verify")
    assert result.exit_code == 0, result.output
    rows = {r["split"]: r for r in json.loads(result.stdout)["splits"]}
    for split in ("train", "valid"):
        assert rows[split]["documents"] == run["report"]["splits"][split]["documents"]
        assert rows[split]["tokens"] == run["report"]["splits"][split]["tokens"]
    table = invoke("data", "stats", str(run["out"] / "train"))
    assert table.exit_code == 0 and "train" in table.stdout
    target = run["out"].parent / "stats.yaml"
    written = invoke("data", "stats", str(run["out"]), "--format", "yaml", "--output", str(target))
    assert written.exit_code == 0
    assert "documents:" in target.read_text()
    limited = invoke("data", "cat", str(run["out"]), "--limit", "2")
    assert limited.exit_code == 0 and len(limited.stdout.splitlines()) == 2


def test_report_html_is_self_contained(run: dict[str, Any]) -> None:
    html = (run["out"] / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in html
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000  # plotly.js inlined
    length = run["report"]["token_lengths"]
    assert (
        length["documents"] == run["report"]["documents_out"]
        and sum(length["histogram"]["counts"]) == length["documents"]
    )


def test_rerun_skips_completed_work(run: dict[str, Any]) -> None:
    shard = next((run["out"] / "train").glob("*.ds"))
    before = shard.stat().st_mtime_ns
    result = invoke(*run["args"])
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and result.stderr.count("done earlier, skipped") == 7
    assert "training a byte-level BPE" not in result.stderr
    assert shard.stat().st_mtime_ns == before
    assert json.loads(result.stdout)["steps"] == run["report"]["steps"]


def test_interrupted_run_redoes_only_the_unfinished_task(run: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "out"
    shutil.copytree(run["out"], copy)
    manifest = json.loads((copy / "train" / "shards.json").read_text())
    (copy / ".work" / "logs" / "tokenize" / "completions" / "00001").unlink()
    for path in (copy / "train").glob("train_00001*"):
        path.unlink()
    (copy / "train" / "shards.json").unlink()
    args = [a if a != str(run["out"]) else str(copy) for a in run["args"]]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "tokenize: 1/2 task(s)" in result.stderr and "filter: done earlier" in result.stderr
    assert json.loads((copy / "train" / "shards.json").read_text())["shards"] == manifest["shards"]


def test_other_options_on_the_same_out_are_refused(run: dict[str, Any]) -> None:
    args = [*run["args"][:-2], "--valid-fraction", "0.5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "other inputs or options" in result.output and "--force" in result.output
