"""Parse the numbers people type: 7e9, 7B, 1.5T, 250k, 3.2M, 1,000,000."""

from __future__ import annotations

import math
import re

_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_NUMBER = re.compile(r"^\s*\$?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*([kmbgtp]?)\s*$", re.I)


def parse_number(text: str | float | int) -> float:
    """Return the value of `text`; raise ValueError with a readable message if it is not a number.

    Suffixes are decimal (k=1e3, M=1e6, B/G=1e9, T=1e12, P=1e15), case-insensitive.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _NUMBER.match(text.replace(",", "").replace("_", ""))
        if not match:
            raise ValueError(f"{text!r} is not a number (examples: 7e9, 7B, 1.5T, 250k)")
        value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def format_si(value: float, digits: int = 3) -> str:
    """Short human form: 6.74e9 -> '6.74B', 2e12 -> '2T'."""
    for suffix, scale in (("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"
