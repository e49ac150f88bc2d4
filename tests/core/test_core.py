from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tokensmith.core.errors import placeholder_command
from tokensmith.core.io import atomic_open, atomic_write_text
from tokensmith.core.output import table, to_csv
from tokensmith.core.units import format_si, parse_number


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7e9", 7e9),
        ("7B", 7e9),
        ("7b", 7e9),
        ("1.5T", 1.5e12),
        ("250k", 2.5e5),
        ("3.2M", 3.2e6),
        ("1,000", 1000.0),
        ("0.5", 0.5),
        (42, 42.0),
        ("1e20", 1e20),
        (" 2 T ", 2e12),
    ],
)
def test_parse_number(text: str, value: float) -> None:
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "seven", "7X", "1e999", "nan", "7BB"])
def test_parse_number_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_format_si() -> None:
    assert format_si(6.74e9) == "6.74B"
    assert format_si(2e12) == "2T"
    assert format_si(12) == "12"


def test_atomic_write_leaves_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of a new fi")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_placeholder_command_exits_2_with_one_line() -> None:
    group = click.Group(commands={"x": placeholder_command("x", "Do x.")})
    result = CliRunner().invoke(group, ["x", "--anything"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["Error: `tokensmith x` is not implemented yet"]


def test_table_and_csv() -> None:
    text = table([["a", 1], ["bb", 22]], headers=["name", "n"])
    assert text.splitlines()[0].startswith("name")
    assert text.splitlines()[-1].endswith("22")
    rows = to_csv([{"a": 1, "b": {"c": 2}}, {"a": 3, "d": [1, 2]}]).splitlines()
    assert rows[0] == "a,b.c,d"
    assert json.loads(rows[2].split(",", 2)[2].strip('"').replace('""', '"')) == [1, 2]


def test_atomic_write_uses_normal_file_mode(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        target = tmp_path / "plan.json"
        atomic_write_text(target, "{}")
        assert target.stat().st_mode & 0o777 == 0o644
        target.chmod(0o600)
        atomic_write_text(target, "{}")
        assert target.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode
    finally:
        os.umask(umask)
