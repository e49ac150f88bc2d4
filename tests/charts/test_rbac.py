"""Least privilege: the chart grants the operator exactly the API calls its code declares in
`tokensmith.operator.rbac` (the operator's API client refuses any call not declared there, and kopf's
own calls are listed beside them), per install mode: no wildcard, nothing extra, nothing missing."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import MODES, NAMESPACE, RELEASE, Manifest, Render, by_kind

rbac = pytest.importorskip("tokensmith.operator.rbac")

Grants = dict[tuple[str, str], frozenset[str]]


def _grants(rules: list[dict[str, Any]]) -> Grants:
    """{(apiGroup, resource): verbs}, merging rules that name the same pair."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in out.items()}


def _expected(mode: str, peering: bool) -> Grants:
    """The operator's declared calls; of kopf's two peering kinds, only the one this mode uses
    (cluster-wide kopf patches a ClusterKopfPeering, namespaced kopf a KopfPeering per namespace)."""
    peering_resource = "clusterkopfpeerings" if mode == "cluster" else "kopfpeerings"
    perms = tuple(rbac.OPERATOR_PERMISSIONS)
    if peering:
        perms += tuple(p for p in rbac.PEERING_PERMISSIONS if p.resource == peering_resource)
    return _grants(rbac.rules(perms))


def _no_wildcards_or_extras(role: Manifest) -> None:
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected keys in {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field] and all("*" not in item for item in rule[field]), rule


@pytest.mark.parametrize("mode", ["default", "cluster-wide", "two-replicas", "standalone", "metrics-off"])
def test_cluster_role_grants_exactly_what_the_operator_calls(render: Render, mode: str) -> None:
    values = MODES[mode]
    docs = render(values)
    (role,) = _main_cluster_roles(docs)
    _no_wildcards_or_extras(role)
    peering = values.get("peering", {}).get("enabled", True)
    expected = _expected("cluster", peering)
    granted = _grants(role["rules"])
    missing = {
        k: sorted(v - granted.get(k, frozenset()))
        for k, v in expected.items()
        if v - granted.get(k, frozenset())
    }
    extra = {
        k: sorted(v - expected.get(k, frozenset()))
        for k, v in granted.items()
        if v - expected.get(k, frozenset())
    }
    assert not missing, f"the operator calls these but the chart does not grant them: {missing}"
    assert not extra, f"the chart grants these but the operator never calls them: {extra}"
    assert not by_kind(docs, "Role")


def _main_cluster_roles(docs: list[Manifest]) -> list[Manifest]:
    return [r for r in by_kind(docs, "ClusterRole") if not r["metadata"]["name"].endswith("-nodes")]


def _node_role(docs: list[Manifest]) -> Manifest:
    (role,) = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-nodes")]
    return role


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("cordon", [False, True])
def test_node_cluster_role_is_read_only_unless_cordoning_is_opted_in(
    render: Render, mode: str, cordon: bool
) -> None:
    values = {**MODES[mode], "nodeHealth": {"cordon": cordon}}
    docs = render(values)
    role = _node_role(docs)
    _no_wildcards_or_extras(role)
    perms = tuple(rbac.NODE_PERMISSIONS) + (tuple(rbac.CORDON_PERMISSIONS) if cordon else ())
    assert _grants(role["rules"]) == _grants(rbac.rules(perms))
    assert _grants(role["rules"])[("", "nodes")] == (
        {"list", "watch", "patch"} if cordon else {"list", "watch"}
    )
    (binding,) = [
        b for b in by_kind(docs, "ClusterRoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["subjects"][0]["name"] == RELEASE


@pytest.mark.parametrize("mode", ["namespaced", "namespaced-release-ns"])
def test_namespaced_roles_grant_exactly_what_the_operator_calls(render: Render, mode: str) -> None:
    docs = render(MODES[mode])
    roles = by_kind(docs, "Role")
    assert roles
    for role in roles:
        _no_wildcards_or_extras(role)
        assert _grants(role["rules"]) == _expected("namespaced", peering=True), role["metadata"]["namespace"]
    # Every Role is bound to the operator's ServiceAccount in its own namespace, and to nothing else.
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")}
    assert set(bindings) == {r["metadata"]["namespace"] for r in roles}
    for binding in bindings.values():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": RELEASE,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_the_operator_may_grant_the_per_job_trainer_role(render: Render) -> None:
    """RBAC's escalation check: the operator can create the per-job Role only if it holds every verb
    that Role grants (trainer rank 0 gets/patches its own job's status), and may create Roles and
    RoleBindings at all."""
    (role,) = _main_cluster_roles(render())
    granted = _grants(role["rules"])
    for key, verbs in _grants(rbac.rules(tuple(rbac.TRAINER_PERMISSIONS))).items():
        assert verbs <= granted.get(key, frozenset()), key
    for resource in ("roles", "rolebindings"):
        assert "create" in granted[("rbac.authorization.k8s.io", resource)]
    assert ("", "serviceaccounts") in granted


def test_nothing_sensitive_is_granted(render: Render) -> None:
    for mode in MODES:
        docs = render(MODES[mode])
        for role in _main_cluster_roles(docs) + by_kind(docs, "Role"):
            granted = _grants(role["rules"])
            assert not any(
                resource in {"secrets", "nodes", "clusterroles", "clusterrolebindings"}
                for _, resource in granted
            )
            for (_, resource), verbs in granted.items():
                assert not verbs & {"escalate", "bind", "impersonate", "deletecollection", "update"}, resource
