"""Shared test set-up: CPU-only DeepSpeed, no network, repository paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# DeepSpeed picks its accelerator at import time; tests always run on CPU (gloo).
os.environ.setdefault("DS_ACCELERATOR", "cpu")
# No hub downloads at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
