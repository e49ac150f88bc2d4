"""Input formats (txt, JSONL gz/zst, Parquet, fsspec URLs) and bad input: one clear line, exit 2."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tokensmith.cli import cli
from tokensmith.trainer.data.samples import synthetic_prose
from tokensmith.trainer.data.shards import ShardSet

ALL_FILTERS_OFF = [
    "--skip",
    "gopher_repetition",
    "--skip",
    "gopher_quality",
    "--skip",
    "c4",
    "--skip",
    "fineweb",
]
FAST = ["--vocab-size", "400", "--word-tokenizer", "regex", "--valid-fraction", "0.2", *ALL_FILTERS_OFF]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def texts(out: Path) -> list[str]:
    result = invoke("data", "cat", str(out))
    assert result.exit_code == 0, result.output
    return [json.loads(line)["text"] for line in result.stdout.splitlines()]


@pytest.mark.slow
def test_every_input_format_and_an_fsspec_url(tmp_path: Path) -> None:
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = [synthetic_prose(100 + i, lines=4) for i in range(7)]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(docs[0], encoding="utf-8")
    with gzip.open(src / "b.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": docs[1]}) + "\n" + json.dumps({"text": docs[2]}) + "\n")
    (src / "c.jsonl.zst").write_bytes(zstandard.compress(json.dumps({"text": docs[3]}).encode()))
    pq.write_table(pa.table({"text": [docs[4], docs[5]]}), src / "d.parquet")
    (src / "e.txt").write_bytes("Caf\xe9 au lait was served in the garden.\n".encode("latin-1"))
    with fsspec.open("memory://tokensmith-test/f.jsonl", "w") as handle:
        handle.write(json.dumps({"text": docs[6]}) + "\n")

    out = tmp_path / "out"
    result = invoke("curate", str(src), "memory://tokensmith-test/f.jsonl", "--out", str(out), *FAST,
                    "--encoding-errors", "replace")  # fmt: skip
    assert result.exit_code == 0, result.output
    got = texts(out)
    assert sorted(got) == sorted([*docs, "Caf\ufffd au lait was served in the garden.\n"])
    report = json.loads((out / "report.json").read_text())
    assert report["documents_in"] == 8 and len(report["inputs"]) == 6


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("curate", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "nope.jsonl does not exist" in result.output and "Traceback" not in result.output


def test_empty_directory_and_unmatched_glob_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("curate", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "holds no files" in result.output
    result = invoke("curate", str(tmp_path / "*.jsonl"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "no file matches" in result.output


def test_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\xe9 au lait, a sentence in Latin-1.".encode("latin-1"))
    out = tmp_path / "out"
    result = invoke("curate", str(bad), "--out", str(out), *FAST)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert str(bad) in line and "not UTF-8" in line and "--encoding-errors replace" in line
    assert "Traceback" not in result.output
    assert not (out / ".work").exists()  # nothing half-done to resume from: a fixed file is read again


def test_empty_input_is_a_clear_error_with_a_report(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "out"
    result = invoke("curate", str(empty), "--out", str(out), *FAST)
    assert result.exit_code == 2, result.output
    assert "no document is left" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["documents_in"] == 0 and report["documents_out"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "near_dedup.bands=0"], "near_dedup.bands"),
        (["--set", "pii.kinds=[passport]"], "unknown PII kinds"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
        (["--valid-fraction", "1.5"], "valid_fraction"),
        (["--set", "normalize.form=NFX"], "normalize.form"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "a.txt"
    src.write_text(synthetic_prose(1))
    result = invoke("curate", str(src), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_tokenizer_without_the_eos_token_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    tokenizer_file = tmp_path / "tok.json"
    Tokenizer(models.BPE()).save(str(tokenizer_file))
    src = tmp_path / "a.txt"
    src.write_text(synthetic_prose(1))
    result = invoke(
        "curate", str(src), "--out", str(tmp_path / "out"), "--tokenizer", str(tokenizer_file), *FAST
    )
    assert result.exit_code == 2 and "has no '<|endoftext|>' token" in result.output, result.output


@pytest.mark.slow
def test_existing_tokenizer_is_used_and_force_starts_over(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text("\n".join(json.dumps({"text": synthetic_prose(i, lines=4)}) for i in range(6)) + "\n")
    fast = [*FAST, "--skip", "exact_dedup", "--skip", "near_dedup", "--tasks", "1", "--workers", "1"]
    first = tmp_path / "first"
    assert invoke("curate", str(src), "--out", str(first), *fast).exit_code == 0
    second = tmp_path / "second"
    result = invoke(
        "curate", str(src), "--out", str(second), "--tokenizer", str(first / "tokenizer.json"), *fast
    )
    assert result.exit_code == 0, result.output
    assert (second / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()
    assert texts(second) == texts(first)
    a, b = ShardSet.open(first / "train"), ShardSet.open(second / "train")
    assert a.tokens(0, a.num_tokens).tolist() == b.tokens(0, b.num_tokens).tolist()
    # the same --out with other options is refused, unless --force
    assert invoke("curate", str(src), "--out", str(first), *fast, "--vocab-size", "300").exit_code == 2
    result = invoke("curate", str(src), "--out", str(first), *fast, "--vocab-size", "300", "--force")
    assert result.exit_code == 0, result.output
    assert ShardSet.open(first / "train").vocab_size == 300


def test_not_a_curated_directory(tmp_path: Path) -> None:
    for command in ("cat", "stats"):
        result = invoke("data", command, str(tmp_path))
        assert result.exit_code == 2 and "holds no curated shards" in result.output


def test_out_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    src = tmp_path / "a.txt"
    src.write_text(synthetic_prose(1))
    result = invoke("curate", str(src), "--out", str(out), *FAST)
    assert result.exit_code == 2 and "not a tokensmith curate output" in result.output
    assert (out / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_out_inside_an_input_directory_is_not_read_back(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.txt").write_text(synthetic_prose(i, lines=4))
    fast = [*FAST, "--skip", "exact_dedup", "--skip", "near_dedup", "--tasks", "1", "--workers", "1"]
    out = src / "out"
    assert invoke("curate", str(src), "--out", str(out), *fast).exit_code == 0
    result = invoke("curate", str(src), "--out", str(out), *fast, "--valid-fraction", "0.5", "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["documents_in"] == 3
