"""Structural checks of the Dockerfiles in images/, read the way a reviewer would (multi-stage, pinned
bases, non-root user, OCI labels, one extra). They need no container engine; tests/images builds and
runs the images for real (`make test-images`)."""

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


def test_make_images_builds_every_image_through_build_py() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "images/build.py images" in makefile and "test-images:" in makefile
    tool = (REPO / "images" / "build.py").read_text()
    assert 'IMAGES = ("operator", "trainer", "evaluator")' in tool
    assert "no working container engine" in tool
    for image in IMAGES:
        assert _dockerfile(image).is_file()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_shipped_base_is_pinned_by_digest(image: str) -> None:
    """The runtime stage's default base (what ships, what a scanner sees) is pinned by digest."""
    ref, _ = resolve_from(parse(_dockerfile(image)))[-1]
    assert re.search(r"@sha256:[0-9a-f]{64}$", ref), f"{ref}: pin the runtime base by digest"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_labels_name_the_base_actually_used(image: str) -> None:
    """base.name comes from the build argument, so a replaced base is labelled as what it is."""
    ins = parse(_dockerfile(image))
    last_from = max(i for i, x in enumerate(ins) if x.keyword == "FROM")
    arg = ins[last_from].args.split()[0].strip("${}")
    runtime = ins[last_from:]
    assert any(x.keyword == "ARG" and x.args == arg for x in runtime), f"ARG {arg} not re-declared"
    labels = " ".join(x.args for x in runtime if x.keyword == "LABEL")
    assert f'org.opencontainers.image.base.name="${{{arg}}}"' in labels
    assert 'org.opencontainers.image.base.digest="${BASE_DIGEST}"' in labels


def test_pip_configuration_is_mounted_never_copied() -> None:
    """The host's pip.conf and CA bundle reach pip as build secrets (images/build.py), never a COPY."""
    for image in IMAGES:
        ins = parse(_dockerfile(image))
        pip_runs = [x.args for x in ins if x.keyword == "RUN" and "pip install" in x.args]
        assert pip_runs, image
        for run in pip_runs:
            assert "--mount=type=secret,id=pip.conf" in run and "PIP_CONFIG_FILE=/run/secrets/pip.conf" in run
        copies = " ".join(x.args for x in ins if x.keyword in ("COPY", "ADD"))
        assert "pip" not in copies and ".crt" not in copies, image


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
    assert "ARG DEEPSPEED_AOT_OPS=1" in text and "DS_BUILD_FUSED_ADAM=${DEEPSPEED_AOT_OPS}" in text
    assert "ds_report" in text
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


@pytest.mark.parametrize("image", ["trainer", "evaluator"])
def test_images_write_where_the_operator_mounts_scratch(image: str) -> None:
    """The runtime ENV points HOME, TMPDIR and every cache at the emptyDirs the operator mounts in its
    pods (read-only root filesystem), with the same values the operator sets."""
    from tokensmith.operator.hardening import RUN_AS_GROUP, RUN_AS_USER, SCRATCH_ENV

    ins = parse(_dockerfile(image))
    last_from = max(i for i, x in enumerate(ins) if x.keyword == "FROM")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(x.args for x in ins[last_from:] if x.keyword == "ENV")))
    assert env["HOME"] == "/home/tokensmith" and env["TMPDIR"] == "/tmp"
    for key, value in SCRATCH_ENV:
        assert env.get(key, value) == value, key
    users = [x.args for x in ins[last_from:] if x.keyword == "USER"]
    assert users[-1] == f"{RUN_AS_USER}:{RUN_AS_GROUP}"
