"""Every pod the chart can produce (the operator's Deployment and the `helm test` hook) passes the Pod
Security Standard "restricted", in every documented install mode."""

from __future__ import annotations

import pytest

from tokensmith.operator import podsecurity

from .conftest import MODES, Render

pytest.importorskip("helm_python")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_chart_pod_passes_restricted(render: Render, mode: str) -> None:
    docs = render(MODES[mode])
    pods = [d for d in docs if list(podsecurity.pods_of(d))]
    kinds = sorted(d["kind"] for d in pods)
    metrics = MODES[mode].get("metrics", {}).get("enabled", True)
    assert kinds == (["Deployment", "Pod"] if metrics else ["Deployment"])  # Pod: the helm test hook
    for obj in pods:
        assert podsecurity.violations(obj, "restricted") == [], obj["kind"]


def test_the_helm_test_hook_is_checked(render: Render) -> None:
    (hook,) = [d for d in render() if d["kind"] == "Pod"]
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert podsecurity.level_of(hook) == "restricted"
    hook["spec"]["containers"][0]["securityContext"]["privileged"] = True
    assert podsecurity.level_of(hook) == "privileged"  # the check sees this pod's fields
