"""Live settings (trainer/live.py): the document's parsing and what applying it changes (pure, table
driven), and the watcher on a file refreshed the way the kubelet refreshes a mounted ConfigMap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tokensmith.trainer import live

PARSE = [
    ('{"checkpoint": {"every_minutes": 12.5}}', 12.5, []),
    ('{"checkpoint": {"every_minutes": 30}}', 30.0, []),
    ('{"checkpoint": {"every_minutes": 0}}', 0.0, []),  # 0: time-based checkpoints off, as in the config
    ("{}", None, []),
    ('{"checkpoint": {}}', None, []),
    ('{"checkpoint": {"every_minutes": 9}, "eval": {"every": 3}}', 9.0, ["unknown setting 'eval' ignored"]),
    ('{"checkpoint": {"every_minutes": 9, "keep": 2}}', 9.0, ["unknown setting 'checkpoint.keep' ignored"]),
    ('{"checkpoint": {"every_minutes": -1}}', None, ["checkpoint.every_minutes: -1 is not a number"]),
    ('{"checkpoint": {"every_minutes": "10"}}', None, ["checkpoint.every_minutes: '10' is not a number"]),
    ('{"checkpoint": {"every_minutes": true}}', None, ["checkpoint.every_minutes: True is not a number"]),
    ('{"checkpoint": {"every_minutes": NaN}}', None, ["checkpoint.every_minutes: nan is not a number"]),
    ('{"checkpoint": 5}', None, ["checkpoint: not an object"]),
    ("[1, 2]", None, ["not a JSON object but list"]),
    ('{"checkpoint": {"every_min', None, ["not JSON"]),
]


@pytest.mark.parametrize(("text", "minutes", "problems"), PARSE)
def test_parse(text: str, minutes: float | None, problems: list[str]) -> None:
    settings, found = live.parse(text)
    assert settings.every_minutes == minutes
    assert len(found) == len(problems)
    assert all(f.startswith(p) for f, p in zip(found, problems, strict=True))


@pytest.mark.parametrize(
    ("current", "given", "expected"),
    [
        (55.0, 12.5, [live.Change("checkpoint.every_minutes", 55.0, 12.5)]),
        (12.5, 12.5, []),  # the same value: nothing to apply, nothing logged
        (12.5, None, []),  # not given: the current value stays
        (0.0, 20.0, [live.Change("checkpoint.every_minutes", 0.0, 20.0)]),  # time-based ones switched on
    ],
)
def test_changes(current: float, given: float | None, expected: list[live.Change]) -> None:
    assert live.changes(current, live.Settings(every_minutes=given)) == expected


def _kubelet_write(mount: Path, text: str, version: int) -> None:
    """How the kubelet's atomic writer updates a ConfigMap volume: a new timestamped directory, then the
    `..data` symlink swapped to it by a rename; `live.json` is a symlink to `..data/live.json`."""
    target = mount / f"..{version}"
    target.mkdir()
    (target / "live.json").write_text(text)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, mount / "..data")
    if not (mount / "live.json").is_symlink():
        (mount / "live.json").symlink_to("..data/live.json")


def test_the_watcher_sees_a_kubelet_refresh_and_checks_at_most_every_n_seconds(tmp_path: Path) -> None:
    now = [0.0]
    watcher = live.Watcher(tmp_path / "live.json", check_seconds=10.0, clock=lambda: now[0])
    assert watcher.poll() is None  # not there yet (a pod whose volume is late): no error, tried again
    _kubelet_write(tmp_path, json.dumps({"checkpoint": {"every_minutes": 55.0}}), 1)
    assert watcher.poll() is None  # within 10 s of the last look: not even a stat
    now[0] = 10.0
    assert watcher.poll() == live.Settings(55.0)  # the first look at the file
    now[0] = 20.0
    assert watcher.poll() is None  # unchanged
    _kubelet_write(tmp_path, json.dumps({"checkpoint": {"every_minutes": 12.5}}), 2)
    now[0] = 25.0
    assert watcher.poll() is None
    now[0] = 30.0
    assert watcher.poll() == live.Settings(12.5)
    now[0] = 40.0
    assert watcher.poll() is None


def test_a_broken_document_keeps_the_current_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "live.json"
    path.write_text("{not json")
    watcher = live.Watcher(path, check_seconds=0.0)
    assert watcher.poll() == live.Settings()  # nothing to apply
    assert "not JSON" in caplog.text


def test_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(live.LIVE_ENV, raising=False)
    assert live.Watcher.from_env() is None
    monkeypatch.setenv(live.LIVE_ENV, str(tmp_path / "live.json"))
    monkeypatch.setenv(live.CHECK_ENV, "2.5")
    watcher = live.Watcher.from_env()
    assert watcher is not None and watcher.path == tmp_path / "live.json" and watcher.check_seconds == 2.5
    monkeypatch.setenv(live.CHECK_ENV, "soon")
    watcher = live.Watcher.from_env()
    assert watcher is not None and watcher.check_seconds == live.DEFAULT_CHECK_SECONDS
