"""Chart fixtures: the chart loaded once with the real Helm SDK (helm-python-sdk, Helm v4's Go
library) and a renderer that returns the manifests as parsed objects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "tokensmith"
CRD_FILE = CHART / "crds" / "llmtrainingjobs.tokensmith.dev.yaml"
RELEASE = "tokensmith"
NAMESPACE = "tokensmith-system"

# The documented install modes (charts/tokensmith/README.md); each must lint, render and validate.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": {"watch": {"mode": "cluster"}},
    "namespaced": {"watch": {"mode": "namespaced", "namespaces": ["ml-team", "research"]}},
    "namespaced-release-ns": {"watch": {"mode": "namespaced"}},
    "metrics-servicemonitor": {
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}
    },
    "metrics-off": {"metrics": {"enabled": False}},
    "two-replicas": {"replicaCount": 2},
    "standalone": {"peering": {"enabled": False}},
    "debug-logs": {"operator": {"logLevel": "debug"}},
    "network-policies": {"networkPolicy": {"enabled": True, "jobs": True}},
    "relaxed-policy": {
        "policy": {
            "volumeTypes": ["persistentVolumeClaim", "hostPath"],
            "imagePrefixes": ["registry.example.com/ml/", "ghcr.io/tokensmith/"],
            "jobServiceAccounts": {
                "allowed": True,
                "selector": {"tokensmith.dev/job-account": "true", "team": "ml"},
            },
            "capabilities": ["IPC_LOCK"],
        }
    },
}

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    helm = pytest.importorskip("helm_python")
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: Any) -> Render:
    """values -> every object the chart renders (NOTES.txt left out), as dicts."""

    def _render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[Manifest]:
        out = chart.render(values=values or {}, name=RELEASE, namespace=namespace, is_install=True)
        docs: list[Manifest] = []
        for path, text in sorted(out.items()):
            if path.endswith("NOTES.txt"):
                continue
            docs.extend(d for d in yaml.safe_load_all(text) if d)
        return docs

    return _render


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def load_crd() -> dict[str, Any] | None:
    """The generated LLMTrainingJob CRD in the chart, or None while the operator has not written it."""
    if not CRD_FILE.exists():
        return None
    return yaml.safe_load(CRD_FILE.read_text())
