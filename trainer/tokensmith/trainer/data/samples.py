"""Real English text already on every machine with CPython, for tests and demos (no downloads).

`pydoc_corpus(path)` writes CPython's `pydoc_data` topics (the language reference that `help()` shows,
79 documents, about 0.5 MB) as JSONL; `curate_pydoc(out_dir)` curates them into token shards that
`tokensmith train` reads:

    tokensmith curate pydoc.jsonl --out OUT --vocab-size 2048 --valid-fraction 0.1 \\
        --word-tokenizer regex --skip gopher_quality --skip gopher_repetition --skip c4 --skip fineweb

The web-text quality rules are switched off there on purpose: reference documentation is full of
code, which Gopher's and C4's rules are built to reject (they keep about 10 of the 79 topics).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokensmith.core.io import atomic_write_text


def pydoc_topics() -> dict[str, str]:
    import pydoc_data.topics

    return dict(sorted(pydoc_data.topics.topics.items()))


def pydoc_corpus(path: str | os.PathLike[str]) -> Path:
    """Write the pydoc topics as JSONL (`{"id", "text"}` per line); returns the file."""
    target = Path(path)
    lines = [json.dumps({"id": name, "text": text}) for name, text in pydoc_topics().items()]
    atomic_write_text(target, "\n".join(lines) + "\n")
    return target


def pydoc_config(vocab_size: int = 2048, valid_fraction: float = 0.1, **overrides: Any) -> Any:
    """Curation options for code-heavy documentation: dedup and PII on, web-text quality rules off."""
    from tokensmith.trainer.data.config import CurateConfig

    config = CurateConfig(word_tokenizer="regex", valid_fraction=valid_fraction, **overrides)
    for step in ("gopher_repetition", "gopher_quality", "c4", "fineweb"):
        getattr(config, step).enabled = False
    config.tokenizer.vocab_size = vocab_size
    return config


def curate_pydoc(
    out_dir: str | os.PathLike[str], vocab_size: int = 2048, valid_fraction: float = 0.1, **overrides: Any
) -> dict[str, Any]:
    """Curate the pydoc topics into OUT/train, OUT/valid and OUT/tokenizer.json; returns the report.

    Takes a few seconds on two cores. Re-running on the same `out_dir` resumes (nothing to redo).
    """
    from tokensmith.trainer.data.pipeline import curate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = pydoc_corpus(out.parent / f".{out.name}-pydoc.jsonl")
    return curate([str(source)], out, pydoc_config(vocab_size, valid_fraction, **overrides), progress=False)
