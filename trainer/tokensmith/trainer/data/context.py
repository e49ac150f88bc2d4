"""What the curation stages share: the run's context and the output layout (no heavy imports).

Both `pipeline.py` (which runs the stages) and `report.py` (which reads their statistics) import it,
so neither imports the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokensmith.trainer.data.config import CurateConfig

WORK = ".work"
SPLITS = ("train", "valid")
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class Stage:
    name: str
    pipeline: list[Any]
    tasks: int


@dataclass
class RunContext:
    out: Path
    config: CurateConfig
    files: list[str]
    progress: bool
    log: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)
    executor: str = "local"  # or "ray" (executors.py)

    @property
    def work(self) -> Path:
        return self.out / WORK


def input_bytes(files: Sequence[str]) -> int:
    total = 0
    for path in files:
        if "://" not in path:
            total += os.path.getsize(path)
    return total
