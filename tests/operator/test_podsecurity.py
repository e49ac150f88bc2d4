"""Every pod `tokensmith operator render` can produce passes Pod Security "restricted"; the checker
itself fails on deliberately bad pods (each control of the standard), so it can fail; only rank 0
holds an API credential; the per-job NetworkPolicies validate against the Kubernetes schemas."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from tokensmith.cli import cli
from tokensmith.operator import children, hardening, names, podsecurity
from tokensmith.operator.spec import LLMTrainingJobSpec, build_manifest

REPO = Path(__file__).resolve().parents[2]
# the example LLMTrainingJobs (examples/ also holds other kinds, e.g. a RayJob for curation)
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if "kind: LLMTrainingJob" in p.read_text())
K8S = kubernetes_validate.latest_version()
JOB = children.JobRef(name="sec", namespace="ml", uid="6f1d7a2e-0000-4000-8000-000000000002")
SPEC: dict[str, Any] = {
    "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}, "everySteps": 10},
    "cluster": {"nodes": 3, "gpusPerNode": 8},
    "data": {"tokens": 10**9, "validPath": "/data/valid"},
    "parallelism": {"microBatch": 1, "globalBatchTokens": 128 * 24},
    "evaluation": {"tasks": ["hellaswag"], "gpus": 1},
}


def render(path: Path, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["operator", "render", str(path), *args])
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.output) if d]


def pod_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if list(podsecurity.pods_of(d))]


def job_file(tmp_path: Path, spec: dict[str, Any], name: str = "sec") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(build_manifest(name, spec, namespace="ml")))
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_rendered_pod_of_the_examples_passes_restricted(example: Path) -> None:
    docs = render(example, "--network-policy")
    pods = pod_objects(docs)
    kinds = [d["kind"] for d in pods]
    assert "Pod" in kinds and "Job" in kinds  # workers and the evaluation Job (both examples evaluate)
    for obj in pods:
        assert podsecurity.violations(obj, "restricted") == []
        assert podsecurity.level_of(obj) == "restricted"
    for obj in docs:
        if obj["apiVersion"].split("/")[0].endswith("volcano.sh"):
            continue  # a Volcano PodGroup, not a Kubernetes kind
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_every_pod_of_a_job_with_evaluation_passes_restricted(tmp_path: Path) -> None:
    docs = render(job_file(tmp_path, SPEC), "--evaluation-step", "20")
    pods = pod_objects(docs)
    assert [d["kind"] for d in pods] == ["Pod", "Pod", "Pod", "Job"]
    (evaluation,) = [d for d in pods if d["kind"] == "Job"]
    assert evaluation["metadata"]["name"] == names.eval_job_name("sec", 20)
    assert all(podsecurity.passes(p) for p in pods)


def test_restricted_pods_write_only_to_their_volumes() -> None:
    spec = LLMTrainingJobSpec.model_validate(SPEC)
    pods = [
        children.worker_pod(JOB, spec, 1, 0, children.Defaults())["spec"],
        children.evaluation_job(JOB, spec, 10, "/checkpoints/sec/step-00000010", "e", children.Defaults())[
            "spec"
        ]["template"]["spec"],
    ]
    for pod in pods:
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in ("/tmp", "/home/tokensmith", "/dev/shm"):
            assert "emptyDir" in volumes[mounts[path]], path
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        env = {e["name"]: e.get("value") for e in container["env"]}
        for var in (
            "HOME",
            "TRITON_CACHE_DIR",
            "TORCH_EXTENSIONS_DIR",
            "HF_HOME",
            "XDG_CACHE_HOME",
            "TMPDIR",
        ):
            assert any(env[var].startswith(p) for p in ("/tmp", "/home/tokensmith")), var


def test_the_images_agree_with_the_pods_uid_and_home() -> None:
    """The Dockerfiles' user and cache paths are the ones the pods make writable."""
    for image in ("trainer", "evaluator"):
        text = (REPO / "images" / image / "Dockerfile").read_text()
        assert f"--uid {hardening.RUN_AS_USER} --gid {hardening.RUN_AS_GROUP}" in text
        assert f"USER {hardening.RUN_AS_USER}:{hardening.RUN_AS_GROUP}" in text
        assert f"HOME={hardening.HOME}" in text
        # every cache directory the image points at lies under a writable mount, with the same value
        caches = re.findall(r"\b([A-Z_]+_DIR|HF_HOME)=(/\S+)", text)
        scratch = dict(hardening.SCRATCH_ENV)
        for var, path in caches:
            assert path.startswith(hardening.HOME) and scratch[var] == path, (image, var, path)
    assert len(caches) >= 1


def test_a_job_s_own_environment_wins_over_the_scratch_defaults() -> None:
    spec = LLMTrainingJobSpec.model_validate(
        {**SPEC, "cluster": {**SPEC["cluster"], "env": [{"name": "HF_HOME", "value": "/data/hf"}]}}
    )
    env = children.worker_pod(JOB, spec, 1, 0, children.Defaults())["spec"]["containers"][0]["env"]
    assert [e["value"] for e in env if e["name"] == "HF_HOME"] == ["/data/hf"]


# ----------------------------------------------------------------------- the checker can fail


def _good_pod() -> dict[str, Any]:
    return children.worker_pod(JOB, LLMTrainingJobSpec.model_validate(SPEC), 1, 1, children.Defaults())


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


BAD: list[tuple[str, Any, str, bool]] = [
    # (case, mutation, the control named, baseline also fails)
    ("privileged", lambda p: _container(p)["securityContext"].update(privileged=True), "Privileged", True),
    (
        "hostPath",
        lambda p: p["spec"]["volumes"].append({"name": "node", "hostPath": {"path": "/"}}),
        "HostPath Volumes",
        True,
    ),
    ("root user", lambda p: p["spec"]["securityContext"].update(runAsUser=0), "Non-root user", False),
    (
        "root in the container",
        lambda p: _container(p)["securityContext"].update(runAsNonRoot=False),
        "Running as Non-root",
        False,
    ),
    (
        "added capability",
        lambda p: _container(p)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "Capabilities",
        True,
    ),
    (
        "baseline capability still not restricted",
        lambda p: _container(p)["securityContext"]["capabilities"].update(add=["CHOWN"]),
        "Capabilities",
        False,
    ),
    ("capabilities kept", lambda p: _container(p)["securityContext"].pop("capabilities"), "drop ALL", False),
    (
        "privilege escalation",
        lambda p: _container(p)["securityContext"].pop("allowPrivilegeEscalation"),
        "Privilege Escalation",
        False,
    ),
    ("host network", lambda p: p["spec"].update(hostNetwork=True), "Host Namespaces", True),
    ("host PID", lambda p: p["spec"].update(hostPID=True), "Host Namespaces", True),
    (
        "host port",
        lambda p: _container(p)["ports"][0].update(hostPort=29500),
        "Host Ports",
        True,
    ),
    (
        "seccomp unconfined",
        lambda p: p["spec"]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "Seccomp",
        True,
    ),
    ("no seccomp", lambda p: p["spec"]["securityContext"].pop("seccompProfile"), "Seccomp", False),
    (
        "nfs volume",
        lambda p: p["spec"]["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
        "Volume Types",
        False,
    ),
    (
        "unsafe sysctl",
        lambda p: p["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        "Sysctls",
        True,
    ),
    (
        "proc mount",
        lambda p: _container(p)["securityContext"].update(procMount="Unmasked"),
        "/proc Mount Type",
        True,
    ),
    (
        "SELinux user",
        lambda p: p["spec"]["securityContext"].update(seLinuxOptions={"user": "system_u"}),
        "SELinux",
        True,
    ),
    (
        "AppArmor unconfined",
        lambda p: (
            p["metadata"]
            .setdefault("annotations", {})
            .update({"container.apparmor.security.beta.kubernetes.io/trainer": "unconfined"})
        ),
        "AppArmor",
        True,
    ),
    (
        "Windows host process",
        lambda p: p["spec"]["securityContext"].update(windowsOptions={"hostProcess": True}),
        "HostProcess",
        True,
    ),
]


@pytest.mark.parametrize("case,mutate,control,baseline_too", BAD, ids=[b[0] for b in BAD])
def test_the_check_fails_on_a_bad_pod(case: str, mutate: Any, control: str, baseline_too: bool) -> None:
    pod = _good_pod()
    assert podsecurity.violations(pod) == []
    bad = copy.deepcopy(pod)
    mutate(bad)
    found = podsecurity.violations(bad, "restricted")
    assert found and any(control in line for line in found), found
    assert bool(podsecurity.violations(bad, "baseline")) is baseline_too
    # the same pod inside a workload template is found too
    deployment = {"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": bad}}
    assert podsecurity.violations(deployment)


def test_a_minimal_pod_is_baseline_but_not_restricted() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert podsecurity.level_of(pod) == "baseline"
    assert len(podsecurity.violations(pod)) == 4  # escalation, non-root, seccomp, capabilities


def test_the_baseline_profile_is_an_explicit_opt_in(tmp_path: Path) -> None:
    assert LLMTrainingJobSpec.model_validate(SPEC).cluster.security_profile == "restricted"
    cluster = {**SPEC["cluster"], "securityProfile": "baseline"}
    docs = render(job_file(tmp_path, {**SPEC, "cluster": cluster}))
    workers = [d for d in docs if d["kind"] == "Pod"]
    assert workers and all(podsecurity.level_of(p) == "baseline" for p in workers)
    # IPC_LOCK (RDMA memory registration) is beyond baseline: the namespace must allow privileged
    cluster["addCapabilities"] = ["IPC_LOCK"]
    docs = render(job_file(tmp_path, {**SPEC, "cluster": cluster}))
    workers = [d for d in docs if d["kind"] == "Pod"]
    assert all(podsecurity.level_of(p) == "privileged" for p in workers)
    assert workers[0]["spec"]["containers"][0]["securityContext"]["capabilities"] == {"add": ["IPC_LOCK"]}
    # the evaluation stays restricted whatever the workers need
    assert podsecurity.passes(next(d for d in docs if d["kind"] == "Job"))


def test_capabilities_without_the_baseline_profile_are_refused() -> None:
    with pytest.raises(ValueError, match=r"addCapabilities needs cluster\.securityProfile: baseline"):
        LLMTrainingJobSpec.model_validate({**SPEC, "cluster": {**SPEC["cluster"], "addCapabilities": ["X"]}})


@pytest.mark.parametrize(
    "cluster,allowed",
    [
        ({}, True),
        ({"securityProfile": "restricted"}, True),
        ({"addCapabilities": []}, True),
        ({"addCapabilities": ["IPC_LOCK"]}, False),
        ({"addCapabilities": ["IPC_LOCK"], "securityProfile": "restricted"}, False),
        ({"addCapabilities": ["IPC_LOCK"], "securityProfile": "baseline"}, True),
    ],
)
def test_the_crd_carries_the_same_rule_as_cel(cluster: dict[str, Any], allowed: bool) -> None:
    """The CEL rule the API server evaluates, evaluated here by a CEL implementation (cel-python), agrees
    with the models' own validation."""
    celpy = pytest.importorskip("celpy")
    from tokensmith.operator.crd import build_crd

    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"]["spec"]["properties"]["cluster"]
    (rule,) = [r for r in node["x-kubernetes-validations"] if "addCapabilities" in r["rule"]]
    assert node["properties"]["securityProfile"]["enum"] == ["restricted", "baseline"]
    env = celpy.Environment()
    program = env.program(env.compile(rule["rule"]))
    assert bool(program.evaluate({"self": celpy.json_to_cel(cluster)})) is allowed
    try:
        LLMTrainingJobSpec.model_validate({**SPEC, "cluster": {**SPEC["cluster"], **cluster}})
        models_allow = True
    except ValueError:
        models_allow = False
    assert models_allow is allowed


# ------------------------------------------------------------------------ tokens, network


def test_only_rank_zero_mounts_a_token(tmp_path: Path) -> None:
    docs = render(job_file(tmp_path, SPEC))
    workers = sorted((d for d in docs if d["kind"] == "Pod"), key=lambda p: p["metadata"]["name"])
    assert [hardening.mounts_token(p["spec"]) for p in workers] == [True, False, False]
    rank0 = workers[0]["spec"]
    assert rank0["automountServiceAccountToken"] is False  # the token is the projected one below
    (token,) = [v for v in rank0["volumes"] if v["name"] == hardening.TOKEN_VOLUME]
    sources = token["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 600
    mount = next(m for m in rank0["containers"][0]["volumeMounts"] if m["name"] == hardening.TOKEN_VOLUME)
    assert mount["mountPath"] == hardening.SA_DIR and mount["readOnly"] is True
    evaluation = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]
    assert not hardening.mounts_token(evaluation)
    # the trainer's reporter reads the token where the volume puts it
    from tokensmith.trainer import reporting

    assert str(reporting.SA_DIR) == hardening.SA_DIR


def test_network_policies_are_opt_in_and_validate(tmp_path: Path) -> None:
    assert not [d for d in render(job_file(tmp_path, SPEC)) if d["kind"] == "NetworkPolicy"]
    docs = render(job_file(tmp_path, {**SPEC, "cluster": {**SPEC["cluster"], "networkPolicy": True}}))
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"sec-workers", "sec-eval"}
    for policy in policies.values():
        kubernetes_validate.validate(policy, K8S, strict=True)
    workers = policies["sec-workers"]["spec"]
    same_job = {names.LABEL_JOB: "sec", names.LABEL_ROLE: names.ROLE_WORKER}
    assert workers["podSelector"]["matchLabels"] == same_job
    assert workers["ingress"] == [{"from": [{"podSelector": {"matchLabels": same_job}}]}]
    assert policies["sec-eval"]["spec"]["ingress"] == [] and policies["sec-eval"]["spec"]["policyTypes"] == [
        "Ingress"
    ]
    # the operator's default, and a job that opts out of it
    assert [d for d in render(job_file(tmp_path, SPEC), "--network-policy") if d["kind"] == "NetworkPolicy"]
    off = {**SPEC, "cluster": {**SPEC["cluster"], "networkPolicy": False}}
    assert not [
        d for d in render(job_file(tmp_path, off), "--network-policy") if d["kind"] == "NetworkPolicy"
    ]


def test_the_operator_namespace_may_scrape_the_workers() -> None:
    spec = LLMTrainingJobSpec.model_validate({**SPEC, "cluster": {**SPEC["cluster"], "networkPolicy": True}})
    defaults = children.Defaults(scrape_namespace="tokensmith-system")
    (workers, _) = [
        o for o in children.job_children(JOB, spec, defaults=defaults) if o["kind"] == "NetworkPolicy"
    ]
    assert workers["spec"]["ingress"][1] == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tokensmith-system"}}}]
    }
    assert workers["metadata"]["ownerReferences"][0]["uid"] == JOB.uid


def test_a_job_s_labels_never_relabel_its_pods() -> None:
    """Even without the admission policy (the local runner), the operator's labels win on the pods."""
    cluster = {
        **SPEC["cluster"],
        "labels": {names.LABEL_JOB: "victim", names.LABEL_ROLE: "eval", "team": "a"},
    }
    spec = LLMTrainingJobSpec.model_validate({**SPEC, "cluster": cluster})
    labels = children.worker_pod(JOB, spec, 1, 0, children.Defaults())["metadata"]["labels"]
    assert labels[names.LABEL_JOB] == "sec" and labels[names.LABEL_ROLE] == names.ROLE_WORKER
    assert labels["team"] == "a"


# ----------------------------------------------------------- `tokensmith operator pod-security`


def test_the_pod_security_command_passes_rendered_jobs_and_fails_bad_pods(tmp_path: Path) -> None:
    import json

    rendered = (
        CliRunner().invoke(cli, ["operator", "render", str(REPO / "examples" / "tiny-job.yaml")]).output
    )
    ok = CliRunner().invoke(cli, ["operator", "pod-security", "-"], input=rendered)
    assert ok.exit_code == 0, ok.output
    assert "pod(s) pass restricted" in ok.output and "FAIL" not in ok.output
    bad = _good_pod()
    _container(bad)["securityContext"]["privileged"] = True
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([_good_pod(), bad]))
    result = CliRunner().invoke(cli, ["operator", "pod-security", str(path), "--format", "json"])
    assert result.exit_code == 3
    doc = json.loads(result.output)
    assert doc["passed"] is False and [bool(p["violations"]) for p in doc["pods"]] == [False, True]
    assert doc["pods"][1]["level"] == "privileged"
    baseline = CliRunner().invoke(cli, ["operator", "pod-security", str(path), "--level", "baseline"])
    assert baseline.exit_code == 3 and "Privileged Containers" in baseline.output
    empty = CliRunner().invoke(cli, ["operator", "pod-security", "-"], input="kind: ConfigMap\n")
    assert empty.exit_code == 2 and "no pods in the input" in empty.output


def test_a_job_s_own_volume_at_a_scratch_path_wins() -> None:
    cluster = {
        **SPEC["cluster"],
        "volumes": [
            {"name": "big-tmp", "mountPath": "/tmp", "source": {"ephemeral": {"volumeClaimTemplate": {}}}}
        ],
    }
    pod = children.worker_pod(
        JOB, LLMTrainingJobSpec.model_validate({**SPEC, "cluster": cluster}), 1, 1, children.Defaults()
    )
    mounts = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert mounts == [{"name": "big-tmp", "mountPath": "/tmp", "readOnly": False}]
    names_ = [v["name"] for v in pod["spec"]["volumes"]]
    assert "scratch-tmp" not in names_ and "scratch-home" in names_ and len(names_) == len(set(names_))
    assert podsecurity.passes(pod)
