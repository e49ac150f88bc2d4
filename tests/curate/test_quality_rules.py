"""Each quality rule (as `tokensmith curate` configures it) drops a document built to violate it
and keeps one built to pass it; thresholds are the published ones (config defaults)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from datatrove.data import Document

from tokensmith.trainer.data.config import CurateConfig, lsh_params_for_threshold, lsh_threshold
from tokensmith.trainer.data.pipeline import _quality_steps
from tokensmith.trainer.data.samples import STOP_WORDS, synthetic_prose


def _steps(word_tokenizer: str = "regex") -> dict[str, Any]:
    steps = _quality_steps(CurateConfig(word_tokenizer=word_tokenizer))  # type: ignore[arg-type]
    names = ["normalize", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb"]
    return dict(zip(names, steps, strict=True))


STEPS = _steps()
GOOD = synthetic_prose(7)
LONG = ["incomprehensibilities", "extraordinarily", "internationalization"]


def _long_words_doc() -> str:
    rng = random.Random(0)
    return "\n".join(" ".join(rng.choice(LONG) for _ in range(12)) + "." for _ in range(8))


def _list_doc() -> str:
    """Unique two-word lines: more than 0.3 newlines per word (FineWeb's list rule)."""
    words = [*LONG, "counterproductive", "uncharacteristically", "telecommunications"]
    pairs = itertools.permutations(words, 2)
    return "\n".join(f"{a.capitalize()} {b}." for a, b in pairs)


CASES = [
    ("gopher_quality", "Only a few words here.", "gopher_short_doc"),
    ("gopher_quality", _long_words_doc(), "gopher_above_avg_threshold"),
    ("gopher_quality", GOOD + "\n" + " ".join("#" for _ in range(200)) + ".", "gopher_too_many_hashes"),
    ("gopher_quality", GOOD + "\n" + " ".join("…" for _ in range(200)) + ".", "gopher_too_many_ellipsis"),
    ("gopher_quality", "\n".join("- " + line for line in GOOD.splitlines()), "gopher_too_many_bullets"),
    ("gopher_quality", "\n".join(line + " …" for line in GOOD.splitlines()), "gopher_too_many_end_ellipsis"),
    (
        "gopher_quality",
        GOOD + "\n" + " ".join(str(i) for i in range(2000)) + ".",
        "gopher_below_alpha_threshold",
    ),
    (
        "gopher_quality",
        "\n".join(
            " ".join(w for w in line.split() if w.lower().strip(".") not in STOP_WORDS)
            for line in GOOD.splitlines()
        ),
        "gopher_enough_stop_words",
    ),
    ("gopher_repetition", "\n".join([GOOD.splitlines()[0]] * 10 + GOOD.splitlines()[1:4]), "dup_line_frac"),
    ("gopher_repetition", "\n\n".join([GOOD.splitlines()[0]] * 6 + GOOD.splitlines()[1:4]), "dup_para_frac"),
    ("gopher_repetition", GOOD + "\n" + " ".join(["black cat"] * 400) + ".", "top_2_gram"),
    ("gopher_repetition", (GOOD.replace("\n", " ") + " ") * 2, "duplicated_5_n_grams"),
    ("c4", GOOD + "\nThe lorem ipsum text stayed in the final draft of the page.", "lorem_ipsum"),
    ("c4", GOOD + "\nThe settings were written as {key: value} in the old file.", "curly_bracket"),
    (
        "c4",
        "One line with a single sentence here.\nAnother line with one more sentence.",
        "too_few_sentences",
    ),
    ("fineweb", GOOD.replace(".", ""), "line_punct_ratio"),
    ("fineweb", "\n".join(f"Short line number {i} here." for i in range(40)), "short_line_ratio"),
    ("fineweb", GOOD + "\n" + "\n".join([GOOD.splitlines()[0]] * 3), "char_dup_ratio"),
    ("fineweb", _list_doc(), "list_ratio"),
]


@pytest.mark.parametrize("step", list(STEPS))
def test_good_document_passes_every_rule(step: str) -> None:
    if step == "normalize":
        assert STEPS[step].format(GOOD) == GOOD
        return
    assert STEPS[step].filter(Document(text=GOOD, id="good")) is True


@pytest.mark.parametrize(("step", "text", "reason"), CASES, ids=[c[2] for c in CASES])
def test_rule_drops_the_document_built_to_violate_it(step: str, text: str, reason: str) -> None:
    result = STEPS[step].filter(Document(text=text, id="bad"))
    assert result == (False, reason)


def test_spacy_word_splitter_agrees_on_the_planted_cases() -> None:
    """The default (datatrove's spaCy splitter) gives the same verdicts as the fast regex one."""
    spacy_steps = _steps("spacy")
    assert spacy_steps["gopher_quality"].filter(Document(text=GOOD, id="g")) is True
    for step, text, reason in CASES[:3] + CASES[9:12]:
        assert spacy_steps[step].filter(Document(text=text, id="b")) == (False, reason)


def test_normalizer() -> None:
    out = STEPS["normalize"].format("cafe\u0301\r\nnext\rline\x07 end\tok")
    assert out == "caf\u00e9\nnext\nline end\tok"


def test_lsh_parameters() -> None:
    assert abs(lsh_threshold(14, 8) - 0.719) < 1e-3  # FineWeb's 14 x 8
    bands, rows = lsh_params_for_threshold(0.8, 112)
    assert bands * rows <= 112
    assert abs(lsh_threshold(bands, rows) - 0.8) < 0.06
    low, high = lsh_params_for_threshold(0.5, 112), lsh_params_for_threshold(0.9, 112)
    assert lsh_threshold(*low) < lsh_threshold(*high)
    with pytest.raises(ValueError):
        lsh_params_for_threshold(1.5, 112)
