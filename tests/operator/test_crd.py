"""The generated CRD: equal to the checked-in copy, accepted by the real apiextensions schema,
structural, and rejecting nonsense before the operator sees it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.operator.crd import build_crd, crd_yaml
from tokensmith.operator.spec import LLMTrainingJobSpec, build_manifest

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO / "charts/tokensmith/crds/llmtrainingjobs.tokensmith.dev.yaml"
CKPT = {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}}


def test_checked_in_crd_is_the_generated_one() -> None:
    assert CHECKED_IN.read_text() == crd_yaml(), (
        "charts/tokensmith/crds is stale: run `tokensmith crd --output "
        "charts/tokensmith/crds/llmtrainingjobs.tokensmith.dev.yaml`"
    )


def test_cli_prints_and_writes_the_crd(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["crd"])
    assert result.exit_code == 0 and result.output == crd_yaml()
    out = tmp_path / "crd.yaml"
    result = runner.invoke(cli, ["crd", "--format", "json", "--output", str(out)])
    assert result.exit_code == 0 and yaml.safe_load(out.read_text()) == build_crd()


def test_crd_validates_against_the_real_apiextensions_schema() -> None:
    kubernetes_validate.validate(build_crd(), kubernetes_validate.latest_version(), strict=True)


def _walk(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """The structural-schema rules the API server enforces (apiextensions validation)."""
    for bad in ("$ref", "anyOf", "oneOf", "allOf", "not", "$defs", "definitions", "const", "title"):
        if bad in node:
            problems.append(f"{path}: has {bad}")
    free = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not free:
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(
        node["exclusiveMinimum"], bool
    ):
        problems.append(f"{path}: numeric exclusiveMinimum (OpenAPI v3 wants a boolean)")
    if "default" in node and node["default"] is None:
        problems.append(f"{path}: null default")
    for name, sub in (node.get("properties") or {}).items():
        _walk(sub, f"{path}.{name}", problems)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", problems)


def test_schema_is_structural() -> None:
    version = build_crd()["spec"]["versions"][0]
    problems: list[str] = []
    _walk(version["schema"]["openAPIV3Schema"], "", problems)
    assert problems == []
    assert version["subresources"] == {"status": {}}
    assert build_crd()["spec"]["names"]["shortNames"] == ["llmjob"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Nodes", "GPUs/Node", "Progress", "Checkpoint", "Restarts", "Age"} <= columns


def test_no_defaults_under_model_and_trainer() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def defaults(node: object) -> list[object]:
        if isinstance(node, dict):
            own = [node["default"]] if "default" in node else []
            return own + [d for v in node.values() for d in defaults(v)]
        return [d for v in node for d in defaults(v)] if isinstance(node, list) else []

    # a default filled in by the API server would override a preset's value (see crd.py)
    assert defaults(spec["properties"]["trainer"]) == [] and defaults(spec["properties"]["model"]) == []
    assert spec["properties"]["cluster"]["properties"]["nodes"]["default"] == 1
    assert spec["properties"]["cluster"]["properties"]["nodes"]["minimum"] == 1


def _draft4(node: Any) -> Any:
    """OpenAPI v3 -> JSON Schema draft 4 for validation here: `nullable` becomes a null type."""
    if isinstance(node, list):
        return [_draft4(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _draft4(v) for k, v in node.items() if not k.startswith("x-kubernetes") and k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    return out


def validator() -> jsonschema.Draft4Validator:
    schema = _draft4(copy.deepcopy(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft4Validator(schema)


EXAMPLES = {
    "tiny-cpu": {
        "checkpoint": CKPT,
        "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 2, "image": "tokensmith/trainer:dev"},
        "data": {"trainPath": "/data/train", "validPath": "/data/valid", "tokens": 2_000_000},
        "model": {"preset": "tiny"},
        "evaluation": {"tasks": ["tokensmith_local"], "everyCheckpoints": 2, "limit": 20},
        "budget": {"maxGPUHours": 2},
    },
    "llama-7b-h100": {
        "checkpoint": {**CKPT, "everySteps": 500, "keep": 3},
        "model": {"preset": "llama-7b"},
        "data": {"trainPath": "s3://bucket/train", "tokens": 140_000_000_000},
        "parallelism": {"zeroStage": 3, "microBatch": 2, "globalBatchTokens": 4_194_304},
        "cluster": {
            "nodes": 32,
            "gpusPerNode": 8,
            "schedulerName": "volcano",
            "priorityClassName": "training",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "96", "memory": "1600Gi"}, "limits": {"memory": "1600Gi"}},
            "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
        },
        "restartPolicy": {"maxRestarts": 20, "backoffSeconds": 60, "hangTimeoutSeconds": 900},
        "evaluation": {"tasks": ["hellaswag", "arc_easy"], "everyCheckpoints": 4, "gpus": 1},
        "budget": {"maxCostUSD": 500000, "pricePerGPUHour": 2.5},
    },
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_pass_the_models_and_the_crd_schema(name: str) -> None:
    manifest = build_manifest(name, LLMTrainingJobSpec.model_validate(EXAMPLES[name]))
    validator().validate(manifest)


def test_example_files_in_the_repository_validate() -> None:
    files = [p for d in ("examples", "charts/tokensmith/examples") for p in sorted((REPO / d).glob("*.y*ml"))]
    checked = 0
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "LLMTrainingJob":
                validator().validate(doc)
                LLMTrainingJobSpec.model_validate(doc["spec"])
                checked += 1
    if not checked:
        pytest.skip("no LLMTrainingJob example files in examples/ or charts/tokensmith/examples/ yet")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"cluster": {"nodes": 0}}, "less than the minimum of 1"),
        ({"budget": {"maxGPUHours": -5}}, "less than or equal to the minimum of 0"),
        ({"checkpoint": {"mountPath": "/c"}}, "'volume' is a required property"),
        ({"checkpoint": {"volume": {}}}, "should be non-empty"),
        ({"parallelism": {"zeroStage": 4}}, "4 is not one of [0, 1, 2, 3"),
        ({"restartPolicy": {"retryOn": ["Sometimes"]}}, "'Sometimes' is not one of"),
    ],
)
def test_schema_rejects_nonsense(change: dict, fragment: str) -> None:
    spec = {**copy.deepcopy(EXAMPLES["tiny-cpu"]), **change}
    manifest = {
        "apiVersion": "tokensmith.dev/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": "x"},
        "spec": spec,
    }
    errors = [e.message for e in validator().iter_errors(manifest)]
    assert any(fragment in e for e in errors), errors


def test_schema_rejects_names_children_cannot_derive_from() -> None:
    manifest = build_manifest("a" * 46, LLMTrainingJobSpec.model_validate(EXAMPLES["tiny-cpu"]))
    assert list(validator().iter_errors(manifest))
