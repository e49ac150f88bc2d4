"""Language identification on real text in several languages: Debian's translated message catalogs
(/usr/share/locale): English originals and their German and French translations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tokensmith.cli import cli
from tokensmith.trainer.data.langid import FastTextLID
from tokensmith.trainer.data.samples import locale_documents

# Catalogs hold UI messages, not web pages: the web-text rules are off, language ID is what is tested.
FAST = ["--vocab-size", "400", "--word-tokenizer", "regex", "--valid-fraction", "0.2", "--no-progress"]
FAST += ["--skip", "gopher_repetition", "--skip", "gopher_quality", "--skip", "c4", "--skip", "fineweb"]
COUNTS = {"en": 12, "de": 8, "fr": 8}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    texts = {lang: locale_documents(lang, n) for lang, n in COUNTS.items()}
    for lang, docs in texts.items():
        assert len(docs) == COUNTS[lang], f"too few {lang} messages under /usr/share/locale"
    path = tmp_path_factory.mktemp("locale") / "mixed.jsonl"
    lines = [
        json.dumps({"id": f"{lang}-{i}", "text": t})
        for lang, docs in texts.items()
        for i, t in enumerate(docs)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, texts


def test_the_model_ships_in_a_package_and_tells_the_languages_apart() -> None:
    lid = FastTextLID()
    for lang in COUNTS:
        for text in locale_documents(lang, 3):
            found, score = lid.predict(text)
            assert found == lang and 0.65 <= score <= 1, (lang, found, score, text[:80])


def _curate(source: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = invoke("curate", str(source), "--out", str(out), *FAST, *extra, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_english_kept_german_and_french_dropped_with_counts_per_language(
    multilingual: tuple[Path, dict[str, list[str]]], tmp_path: Path
) -> None:
    source, texts = multilingual
    report = _curate(source, tmp_path / "en")
    language = next(s for s in report["steps"] if s["name"] == "language")
    assert language["documents_in"] == 28 and language["documents_out"] == 12
    assert language["removed"] == {"other_language": 16}
    assert report["languages"] == {
        "en": {"documents": 12, "kept": 12},
        "de": {"documents": 8, "kept": 0},
        "fr": {"documents": 8, "kept": 0},
    }
    kept = invoke("data", "cat", str(tmp_path / "en"))
    assert kept.exit_code == 0
    assert sorted(json.loads(line)["text"] for line in kept.stdout.splitlines()) == sorted(texts["en"])
    # per language in `data stats` too (from the manifests), and in the table output of curate
    stats = json.loads(invoke("data", "stats", str(tmp_path / "en"), "--format", "json").stdout)
    per_split = {(r["split"], r["language"]): r for r in stats["languages"]}
    assert {lang for _, lang in per_split} == {"en"}
    assert sum(r["documents"] for r in per_split.values()) == 12
    assert sum(r["tokens"] for r in per_split.values()) == sum(r["tokens"] for r in stats["splits"])


@pytest.mark.slow
def test_languages_and_threshold_are_configurable(
    multilingual: tuple[Path, dict[str, list[str]]], tmp_path: Path
) -> None:
    source, _ = multilingual
    report = _curate(source, tmp_path / "ende", "--languages", "en,DE")
    assert {k: v["kept"] for k, v in report["languages"].items()} == {"en": 12, "de": 8, "fr": 0}
    # `data stats` per source (one directory each) and per language
    both = invoke(
        "data", "stats", str(tmp_path / "ende" / "train"), str(tmp_path / "ende"), "--format", "json"
    )
    stats = json.loads(both.stdout)
    assert [(r["source"], r["split"]) for r in stats["splits"]] == [
        ("ende", "train"),
        ("ende", "train"),
        ("ende", "valid"),
    ]
    assert {r["language"] for r in stats["languages"]} == {"en", "de"}
    twice_train = stats["splits"][0]["documents"]  # the train split is listed by both arguments
    assert sum(r["documents"] for r in stats["languages"]) == 20 + twice_train
    # nothing is that sure: every document goes, the run says so (exit 2) and the report says why
    result = invoke(
        "curate", str(source), "--out", str(tmp_path / "strict"), *FAST, "--language-threshold", "1"
    )
    assert result.exit_code == 2 and "no document is left" in result.output
    strict = json.loads((tmp_path / "strict" / "report.json").read_text())
    language = next(s for s in strict["steps"] if s["name"] == "language")
    assert language["removed"] == {"other_language": 16, "low_confidence": 12}
    table = invoke("curate", str(source), "--out", str(tmp_path / "ende"), *FAST, "--languages", "en,DE")
    assert table.exit_code == 0 and "language" in table.output and "de" in table.output


def test_no_language_is_a_one_line_error(tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"text": "hello"}) + "\n")
    result = invoke("curate", str(source), "--out", str(tmp_path / "out"), "--languages", " , ")
    assert result.exit_code == 2
    assert "at least one language" in result.output and "--skip language" in result.output
