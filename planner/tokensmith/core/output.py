"""Render a report as json, yaml, csv or a table; every reporting command offers `--format`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

FORMATS = ("table", "json", "yaml", "csv")


def format_option(default: str = "table", choices: Sequence[str] = FORMATS) -> Any:
    """The `--format` option, spelled the same way on every subcommand."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices), case_sensitive=False),
        default=default,
        show_default=True,
        help="Output format.",
    )


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def to_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(json.loads(to_json(data)), sort_keys=False)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    flat = [flatten(row) for row in rows]
    fields: list[str] = []
    for row in flat:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None) -> str:
    """A plain aligned text table (no dependency), numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    if headers:
        cells.insert(0, list(headers))
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))]

    def fmt(row: list[str], raw: Sequence[Any]) -> str:
        parts = []
        for i, cell in enumerate(row):
            numeric = isinstance(raw[i], (int, float)) and not isinstance(raw[i], bool)
            parts.append(cell.rjust(widths[i]) if numeric else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    lines = []
    for n, row in enumerate(cells):
        raw = headers if (headers and n == 0) else rows[n - (1 if headers else 0)]
        lines.append(fmt(row, list(raw)))
        if headers and n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
