"""Token shards: the contract between `tokensmith curate` (writer) and the trainer (reader).

A split directory (`OUT/train/`, `OUT/valid/`) holds shards in the tokenized-file format of the
`datatrove` library (`datatrove.pipeline.tokens.tokenizer.TokenizedFile`):

- `NAME.ds`: the tokens of every document back to back, little-endian `uint16` when the vocabulary
  has at most 65,536 entries, else `uint32`;
- `NAME.ds.index`: per document, its end offset in tokens within the shard, little-endian `uint64`;
- `NAME.ds.metadata`: datatrove's small text file (`tokenizer|token_size`, token count, human count).

Each document ends with the EOS token, so a reader can pack documents into fixed-length sequences
across document (and shard) boundaries and still tell where one ends.

Beside them, `shards.json` (this module's `ShardManifest`) names the shards in order with their
token and document counts, byte sizes and SHA-256 checksums, the dtype, vocabulary size, EOS/BOS ids
and the tokenizer file. It is written last and atomically: a split without it is incomplete (a
crashed or running `tokensmith curate`), and `ShardSet.open` refuses it with a clear message.

Everything is memory-mapped; nothing reads a whole shard into memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokensmith.core.errors import TokensmithError
from tokensmith.core.io import atomic_open, atomic_write_text

MANIFEST_NAME = "shards.json"
FORMAT_NAME = "datatrove-tokenized"
FORMAT_VERSION = 1
INDEX_DTYPE = np.dtype("<u8")
_HASH_BLOCK = 1 << 22


class ShardFormatError(TokensmithError):
    """A split directory that is missing, incomplete, or whose files do not match its manifest.

    Exit code 2 (bad input). The trainer turns it into a `ConfigError` (78) for a missing data path.
    """


def token_dtype(vocab_size: int) -> np.dtype:
    """`uint16` when every id fits (vocab <= 65,536), else `uint32`, little-endian (datatrove's rule)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass(frozen=True)
class ShardInfo:
    """One shard as the manifest records it."""

    name: str  # the `.ds` file name, relative to the split directory
    num_tokens: int
    num_documents: int
    bytes: int
    sha256: str  # of NAME.ds
    index_sha256: str  # of NAME.ds.index


@dataclass(frozen=True)
class ShardManifest:
    """The `shards.json` of one split directory."""

    dtype: str  # "uint16" or "uint32" (always little-endian)
    vocab_size: int
    eos_id: int | None
    shards: tuple[ShardInfo, ...]
    bos_id: int | None = None
    tokenizer: str | None = None  # tokenizer file, relative to the split directory when it lies beside it
    split: str | None = None
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.shards)

    @property
    def num_documents(self) -> int:
        return sum(s.num_documents for s in self.shards)

    def to_json(self) -> str:
        data = asdict(self)
        data["num_tokens"] = self.num_tokens
        data["num_documents"] = self.num_documents
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST_NAME) -> ShardManifest:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT_NAME or int(data.get("format_version", -1)) > FORMAT_VERSION:
                raise ShardFormatError(
                    f"{where}: format {data.get('format')!r} v{data.get('format_version')} is not one this "
                    f"version reads ({FORMAT_NAME} v{FORMAT_VERSION}); upgrade tokensmith or re-run curate"
                )
            shards = tuple(ShardInfo(**s) for s in data["shards"])
            manifest = cls(
                dtype=str(data["dtype"]),
                vocab_size=int(data["vocab_size"]),
                eos_id=data.get("eos_id"),
                bos_id=data.get("bos_id"),
                tokenizer=data.get("tokenizer"),
                split=data.get("split"),
                shards=shards,
                format=data["format"],
                format_version=int(data["format_version"]),
                extra=dict(data.get("extra") or {}),
            )
        except ShardFormatError:
            raise
        except (ValueError, KeyError, TypeError) as err:
            raise ShardFormatError(
                f"{where} is not a valid shard manifest ({err}); re-run `tokensmith curate`"
            ) from err
        if manifest.dtype not in ("uint16", "uint32"):
            raise ShardFormatError(f"{where}: dtype must be uint16 or uint32, got {manifest.dtype!r}")
        return manifest


class Shard:
    """One memory-mapped shard: its tokens and its document end offsets."""

    def __init__(self, directory: Path, info: ShardInfo, dtype: np.dtype) -> None:
        self.info = info
        self.path = directory / info.name
        self.tokens: np.ndarray = _memmap(self.path, dtype, info.num_tokens)
        self.doc_ends: np.ndarray = _memmap(Path(f"{self.path}.index"), INDEX_DTYPE, info.num_documents)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_tokens(self) -> int:
        return self.info.num_tokens

    @property
    def num_documents(self) -> int:
        return self.info.num_documents

    def document(self, i: int) -> np.ndarray:
        """Tokens of document `i` of this shard (EOS included), as a read-only memmap view."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range for shard {self.name} ({self.num_documents})")
        start = int(self.doc_ends[i - 1]) if i else 0
        return self.tokens[start : int(self.doc_ends[i])]


def _memmap(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """A read-only memmap of exactly `count` items; numpy cannot map an empty file, so zero is special."""
    if not path.is_file():
        raise ShardFormatError(f"{path} is missing; the split is incomplete: re-run `tokensmith curate`")
    size = path.stat().st_size
    if size != count * dtype.itemsize:
        raise ShardFormatError(
            f"{path} has {size} bytes but the manifest says {count} x {dtype.itemsize}: the file is "
            "truncated or from another run; re-run `tokensmith curate`"
        )
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class ShardSet:
    """All shards of one split, read as one sequence of tokens and one list of documents.

    `tokens(start, length)` reads across shard boundaries; `document(i)` uses the global document
    index (shards in manifest order). Token and document offsets are int64-safe (uint64 on disk).
    """

    def __init__(self, directory: Path, manifest: ShardManifest) -> None:
        self.directory = directory
        self.manifest = manifest
        self.dtype: np.dtype = np.dtype("<u2" if manifest.dtype == "uint16" else "<u4")
        self.shards: tuple[Shard, ...] = tuple(Shard(directory, s, self.dtype) for s in manifest.shards)
        # First global token / document of each shard, plus the total at the end.
        self.token_starts: tuple[int, ...] = tuple(
            np.cumsum([0, *(s.num_tokens for s in self.shards)]).tolist()
        )
        self.doc_starts: tuple[int, ...] = tuple(
            np.cumsum([0, *(s.num_documents for s in self.shards)]).tolist()
        )

    @classmethod
    def open(cls, directory: str | os.PathLike[str], verify: bool = False) -> ShardSet:
        """Open a split directory; `verify=True` also checks every file's SHA-256 (reads it all once)."""
        path = _local_path(directory)
        if not path.is_dir():
            raise ShardFormatError(f"shard directory {path} does not exist; run `tokensmith curate` first")
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            hint = (
                "it holds .ds files but no manifest, so curation did not finish: re-run `tokensmith curate`"
                if any(path.glob("*.ds"))
                else "it is not a split written by `tokensmith curate` (expected OUT/train or OUT/valid)"
            )
            raise ShardFormatError(f"{path}/{MANIFEST_NAME} is missing: {hint}")
        manifest = ShardManifest.from_json(manifest_path.read_text(encoding="utf-8"), str(manifest_path))
        shard_set = cls(path, manifest)
        if verify:
            shard_set.verify()
        return shard_set

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def eos_id(self) -> int | None:
        return self.manifest.eos_id

    @property
    def bos_id(self) -> int | None:
        return self.manifest.bos_id

    @property
    def num_tokens(self) -> int:
        return self.token_starts[-1]

    @property
    def num_documents(self) -> int:
        return self.doc_starts[-1]

    @property
    def tokenizer_path(self) -> Path | None:
        """The tokenizer file the manifest names, resolved against the split directory."""
        if not self.manifest.tokenizer:
            return None
        return (self.directory / self.manifest.tokenizer).resolve()

    def __len__(self) -> int:
        return self.num_documents

    # --- reading -----------------------------------------------------------------------------------
    def tokens(self, start: int, length: int) -> np.ndarray:
        """`length` tokens from global position `start`, across shard boundaries, as a new array."""
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) out of range (0..{self.num_tokens})")
        out = np.empty(length, dtype=self.dtype)
        filled = 0
        k = bisect_right(self.token_starts, start) - 1
        while filled < length:
            shard = self.shards[k]
            offset = start + filled - self.token_starts[k]
            take = min(length - filled, shard.num_tokens - offset)
            out[filled : filled + take] = shard.tokens[offset : offset + take]
            filled += take
            k += 1
        return out

    def document(self, i: int) -> np.ndarray:
        """Tokens of global document `i` (EOS included), as a read-only view."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range (0..{self.num_documents})")
        k = bisect_right(self.doc_starts, i) - 1
        return self.shards[k].document(i - self.doc_starts[k])

    def documents(self) -> Iterator[np.ndarray]:
        """Every document in order."""
        for shard in self.shards:
            for i in range(shard.num_documents):
                yield shard.document(i)

    def document_ends(self) -> np.ndarray:
        """Global end offset (in tokens) of every document, as one int64 array (reads the index files)."""
        parts = [
            s.doc_ends.astype(np.int64) + start
            for s, start in zip(self.shards, self.token_starts[:-1], strict=True)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def verify(self) -> None:
        """Check each file's SHA-256 against the manifest; raise ShardFormatError on the first mismatch."""
        for shard in self.shards:
            for path, expected in (
                (shard.path, shard.info.sha256),
                (Path(f"{shard.path}.index"), shard.info.index_sha256),
            ):
                if sha256_file(path) != expected:
                    raise ShardFormatError(
                        f"{path}: checksum mismatch (corrupt file); re-run `tokensmith curate`"
                    )


def _local_path(directory: str | os.PathLike[str]) -> Path:
    text = os.fspath(directory)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise ShardFormatError(
            f"{text}: shards are memory-mapped, so they must be on a local or mounted filesystem; "
            "copy them locally (e.g. `fsspec`/`gsutil cp -r`) or mount the bucket"
        )
    return Path(text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# --- writing ---------------------------------------------------------------------------------------
def describe_shard(directory: str | os.PathLike[str], name: str, dtype: np.dtype) -> ShardInfo:
    """Measure a shard already on disk (written by datatrove or `write_shard`) for the manifest."""
    path = Path(directory) / name
    index = Path(f"{path}.index")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise ShardFormatError(f"{path}: {size} bytes is not a whole number of {dtype.name} tokens")
    num_tokens = size // dtype.itemsize
    index_size = index.stat().st_size if index.is_file() else 0
    num_documents = index_size // INDEX_DTYPE.itemsize
    if num_documents:
        last = int(
            np.fromfile(index, dtype=INDEX_DTYPE, count=1, offset=index_size - INDEX_DTYPE.itemsize)[0]
        )
        if last != num_tokens:
            raise ShardFormatError(
                f"{index}: last document ends at {last}, but {path} has {num_tokens} tokens"
            )
    elif num_tokens:
        raise ShardFormatError(f"{path} has tokens but {index} has no document boundaries")
    return ShardInfo(
        name=name,
        num_tokens=num_tokens,
        num_documents=num_documents,
        bytes=size,
        sha256=sha256_file(path),
        index_sha256=sha256_file(index) if index.is_file() else hashlib.sha256(b"").hexdigest(),
    )


def write_manifest(
    directory: str | os.PathLike[str],
    shard_names: Sequence[str],
    vocab_size: int,
    eos_id: int | None,
    bos_id: int | None = None,
    tokenizer: str | None = None,
    split: str | None = None,
    extra: dict[str, Any] | None = None,
) -> ShardManifest:
    """Describe existing shards and write `shards.json` atomically: the last step of writing a split."""
    dtype = token_dtype(vocab_size)
    manifest = ShardManifest(
        dtype="uint16" if dtype.itemsize == 2 else "uint32",
        vocab_size=vocab_size,
        eos_id=eos_id,
        bos_id=bos_id,
        tokenizer=tokenizer,
        split=split,
        shards=tuple(describe_shard(directory, name, dtype) for name in shard_names),
        extra=dict(extra or {}),
    )
    atomic_write_text(Path(directory) / MANIFEST_NAME, manifest.to_json())
    return manifest


def write_shard(
    directory: str | os.PathLike[str],
    name: str,
    docs: Iterable[Sequence[int] | np.ndarray],
    vocab_size: int,
    tokenizer_name: str = "unknown",
) -> None:
    """Write one shard (`.ds`, `.ds.index`, `.ds.metadata`) in datatrove's layout, each file atomically."""
    dtype = token_dtype(vocab_size)
    directory = Path(directory)
    ends: list[int] = []
    total = 0
    with atomic_open(directory / name, "wb", encoding=None) as handle:
        for doc in docs:
            array = np.asarray(doc, dtype=np.int64)
            if array.size and (array.min() < 0 or array.max() >= vocab_size):
                raise ValueError(f"token ids must lie in [0, {vocab_size}); got {array.min()}..{array.max()}")
            handle.write(array.astype(dtype).tobytes())
            total += int(array.size)
            ends.append(total)
    with atomic_open(directory / f"{name}.index", "wb", encoding=None) as handle:
        handle.write(np.asarray(ends, dtype=INDEX_DTYPE).tobytes())
    atomic_write_text(
        directory / f"{name}.metadata", f"{tokenizer_name}|{dtype.itemsize}\n{total}\n{total} tokens"
    )


def write_shards(
    directory: str | os.PathLike[str],
    docs: Iterable[Sequence[int] | np.ndarray],
    vocab_size: int,
    eos_id: int | None,
    *,
    bos_id: int | None = None,
    append_eos: bool = True,
    max_tokens_per_shard: int | None = None,
    tokenizer: str | None = None,
    split: str | None = None,
    prefix: str = "shard",
) -> ShardManifest:
    """Write documents of token ids as a complete split (shards, then the manifest).

    `append_eos` adds `eos_id` to each document that does not already end with it. A new shard starts
    once the current one holds `max_tokens_per_shard` tokens (documents are never split).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_NAME).unlink(missing_ok=True)  # the split is incomplete until we finish
    if append_eos and eos_id is None:
        raise ValueError("append_eos needs an eos_id")
    names: list[str] = []
    current: list[np.ndarray] = []
    current_tokens = 0

    def flush() -> None:
        name = f"{prefix}_{len(names):05d}.ds"
        write_shard(directory, name, current, vocab_size, tokenizer_name=tokenizer or "unknown")
        names.append(name)

    for doc in docs:
        array = np.asarray(doc, dtype=np.int64)
        if eos_id is not None and append_eos and (array.size == 0 or array[-1] != eos_id):
            array = np.append(array, eos_id)
        current.append(array)
        current_tokens += int(array.size)
        if max_tokens_per_shard and current_tokens >= max_tokens_per_shard:
            flush()
            current, current_tokens = [], 0
    if current or not names:
        flush()
    return write_manifest(directory, names, vocab_size, eos_id, bos_id, tokenizer, split)
