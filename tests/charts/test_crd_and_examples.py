"""The example jobs in examples/ are valid LLMTrainingJobs: against the CRD's openAPIV3Schema that
the API server will enforce (the generated file in charts/tokensmith/crds/), and against the
operator's own models; every other object in them validates against Kubernetes' schemas.

That the CRD file equals `tokensmith crd` is tests/operator/test_crd.py's check (one test suffices)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import CRD_FILE, REPO, load_crd

kv = pytest.importorskip("kubernetes_validate")

# the example LLMTrainingJobs (examples/ also holds other kinds, e.g. a RayJob for curation, tested with
# the curation tests)
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if "kind: LLMTrainingJob" in p.read_text())
NO_CRD = f"{CRD_FILE.relative_to(REPO)} is not generated yet (`tokensmith crd`, the operator's task)"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _jobs(path: Path) -> list[dict[str, Any]]:
    return [d for d in _docs(path) if d["kind"] == "LLMTrainingJob"]


def _job_schema(crd: dict[str, Any], api_version: str) -> dict[str, Any]:
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def _crd_validator(crd: dict[str, Any], api_version: str) -> jsonschema.Draft4Validator:
    # CRD schemas are OpenAPI 3.0 schemas, whose keywords (boolean exclusiveMinimum, ...) are draft 4's.
    return jsonschema.Draft4Validator(_job_schema(crd, api_version))


def test_the_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"tiny-job.yaml", "llama-7b-h100.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_jobs_validate_against_the_crd(path: Path) -> None:
    crd = load_crd()
    if crd is None:
        pytest.skip(NO_CRD)
    jobs = _jobs(path)
    assert jobs, f"{path.name} holds no LLMTrainingJob"
    for job in jobs:
        assert job["apiVersion"] == f"{crd['spec']['group']}/{job['apiVersion'].split('/')[1]}"
        assert job["kind"] == crd["spec"]["names"]["kind"]
        errors = sorted(_crd_validator(crd, job["apiVersion"]).iter_errors(job), key=str)
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("spec", "cluster", "nodes"), 0, "nodes"),
        (("spec", "cluster", "gpusPerNode"), "eight", "gpusPerNode"),
        (("spec", "restartPolicy", "retryOn"), ["Sometimes"], "retryOn"),
    ],
)
def test_the_crd_schema_rejects_nonsense(path: tuple[str, ...], value: Any, where: str) -> None:
    """The same validation catches broken jobs, so the passing examples above prove something."""
    crd = load_crd()
    if crd is None:
        pytest.skip(NO_CRD)
    job = copy.deepcopy(_jobs(REPO / "examples" / "llama-7b-h100.yaml")[0])
    node = job
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = list(_crd_validator(crd, job["apiVersion"]).iter_errors(job))
    assert errors and any(where in [str(p) for p in e.absolute_path] for e in errors)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_jobs_validate_against_the_operator_models(path: Path) -> None:
    from tokensmith.operator.spec import effective_trainer_config, parse_manifest

    for job in _jobs(path):
        metadata, spec = parse_manifest(job)
        # The trainer config the workers would receive is valid too (batch divisibility etc.).
        effective_trainer_config(spec, metadata["name"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_other_objects_in_examples_validate_against_kubernetes(path: Path) -> None:
    for doc in _docs(path):
        if doc["kind"] != "LLMTrainingJob":
            kv.validate(doc, kv.utils.latest_version(), strict=True)


def test_the_7b_example_is_32_nodes_of_8_h100() -> None:
    (job,) = _jobs(REPO / "examples" / "llama-7b-h100.yaml")
    cluster = job["spec"]["cluster"]
    assert (cluster["nodes"], cluster["gpusPerNode"]) == (32, 8)
    assert "H100" in cluster["nodeSelector"]["nvidia.com/gpu.product"]
    assert job["spec"]["model"]["preset"] == "llama-7b"


def test_the_tiny_example_needs_no_gpu() -> None:
    (job,) = _jobs(REPO / "examples" / "tiny-job.yaml")
    assert job["spec"]["cluster"]["gpusPerNode"] == 0


def test_the_crd_in_the_chart_is_a_valid_kubernetes_object() -> None:
    crd = load_crd()
    if crd is None:
        pytest.skip(NO_CRD)
    kv.validate(crd, kv.utils.latest_version(), strict=True)
    assert crd["metadata"]["name"] == CRD_FILE.name.removesuffix(".yaml")
