"""The admin's admission policy (admission.py) as a table, and its place in the pure reconcile: a job
that breaks it ends Failed/PolicyViolation with one line and no action at all (no pod, no child);
the local runner (one machine, no policy) is unaffected."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tokensmith.operator import admission
from tokensmith.operator.admission import AdmissionPolicy
from tokensmith.operator.observed import CreateGang, Observed
from tokensmith.operator.reconcile import reconcile
from tokensmith.operator.spec import LLMTrainingJobSpec, LLMTrainingJobStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE: dict[str, Any] = {
    "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
    "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 1},
    "data": {"tokens": 10**6},
    "parallelism": {"microBatch": 1, "globalBatchTokens": 1024 * 2},
}
HOSTPATH = {"hostPath": {"path": "/mnt/data"}}
SELECTOR = (("tokensmith.dev/job-account", "true"),)


def make(**cluster: Any) -> LLMTrainingJobSpec:
    doc = copy.deepcopy(BASE)
    doc["cluster"].update(cluster)
    return LLMTrainingJobSpec.model_validate(doc)


def with_checkpoint(volume: dict[str, Any]) -> LLMTrainingJobSpec:
    doc = copy.deepcopy(BASE)
    doc["checkpoint"]["volume"] = volume
    return LLMTrainingJobSpec.model_validate(doc)


CASES: list[tuple[str, LLMTrainingJobSpec, AdmissionPolicy, str | None]] = [
    ("default job, default policy", make(), AdmissionPolicy(), None),
    (
        "hostPath checkpoint",
        with_checkpoint(HOSTPATH),
        AdmissionPolicy(),
        "spec.checkpoint.volume is a hostPath",
    ),
    (
        "hostPath data volume",
        make(volumes=[{"name": "data", "mountPath": "/data", "source": HOSTPATH}]),
        AdmissionPolicy(),
        "spec.cluster.volumes[data].source is a hostPath",
    ),
    (
        "hostPath allowed by the admin",
        with_checkpoint(HOSTPATH),
        AdmissionPolicy(volume_types=admission.DEFAULT_VOLUME_TYPES | {"hostPath"}),
        None,
    ),
    (
        "nfs is allowed by default",
        with_checkpoint({"nfs": {"server": "s", "path": "/"}}),
        AdmissionPolicy(),
        None,
    ),
    (
        "secret env without secret volumes",
        make(env=[{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        AdmissionPolicy(volume_types=frozenset({"persistentVolumeClaim"})),
        "spec.cluster.env[T] reads a Secret",
    ),
    ("any image by default", make(image="docker.io/evil/miner:1"), AdmissionPolicy(), None),
    (
        "image outside the prefixes",
        make(image="docker.io/evil/miner:1"),
        AdmissionPolicy(image_prefixes=("registry.example.com/ml/",)),
        "spec.cluster.image 'docker.io/evil/miner:1' is not from an allowed registry",
    ),
    (
        "image inside the prefixes",
        make(image="registry.example.com/ml/trainer:2"),
        AdmissionPolicy(image_prefixes=("registry.example.com/ml/",)),
        None,
    ),
    (
        "own service account, default policy",
        make(serviceAccountName="admin"),
        AdmissionPolicy(),
        "may not choose",
    ),
    (
        "own service account, allowed",
        make(serviceAccountName="admin"),
        AdmissionPolicy(allow_service_account=True),
        None,
    ),
    (
        "own service account without the label",
        make(serviceAccountName="admin"),
        AdmissionPolicy(allow_service_account=True, service_account_selector=SELECTOR),
        "labelled tokensmith.dev/job-account=true",
    ),
    (
        "baseline not allowed",
        make(securityProfile="baseline"),
        AdmissionPolicy(profiles=frozenset({"restricted"})),
        "securityProfile baseline is not allowed",
    ),
    (
        "capability not allowed",
        make(securityProfile="baseline", addCapabilities=["IPC_LOCK"]),
        AdmissionPolicy(),
        "addCapabilities ['IPC_LOCK'] not allowed",
    ),
    (
        "another job's label",
        make(labels={"tokensmith.dev/job": "victim"}),
        AdmissionPolicy(),
        "labels are the operator's own",
    ),
    ("a label of one's own", make(labels={"team": "pretraining"}), AdmissionPolicy(), None),
    (
        "AppArmor unconfined",
        make(annotations={"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"}),
        AdmissionPolicy(),
        "AppArmor must stay",
    ),
    (
        "AppArmor localhost profile",
        make(annotations={"container.apparmor.security.beta.kubernetes.io/trainer": "localhost/ml"}),
        AdmissionPolicy(),
        None,
    ),
    (
        "capability allowed",
        make(securityProfile="baseline", addCapabilities=["IPC_LOCK"]),
        AdmissionPolicy(capabilities=frozenset({"IPC_LOCK"})),
        None,
    ),
]


@pytest.mark.parametrize("case,spec,policy,expected", CASES, ids=[c[0] for c in CASES])
def test_policy(case: str, spec: LLMTrainingJobSpec, policy: AdmissionPolicy, expected: str | None) -> None:
    found = admission.check(spec, policy)
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected in found and "\n" not in found


def test_labelled_accounts_pass_the_selector() -> None:
    policy = AdmissionPolicy(allow_service_account=True, service_account_selector=SELECTOR)
    spec = make(serviceAccountName="ml-runner")
    assert admission.check(spec, policy, {"ml-runner": {"tokensmith.dev/job-account": "true"}}) is None
    assert admission.check(spec, policy, {"ml-runner": {"other": "x"}}) is not None
    assert admission.check(spec, policy, {"someone-else": dict(SELECTOR)}) is not None


def test_flags_build_the_policy_and_refuse_typos() -> None:
    policy = admission.from_flags(
        "persistentVolumeClaim,hostPath", ["reg/"], True, "a=b,c=d", "restricted", ["ipc_lock"]
    )
    assert policy.volume_types == {"persistentVolumeClaim", "hostPath"}
    assert policy.image_prefixes == ("reg/",) and policy.service_account_selector == (("a", "b"), ("c", "d"))
    assert policy.profiles == {"restricted"} and policy.capabilities == {"IPC_LOCK"}
    assert admission.from_flags() == AdmissionPolicy()
    with pytest.raises(ValueError, match="unknown volume type"):
        admission.from_flags("hostpath")
    with pytest.raises(ValueError, match="choose from restricted, baseline"):
        admission.from_flags(profiles="privileged")
    with pytest.raises(ValueError, match="expected key=value"):
        admission.from_flags(service_account_selector="novalue")


def test_a_violating_job_fails_before_anything_is_created() -> None:
    spec = with_checkpoint(HOSTPATH)
    d = reconcile("j", spec, LLMTrainingJobStatus(), Observed(now=T0, generation=1), AdmissionPolicy())
    assert d.status.phase == "Failed" and d.status.last_failure is not None
    assert d.status.last_failure.reason == "PolicyViolation" and not d.status.last_failure.retryable
    assert "hostPath" in (d.status.message or "")
    assert [type(a).__name__ for a in d.actions] == ["EmitEvent"]  # no CreateGang: no pod, no child
    again = reconcile("j", spec, d.status, Observed(now=T0, generation=1), AdmissionPolicy())
    assert again.status.phase == "Failed" and not any(isinstance(a, CreateGang) for a in again.actions)
    assert again.status.last_failure == d.status.last_failure  # recorded once


def test_without_a_policy_the_local_runner_s_decisions_are_unchanged() -> None:
    """The local runner calls reconcile without a policy: one machine has no pods to secure."""
    spec = with_checkpoint(HOSTPATH)
    d = reconcile("j", spec, LLMTrainingJobStatus(), Observed(now=T0))
    assert d.status.phase == "Pending" and any(isinstance(a, CreateGang) for a in d.actions)
    import inspect

    from tokensmith.operator.local import runner

    assert "reconcile(self.job.name, self.spec, status, observed)" in inspect.getsource(runner)


def test_the_default_policy_admits_the_examples() -> None:
    from pathlib import Path

    from tokensmith.operator.local.manifest import read_documents
    from tokensmith.operator.spec import parse_manifest

    jobs = [p for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")]
    jobs = [p for p in jobs if "kind: LLMTrainingJob" in p.read_text()]
    assert len(jobs) >= 2
    for path in sorted(jobs):
        _, spec = parse_manifest(read_documents(path))
        assert admission.check(spec, AdmissionPolicy()) is None, path.name


def test_a_pod_security_refusal_becomes_one_line() -> None:
    message = (
        'pods "j-a1-w0" is forbidden: violates PodSecurity "restricted:latest": restricted volume types '
        '(volume "n" uses restricted volume type "nfs")'
    )
    reason = admission.pod_security_refusal(403, message)
    assert reason is not None and reason.startswith("the namespace refused the job's pods: PodSecurity")
    assert '"nfs"' in reason and "\n" not in reason
    assert admission.pod_security_refusal(403, 'pods is forbidden: User "x" cannot create') is None  # RBAC
    assert admission.pod_security_refusal(500, message) is None
