"""Structural checks of the Dockerfiles in images/. No Docker engine exists where the tests run, so
the images are not built here (`make images` builds them where one exists); these tests read the
files the way a reviewer would: multi-stage, pinned bases, non-root user, OCI labels, one extra."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO

IMAGES = {
    "operator": "operator",
    "trainer": "trainer,ray",
    "evaluator": "evaluator",
}  # image -> extras (the trainer image is also the Ray image of curation)
OCI_LABELS = ("title", "description", "source", "licenses", "version", "revision")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def resolve_from(instructions: list[Instruction]) -> list[tuple[str, str | None]]:
    """(image reference with ARG defaults substituted, stage name) for every FROM."""
    args: dict[str, str] = {}
    stages: list[tuple[str, str | None]] = []
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args and not stages:
            key, _, default = ins.args.partition("=")
            args[key] = default.strip('"')
        elif ins.keyword == "FROM":
            parts = ins.args.split()
            ref = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), parts[0]
            )
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append((ref, name))
    return stages


def _dockerfile(image: str) -> Path:
    return REPO / "images" / image / "Dockerfile"


def test_images_are_not_built_here_but_make_knows_them() -> None:
    makefile = (REPO / "Makefile").read_text()
    for image in IMAGES:
        assert f"images/{image}/Dockerfile" in makefile
    assert "no Docker engine here; skipping" in makefile


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_with_pinned_bases(image: str) -> None:
    stages = resolve_from(parse(_dockerfile(image)))
    assert len(stages) >= 2, "build and runtime stages"
    names = {name for _, name in stages if name}
    for ref, _ in stages:
        if ref in names:
            continue
        assert "$" not in ref, f"{ref}: unresolved build argument"
        assert "@sha256:" in ref or re.search(r":[^/:]*\d+\.\d+[^/:]*$", ref), (
            f"{ref}: not pinned to a version"
        )
        assert not ref.endswith(":latest") and ":" in ref.rsplit("/", 1)[-1], f"{ref}: floating tag"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runs_as_a_numeric_non_root_user(image: str) -> None:
    ins = parse(_dockerfile(image))
    last_from = max(i for i, x in enumerate(ins) if x.keyword == "FROM")
    users = [x.args for x in ins[last_from:] if x.keyword == "USER"]
    assert users, "the runtime stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric non-zero uid for runAsNonRoot"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_oci_labels(image: str) -> None:
    ins = parse(_dockerfile(image))
    labels = " ".join(x.args for x in ins if x.keyword == "LABEL")
    for key in OCI_LABELS:
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert f'org.opencontainers.image.title="tokensmith-{image}"' in labels


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_installs_only_its_own_extra(image: str) -> None:
    runs = " ".join(x.args for x in parse(_dockerfile(image)) if x.keyword == "RUN")
    extras = set(re.findall(r'pip install [^&]*?"?\.\[([\w,-]+)\]', runs))
    assert extras == {IMAGES[image]}, extras


def test_trainer_has_deepspeed_ops_and_rdma() -> None:
    text = _dockerfile("trainer").read_text()
    assert "DS_BUILD_FUSED_ADAM=1" in text and "ds_report" in text
    assert "libibverbs1" in text  # NCCL over InfiniBand/RoCE
    assert "cuda" in resolve_from(parse(_dockerfile("trainer")))[-1][0]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        x.strip()
        for x in (REPO / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "*", "whitelist: ignore everything, then re-include the sources"
    assert {"!pyproject.toml", "!planner/", "!operator/", "!trainer/", "!evaluator/"} <= set(lines)
    assert not any(x.startswith("!.venv") or x.startswith("!.git") for x in lines)


def test_tiny_example_reads_the_sample_data_the_trainer_image_curates() -> None:
    """examples/tiny-job.yaml trains on shards baked into the trainer image: same path, and a BPE
    vocabulary that fits the `tiny` preset."""
    import yaml

    from tokensmith.planner.arch import PRESETS

    runs = " ".join(x.args for x in parse(_dockerfile("trainer")) if x.keyword == "RUN")
    curate = re.search(r"tokensmith curate (\S+) --out (\S+)(.*?)(&&|$)", runs)
    assert curate, "the trainer image curates no sample data"
    out, options = curate.group(2), curate.group(3)
    vocab = re.search(r"--vocab-size (\d+)", options)
    assert vocab and int(vocab.group(1)) <= PRESETS["tiny"]["vocab_size"]
    job = next(
        d
        for d in yaml.safe_load_all((REPO / "examples" / "tiny-job.yaml").read_text())
        if d["kind"] == "LLMTrainingJob"
    )
    assert job["spec"]["model"]["preset"] == "tiny"
    for key in ("trainPath", "validPath", "tokenizerPath"):
        assert job["spec"]["data"][key].startswith(out + "/"), key
