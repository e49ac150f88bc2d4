"""Each extra installed alone, in a fresh virtualenv, runs what its image runs.

The development .venv has every extra at once, so a dependency one extra forgets can hide behind
another (datatrove imports `xxhash` only when `tokensmith curate` hashes, and only the `all` set
pulled it in: the trainer image failed to build). Here the wheel is installed with one extra into an
empty venv (pip's own configuration, cache and find-links make that a local copy, not a download) and
the commands the matching image runs are run: imports of every module of its components, then the
real commands (`tokensmith curate` for the trainer, `tokensmith crd` for the operator, the bundled
task list for the evaluator)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "charts" / "tokensmith" / "crds" / "llmtrainingjobs.tokensmith.dev.yaml"

pytestmark = pytest.mark.slow

# extra -> packages whose every module must import (what the image runs), minus modules that belong
# to another extra by design (with the reason).
PACKAGES = {
    "planner": ["tokensmith.planner", "tokensmith.core"],
    "operator": ["tokensmith.operator", "tokensmith.planner", "tokensmith.core"],
    # The trainer image runs `python -m tokensmith.operator.launch` (torchrun's launcher) in every pod.
    "trainer": ["tokensmith.trainer", "tokensmith.operator.launch", "tokensmith.operator.spec"],
    "evaluator": ["tokensmith.evaluator"],
}
NOT_IN = {
    "tokensmith.operator.testing": "the emulated cluster for tests (the `test` extra's kmock)",
    "tokensmith.operator.soak": "the chaos soak harness, on the emulated cluster (the `test` extra's kmock)",
}

IMPORT_ALL = """
import importlib, pkgutil, sys
skip = set(sys.argv[2].split(",")) if sys.argv[2] else set()
failed = []
for name in sys.argv[1].split(","):
    mod = importlib.import_module(name)
    names = [name] + [m.name for m in pkgutil.walk_packages(getattr(mod, "__path__", []), name + ".")]
    for sub in names:
        if sub in skip:
            continue
        try:
            importlib.import_module(sub)
        except Exception as err:
            failed.append(f"{sub}: {type(err).__name__}: {err}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("tokensmith-*.whl")
    return path


def _venv(tmp: Path, wheel: Path, extra: str) -> Path:
    """A fresh venv with only tokensmith[extra]; returns its bin directory."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
    bin_dir = tmp / "venv" / "bin"
    # --no-compile: byte-compiling torch costs more than this whole test's imports.
    spec = f"tokensmith[{extra}] @ {wheel.as_uri()}"
    done = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", spec],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def _commands(extra: str, bin_dir: Path, tmp: Path) -> list[list[str | Path]]:
    ts = bin_dir / "tokensmith"
    if extra == "planner":
        return [[ts, "plan", "--help"]]
    if extra == "operator":
        return [[ts, "operator", "run", "--help"], [ts, "crd"]]
    if extra == "trainer":
        # The image curates its sample at build time: datatrove's hashing, spaCy's word splitter and
        # the BPE trainer all load lazily, so only running it proves the extra complete.
        return [
            [bin_dir / "python", "-c", "import deepspeed, torch.distributed.launcher.api"],
            [ts, "train", "--preset", "tiny", "--print-config"],
            *[[ts, "curate", "/usr/share/common-licenses", "--out", tmp / "curated", "--vocab-size", "300",
               "--valid-fraction", "0.2", "--tasks", "1", "--workers", "1", "--no-progress"]],
        ]  # fmt: skip
    return [[ts, "eval", "--list-tasks", "--bundled-only"]]


@pytest.mark.parametrize("extra", sorted(PACKAGES))
def test_extra_alone_runs_its_image_commands(extra: str, wheel: Path, tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path, wheel, extra)
    done = _run([bin_dir / "python", "-c", IMPORT_ALL, ",".join(PACKAGES[extra]), ",".join(NOT_IN)], tmp_path)
    assert done.returncode == 0, (
        f"tokensmith[{extra}] alone fails to import:\n{done.stdout}{done.stderr[-2000:]}"
    )
    done = _run([bin_dir / "tokensmith", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for cmd in _commands(extra, bin_dir, tmp_path):
        done = _run(cmd, tmp_path)
        assert done.returncode == 0, f"{cmd[1:]} with tokensmith[{extra}] alone:\n{done.stderr[-3000:]}"
        if cmd[1:] == ["crd"]:
            assert done.stdout == CRD.read_text(), "the operator's CRD differs from the chart's copy"
    if extra == "trainer":
        assert (tmp_path / "curated" / "tokenizer.json").is_file()
        assert list((tmp_path / "curated" / "train").iterdir())
