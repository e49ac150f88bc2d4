"""The operator, trainer and evaluator images built for real (podman or Docker, on the registry-free
bases of images/bases/build-local.sh) and run as a locked-down pod runs them: non-root uid 10001, a
read-only root filesystem, /tmp and HOME the only writable paths, no network.

`make test-images` runs this module; `make test` never does (marker `images`), and without a working
container engine every test skips with one line saying so."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, UID, Images, build

pytestmark = [pytest.mark.images, pytest.mark.slow]

CRD = REPO / "charts" / "tokensmith" / "crds" / "llmtrainingjobs.tokensmith.dev.yaml"
SAMPLE = "/opt/tokensmith/sample-data"
TASKS = ("arc_easy_local", "hellaswag_local")  # examples/tiny-job.yaml's evaluation tasks
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "nvcc", "tcc", "ld")
# Directory names no image may hold anywhere: sources' VCS and venvs, test suites, tool caches.
FORBIDDEN_DIRS = (".git", ".venv", "tests", "test", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".cache")


def _ok(done: subprocess.CompletedProcess[str], what: str) -> str:
    assert done.returncode == 0, (
        f"{what}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.mark.parametrize("image", ["operator", "trainer", "evaluator"])
def test_tokensmith_help_starts_in_each_image(images: Images, image: str) -> None:
    out = _ok(images.run(image, ["--help"]), f"{image}: tokensmith --help")
    assert "Usage: tokensmith" in out
    assert images.inspect(images.refs[image], "{{.Config.User}}") == f"{UID}:{UID}"


def test_operator_prints_the_charts_crd_as_non_root(images: Images) -> None:
    assert _ok(images.run("operator", ["crd"]), "operator: tokensmith crd") == CRD.read_text()
    ids = _ok(images.run("operator", ["-c", "id -u; id -g"], entrypoint="sh"), "operator: id").split()
    assert ids == [str(UID), str(UID)]


@pytest.fixture(scope="module")
def checkpoints(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset, 5 steps, 2 processes (gloo), on the sample the trainer image curated at build
    time, launched as the worker pods launch it (`python -m tokensmith.operator.launch`), checkpoints
    written to a mounted volume."""
    ckpt = tmp_path_factory.mktemp("ckpt")
    ckpt.chmod(0o777)  # the volume as the pod's fsGroup makes it: writable by uid 10001
    sets = {
        "data.train_path": f"{SAMPLE}/train",
        "data.valid_path": f"{SAMPLE}/valid",
        "data.tokenizer_path": f"{SAMPLE}/tokenizer.json",
        "train.max_steps": 5,
        "train.global_batch_tokens": 2048,  # 8 sequences x 128 tokens x 2 processes: one micro-batch
        "train.precision": "fp32",
        "train.log_every_steps": 1,
        "checkpoint.dir": "/ckpt",
    }
    args = ["-m", "tokensmith.operator.launch", "--", "train", "--preset", "tiny"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    env = {"NPROC_PER_NODE": "2", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = images.run("trainer", args, entrypoint="python", volumes=[(ckpt, "/ckpt", "rw")], env=env)
    _ok(done, "trainer: 5 steps of the tiny preset on 2 processes")
    return ckpt


def test_trainer_trains_tiny_on_two_processes_into_a_complete_checkpoint(checkpoints: Path) -> None:
    from tokensmith.trainer import checkpoint

    (latest,) = checkpoint.complete(checkpoints)[-1:]
    assert latest.name == checkpoint.checkpoint_name(5)
    assert checkpoint.verify(latest) == [], "checkpoint fails its own manifest checksums"
    assert sorted(p.name for p in (latest / "ranks").iterdir()) == ["rank-00000.json", "rank-00001.json"]
    assert (latest / "tokenizer.json").is_file() and (latest / "model.safetensors").is_file()
    events = [json.loads(line) for line in (checkpoints / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["step"] == 5
    steps = [e for e in events if e["type"] == "train"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5] and all(e["loss"] > 0 for e in steps)


def test_evaluator_evaluates_that_checkpoint_on_the_bundled_tasks(images: Images, checkpoints: Path) -> None:
    out = checkpoints.parent / "eval-out"
    out.mkdir(exist_ok=True)
    out.chmod(0o777)
    args = ["eval", "--checkpoint", "/ckpt", "--tasks", ",".join(TASKS), "--limit", "10"]
    args += ["--output", "/out/eval.json", "--format", "json"]
    done = images.run(
        "evaluator",
        args,
        volumes=[(checkpoints, "/ckpt", "ro"), (out, "/out", "rw")],
        env={"HF_HUB_OFFLINE": "1"},
    )
    _ok(done, "evaluator: tokensmith eval on the trainer's checkpoint")
    result = json.loads((out / "eval.json").read_text())
    assert result["schema"] == "tokensmith.eval/v1" and result["step"] == 5
    for task in TASKS:
        assert 0.0 <= result["results"][task]["acc"] <= 1.0, task
        assert result["items"][task] == 10, task


@pytest.mark.parametrize("image", ["operator", "trainer", "evaluator"])
def test_no_compiler_and_no_development_leftovers(images: Images, image: str) -> None:
    script = (
        f"for c in {' '.join(COMPILERS)}; do command -v $c; done; "
        "find / -xdev \\( " + " -o ".join(f"-name {d}" for d in FORBIDDEN_DIRS) + " \\) -type d -print; "
        "ls -d /etc/pip.conf /etc/xdg/pip /root/.config/pip /opt/wheels /opt/pypi /src 2>/dev/null; true"
    )
    # As root, so that no directory is hidden from the scan by its permissions.
    found = _ok(images.run(image, ["-c", script], entrypoint="sh", user="0:0"), f"{image}: scan").split()
    assert found == [], f"{image} holds {found}"


@pytest.mark.parametrize("image", ["operator", "trainer", "evaluator"])
def test_labels_tell_the_truth_about_the_base(images: Images, image: str) -> None:
    labels = json.loads(images.inspect(images.refs[image], "{{json .Labels}}"))
    base = images.bases["python" if image == "operator" else "torch"]
    assert labels["org.opencontainers.image.base.name"] == base
    digest = labels["org.opencontainers.image.base.digest"]
    assert digest.startswith("sha256:") and digest == build.base_digest(images.engine, base)
    assert labels["org.opencontainers.image.title"] == f"tokensmith-{image}"
    assert labels["org.opencontainers.image.version"] == images.refs[image].rsplit(":", 1)[1]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert labels["org.opencontainers.image.revision"] == head.stdout.strip()
