"""Real English text already on every machine with CPython, for tests and demos (no downloads).

`pydoc_corpus(path)` writes CPython's `pydoc_data` topics (the language reference that `help()` shows,
79 documents, about 0.5 MB) as JSONL; `curate_pydoc(out_dir)` curates them into token shards that
`tokensmith train` reads:

    tokensmith curate pydoc.jsonl --out OUT --vocab-size 2048 --valid-fraction 0.1 \\
        --word-tokenizer regex --skip gopher_quality --skip gopher_repetition --skip c4 --skip fineweb \\
        --skip language

The web-text quality rules are switched off there on purpose: reference documentation is full of
code, which Gopher's and C4's rules are built to reject (they keep about 10 of the 79 topics); language
ID is off too (5 of the 79 topics are mostly code, under fastText's 0.65 confidence in English).
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
    for step in ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb"):
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


# Synthetic English-like prose with known properties, for tests and benchmarks: unique lines of two or
# three sentences from a fixed word list (about a third stop words), so it passes every default rule
# of Gopher, C4 and FineWeb, and two seeds share almost no 5-gram (Jaccard near 0).
_STOP = ("the", "and", "of", "to", "that", "with", "have", "be", "for", "this")
_CONTENT = (  # noqa: SIM905 - a word list reads better as text
    "river mountain garden window letter market winter summer teacher student village station morning "
    "evening kitchen library journey harbour forest meadow bridge castle painter writer doctor farmer "
    "sailor engine signal pocket silver golden yellow purple gentle patient careful honest curious "
    "brave quiet narrow distant ancient modern simple useful hidden broken wooden travel wander "
    "gather follow listen whisper borrow answer explain imagine remember discover prepare protect "
    "measure collect deliver improve arrange compare consider describe develop island valley desert "
    "ocean planet rocket camera pencil basket blanket candle carpet mirror orange lemon cherry butter "
    "pepper cheese bread coffee dinner lunch supper picnic festival season weather thunder rainbow "
    "shadow sunset horizon lantern compass anchor feather pillow"
).split()
STOP_WORDS = _STOP


def synthetic_prose(seed: int, lines: int = 12) -> str:
    import random

    rng = random.Random(seed)

    def sentence() -> str:
        n = rng.randint(9, 15)
        picks = [rng.choice(_STOP) if rng.random() < 0.35 else rng.choice(_CONTENT) for _ in range(n)]
        return " ".join([picks[0].capitalize(), *picks[1:]]) + "."

    return "\n".join(" ".join(sentence() for _ in range(rng.randint(2, 3))) for _ in range(lines))


# Real text in several languages that every Debian-based machine carries: the translated message
# catalogs (GNU gettext .mo files) under /usr/share/locale. A catalog maps English messages (msgid) to
# their translation (msgstr), so one German catalog yields English and German text of the same content.
LOCALE_DIR = Path("/usr/share/locale")


def locale_messages(language: str, min_words: int = 6, root: Path = LOCALE_DIR) -> dict[str, list[str]]:
    """{"en": msgids, language: msgstrs} of the catalogs of `language` whose message has at least
    `min_words` words (UI labels are too short to say a language), sorted files, first occurrence."""
    import gettext

    english: dict[str, None] = {}
    translated: dict[str, None] = {}
    for path in sorted((root / language / "LC_MESSAGES").glob("*.mo")):
        try:
            with open(path, "rb") as handle:
                catalog = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
        except Exception:  # unreadable, a legacy charset, or a format gettext does not read
            continue
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid or not isinstance(value, str) or msgid == value:
                continue
            if "%" in msgid or "{" in msgid or "\\" in msgid:  # format strings: placeholders, not prose
                continue
            if len(msgid.split()) >= min_words and len(value.split()) >= min_words:
                english.setdefault(" ".join(msgid.split()), None)
                translated.setdefault(" ".join(value.split()), None)
    return {"en": list(english), language: list(translated)}


def locale_documents(
    language: str, documents: int, messages_per_document: int = 8, root: Path = LOCALE_DIR
) -> list[str]:
    """`documents` texts of `messages_per_document` messages each in `language` ("en" takes the English
    originals of the German catalogs); fewer when the catalogs run out. Deterministic."""
    source = "de" if language == "en" else language
    messages = locale_messages(source, root=root)[language]
    out = []
    for i in range(documents):
        chunk = messages[i * messages_per_document : (i + 1) * messages_per_document]
        if len(chunk) < messages_per_document:
            break
        out.append("\n".join(chunk))
    return out
