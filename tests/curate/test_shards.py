"""The token-shard contract: datatrove's tokenized-file layout plus our manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokensmith.trainer.data.shards import (
    MANIFEST_NAME,
    ShardFormatError,
    ShardSet,
    token_dtype,
    write_manifest,
    write_shards,
)

EOS = 0


def _docs(rng: np.random.Generator, n: int, vocab: int) -> list[list[int]]:
    return [rng.integers(1, vocab, size=int(rng.integers(1, 40))).tolist() for _ in range(n)]


def test_dtype_follows_vocabulary_size() -> None:
    assert token_dtype(512) == np.dtype("<u2")
    assert token_dtype(65536) == np.dtype("<u2")
    assert token_dtype(65537) == np.dtype("<u4")


@pytest.mark.parametrize("vocab", [512, 100_000])
def test_round_trip_across_shard_boundaries(tmp_path: Path, vocab: int) -> None:
    rng = np.random.default_rng(0)
    docs = _docs(rng, 50, vocab)
    manifest = write_shards(tmp_path, docs, vocab_size=vocab, eos_id=EOS, max_tokens_per_shard=100)
    assert len(manifest.shards) > 3, "small shards force reads across boundaries"
    shards = ShardSet.open(tmp_path, verify=True)
    assert shards.dtype == token_dtype(vocab)
    assert shards.vocab_size == vocab and shards.eos_id == EOS
    flat = np.concatenate([np.array([*d, EOS]) for d in docs])
    assert shards.num_documents == len(docs)
    assert shards.num_tokens == flat.size
    for i, doc in enumerate(docs):
        assert shards.document(i).tolist() == [*doc, EOS]
    # every window, including ones that span two or more shards
    for start in range(0, flat.size - 150, 7):
        assert shards.tokens(start, 150).tolist() == flat[start : start + 150].tolist()
    assert shards.tokens(0, flat.size).tolist() == flat.tolist()
    assert shards.document_ends().tolist() == np.cumsum([len(d) + 1 for d in docs]).tolist()
    assert [d.tolist() for d in shards.documents()] == [[*d, EOS] for d in docs]
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["num_tokens"] == flat.size and on_disk["dtype"] == shards.manifest.dtype


def test_files_are_datatrove_layout(tmp_path: Path) -> None:
    write_shards(tmp_path, [[5, 6, 7], [8]], vocab_size=512, eos_id=EOS)
    ds = tmp_path / "shard_00000.ds"
    assert ds.read_bytes() == np.array([5, 6, 7, 0, 8, 0], dtype="<u2").tobytes()
    assert (tmp_path / "shard_00000.ds.index").read_bytes() == np.array([4, 6], dtype="<u8").tobytes()
    assert (tmp_path / "shard_00000.ds.metadata").read_text().splitlines()[:2] == ["unknown|2", "6"]


def test_reads_what_datatrove_writes(tmp_path: Path) -> None:
    from datatrove.pipeline.tokens.tokenizer import TokenizedFile

    out = TokenizedFile(str(tmp_path), "dt.ds", token_size=2, save_final_metadata=True)
    out.write([3, 4, 0], None)
    out.write([9, 0], None)
    out.close()
    write_manifest(tmp_path, ["dt.ds"], vocab_size=512, eos_id=0)
    shards = ShardSet.open(tmp_path, verify=True)
    assert [d.tolist() for d in shards.documents()] == [[3, 4, 0], [9, 0]]


def test_out_of_range_reads(tmp_path: Path) -> None:
    write_shards(tmp_path, [[1, 2]], vocab_size=512, eos_id=EOS)
    shards = ShardSet.open(tmp_path)
    with pytest.raises(IndexError):
        shards.tokens(1, 3)
    with pytest.raises(IndexError):
        shards.document(1)


def test_empty_split_opens(tmp_path: Path) -> None:
    write_shards(tmp_path, [], vocab_size=512, eos_id=EOS)
    shards = ShardSet.open(tmp_path, verify=True)
    assert shards.num_tokens == 0 and shards.num_documents == 0
    assert shards.tokens(0, 0).size == 0


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShardFormatError, match="does not exist"):
        ShardSet.open(tmp_path / "nope")


def test_half_written_split_is_detected(tmp_path: Path) -> None:
    write_shards(tmp_path, [[1, 2, 3]], vocab_size=512, eos_id=EOS)
    (tmp_path / MANIFEST_NAME).unlink()
    with pytest.raises(ShardFormatError, match="did not finish"):
        ShardSet.open(tmp_path)


def test_truncated_shard_is_detected(tmp_path: Path) -> None:
    write_shards(tmp_path, [[1, 2, 3]], vocab_size=512, eos_id=EOS)
    ds = tmp_path / "shard_00000.ds"
    ds.write_bytes(ds.read_bytes()[:-2])
    with pytest.raises(ShardFormatError, match="truncated"):
        ShardSet.open(tmp_path)


def test_corrupt_shard_fails_verification(tmp_path: Path) -> None:
    write_shards(tmp_path, [[1, 2, 3]], vocab_size=512, eos_id=EOS)
    ds = tmp_path / "shard_00000.ds"
    ds.write_bytes(b"\x07\x00" + ds.read_bytes()[2:])
    ShardSet.open(tmp_path)  # sizes still match
    with pytest.raises(ShardFormatError, match="checksum"):
        ShardSet.open(tmp_path, verify=True)


def test_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    write_shards(tmp_path, [[1]], vocab_size=512, eos_id=EOS)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ShardFormatError, match="not a valid shard manifest"):
        ShardSet.open(tmp_path)


def test_remote_url_is_refused_with_advice() -> None:
    with pytest.raises(ShardFormatError, match="memory-mapped"):
        ShardSet.open("s3://bucket/train")


def test_token_ids_must_fit_vocabulary(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token ids"):
        write_shards(tmp_path, [[600]], vocab_size=512, eos_id=EOS)
