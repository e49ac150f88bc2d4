"""Real text no one here wrote: the licenses in /usr/share/common-licenses and CPython's pydoc topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.trainer.data.samples import curate_pydoc, pydoc_topics
from tokensmith.trainer.data.shards import ShardSet

LICENSES = Path("/usr/share/common-licenses")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (LICENSES / "GFDL-1.2").is_file(), reason="needs Debian's common-licenses"),
]


def test_license_versions_are_found_as_duplicates(tmp_path: Path) -> None:
    """GPL/LGPL/GFDL are symlinks to their latest version (exact copies); GFDL 1.2 and 1.3 differ in a
    few paragraphs (5-gram Jaccard 0.86): a near duplicate under FineWeb's MinHash (5-grams, 14 x 8)."""
    out = tmp_path / "out"
    skip = ["--skip", "gopher_repetition", "--skip", "gopher_quality", "--skip", "c4", "--skip", "fineweb"]
    result = CliRunner().invoke(
        cli,
        [
            "curate",
            str(LICENSES),
            "--out",
            str(out),
            "--vocab-size",
            "512",
            "--word-tokenizer",
            "regex",
            *skip,
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["exact_dedup"]["removed"] == {"exact_duplicate": 3}
    assert steps["near_dedup"]["removed"].get("near_duplicate", 0) >= 1
    texts = [
        json.loads(line)["text"]
        for line in CliRunner().invoke(cli, ["data", "cat", str(out)]).stdout.splitlines()
    ]
    gfdl = [t for t in texts if "GNU Free Documentation License" in t[:300]]
    assert len(gfdl) == 1, "GFDL 1.2 and 1.3 collapse to one document"
    assert any("Apache License" in t[:300] for t in texts) and any("Artistic" in t[:300] for t in texts)
    assert (
        report["documents_out"]
        == len(texts)
        == report["documents_in"] - 3 - steps["near_dedup"]["removed"]["near_duplicate"]
    )


def test_curate_pydoc_gives_the_trainer_a_corpus(tmp_path: Path) -> None:
    report = curate_pydoc(tmp_path / "pydoc", vocab_size=1024)
    topics = pydoc_topics()
    assert report["documents_in"] == len(topics)
    exact = next(s for s in report["steps"] if s["name"] == "exact_dedup")
    assert report["documents_out"] == len(topics) - sum(exact["removed"].values()) - sum(
        next(s for s in report["steps"] if s["name"] == "near_dedup")["removed"].values()
    )
    train = ShardSet.open(tmp_path / "pydoc" / "train", verify=True)
    valid = ShardSet.open(tmp_path / "pydoc" / "valid", verify=True)
    assert train.vocab_size == 1024 and train.num_tokens > 100_000 and valid.num_tokens > 1_000
    assert train.num_documents + valid.num_documents == report["documents_out"]
    again = curate_pydoc(tmp_path / "pydoc", vocab_size=1024)  # resumes: nothing to redo
    assert again["splits"] == report["splits"] and again["stage_seconds"] == {}


def test_a_lower_threshold_also_merges_lgpl_2_and_2_1(tmp_path: Path) -> None:
    """LGPL 2 and 2.1 share 72% of their 5-grams, right at FineWeb's LSH threshold; asking for 0.6 picks
    16 bands x 7 rows (threshold 0.67), which merges them, while GPL 1 and 2 (0.47) stay apart."""
    out = tmp_path / "out"
    skip = ["--skip", "gopher_repetition", "--skip", "gopher_quality", "--skip", "c4", "--skip", "fineweb"]
    args = ["curate", str(LICENSES), "--out", str(out), "--vocab-size", "512", "--word-tokenizer", "regex"]
    args += skip
    result = CliRunner().invoke(cli, [*args, "--minhash-threshold", "0.6", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["near_dedup"]["bands"], report["near_dedup"]["rows"]) == (16, 7)
    assert report["duplicate_clusters"]["near"] == {"2": 2}
    lines = CliRunner().invoke(cli, ["data", "cat", str(out)]).stdout.splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    heads = [t[:200] for t in texts]
    assert sum("LESSER GENERAL PUBLIC" in h or "LIBRARY GENERAL PUBLIC" in h for h in heads) == 2  # 2/2.1 + 3
    gpl_1_and_2 = [t for t in texts if "GNU GENERAL PUBLIC LICENSE" in t[:200] and "Version 3" not in t[:400]]
    assert len(gpl_1_and_2) == 2
