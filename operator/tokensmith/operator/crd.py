"""The `LLMTrainingJob` CustomResourceDefinition, generated from the pydantic models in `spec.py`.

Pydantic writes JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3 schema
(https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
#specifying-a-structural-schema): every node has a `type`, no `$ref`, no `anyOf` over types,
`properties` and `additionalProperties` never together, `nullable` instead of a null type, and the
boolean form of `exclusiveMinimum`. `structural_schema` performs exactly these rewrites and keeps
defaults, enums, bounds, patterns and required fields, so `kubectl apply` rejects nonsense before
the operator sees it.

Defaults are dropped under `spec.model` and `spec.trainer`: those sections hold a model preset
whose values must fill every field the user did not write, and a default filled in by the API
server would look like a field the user wrote (a `llama-7b` preset would silently get the `tiny`
layer count). Their defaults apply in the trainer's pydantic models instead.
"""

from __future__ import annotations

import copy
from typing import Any

from tokensmith.operator.names import JOB_NAME_PATTERN, MAX_JOB_NAME
from tokensmith.operator.spec import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
)

# Keys of JSON Schema that carry no meaning for the API server (or that it rejects).
_DROP = {"title", "$schema", "examples", "discriminator", "const"}
# Sub-trees whose defaults must not be applied by the API server (see the module docstring).
_NO_DEFAULTS_UNDER = ("model", "trainer")

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.cluster.nodes"},
    {"name": "GPUs/Node", "type": "integer", "jsonPath": ".spec.cluster.gpusPerNode"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progressText"},
    {"name": "Checkpoint", "type": "integer", "jsonPath": ".status.lastCheckpoint.step"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.step", "priority": 1},
    {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt", "priority": 1},
    {"name": "GPU-hours", "type": "number", "jsonPath": ".status.gpuHours", "priority": 1},
    {"name": "Goodput", "type": "number", "jsonPath": ".status.goodput", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": ".status.lastFailure.reason", "priority": 1},
    # run health (rollback.py): rollbacks so far and the checkpoint they return to
    {"name": "Rollbacks", "type": "integer", "jsonPath": ".status.rollbacks", "priority": 1},
    {"name": "Healthy", "type": "integer", "jsonPath": ".status.lastHealthyCheckpoint.step", "priority": 1},
]


def structural_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a pydantic JSON Schema into a structural OpenAPI v3 schema (pure)."""
    defs = schema.get("$defs", {})
    return _rewrite(schema, defs, keep_defaults=True)


def _rewrite(node: dict[str, Any], defs: dict[str, Any], keep_defaults: bool) -> dict[str, Any]:
    node = copy.deepcopy(node)
    node.pop("$defs", None)
    if "$ref" in node:  # inline the definition; sibling keys (description, default) win
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = {**copy.deepcopy(target), **node}
        return _rewrite(merged, defs, keep_defaults)
    nullable = False
    if "anyOf" in node:
        options = node.pop("anyOf")
        non_null = [o for o in options if o.get("type") != "null"]
        nullable = len(non_null) < len(options)
        if len(non_null) == 1:  # Optional[X]: X, nullable (sibling keys such as description win)
            inner = _rewrite({**non_null[0], **node}, defs, keep_defaults)
            if nullable:
                inner["nullable"] = True
            return inner
        if {o.get("type") for o in non_null} == {"string", "integer"}:
            node["x-kubernetes-int-or-string"] = True
            for option in non_null:  # a bound applies to integers, a pattern to strings (JSON Schema)
                node.update({k: v for k, v in option.items() if k in ("minimum", "maximum", "pattern")})
        else:  # pragma: no cover - the models use no other unions; fail loudly if one appears
            raise ValueError(f"cannot express anyOf {options!r} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {
                name: _rewrite(sub, defs, keep_defaults and name not in _NO_DEFAULTS_UNDER)
                for name, sub in value.items()
            }
        elif key == "items" and isinstance(value, dict):
            out[key] = _rewrite(value, defs, keep_defaults)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _rewrite(value, defs, keep_defaults)
            # False: the API server prunes unknown fields (and `kubectl apply` rejects them)
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "default":
            if keep_defaults and value is not None:
                out[key] = value
        else:
            out[key] = value
    if nullable:
        out["nullable"] = True
    if "const" in node:
        out["enum"] = [node["const"]]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        del out["additionalProperties"]
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        out["type"] = "object"
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def spec_schema() -> dict[str, Any]:
    return structural_schema(LLMTrainingJobSpec.model_json_schema(by_alias=True, mode="validation"))


def status_schema() -> dict[str, Any]:
    schema = structural_schema(LLMTrainingJobStatus.model_json_schema(by_alias=True, mode="validation"))
    return _strip_defaults(schema)  # status is written by the operator and the trainer, never defaulted


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def build_crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    spec = spec_schema()
    spec["description"] = "What to train, on which gang of pods, and how to survive failures."
    status = status_schema()
    status["description"] = "Observed state, written by the operator and by trainer rank 0."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "tokensmith", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["tokensmith", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": f"{API_VERSION} {KIND}: one LLM pretraining run.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {
                                            "type": "string",
                                            "maxLength": MAX_JOB_NAME,
                                            "pattern": JOB_NAME_PATTERN,
                                            "description": "A DNS-1035 label: child names derive from it.",
                                        }
                                    },
                                },
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML document `tokensmith crd` prints and `charts/` holds (stable key order)."""
    import yaml

    header = "# Generated by `tokensmith crd` from tokensmith.operator.spec; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100, allow_unicode=True)
