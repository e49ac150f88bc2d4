"""Live settings: what a running trainer changes without a restart (today the time-based checkpoint
interval, steered by the operator's adaptive checkpointing, issue 15).

The settings are a small JSON document, a partial trainer config: `{"checkpoint": {"every_minutes": 12.5}}`.
On Kubernetes the operator keeps it in the job's live-settings ConfigMap, mounted into every worker (the
kubelet refreshes a mounted ConfigMap by swapping a symlink, so the trainer needs no API access for it);
the local runner writes the same file. `TOKENSMITH_LIVE_SETTINGS` names the file.

Rank 0 watches it: a `stat` at most every `TOKENSMITH_LIVE_CHECK_SECONDS` (default 10) seconds, the file
read and parsed only when its identity (inode, size, mtime) changed. Rank 0 alone decides when a
time-based checkpoint is due, and that flag reaches every rank through the step's one all-reduce
(guard.py), so a new interval needs no collective of its own and the ranks never disagree about it.

`parse` and `changes` are pure; `Watcher` is the small imperative part (a clock and a file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("tokensmith.trainer")

LIVE_ENV = "TOKENSMITH_LIVE_SETTINGS"
CHECK_ENV = "TOKENSMITH_LIVE_CHECK_SECONDS"
DEFAULT_CHECK_SECONDS = 10.0
EVERY_MINUTES = "checkpoint.every_minutes"


@dataclass(frozen=True)
class Settings:
    """The settings a document gives (None: not given, the current value stays)."""

    every_minutes: float | None = None


@dataclass(frozen=True)
class Change:
    setting: str
    old: float
    new: float


def parse(text: str) -> tuple[Settings, list[str]]:
    """The settings in a document, and one line per thing ignored in it (an unknown key, a bad value).
    A document that is not a JSON object gives no settings and one problem."""
    try:
        doc: Any = json.loads(text)
    except ValueError as err:
        return Settings(), [f"not JSON ({err})"]
    if not isinstance(doc, dict):
        return Settings(), [f"not a JSON object but {type(doc).__name__}"]
    problems = [f"unknown setting {key!r} ignored" for key in sorted(doc) if key != "checkpoint"]
    section = doc.get("checkpoint", {})
    if not isinstance(section, dict):
        return Settings(), [*problems, "checkpoint: not an object"]
    problems += [
        f"unknown setting 'checkpoint.{key}' ignored" for key in sorted(section) if key != "every_minutes"
    ]
    minutes = section.get("every_minutes")
    if minutes is None:
        return Settings(), problems
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int | float)
        or not math.isfinite(minutes)
        or minutes < 0
    ):
        return Settings(), [*problems, f"{EVERY_MINUTES}: {minutes!r} is not a number of minutes >= 0"]
    return Settings(every_minutes=float(minutes)), problems


def changes(every_minutes: float, settings: Settings) -> list[Change]:
    """What applying `settings` changes in the trainer's current values."""
    new = settings.every_minutes
    if new is None or new == every_minutes:
        return []
    return [Change(EVERY_MINUTES, every_minutes, new)]


class Watcher:
    """Rank 0's eye on the settings file: `poll()` returns the settings when the file changed since it
    last looked (and at the first look), else None. Never raises: a missing or unreadable file is
    logged once and the current values stay."""

    def __init__(self, path: Path, check_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.check_seconds, self.clock = path, check_seconds, clock
        self._next_check = -math.inf
        self._seen: tuple[int, int, int] | None = None
        self._complained: str | None = None

    @classmethod
    def from_env(cls) -> Watcher | None:
        path = os.environ.get(LIVE_ENV)
        if not path:
            return None
        try:
            every = float(os.environ.get(CHECK_ENV, DEFAULT_CHECK_SECONDS))
        except ValueError:
            every = DEFAULT_CHECK_SECONDS
        return cls(Path(path), max(every, 0.0))

    def poll(self) -> Settings | None:
        now = self.clock()
        if now < self._next_check:
            return None
        self._next_check = now + self.check_seconds
        try:
            st = self.path.stat()  # follows the kubelet's ..data symlink to the current file
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            if identity == self._seen:
                return None
            text = self.path.read_text(encoding="utf-8")
        except OSError as err:
            self._once(
                f"live settings {self.path} unreadable ({err.strerror or err}); keeping the current values"
            )
            return None
        self._seen = identity
        settings, problems = parse(text)
        for problem in problems:
            log.warning("live settings %s: %s", self.path, problem)
        self._complained = None
        return settings

    def _once(self, message: str) -> None:
        if message != self._complained:
            self._complained = message
            log.warning("%s", message)
