"""The CRD's CEL rules (`x-kubernetes-validations`, generated from the models) evaluated with a real
CEL implementation (cel-python), and checked to agree with the models' own validators: the API
server and the operator reject the same specs with the same message."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from tokensmith.operator.crd import build_crd
from tokensmith.operator.spec import LLMTrainingJobSpec

celpy = pytest.importorskip("celpy")

BASE: dict[str, Any] = {
    "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
    "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 2},
    "data": {"tokens": 100_000},
    "parallelism": {"microBatch": 2, "globalBatchTokens": 2048},
}


def _spec_schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _rules(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every (field path, schema node) that carries CEL rules."""
    out = [(path, schema)] if schema.get("x-kubernetes-validations") else []
    for name, sub in (schema.get("properties") or {}).items():
        out += _rules(sub, (*path, name))
    return out


def _typed(value: Any, schema: dict[str, Any]) -> Any:
    """JSON as the API server hands it to CEL: `number` fields are doubles, objects by their schema."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        return {k: _typed(v, props.get(k, {})) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v, schema.get("items") or {}) for v in value]
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def cel_errors(spec: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules this spec breaks (rules on absent fields do not run, as in Kubernetes)."""
    env = celpy.Environment()
    messages = []
    for path, node in _rules(_spec_schema()):
        value: Any = spec
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        activation = {"self": celpy.json_to_cel(_typed(value, node))}
        for rule in node["x-kubernetes-validations"]:
            program = env.program(env.compile(rule["rule"]))
            result = program.evaluate(activation)
            assert isinstance(result, celpy.celtypes.BoolType), (rule["rule"], result)
            if not result:
                messages.append(rule["message"])
    return messages


def model_errors(spec: dict[str, Any]) -> list[str]:
    try:
        LLMTrainingJobSpec.model_validate(spec)
    except ValidationError as err:
        return [str(e["msg"]).removeprefix("Value error, ") for e in err.errors()]
    return []


def with_(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    for key, value in changes.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


CASES = {
    "valid": (with_(), None),
    "gpu-one-proc-per-gpu": (with_(cluster={"gpusPerNode": 8, "nprocPerNode": 8, "nodes": 1}), None),
    "more-procs-than-gpus": (with_(cluster={"gpusPerNode": 4, "nprocPerNode": 8}), "one process per GPU"),
    "cost-without-price": (with_(budget={"maxCostUSD": 100}), "needs budget.pricePerGPUHour"),
    "cost-with-price": (with_(budget={"maxCostUSD": 100, "pricePerGPUHour": 2.5}), None),
    "backoff-cap-below-base": (
        with_(restartPolicy={"backoffSeconds": 60, "maxBackoffSeconds": 30}),
        "maxBackoffSeconds must be 0",
    ),
    "backoff-uncapped": (with_(restartPolicy={"backoffSeconds": 60, "maxBackoffSeconds": 0}), None),
    "eval-gpus-without-tasks": (with_(evaluation={"gpus": 1}), "reserve GPUs for nothing"),
    "eval-gpus-with-tasks": (with_(evaluation={"gpus": 1, "tasks": ["hellaswag"]}), None),
    "capabilities-without-baseline": (
        with_(cluster={"addCapabilities": ["IPC_LOCK"]}),
        "addCapabilities needs cluster.securityProfile: baseline",
    ),
    "capabilities-with-baseline": (
        with_(cluster={"addCapabilities": ["IPC_LOCK"], "securityProfile": "baseline"}),
        None,
    ),
    "topology-without-volcano": (
        with_(scheduling={"networkTopology": {"mode": "hard"}}),
        "needs cluster.schedulerName: volcano",
    ),
    "topology-with-volcano": (
        with_(
            cluster={"schedulerName": "volcano"},
            scheduling={"queueName": "q", "networkTopology": {"mode": "soft", "highestTierAllowed": 2}},
        ),
        None,
    ),
}


def test_the_crd_carries_rules_on_the_sections_that_have_cross_field_constraints() -> None:
    paths = {path for path, _ in _rules(_spec_schema())}
    assert {(), ("cluster",), ("budget",), ("restartPolicy",), ("evaluation",)} <= paths


@pytest.mark.parametrize("case", list(CASES))
def test_cel_and_the_models_agree(case: str) -> None:
    spec, expected = CASES[case]
    cel, models = cel_errors(spec), model_errors(spec)
    if expected is None:
        assert cel == [] and models == []
    else:
        assert len(cel) == 1 and expected in cel[0], cel
        assert cel == models  # the same one-line message from the API server and from the operator


def test_every_rule_compiles() -> None:
    env = celpy.Environment()
    for _, node in _rules(_spec_schema()):
        for rule in node["x-kubernetes-validations"]:
            env.compile(rule["rule"])
            assert rule["message"] and len(rule["message"]) < 200


def test_the_example_jobs_pass_every_rule() -> None:
    from pathlib import Path

    import yaml

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    jobs = [
        d
        for path in examples
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "LLMTrainingJob"
    ]
    assert jobs
    for job in jobs:
        assert cel_errors(job["spec"]) == [], job["metadata"]["name"]
