"""Planted documents for the curation tests: English-like prose built to pass every quality rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokensmith.trainer.data.samples import synthetic_prose


def prose(seed: int, lines: int = 12) -> str:
    return synthetic_prose(seed, lines)


def change_one_word(text: str, seed: int = 0) -> str:
    words = text.split(" ")
    index = len(words) // 2
    words[index] = "lighthouse" if words[index] != "lighthouse" else "harbourmaster"
    return " ".join(words)


PII_LINES = [
    "Please write to jane.roe@example.org for the details of the meeting.",
    "The office phone is (415) 555-2671 and the desk number is +44 20 7946 0958 today.",
    "The card 4111 1111 1111 1111 was charged for the order and the receipt was sent.",
    "Her social security number 078-05-1120 was printed on the old form.",
    "His national insurance number AB 12 34 56 C was on the letter.",
    "The public server at 8.8.8.8 and the host 2001:4860:4860::8888 answered every request.",
]
LOOKALIKE_LINES = [
    "Python version 3.11.4 was released on 2024-01-15 with many small fixes.",
    "The book with ISBN 978-3-16-148410-0 has a blue cover and a long preface.",
    "The private router at 192.168.1.1 kept the same address for the garden.",
    "The order number 4111-1111-1111-1112 is not a card because its checksum fails.",
]


def pii_document() -> str:
    return prose(900, lines=14) + "\n" + "\n".join(PII_LINES + LOOKALIKE_LINES)


def planted_records() -> tuple[list[str], dict[str, Any]]:
    """JSONL lines (one of them broken) and the facts the tests check."""
    near = prose(2, lines=20)
    facts = {
        "exact": prose(1),
        "near": near,
        "near_copy": change_one_word(near),
        "same_length": prose(3, lines=20),
        "pii": pii_document(),
        "decomposed": prose(4).replace("garden", "cafe\u0301").replace("\n", "\r\n", 3)
        + "\nThe cafe\u0301 was quiet.",
        "short": "Only a few words here.",
        "keepers": [prose(10 + i) for i in range(4)],
    }
    lines = [json.dumps({"id": "exact-1", "text": facts["exact"]})]
    lines.append(json.dumps({"id": "exact-2", "text": facts["exact"]}))
    lines.append(json.dumps({"id": "near-1", "text": facts["near"]}))
    lines.append("{this line is not json")
    lines.append(json.dumps({"id": "near-2", "text": facts["near_copy"]}))
    lines.append(json.dumps({"id": "same-length", "text": facts["same_length"]}))
    lines.append(json.dumps({"id": "pii", "text": facts["pii"]}))
    lines.append(json.dumps({"id": "decomposed", "text": facts["decomposed"]}))
    lines.append(json.dumps({"id": "short", "text": facts["short"]}))
    lines.append(json.dumps({"id": "no-text", "body": "wrong field"}))
    lines.extend(json.dumps({"id": f"keep-{i}", "text": t}) for i, t in enumerate(facts["keepers"]))
    facts["bad_line"] = 4
    facts["lookalikes"] = LOOKALIKE_LINES
    return lines, facts


@pytest.fixture(scope="session")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    lines, facts = planted_records()
    path = tmp_path_factory.mktemp("planted") / "planted.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, facts
