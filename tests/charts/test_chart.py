"""The Helm chart, rendered and linted by the real Helm SDK and checked against the real Kubernetes
schemas (kubernetes-validate) of the newest release it ships."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import CHART, MODES, NAMESPACE, RELEASE, REPO, Manifest, Render, by_kind

helm = pytest.importorskip("helm_python")
kv = pytest.importorskip("kubernetes_validate")

# Kinds that are CustomResources, checked here by their own definitions instead of Kubernetes' schemas.
CUSTOM_KINDS = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}


def _errors(report: dict[str, Any]) -> list[str]:
    """Lint findings at warning level or worse (Helm: 2 warning, 3 error); info is advice."""
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_lint_is_clean(mode: str) -> None:
    report = helm.lint(CHART, MODES[mode], strict=True, namespace=NAMESPACE)
    assert _errors(report) == [], _errors(report)
    assert report["errors"] == []


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_manifest_validates_against_kubernetes(render: Render, mode: str) -> None:
    docs = render(MODES[mode])
    version = kv.utils.latest_version()
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.utils.ValidationError as err:
            pytest.fail(f"{mode}: {doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")
        checked += 1
    assert checked >= 4  # Deployment, ServiceAccount, a role and its binding at least


def test_kubernetes_schemas_are_a_current_release() -> None:
    major, minor = (int(x) for x in kv.utils.latest_version().split(".")[:2])
    assert (major, minor) >= (1, 31)


def test_default_render_has_the_expected_objects(render: Render) -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        [
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRole",  # read-only on nodes
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "Pod",  # the `helm test` hook
            "Service",
            "ServiceAccount",
        ]
    )


def test_namespaced_mode_grants_nothing_cluster_wide_but_reading_nodes(render: Render) -> None:
    docs = render(MODES["namespaced"])
    # nodes are cluster-scoped: their read-only ClusterRole is the one cluster-wide grant, and
    # nodeHealth.watchNodes: false removes it too (the operator then runs --no-watch-nodes)
    assert [r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")] == [f"{RELEASE}-nodes"]
    strict = render({**MODES["namespaced"], "nodeHealth": {"watchNodes": False}})
    assert not by_kind(strict, "ClusterRole") and not by_kind(strict, "ClusterRoleBinding")
    (deployment,) = by_kind(strict, "Deployment")
    assert "--no-watch-nodes" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    docs = [d for d in docs if not d["metadata"]["name"].endswith("-nodes")]
    assert not by_kind(docs, "ClusterKopfPeering")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-team", "research"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == ["ml-team", "research"]
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["ml-team", "research"]
    args = _operator_container(docs)["args"]
    assert "--namespace=ml-team" in args and "--namespace=research" in args


def test_namespaced_mode_defaults_to_the_release_namespace(render: Render) -> None:
    docs = render(MODES["namespaced-release-ns"])
    assert {r["metadata"]["namespace"] for r in by_kind(docs, "Role")} == {NAMESPACE}
    assert f"--namespace={NAMESPACE}" in _operator_container(docs)["args"]


def test_cluster_mode_binds_the_cluster_role_to_the_operator(render: Render) -> None:
    docs = render(MODES["cluster-wide"])
    (binding,) = [
        b for b in by_kind(docs, "ClusterRoleBinding") if not b["metadata"]["name"].endswith("-nodes")
    ]
    (sa,) = [s for s in by_kind(docs, "ServiceAccount") if s["metadata"]["namespace"] == NAMESPACE]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == by_kind(docs, "ClusterRole")[0]["metadata"]["name"]
    # No --namespace: `tokensmith operator run` watches every namespace by default.
    assert not [a for a in _operator_container(docs)["args"] if a.startswith("--namespace")]
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")


def _operator_container(docs: list[Manifest]) -> dict[str, Any]:
    (deploy,) = by_kind(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container


def test_operator_pod_is_locked_down(render: Render) -> None:
    docs = render()
    (deploy,) = by_kind(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = _operator_container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["args"][:2] == ["operator", "run"]
    assert container["image"] == "ghcr.io/tokensmith/operator:" + _pyproject_version()


def test_scheduling_values_reach_the_pod(render: Render) -> None:
    values = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "node-role", "operator": "In", "values": ["infra"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {"digest": "sha256:" + "a" * 64},
    }
    docs = render(values)
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["image"] == "ghcr.io/tokensmith/operator@sha256:" + "a" * 64
    kv.validate(by_kind(docs, "Deployment")[0], kv.utils.latest_version(), strict=True)


def test_default_images_reach_the_operator_as_env(render: Render) -> None:
    docs = render({"defaultImages": {"trainer": {"repository": "reg.example/trainer", "tag": "1.2.3"}}})
    env = {e["name"]: e.get("value") for e in _operator_container(docs)["env"]}
    assert env["TOKENSMITH_TRAINER_IMAGE"] == "reg.example/trainer:1.2.3"
    assert env["TOKENSMITH_EVALUATOR_IMAGE"] == "ghcr.io/tokensmith/evaluator:" + _pyproject_version()


def test_two_replicas_are_peered_standbys(render: Render) -> None:
    docs = render(MODES["two-replicas"])
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    (peering,) = by_kind(docs, "ClusterKopfPeering")
    assert f"--peering={peering['metadata']['name']}" in _operator_container(docs)["args"]
    # POD_ID is kopf's identity of a replica in the peering object.
    env = {e["name"]: e for e in _operator_container(docs)["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    anti = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert not by_kind(render(), "PodDisruptionBudget")  # one replica: drains are not blocked


def test_each_replica_draws_its_own_peering_priority(render: Render, tmp_path: Path) -> None:
    """kopf pauses all replicas that share a priority; the start command gives each its own. Run the
    rendered command with /bin/sh and a stand-in `tokensmith` that prints its arguments."""
    container = _operator_container(render(MODES["two-replicas"]))
    stub = tmp_path / "tokensmith"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    priorities = set()
    for _ in range(4):
        out = subprocess.run(
            [*container["command"], *container["args"]], env=env, capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert out[: len(container["args"])] == container["args"]  # passed through unchanged
        (priority,) = [a.removeprefix("--priority=") for a in out if a.startswith("--priority=")]
        assert priority.isdigit() and 0 <= int(priority) < 65536
        priorities.add(int(priority))
    assert len(priorities) > 1  # four draws from 65,536 values: equal only by a 1e-14 chance
    assert "command" not in _operator_container(render(MODES["standalone"]))  # no peering, no wrapper


def test_peering_objects_validate_against_the_peering_crds(render: Render) -> None:
    crds = {
        c["spec"]["names"]["kind"]: c
        for c in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text())
    }
    for mode in ("default", "namespaced"):
        for doc in render(MODES[mode]):
            if doc["kind"] in ("ClusterKopfPeering", "KopfPeering"):
                crd = crds[doc["kind"]]
                assert doc["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
                assert ("namespace" in doc["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
                jsonschema.validate(doc, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    for crd in crds.values():
        kv.validate(crd, kv.utils.latest_version(), strict=True)


def test_metrics_service_and_servicemonitor_point_at_the_metrics_port(render: Render) -> None:
    """ServiceMonitor is a Prometheus-Operator CRD kind that kubernetes-validate has no schema for, so
    its structure is checked here: it selects the metrics Service and scrapes its named port."""
    docs = render(MODES["metrics-servicemonitor"])
    (svc,) = by_kind(docs, "Service")
    (mon,) = by_kind(docs, "ServiceMonitor")
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["metadata"]["labels"]["release"] == "prom"
    sel = mon["spec"]["selector"]["matchLabels"]
    assert sel.items() <= svc["metadata"]["labels"].items()
    assert mon["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = mon["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and endpoint["path"] == "/metrics"
    container = _operator_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics" and "metrics" in ports
    assert (
        svc["spec"]["selector"].items()
        <= by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_helm_test_hook_fetches_the_metrics_service(render: Render) -> None:
    docs = render()
    (pod,) = by_kind(docs, "Pod")
    (svc,) = by_kind(docs, "Service")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    port = svc["spec"]["ports"][0]["port"]
    assert f"http://{svc['metadata']['name']}.{NAMESPACE}.svc:{port}/metrics" in script
    compile(script, "helm-test", "exec")  # the inline Python is valid


def test_metrics_off_renders_no_service(render: Render) -> None:
    docs = render(MODES["metrics-off"])
    assert not by_kind(docs, "Service") and not by_kind(docs, "ServiceMonitor")
    assert not by_kind(docs, "Pod")
    assert "metrics" not in {p["name"] for p in _operator_container(docs)["ports"]}


def test_probes_use_the_liveness_endpoint(render: Render) -> None:
    container = _operator_container(render({"health": {"port": 8181}}))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == 8181
    assert "--liveness=http://0.0.0.0:8181/healthz" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": "two"}, "/replicaCount': got string, want integer"),
        ({"watch": {"mode": "everywhere"}}, "/watch/mode': value must be one of 'cluster', 'namespaced'"),
        ({"replicaCount": 0}, "/replicaCount'"),
        ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval'"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy'"),
        ({"replicasCount": 2}, "additional properties 'replicasCount' not allowed"),
    ],
)
def test_wrong_values_are_rejected_by_the_schema(chart: Any, values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert expected in str(err.value)
    report = helm.lint(CHART, values)
    assert any(expected in e for e in report["errors"]), report


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": 2, "peering": {"enabled": False}}, "replicaCount > 1 needs peering.enabled=true"),
        ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "needs metrics.enabled=true"),
        ({"watch": {"namespaces": ["a"]}}, "watch.namespaces is only used with watch.mode=namespaced"),
    ],
)
def test_contradictory_values_fail_with_one_clear_line(
    chart: Any, values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(expected)):
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)


def test_every_value_is_documented_in_the_schema(chart: Any) -> None:
    """values.yaml and values.schema.json describe the same keys (a new value cannot skip the schema)."""
    schema = chart.schema

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        props = node.get("properties", {})
        for key, value in values.items():
            assert key in props, f"{path}{key} is in values.yaml but not in values.schema.json"
            if isinstance(value, dict) and props[key].get("properties"):
                walk(value, props[key], f"{path}{key}.")

    walk(chart.values, schema, "")
    chart.validate_schema(chart.values)


def _pyproject_version() -> str:
    # A regex, not tomllib: the project supports Python 3.10, which has no tomllib.
    match = re.search(
        r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M | re.S
    )
    assert match, "no version in [project] of pyproject.toml"
    return match.group(1)


def test_app_version_is_the_package_version(chart: Any) -> None:
    assert chart.metadata["appVersion"] == _pyproject_version()
    assert chart.metadata["apiVersion"] == "v2"


def test_notes_show_how_to_check_and_submit(chart: Any) -> None:
    notes = chart.render(values={}, name=RELEASE, namespace=NAMESPACE)[f"{RELEASE}/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{RELEASE}" in notes
    assert "kubectl apply" in notes and "examples/tiny-job.yaml" in notes
    assert "kubectl get llmjob" in notes


def test_every_value_is_documented_in_the_chart_readme(chart: Any) -> None:
    """Each value in values.yaml has a row (itself or a parent key) in charts/tokensmith/README.md."""
    documented = set(re.findall(r"`([A-Za-z][\w.]*)`", (CHART / "README.md").read_text()))

    def leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
        out: list[str] = []
        for key, value in values.items():
            path = prefix + key
            out.extend(leaves(value, path + ".") if isinstance(value, dict) and value else [path])
        return out

    for path in leaves(chart.values):
        parts = path.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{path} is not documented in charts/tokensmith/README.md"


def _helm_install_commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("helm install ")]


def _merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


@pytest.mark.parametrize("doc", ["README.md", "charts/tokensmith/README.md"])
def test_documented_install_commands_render(render: Render, doc: str) -> None:
    """The `helm install` lines in the docs work: their --set values pass the schema and render."""
    commands = _helm_install_commands((REPO / doc).read_text())
    assert commands, f"{doc} shows no helm install command"
    for command in commands:
        assert "charts/tokensmith" in command
        values: dict[str, Any] = {}
        for expr in re.findall(r"--set\s+(?:'([^']+)'|(\S+))", command):
            _merge(values, helm.parse_set_string(expr[0] or expr[1]))
        namespace = re.search(r"(?:-n|--namespace)\s+(\S+)", command)
        docs = render(values, namespace=namespace.group(1) if namespace else NAMESPACE)
        for manifest in docs:
            if manifest["kind"] not in CUSTOM_KINDS:
                kv.validate(manifest, kv.utils.latest_version(), strict=True)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rendered_arguments_are_what_tokensmith_operator_run_accepts(render: Render, mode: str) -> None:
    """The Deployment's arguments parse with the operator's real click command (without running it),
    and the image defaults reach it through the environment variables it reads."""
    from tokensmith.operator.cli import operator as operator_group

    container = _operator_container(render(MODES[mode]))
    args = container["args"]
    assert args[:2] == ["operator", "run"]
    if "command" in container:  # the peering wrapper appends a drawn --priority
        args = [*args, "--priority=4242"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    run = operator_group.commands["run"]
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        ctx = run.make_context("run", list(args[2:]))
    params = ctx.params
    values = MODES[mode]
    expected_ns = values.get("watch", {}).get("namespaces") or (
        [NAMESPACE] if values.get("watch", {}).get("mode") == "namespaced" else []
    )
    assert list(params["namespaces"]) == expected_ns
    peering = values.get("peering", {}).get("enabled", True)
    assert params["standalone"] is (not peering)
    assert params["priority"] == (4242 if peering else 0)
    assert params["metrics_port"] == (9090 if values.get("metrics", {}).get("enabled", True) else 0)
    assert params["liveness"] == "http://0.0.0.0:8080/healthz"
    assert params["verbose"] is (values.get("operator", {}).get("logLevel") == "debug")
    assert params["trainer_image"] == env["TOKENSMITH_TRAINER_IMAGE"]
    assert params["evaluator_image"] == env["TOKENSMITH_EVALUATOR_IMAGE"]
