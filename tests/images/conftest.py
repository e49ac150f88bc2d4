"""Fixtures for the image tests: the container engine, the images built once per session on the
registry-free local bases (images/bases/build-local.sh), and a runner that starts containers the way
a locked-down pod does (read-only root, writable /tmp and HOME only, non-root)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from tokensmith.operator.hardening import SCRATCH_VOLUMES

REPO = Path(__file__).resolve().parents[2]
UID = 10001
# What each image may write with a read-only root filesystem: the emptyDirs the operator gives its pods
# (tokensmith.operator.hardening) and the chart's operator Deployment (/tmp); /dev/shm is the engine's
# own shared-memory mount (the pod's memory-backed emptyDir).
_SCRATCH = [path for _, path in SCRATCH_VOLUMES]
WRITABLE = {"operator": ["/tmp"], "trainer": _SCRATCH, "evaluator": _SCRATCH}


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tokensmith_images_build", REPO / "images" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()


@dataclass
class Images:
    engine: str
    refs: dict[str, str]
    bases: dict[str, str]
    limits: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)

    def run(
        self,
        image: str,
        args: Sequence[str],
        *,
        entrypoint: str | None = None,
        volumes: Sequence[tuple[Path, str, str]] = (),
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """`ENGINE run` as a pod with readOnlyRootFilesystem runs it: only WRITABLE[image] (tmpfs,
        owned by the image's user as an fsGroup emptyDir is) and the given volumes are writable."""
        cmd = [
            self.engine,
            "run",
            "--rm",
            "--network",
            "none",
            *build.run_args(self.engine, self.limits, build.oci_runtime()),
        ]
        cmd += ["--read-only", "--shm-size", "512m"]
        if self.engine == "podman":
            cmd += ["--read-only-tmpfs=false"]
        for path in WRITABLE[image]:
            cmd += [
                "--mount",
                f"type=tmpfs,destination={path},chown"
                if self.engine == "podman"
                else f"type=tmpfs,destination={path},tmpfs-mode=1777",
            ]
        for host, target, mode in volumes:
            cmd += ["-v", f"{host}:{target}:{mode}"]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        if entrypoint:
            cmd += ["--entrypoint", entrypoint]
        if user:
            cmd += ["--user", user]
        cmd += [self.refs[image], *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def inspect(self, ref: str, fmt: str) -> str:
        done = subprocess.run(
            [self.engine, "image", "inspect", "--format", fmt, ref], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _step(cmd: Sequence[str], what: str, timeout: float) -> float:
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return time.monotonic() - start


@pytest.fixture(scope="session")
def images() -> Images:
    """The three images, built (or found in the layer cache) on the local bases."""
    engine = build.detect_engine()
    if engine is None:
        pytest.skip("no working container engine (docker or podman); see images/README.md")
    if os.geteuid() != 0:
        pytest.skip("the image tests build their bases with mmdebstrap and rootful podman: run them as root")
    pyproject = (REPO / "pyproject.toml").read_text()
    version = build.project_version(pyproject)
    refs = {name: build.image_ref(name, version) for name in build.IMAGES}
    out = Images(engine, refs, build.local_bases(build.torch_version(pyproject)), build.hard_limits())
    out.seconds["bases"] = _step(
        ["env", f"ENGINE={engine}", "images/bases/build-local.sh"], "images/bases/build-local.sh", 1800
    )
    out.seconds["images"] = _step(
        [sys.executable, "images/build.py", "images", "--local-bases", "--engine", engine],
        "make images",
        2400,
    )
    return out
