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


def test_the_operator_network_policy_admits_only_its_ports(render: Render) -> None:
    import kubernetes_validate as kv

    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]  # opt-in
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    docs = render({"networkPolicy": {"enabled": True, "metricsFrom": peers}})
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    kv.validate(policy, kv.utils.latest_version(), strict=True)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    health, metrics = policy["spec"]["ingress"]
    assert [p["port"] for p in health["ports"]] == [8080] and "from" not in health
    assert [p["port"] for p in metrics["ports"]] == [9090] and metrics["from"] == peers


def test_policy_values_reach_the_operator_as_its_policy(render: Render) -> None:
    """The chart's policy values, through the Deployment's arguments and the real click command, become
    the AdmissionPolicy the operator enforces (defaults: the operator's own defaults)."""
    from tokensmith.operator.admission import AdmissionPolicy
    from tokensmith.operator.cli import admission_policy
    from tokensmith.operator.cli import operator as operator_group

    def policy_of(values: dict) -> tuple[AdmissionPolicy, bool]:  # type: ignore[type-arg]
        (deployment,) = [d for d in render(values) if d["kind"] == "Deployment"]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        ctx = operator_group.commands["run"].make_context("run", list(args[2:]))
        return admission_policy(ctx.params), ctx.params["network_policy"]

    assert policy_of({}) == (AdmissionPolicy(), False)
    relaxed, network = policy_of({**MODES["relaxed-policy"], **MODES["network-policies"]})
    assert relaxed == AdmissionPolicy(
        volume_types=frozenset({"persistentVolumeClaim", "hostPath"}),
        image_prefixes=("registry.example.com/ml/", "ghcr.io/tokensmith/"),
        allow_service_account=True,
        service_account_selector=(("team", "ml"), ("tokensmith.dev/job-account", "true")),
        capabilities=frozenset({"IPC_LOCK"}),
    )
    assert network is True


def test_a_misspelt_volume_type_is_refused_by_the_schema(chart: object) -> None:
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmValuesError, match="policy/volumeTypes/0"):
        chart.render(  # type: ignore[attr-defined]
            values={"policy": {"volumeTypes": ["hostpath"]}}, name="tokensmith", namespace="ns"
        )


def test_the_pod_security_command_reads_the_chart(render: Render) -> None:
    import yaml
    from click.testing import CliRunner

    from tokensmith.cli import cli

    stream = yaml.safe_dump_all(render({"networkPolicy": {"enabled": True}}))
    result = CliRunner().invoke(cli, ["operator", "pod-security", "-", "--format", "json"], input=stream)
    assert result.exit_code == 0, result.output
    assert '"passed": true' in result.output and "test-metrics" in result.output
