"""Fixtures for the local runner: pydoc token shards (the curation component's sample corpus, through
the real pipeline) and a tiny job manifest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


def _own_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory outside pytest's numbered basetemp: pytest runs started beside this one
    (other sessions on the machine) prune old basetemps, which would delete a run's files under it."""
    path = Path(tempfile.mkdtemp(prefix=f"tokensmith-{prefix}-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shards() -> Iterator[Path]:
    from tokensmith.trainer.data.samples import curate_pydoc

    for path in _own_dir("local-shards"):
        curate_pydoc(path / "curated", vocab_size=512)
        yield path / "curated"


@pytest.fixture
def workspace() -> Iterator[Path]:
    yield from _own_dir("local-run")


def _tiny_manifest(path: Path, name: str = "tiny", nproc: int = 2, **spec_over: Any) -> Path:
    """A small CPU job on /data (mounted with --mount /data=SHARDS): 2048 tokens per step."""
    spec: dict[str, Any] = {
        "model": {"preset": "tiny", "vocab_size": 512, "seq_len": 32, "d_model": 32, "n_heads": 2,
                  "n_kv_heads": 2},
        "data": {"trainPath": "/data/train", "validPath": "/data/valid", "tokens": 256 * 40},
        "trainer": {"train": {"warmup_steps": 2, "log_every_steps": 1, "precision": "fp32"}},
        "parallelism": {"zeroStage": 1, "microBatch": 4, "globalBatchTokens": 256},
        "cluster": {"nodes": 1, "gpusPerNode": 0, "nprocPerNode": nproc, "terminationGracePeriodSeconds": 60},
        "checkpoint": {"volume": {"emptyDir": {}}, "everySteps": 4, "keep": 3},
        "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 0, "hangTimeoutSeconds": 0},
    }  # fmt: skip
    for key, value in spec_over.items():
        spec[key] = {**spec.get(key, {}), **value}
    doc = {"apiVersion": "tokensmith.dev/v1alpha1", "kind": "LLMTrainingJob", "metadata": {"name": name},
           "spec": spec}  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return path


def _run_args(manifest: Path, workdir: Path, shards: Path, *extra: str) -> list[str]:
    cli = [sys.executable, "-m", "tokensmith.cli", "run", str(manifest), "--local"]
    return [*cli, "--workdir", str(workdir), "--mount", f"/data={shards}", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env(), timeout=timeout)


@pytest.fixture
def tiny_manifest() -> Any:
    return _tiny_manifest


@pytest.fixture
def run_args() -> Any:
    return _run_args


@pytest.fixture
def run_cli() -> Any:
    return _run


@pytest.fixture
def run_env() -> dict[str, str]:
    return env()
