"""Generated children validate against the real Kubernetes schemas; observations parse real pod and
Job status shapes; the launcher keeps the trainer's exit code."""

from __future__ import annotations

import json
import os
import sys

import kubernetes_validate
import pytest
import yaml

from tokensmith.operator import children, names, observe, rbac
from tokensmith.operator.spec import LLMTrainingJobSpec
from tokensmith.trainer.config import TrainerConfig

JOB = children.JobRef(name="llama", namespace="ml", uid="6f1d7a2e-0000-4000-8000-000000000001")
DEFAULTS = children.Defaults()
K8S = kubernetes_validate.latest_version()


def spec(**cluster: object) -> LLMTrainingJobSpec:
    return LLMTrainingJobSpec.model_validate(
        {
            "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}, "everySteps": 100},
            "data": {"trainPath": "/data/train", "validPath": "/data/valid", "tokens": 10_000_000},
            "model": {"preset": "gpt2-124m"},
            "parallelism": {"microBatch": 4, "globalBatchTokens": 4 * 1024 * 64},
            "cluster": {
                "nodes": 4,
                "gpusPerNode": 8,
                "nodeSelector": {"pool": "h100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "priorityClassName": "training",
                "resources": {"requests": {"cpu": "64", "memory": "512Gi"}},
                "env": [
                    {"name": "NCCL_DEBUG", "value": "INFO"},
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                ],
                "volumes": [
                    {
                        "name": "data",
                        "mountPath": "/data",
                        "readOnly": True,
                        "source": {"persistentVolumeClaim": {"claimName": "shards"}},
                    }
                ],
                "imagePullSecrets": ["regcred"],
                **cluster,
            },
            "evaluation": {"tasks": ["hellaswag", "arc_easy"], "gpus": 1, "limit": 100},
        }
    )


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S, strict=True)


def test_every_child_validates_against_the_kubernetes_schemas() -> None:
    s = spec()
    objs = children.job_children(JOB, s) + children.worker_pods(JOB, s, 3, (0, 1, 2, 3), DEFAULTS)
    objs.append(
        children.evaluation_job(JOB, s, 400, "/checkpoints/llama/step-00000400", "llama-eval-400", DEFAULTS)
    )
    kinds = [o["kind"] for o in objs]
    assert kinds.count("Pod") == 4 and {
        "Service",
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Job",
    } <= set(kinds)
    for obj in objs:
        validate(obj)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == JOB.uid
        assert obj["metadata"]["labels"][names.LABEL_JOB] == "llama"
        assert names.LABEL_ROLE in obj["metadata"]["labels"]


def test_worker_pod_has_the_torchrun_environment_and_volumes() -> None:
    pod = children.worker_pod(JOB, spec(), attempt=2, index=3, defaults=DEFAULTS)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MASTER_ADDR"] == "worker-0.llama.ml.svc" and env["MASTER_PORT"] == "29500"
    assert (env["NNODES"], env["NODE_RANK"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == (
        "4",
        "3",
        "8",
        "32",
    )
    assert env["TOKENSMITH_JOB_NAME"] == "llama" and env["TOKENSMITH_JOB_NAMESPACE"] == "ml"
    assert "HF_TOKEN" in env and env["NCCL_DEBUG"] == "INFO"
    assert pod["metadata"]["labels"][names.LABEL_ATTEMPT] == "2"
    assert pod["spec"]["hostname"] == "worker-3" and pod["spec"]["subdomain"] == "llama"
    assert pod["spec"]["restartPolicy"] == "Never"
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    assert vols["checkpoints"]["persistentVolumeClaim"]["claimName"] == "ckpt"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {
        "config": "/etc/tokensmith",
        "dshm": "/dev/shm",
        "checkpoints": "/checkpoints",
        "data": "/data",
        "scratch-tmp": "/tmp",  # the writable scratch of a read-only root filesystem (hardening.py)
        "scratch-home": "/home/tokensmith",
    }
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert pod["spec"]["serviceAccountName"] == "llama-trainer"
    assert "schedulerName" not in pod["spec"]


def auto_spec(**checkpoint: object) -> LLMTrainingJobSpec:
    base = spec().model_dump(by_alias=True, exclude_none=True)
    base["checkpoint"] = {
        "volume": {"persistentVolumeClaim": {"claimName": "ckpt"}},
        "everyMinutes": "auto",
        "initialMinutes": 55.0,
        **checkpoint,
    }
    return LLMTrainingJobSpec.model_validate(base)


def test_an_auto_interval_job_gets_a_live_settings_config_map_mounted_as_a_directory() -> None:
    """The running trainer's live settings (cadence.live_settings): a ConfigMap of its own, mounted
    whole (a subPath mount is never refreshed by the kubelet), read-only, named by an env variable;
    the pods stay Pod Security restricted and need no API access for it."""
    from tokensmith.operator import cadence, podsecurity
    from tokensmith.operator.spec import LLMTrainingJobStatus

    s = cadence.effective_spec(auto_spec(), LLMTrainingJobStatus(checkpoint_every_minutes=12.345))
    objs = children.job_children(JOB, s)
    (live,) = [o for o in objs if o["metadata"]["name"] == "llama-live"]
    validate(live)
    assert live["metadata"]["ownerReferences"][0]["uid"] == JOB.uid
    assert json.loads(live["data"]["live.json"]) == {"checkpoint": {"every_minutes": 12.35}}
    # the new attempt's trainer config starts from the same interval
    config = next(o for o in objs if o["metadata"]["name"] == "llama-config")
    assert yaml.safe_load(config["data"]["trainer.yaml"])["checkpoint"]["every_minutes"] == 12.35
    for index in (0, 1):
        pod = children.worker_pod(JOB, s, attempt=2, index=index, defaults=DEFAULTS)
        validate(pod)
        assert podsecurity.violations(pod) == []
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TOKENSMITH_LIVE_SETTINGS"] == "/etc/tokensmith-live/live.json"
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tokensmith-live")
        assert mount == {"name": "tokensmith-live", "mountPath": "/etc/tokensmith-live", "readOnly": True}
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "tokensmith-live")
        assert volume == {"name": "tokensmith-live", "configMap": {"name": "llama-live"}}
    assert pod["spec"]["automountServiceAccountToken"] is False  # worker 1: still no credential
    # a fixed interval: nothing live, nothing mounted
    fixed = spec()
    assert children.live_config_map(JOB, fixed) is None
    assert not any(o["metadata"]["name"] == "llama-live" for o in children.job_children(JOB, fixed))
    pod = children.worker_pod(JOB, fixed, attempt=1, index=0, defaults=DEFAULTS)
    assert "TOKENSMITH_LIVE_SETTINGS" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_config_map_holds_the_effective_trainer_config_and_deepspeed_config() -> None:
    cm = children.trainer_config_map(JOB, spec())
    cfg = TrainerConfig.model_validate(yaml.safe_load(cm["data"]["trainer.yaml"]))
    assert (
        cfg.model.n_layers == 12 and cfg.checkpoint.dir == "/checkpoints/llama" and cfg.train.micro_batch == 4
    )
    assert '"train_micro_batch_size_per_gpu": 4' in cm["data"]["deepspeed.json"]


def test_service_is_headless_and_publishes_not_ready_addresses() -> None:
    svc = children.rendezvous_service(JOB, spec())
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True


def test_trainer_role_is_scoped_to_its_own_job() -> None:
    role = next(o for o in children.trainer_service_account(JOB) if o["kind"] == "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["tokensmith.dev"],
            "resources": ["llmtrainingjobs/status"],
            "resourceNames": ["llama"],
            "verbs": ["get", "patch"],
        }
    ]
    assert children.job_children(JOB, spec(serviceAccountName="mine"))[-1]["kind"] == "ConfigMap"


def test_volcano_gets_a_pod_group_with_the_whole_gang() -> None:
    s = spec(schedulerName="volcano")
    group = children.pod_group(JOB, s)
    assert group is not None and group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["spec"]["minMember"] == 4 and group["spec"]["minResources"]["nvidia.com/gpu"] == 32
    pod = children.worker_pod(JOB, s, 1, 0, DEFAULTS)
    assert pod["spec"]["schedulerName"] == "volcano"
    assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "llama"
    assert children.pod_group(JOB, spec()) is None


def test_evaluation_job_runs_tokensmith_eval_once() -> None:
    job = children.evaluation_job(JOB, spec(), 400, "/checkpoints/llama/step-400", "llama-eval-400", DEFAULTS)
    assert job["spec"]["backoffLimit"] == 0
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:6] == [
        "tokensmith",
        "eval",
        "--checkpoint",
        "/checkpoints/llama/step-400",
        "--tasks",
        "hellaswag,arc_easy",
    ]
    assert "--perplexity-data" in cmd and "/checkpoints/llama/evals/step-400.json" in cmd
    assert job["spec"]["template"]["metadata"]["labels"][names.LABEL_STEP] == "400"


def test_observation_of_failed_pods() -> None:
    base = {
        "metadata": {
            "name": "p",
            "labels": {
                names.LABEL_JOB: "llama",
                names.LABEL_ROLE: "worker",
                names.LABEL_ATTEMPT: "2",
                names.LABEL_INDEX: "1",
            },
        }
    }
    oom = {
        **base,
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ],
        },
    }
    w = observe.worker_from_pod(oom)
    assert w is not None and (w.attempt, w.index, w.exit_code, w.reason) == (2, 1, 137, "OOMKilled")
    preempted = {
        **base,
        "status": {
            "phase": "Failed",
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": "prio",
                }
            ],
        },
    }
    w = observe.worker_from_pod(preempted)
    assert w is not None and w.reason == "PreemptionByScheduler"
    evicted = {**base, "status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}}
    w = observe.worker_from_pod(evicted)
    assert w is not None and w.reason == "Evicted" and w.message == "low on memory"
    assert observe.worker_from_pod({"metadata": {"labels": {names.LABEL_ROLE: "eval"}}}) is None


def test_observation_of_evaluation_jobs() -> None:
    job = {
        "metadata": {"name": "e", "labels": {names.LABEL_ROLE: "eval", names.LABEL_STEP: "40"}},
        "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    }
    msg = '{"schema":"tokensmith.eval/v1","step":40,"results":{"hellaswag":{"acc":0.3}}}'
    pod = {"status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": msg}}}]}}
    ev = observe.evaluation_from(job, [pod])
    assert ev is not None and ev.phase == "Succeeded" and ev.results == {"hellaswag": {"acc": 0.3}}
    failed = {**job, "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}}
    err = {
        "status": {
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 2, "message": '{"error": "no such task"}'}}}
            ]
        }
    }
    ev = observe.evaluation_from(failed, [err])
    assert ev is not None and ev.phase == "Failed" and ev.message == "no such task"
    running = {**job, "status": {"active": 1}}
    assert observe.evaluation_from(running, []) == observe.EvalObservation(40, "Running", "e")


def test_rbac_rules_have_no_wildcards_and_cover_the_trainer_role() -> None:
    rules = rbac.operator_rules()
    assert all(
        "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"] for r in rules
    )
    status = next(r for r in rules if r["resources"] == ["llmtrainingjobs/status"])
    assert {"get", "patch"} <= set(status["verbs"])  # needed to grant the trainer's Role (escalation check)
    with pytest.raises(PermissionError, match="undeclared API call"):
        rbac.check_allowed("delete", "", "secrets")


@pytest.mark.slow
def test_launcher_keeps_the_child_exit_code(tmp_path: object) -> None:
    """torchrun exits 1 for any failed child; our launcher exits with the child's own code."""
    import subprocess

    env = {
        **os.environ,
        "NNODES": "1",
        "NODE_RANK": "0",
        "NPROC_PER_NODE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29731",
        "OMP_NUM_THREADS": "1",
    }
    # `tokensmith no-such-command` exits 2 (usage) in both local processes
    proc = subprocess.run(
        [sys.executable, "-m", "tokensmith.operator.launch", "--", "no-such-command"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert children.Defaults().trainer_image  # defaults exist for pods that name no image
