"""`tokensmith curate` options: file, --set and flags in that order; clear errors; every step can be off."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokensmith.core.errors import TokensmithError
from tokensmith.trainer.data.cli import load_config
from tokensmith.trainer.data.config import STEP_NAMES, CurateConfig, NearDedupConfig, lsh_threshold


def test_defaults_are_fineweb_recipe() -> None:
    config = CurateConfig()
    assert config.enabled_steps() == list(STEP_NAMES)
    assert config.near_dedup.lsh() == (14, 8) and config.near_dedup.n_grams == 5
    assert config.c4.filter_no_terminal_punct is False
    assert config.gopher_quality.min_doc_words == 50 and config.fineweb.line_punct_thr == 0.12


def test_file_then_set_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "curate.yaml"
    path.write_text(
        "near_dedup:\n  n_grams: 7\n  threshold: 0.9\nc4:\n  enabled: false\nvalid_fraction: 0.3\n"
    )
    config = load_config(str(path), ("valid_fraction=0.2", "pii.kinds=[email]"), {"valid_fraction": 0.1})
    assert config.near_dedup.n_grams == 7 and not config.c4.enabled
    assert config.valid_fraction == 0.1  # the flag wins over --set, which wins over the file
    assert config.pii.kinds == ["email"]
    bands, rows = config.near_dedup.lsh()
    assert bands * rows <= 112 and lsh_threshold(bands, rows) > lsh_threshold(14, 8)
    assert "c4" not in config.enabled_steps()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list\n", "expected a mapping"),
        ("near_dedup: {rows: 0}\n", "near_dedup.rows"),
        (":\n  - [", "cannot read"),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TokensmithError, match=message):
        load_config(str(path), (), {})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(TokensmithError, match="cannot read"):
        load_config(str(tmp_path / "nope.yaml"), (), {})


def test_threshold_changes_the_bands() -> None:
    assert NearDedupConfig(threshold=0.5).lsh() != NearDedupConfig(threshold=0.9).lsh()
    assert abs(NearDedupConfig().effective_threshold - 0.7187) < 1e-3
