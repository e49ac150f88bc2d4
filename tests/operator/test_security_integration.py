"""The admission policy on the emulated cluster (the real kopf operator, tokensmith.operator.testing),
configured the way the Helm chart configures it: the chart is rendered with the real Helm SDK, the
Deployment's arguments are parsed by the real `tokensmith operator run` command, and the policy they
produce is the one the operator under test enforces."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from tokensmith.operator import hardening, names, podsecurity
from tokensmith.operator.children import Defaults
from tokensmith.operator.spec import build_manifest
from tokensmith.operator.testing import EmulatedCluster, OperatorUnderTest

helm = pytest.importorskip("helm_python")
pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
NS = "ml"
SPEC: dict[str, Any] = {
    "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}},
    "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 1},
    "data": {"tokens": 100_000},
    "parallelism": {"microBatch": 2, "globalBatchTokens": 1024 * 4},
    "restartPolicy": {"hangTimeoutSeconds": 0},
}
# The recommended setting: only the chart's own registry; everything else at the chart's defaults.
STRICT = {"policy": {"imagePrefixes": ["ghcr.io/tokensmith/"]}}
RELAXED = {
    "policy": {
        "volumeTypes": ["persistentVolumeClaim", "hostPath"],
        "imagePrefixes": ["ghcr.io/tokensmith/", "docker.io/acme/"],
        "jobServiceAccounts": {"allowed": True},
    }
}


def job(name: str, **cluster: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    volume = cluster.pop("checkpoint_volume", None)
    if volume is not None:
        spec["checkpoint"]["volume"] = volume
    spec["cluster"].update(cluster)
    return build_manifest(name, spec, namespace=NS)


VIOLATIONS = {
    "hostpath": ({"checkpoint_volume": {"hostPath": {"path": "/var/lib/kubelet"}}}, "hostPath volume"),
    "foreign-image": ({"image": "docker.io/acme/trainer:1"}, "not from an allowed registry"),
    "own-account": ({"serviceAccountName": "default"}, "may not choose their service account"),
}


def operator_from_chart(cluster: EmulatedCluster, values: dict[str, Any]) -> OperatorUnderTest:
    """The operator as the chart would start it with these values."""
    from tokensmith.operator.cli import admission_policy
    from tokensmith.operator.cli import operator as operator_group

    with helm.Chart.load(REPO / "charts" / "tokensmith") as chart:
        out = chart.render(values=values, name="tokensmith", namespace="tokensmith-system", is_install=True)
    texts = [text for path, text in out.items() if not path.endswith("NOTES.txt")]
    docs = [d for text in texts for d in yaml.safe_load_all(text) if d]
    (deployment,) = [d for d in docs if d.get("kind") == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ctx = operator_group.commands["run"].make_context("run", list(container["args"][2:]))
    defaults = Defaults(
        trainer_image="tokensmith/trainer:test",
        evaluator_image="tokensmith/evaluator:test",
        network_policy=ctx.params["network_policy"],
    )
    return OperatorUnderTest(cluster, interval=0.3, policy=admission_policy(ctx.params), defaults=defaults)


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[EmulatedCluster]:
    async with EmulatedCluster() as c:
        yield c


def phase(c: EmulatedCluster, name: str) -> str | None:
    return ((c.get("llmtrainingjobs", NS, name) or {}).get("status") or {}).get("phase")


def owned(c: EmulatedCluster, name: str) -> list[str]:
    """Every object in the namespace that belongs to the job."""
    out = []
    for plural in ("pods", "services", "configmaps", "serviceaccounts", "roles", "rolebindings", "jobs"):
        for obj in c.objects(plural, NS):
            if (obj["metadata"].get("labels") or {}).get(names.LABEL_JOB) == name:
                out.append(f"{plural}/{obj['metadata']['name']}")
    return out


async def test_violations_fail_before_any_pod_and_run_once_relaxed(cluster: EmulatedCluster) -> None:
    async with operator_from_chart(cluster, STRICT):
        for name, (fields, _) in VIOLATIONS.items():
            await cluster.apply_job(job(name, **fields))
        await cluster.apply_job(job("fine"))
        for name, (_, reason) in VIOLATIONS.items():
            await cluster.wait_for(lambda n=name: phase(cluster, n) == "Failed", what=f"{name} Failed")
            status = cluster.job(NS, name)["status"]
            assert status["lastFailure"]["reason"] == "PolicyViolation"
            assert reason in status["message"] and "\n" not in status["message"]
            failed = [c for c in status["conditions"] if c["type"] == "Failed"]
            assert failed[0]["reason"] == "PolicyViolation"
        await cluster.wait_for(lambda: len(cluster.workers(NS, "fine")) == 2, what="the compliant job's gang")
        for name in VIOLATIONS:
            assert owned(cluster, name) == [], name  # no pod, no child of any kind
        # the compliant job's pods are restricted, and only its rank 0 holds a token
        pods = sorted(cluster.workers(NS, "fine"), key=lambda p: p["metadata"]["name"])
        assert all(podsecurity.passes(p) for p in pods)
        assert [hardening.mounts_token(p["spec"]) for p in pods] == [True, False]
        for name in VIOLATIONS:  # while the operator runs: it removes its finalizer
            await cluster.delete_job(NS, name)
        await cluster.wait_for(
            lambda: not any(cluster.get("llmtrainingjobs", NS, n) for n in VIOLATIONS), what="deleted"
        )
    async with operator_from_chart(cluster, RELAXED):
        for name, (fields, _) in VIOLATIONS.items():
            await cluster.apply_job(job(name, **fields))
        for name in VIOLATIONS:
            await cluster.wait_for(
                lambda n=name: len(cluster.workers(NS, n)) == 2 and phase(cluster, n) == "Running",
                what=f"{name} running under the relaxed policy",
            )


async def test_labelled_service_accounts_only(cluster: EmulatedCluster) -> None:
    values = {
        "policy": {"jobServiceAccounts": {"allowed": True, "selector": {"tokensmith.dev/job-account": "yes"}}}
    }
    await cluster.create(
        f"/api/v1/namespaces/{NS}/serviceaccounts",
        {"metadata": {"name": "runner", "namespace": NS, "labels": {"tokensmith.dev/job-account": "yes"}}},
    )
    await cluster.create(
        f"/api/v1/namespaces/{NS}/serviceaccounts", {"metadata": {"name": "deployer", "namespace": NS}}
    )
    async with operator_from_chart(cluster, values):
        await cluster.apply_job(job("labelled", serviceAccountName="runner"))
        await cluster.apply_job(job("unlabelled", serviceAccountName="deployer"))
        await cluster.wait_for(lambda: phase(cluster, "unlabelled") == "Failed", what="unlabelled Failed")
        await cluster.wait_for(lambda: len(cluster.workers(NS, "labelled")) == 2, what="labelled gang")
        assert "labelled tokensmith.dev/job-account=yes" in cluster.job(NS, "unlabelled")["status"]["message"]
        assert cluster.workers(NS, "unlabelled") == []
        assert {p["spec"]["serviceAccountName"] for p in cluster.workers(NS, "labelled")} == {"runner"}


async def test_chart_enabled_network_policies_are_created_with_the_gang(cluster: EmulatedCluster) -> None:
    async with operator_from_chart(cluster, {"networkPolicy": {"jobs": True}}):
        await cluster.apply_job(job("fenced"))
        await cluster.wait_for(lambda: len(cluster.workers(NS, "fenced")) == 2, what="gang")
        policies = {p["metadata"]["name"] for p in cluster.objects("networkpolicies", NS)}
        assert policies == {"fenced-workers", "fenced-eval"}


async def test_a_namespace_enforcing_restricted_admits_the_gang_and_a_refusal_fails_the_job(
    cluster: EmulatedCluster,
) -> None:
    """With the namespace's PodSecurity admission (emulated with the same check) enforcing restricted,
    the default pods are admitted; a baseline job's pods are refused by the API server, and the job ends
    Failed/PolicyViolation with the refusal instead of retrying forever."""
    cluster.pod_security[NS] = "restricted"
    values = {"policy": {"jobServiceAccounts": {"allowed": False}}}
    async with operator_from_chart(cluster, values):
        await cluster.apply_job(job("admitted"))
        await cluster.apply_job(job("loosened", securityProfile="baseline"))
        await cluster.wait_for(lambda: len(cluster.workers(NS, "admitted")) == 2, what="admitted gang")
        await cluster.wait_for(lambda: phase(cluster, "loosened") == "Failed", what="loosened Failed")
        status = cluster.job(NS, "loosened")["status"]
        assert status["lastFailure"]["reason"] == "PolicyViolation"
        assert 'the namespace refused the job\'s pods: PodSecurity "restricted:latest"' in status["message"]
        assert cluster.workers(NS, "loosened") == []
        # its pods exist before its status is written (create, then record): wait for the status too
        await cluster.wait_for(
            lambda: phase(cluster, "admitted") in ("Pending", "Running"), what="admitted Pending/Running"
        )
