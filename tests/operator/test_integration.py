"""The real kopf operator, in-process, against kmock's Kubernetes emulator with a simulated kubelet,
Job controller and garbage collector (tokensmith.operator.testing explains what is emulated)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tokensmith.operator import names, rbac
from tokensmith.operator.spec import build_manifest
from tokensmith.operator.testing import EmulatedCluster, OperatorUnderTest

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(90)]

NS = "ml"
SPEC: dict[str, Any] = {
    "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}},
    "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 2},
    "data": {"tokens": 100_000},
    "parallelism": {"microBatch": 2, "globalBatchTokens": 2048},
    "restartPolicy": {"maxRestarts": 3, "backoffSeconds": 0.4, "hangTimeoutSeconds": 0},
}


def spec(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(SPEC)
    for key, value in changes.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[EmulatedCluster]:
    async with EmulatedCluster() as c:
        yield c


@pytest_asyncio.fixture
async def operator(cluster: EmulatedCluster) -> AsyncIterator[OperatorUnderTest]:
    async with OperatorUnderTest(cluster, interval=0.3) as op:
        yield op


def phase(c: EmulatedCluster, name: str) -> str | None:
    obj = c.get("llmtrainingjobs", NS, name)
    return ((obj or {}).get("status") or {}).get("phase")


def status(c: EmulatedCluster, name: str) -> dict[str, Any]:
    return c.job(NS, name).get("status") or {}


def events(c: EmulatedCluster, name: str) -> list[str]:
    return [
        e.get("reason")
        for e in c.objects("events", NS)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


async def running(c: EmulatedCluster, name: str, attempt: int = 1, nodes: int = 2) -> list[dict[str, Any]]:
    await c.wait_for(
        lambda: phase(c, name) == "Running" and len(c.workers(NS, name, attempt)) == nodes,
        what=f"{name} attempt {attempt} running",
    )
    return c.workers(NS, name, attempt)


async def test_job_runs_to_success(cluster: EmulatedCluster, operator: OperatorUnderTest) -> None:
    await cluster.apply_job(build_manifest("ok", spec(), namespace=NS))
    pods = await running(cluster, "ok")
    assert [p["metadata"]["name"] for p in pods] == ["ok-a1-w0", "ok-a1-w1"]
    job_uid = cluster.job(NS, "ok")["metadata"]["uid"]
    for plural, name in [
        ("services", "ok"),
        ("configmaps", "ok-config"),
        ("serviceaccounts", "ok-trainer"),
        ("roles", "ok-trainer"),
        ("rolebindings", "ok-trainer"),
    ]:
        obj = cluster.get(plural, NS, name)
        assert obj is not None, f"{plural}/{name} missing"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == job_uid
    await cluster.report_progress(NS, "ok", step=50, tokens=100_000, loss=2.1)
    await cluster.terminate(NS, "ok-a1-w0", 0)
    await cluster.wait_for(lambda: phase(cluster, "ok") == "Succeeded", what="Succeeded")
    st = status(cluster, "ok")
    assert st["completionTime"] and st["restarts"] == 0 and st["attempt"] == 1
    assert st["progressText"] == "100k/100k (100%)"
    assert any(c["type"] == "Succeeded" and c["status"] == "True" for c in st["conditions"])
    await cluster.wait_for(
        lambda: {"AttemptStarted", "GangRunning", "Succeeded"} <= set(events(cluster, "ok")), what="events"
    )
    # the straggler is stopped, worker 0 stays for its logs
    await cluster.wait_for(lambda: [p["metadata"]["name"] for p in cluster.workers(NS, "ok")] == ["ok-a1-w0"])
    # least privilege: every call kopf and the handlers made is declared in rbac.py, nothing more is needed
    declared = {
        (verb, p.group, p.resource)
        for p in rbac.OPERATOR_PERMISSIONS + rbac.NODE_PERMISSIONS
        for verb in p.verbs
    }
    made = cluster.api_calls("kopf") | cluster.api_calls("tokensmith-operator")
    assert made and made <= declared, sorted(made - declared)


async def test_one_worker_fails_and_the_gang_restarts_with_resume(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("flaky", spec(), namespace=NS))
    await running(cluster, "flaky")
    await cluster.report_checkpoint(NS, "flaky", 20)
    await cluster.wait_for(lambda: status(cluster, "flaky").get("checkpointsObserved") == 1)
    loop = asyncio.get_running_loop()
    failed_at = loop.time()
    await cluster.terminate(NS, "flaky-a1-w1", 1, message="NCCL watchdog timeout")
    await cluster.wait_for(lambda: len(cluster.workers(NS, "flaky", 2)) == 2, what="attempt 2")
    waited = loop.time() - failed_at
    assert waited >= 0.4  # the backoff was respected
    await cluster.wait_for(lambda: status(cluster, "flaky").get("attempt") == 2, what="status attempt 2")
    assert cluster.workers(NS, "flaky", 1) == []  # the whole first gang is gone, not just the failed pod
    st = status(cluster, "flaky")
    assert st["restarts"] == 1 and st["attempt"] == 2
    assert st["lastFailure"]["reason"] == "WorkerFailed" and st["lastFailure"]["worker"] == 1
    assert "resuming from checkpoint step 20" in st["message"]
    env = {
        e["name"]: e.get("value") for e in cluster.workers(NS, "flaky", 2)[0]["spec"]["containers"][0]["env"]
    }
    assert env["TOKENSMITH_ATTEMPT"] == "2"
    await running(cluster, "flaky", attempt=2)
    await cluster.wait_for(lambda: "Restarting" in events(cluster, "flaky"), what="Restarting event")


async def test_hang_is_detected_and_restarted(cluster: EmulatedCluster, operator: OperatorUnderTest) -> None:
    await cluster.apply_job(
        build_manifest("hung", spec(restartPolicy={"hangTimeoutSeconds": 1.0}), namespace=NS)
    )
    await running(cluster, "hung")
    await cluster.report_progress(NS, "hung", step=1, tokens=1000)
    await cluster.wait_for(lambda: status(cluster, "hung").get("restarts") == 1, what="hang restart")
    assert status(cluster, "hung")["lastFailure"]["kind"] == "Hang"
    await cluster.wait_for(lambda: len(cluster.workers(NS, "hung", 2)) == 2, what="attempt 2")


async def test_retries_exhausted(cluster: EmulatedCluster, operator: OperatorUnderTest) -> None:
    # maxRestarts budgets Application failures; an eviction (Infrastructure) uses its own budget
    await cluster.apply_job(build_manifest("doomed", spec(restartPolicy={"maxRestarts": 1}), namespace=NS))
    await running(cluster, "doomed")
    await cluster.evict(NS, "doomed-a1-w0")
    await running(cluster, "doomed", attempt=2)
    await cluster.terminate(NS, "doomed-a2-w1", 137, reason="OOMKilled")
    await running(cluster, "doomed", attempt=3)
    await cluster.terminate(NS, "doomed-a3-w0", 1)
    await cluster.wait_for(lambda: phase(cluster, "doomed") == "Failed", what="Failed")
    st = status(cluster, "doomed")
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MaxRestartsExceeded" and "exited 1" in failed["message"]
    assert st["restarts"] == 2 and st["restartsByClass"] == {"Infrastructure": 1, "Application": 1}
    await cluster.wait_for(
        lambda: (
            not [
                p for p in cluster.workers(NS, "doomed") if (p.get("status") or {}).get("phase") == "Running"
            ]
        )
    )
    await asyncio.sleep(0.8)
    assert cluster.workers(NS, "doomed", 4) == []  # no attempt after Failed


async def test_non_retryable_failure_ends_failed(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("badcfg", spec(), namespace=NS))
    await running(cluster, "badcfg")
    await cluster.terminate(NS, "badcfg-a1-w0", 78, message="data.train_path /data/train does not exist")
    await cluster.wait_for(lambda: phase(cluster, "badcfg") == "Failed", what="Failed")
    st = status(cluster, "badcfg")
    assert st["restarts"] == 0 and st["lastFailure"]["reason"] == "ConfigError"
    assert "does not exist" in st["lastFailure"]["message"]
    await cluster.wait_for(lambda: "ConfigError" in events(cluster, "badcfg"), what="Warning event")


async def test_checkpoints_launch_evaluations_and_collect_results(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    cluster.eval_results[10] = {"hellaswag": {"acc": 0.31, "acc_norm": 0.33}}
    cluster.eval_failures[20] = "checkpoint step-00000020 is incomplete"
    await cluster.apply_job(build_manifest("evals", spec(evaluation={"tasks": ["hellaswag"]}), namespace=NS))
    await running(cluster, "evals")
    await cluster.report_checkpoint(NS, "evals", 10)
    await cluster.wait_for(
        lambda: any(e.get("phase") == "Succeeded" for e in status(cluster, "evals").get("evaluations", [])),
        what="evaluation of step 10",
    )
    ev = status(cluster, "evals")["evaluations"][0]
    assert ev == {
        "step": 10,
        "job": "evals-eval-10",
        "phase": "Succeeded",
        "results": {"hellaswag": {"acc": 0.31, "acc_norm": 0.33}},
    }
    await cluster.report_checkpoint(NS, "evals", 10)  # reported twice: still one evaluation
    await cluster.report_checkpoint(NS, "evals", 20)
    await cluster.wait_for(
        lambda: (
            len([e for e in status(cluster, "evals").get("evaluations", []) if e.get("phase") == "Failed"])
            == 1
        ),
        what="failed evaluation",
    )
    failed = status(cluster, "evals")["evaluations"][1]
    assert failed["step"] == 20 and "incomplete" in failed["message"]
    assert phase(cluster, "evals") == "Running"  # a failed evaluation never fails training
    assert sorted(j["metadata"]["name"] for j in cluster.objects("jobs", NS)) == [
        "evals-eval-10",
        "evals-eval-20",
    ]
    expected = {"EvaluationStarted", "EvaluationSucceeded", "EvaluationFailed"}
    await cluster.wait_for(lambda: expected <= set(events(cluster, "evals")), what="evaluation events")


async def test_suspend_and_resume(cluster: EmulatedCluster, operator: OperatorUnderTest) -> None:
    await cluster.apply_job(build_manifest("pause", spec(), namespace=NS))
    await running(cluster, "pause")
    await cluster.report_checkpoint(NS, "pause", 30)
    await cluster.patch_job(NS, "pause", {"spec": {"suspend": True}})
    await cluster.wait_for(
        lambda: phase(cluster, "pause") == "Suspended" and not cluster.workers(NS, "pause"),
        what="suspended, no pods",
    )
    assert "checkpoint step 30 kept" in status(cluster, "pause")["message"]
    await cluster.patch_job(NS, "pause", {"spec": {"suspend": False}})
    await running(cluster, "pause", attempt=2)
    st = status(cluster, "pause")
    assert st["restarts"] == 0 and st["observedGeneration"] == 3
    await cluster.wait_for(lambda: {"Suspended", "Resumed"} <= set(events(cluster, "pause")), what="events")


async def test_deleting_a_job_deletes_what_it_owns_and_nothing_else(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("keep", spec(), namespace=NS))
    await cluster.apply_job(build_manifest("gone", spec(evaluation={"tasks": ["piqa"]}), namespace=NS))
    await running(cluster, "keep")
    await running(cluster, "gone")
    await cluster.report_checkpoint(NS, "gone", 5)
    await cluster.wait_for(lambda: cluster.objects("jobs", NS), what="evaluation job")
    await cluster.delete_job(NS, "gone")

    def owned_by_gone() -> list[str]:
        return [
            f"{plural}/{o['metadata']['name']}"
            for plural in (
                "pods",
                "services",
                "configmaps",
                "serviceaccounts",
                "roles",
                "rolebindings",
                "jobs",
            )
            for o in cluster.objects(plural, NS)
            if (o["metadata"].get("labels") or {}).get(names.LABEL_JOB) == "gone"
        ]

    await cluster.wait_for(
        lambda: cluster.get("llmtrainingjobs", NS, "gone") is None and not owned_by_gone(),
        what="everything of 'gone' deleted",
    )
    assert len(cluster.workers(NS, "keep", 1)) == 2 and phase(cluster, "keep") == "Running"
    assert cluster.get("services", NS, "keep") is not None


async def test_operator_restarted_mid_run_creates_no_duplicates(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(
        build_manifest("durable", spec(restartPolicy={"backoffSeconds": 1.5}), namespace=NS)
    )
    await running(cluster, "durable")
    await operator.restart()  # while Running
    await asyncio.sleep(1.0)
    assert [p["metadata"]["name"] for p in cluster.workers(NS, "durable")] == [
        "durable-a1-w0",
        "durable-a1-w1",
    ]
    await cluster.terminate(NS, "durable-a1-w0", 1)
    await cluster.wait_for(lambda: phase(cluster, "durable") == "Restarting", what="Restarting")
    await operator.stop()  # dies during the backoff
    await asyncio.sleep(0.3)
    await operator.start()
    await running(cluster, "durable", attempt=2)
    await asyncio.sleep(1.0)
    attempts = sorted({p["metadata"]["labels"][names.LABEL_ATTEMPT] for p in cluster.workers(NS, "durable")})
    assert attempts == ["2"] and len(cluster.workers(NS, "durable")) == 2
    assert status(cluster, "durable")["restarts"] == 1  # not lost, not counted twice
    posts = [
        r for r in cluster.requests("tokensmith-operator") if r.method == "POST" and "/pods" in r.url.path
    ]
    created = [r for r in posts if 200 <= r.status < 300]
    # 2 gangs x 2 workers, nothing twice; a restarted operator may re-send a create whose answer is
    # a 409 (deterministic names make that harmless), never a second pod
    assert len(created) == 4, [(str(r.url.path), r.status) for r in posts]
    assert all(r.status == 409 for r in posts if r not in created)


async def test_bad_specs_end_failed_with_the_reason_and_touch_nothing_else(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    # The emulator does not enforce the CRD schema, so these reach the operator as they would with
    # an outdated CRD: each ends Failed/InvalidSpec with the exact field, nothing is created.
    await cluster.apply_job(build_manifest("fine", spec(), namespace=NS))
    bad = {
        "zero": {**spec(), "cluster": {"nodes": 0}},
        "negbudget": {**spec(), "budget": {"maxGPUHours": -1}},
        "nopreset": {**spec(), "model": {"preset": "gpt-9"}},
        "novolume": {k: v for k, v in spec().items() if k != "checkpoint"},
        "tp": spec(parallelism={"tensor": 3}),
    }
    for name, body in bad.items():
        manifest = {
            "apiVersion": "tokensmith.dev/v1alpha1",
            "kind": "LLMTrainingJob",
            "metadata": {"name": name, "namespace": NS},
            "spec": body,
        }
        await cluster.apply_job(manifest)
    for name in bad:
        await cluster.wait_for(lambda n=name: phase(cluster, n) == "Failed", what=f"{name} Failed")
    messages = {n: status(cluster, n)["lastFailure"]["message"] for n in bad}
    assert "spec.cluster.nodes" in messages["zero"]
    assert "spec.budget.maxGPUHours" in messages["negbudget"]
    assert "unknown model preset 'gpt-9'" in messages["nopreset"]
    assert "spec.checkpoint: Field required" in messages["novolume"]
    assert "spec.parallelism: tensor parallel degree 3 must divide" in messages["tp"]
    assert all(status(cluster, n)["lastFailure"]["reason"] == "InvalidSpec" for n in bad)
    assert all(not cluster.workers(NS, n) for n in bad)
    await running(cluster, "fine")


async def test_budget_exhaustion_stops_the_gang(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    # 2 nodes x 2 processes = 4 devices; 0.001 GPU-hours = 0.9 s of this gang
    await cluster.apply_job(build_manifest("capped", spec(budget={"maxGPUHours": 0.001}), namespace=NS))
    await running(cluster, "capped")
    await cluster.wait_for(lambda: phase(cluster, "capped") == "Failed", what="BudgetExceeded")
    st = status(cluster, "capped")
    assert st["lastFailure"]["reason"] == "BudgetExceeded" and st["gpuHours"] >= 0.001
    await cluster.wait_for(lambda: not cluster.workers(NS, "capped"), what="gang stopped")


async def test_two_replicas_with_peering_do_not_fight(cluster: EmulatedCluster) -> None:
    await cluster.create_peering("tokensmith")
    active = OperatorUnderTest(cluster, interval=0.3, peering="tokensmith", priority=100)
    standby = OperatorUnderTest(cluster, interval=0.3, peering="tokensmith", priority=10)
    await active.start()
    await asyncio.sleep(0.5)
    await standby.start()
    await asyncio.sleep(1.0)  # kopf's peering pauses a new replica at its first peering check
    try:
        await cluster.apply_job(build_manifest("peer", spec(), namespace=NS))
        await running(cluster, "peer")
        await asyncio.sleep(1.0)
        posts = [
            r for r in cluster.requests("tokensmith-operator") if r.method == "POST" and "/pods" in r.url.path
        ]
        created = [r for r in posts if 200 <= r.status < 300]
        assert len(created) == 2, [(str(r.url.path), r.status) for r in posts]  # one gang, never two
        assert all(r.status == 409 for r in posts if r not in created)
        assert active.runtime.reconciles > 0
        await active.stop()  # the active replica goes away: the standby takes over
        await cluster.terminate(NS, "peer-a1-w0", 1)
        await running(cluster, "peer", attempt=2)
        assert standby.runtime.reconciles > 0 and status(cluster, "peer")["restarts"] == 1
    finally:
        await active.stop()
        await standby.stop()


async def test_volcano_jobs_get_a_pod_group(cluster: EmulatedCluster, operator: OperatorUnderTest) -> None:
    await cluster.apply_job(build_manifest("gang", spec(cluster={"schedulerName": "volcano"}), namespace=NS))
    await running(cluster, "gang")
    group = cluster.get("podgroups", NS, "gang")
    assert group is not None and group["spec"]["minMember"] == 2
    pods = cluster.workers(NS, "gang", 1)
    assert all(p["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "gang" for p in pods)
    assert all(p["spec"]["schedulerName"] == "volcano" for p in pods)


# ------------------------------------------------------------------ run health: rollback and replay


def _avoided(pod: dict[str, Any]) -> list[str]:
    required = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = required["nodeSelectorTerms"]
    (expr,) = [e for e in term["matchFields"] if e["key"] == "metadata.name"]
    assert expr["operator"] == "NotIn"
    return sorted(expr["values"])


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}


async def _diverge(c: EmulatedCluster, name: str, attempt: int, step: int, samples: tuple[int, int]) -> None:
    """Trainer rank 0 reports divergence; every rank agreed on it, so both workers exit 65. The report's
    time has whole seconds: send it more than a second after the attempt started, as a real one is."""
    await asyncio.sleep(1.1)
    await c.report_divergence(NS, name, step, samples)
    for index in (0, 1):
        await c.terminate(
            NS, f"{name}-a{attempt}-w{index}", 65, message=f"diverged: nonfinite loss at step {step}"
        )


async def test_divergence_rolls_back_on_other_nodes_then_a_repeat_is_data(cluster: EmulatedCluster) -> None:
    """Exit 65 -> attempt 2 from lastHealthyCheckpoint (TOKENSMITH_RESUME_FROM=latest_healthy) with a
    required anti-affinity to attempt 1's nodes, not counted as a restart; the same step diverging again
    -> cause Data, its samples in status.skipSamples and in attempt 3's trainer config."""
    import yaml

    from tokensmith.trainer.config import DataConfig

    name = "spiky"
    async with OperatorUnderTest(cluster, interval=0.3):
        await cluster.apply_job(build_manifest(name, spec(), namespace=NS))
        first = await running(cluster, name)
        first_nodes = sorted(p["spec"]["nodeName"] for p in first)
        await cluster.report_checkpoint(NS, name, 20, healthy=True)
        await cluster.wait_for(
            lambda: (status(cluster, name).get("lastHealthyCheckpoint") or {}).get("step") == 20,
            what="lastHealthyCheckpoint",
        )
        await cluster.report_checkpoint(NS, name, 30, healthy=False)
        await _diverge(cluster, name, 1, 27, (216, 224))

        second = await running(cluster, name, attempt=2)
        st = status(cluster, name)
        assert st["restarts"] == 0 and st["rollbacks"] == 1
        assert all(_avoided(p) == first_nodes for p in second)
        assert not {p["spec"]["nodeName"] for p in second} & set(first_nodes)
        assert all(_env(p)["TOKENSMITH_RESUME_FROM"] == "latest_healthy" for p in second)
        (record,) = st["rollbackRecords"]
        assert record["attempt"] == 1 and record["step"] == 27 and record["cause"] == "Unknown"
        assert record["resumeStep"] == 20 and sorted(record["nodes"]) == first_nodes
        diverged = next(c for c in st["conditions"] if c["type"] == "Diverged")
        assert diverged["status"] == "True" and diverged["reason"] == "NonFinite"
        assert st["lastFailure"]["kind"] == "Diverged"
        await cluster.wait_for(lambda: "RollingBack" in events(cluster, name), what="RollingBack event")

        await _diverge(cluster, name, 2, 27, (216, 224))
        await cluster.wait_for(lambda: status(cluster, name).get("rollbacks") == 2, what="second rollback")
        st = status(cluster, name)
        assert [r["cause"] for r in st["rollbackRecords"]] == ["Data", "Data"]
        assert st["skipSamples"] == [[216, 224]] and st.get("suspectNodes", []) == []
        assert st["lostGPUHours"]["rollback"] > 0
        if "skip_samples" in DataConfig.model_fields:  # the trainer half of issue 13
            third = await running(cluster, name, attempt=3)
            assert all("affinity" not in p["spec"] for p in third)  # Data: no node is under suspicion
            config = yaml.safe_load(cluster.get("configmaps", NS, f"{name}-config")["data"]["trainer.yaml"])
            assert config["data"]["skip_samples"] == [[216, 224]]


async def test_a_replay_that_passes_names_the_old_nodes_suspect(cluster: EmulatedCluster) -> None:
    name = "flip"
    async with OperatorUnderTest(cluster, interval=0.3):
        await cluster.apply_job(build_manifest(name, spec(restartPolicy={"maxRollbacks": 2}), namespace=NS))
        first = await running(cluster, name)
        first_nodes = sorted(p["spec"]["nodeName"] for p in first)
        await cluster.report_checkpoint(NS, name, 20, healthy=True)
        await cluster.wait_for(
            lambda: status(cluster, name).get("lastHealthyCheckpoint"), what="healthy ckpt"
        )
        await _diverge(cluster, name, 1, 27, (216, 224))
        await running(cluster, name, attempt=2)
        await cluster.report_checkpoint(NS, name, 30, healthy=True)  # the replay got past step 27
        await cluster.wait_for(
            lambda: [s["name"] for s in status(cluster, name).get("suspectNodes", [])] == first_nodes,
            what="suspects",
        )
        st = status(cluster, name)
        assert [r["cause"] for r in st["rollbackRecords"]] == ["Hardware"]
        diverged = next(c for c in st["conditions"] if c["type"] == "Diverged")
        assert diverged["status"] == "False" and diverged["reason"] == "Hardware"
        await cluster.wait_for(lambda: "DivergenceAttributed" in events(cluster, name), what="event")
        await cluster.terminate(NS, f"{name}-a2-w0", 0)
        await cluster.wait_for(lambda: phase(cluster, name) == "Succeeded", what="Succeeded")


async def test_the_live_settings_config_map_follows_the_adaptive_interval(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    """`everyMinutes: auto`: the job's live-settings ConfigMap exists before its pods, which mount it, and
    is patched when `status.checkpointEveryMinutes` changes (here: a save much slower than the prior
    moves Daly's optimum from ~34 to ~103 minutes) while the same attempt keeps running."""
    import json

    import kubernetes_validate

    ck = {"everyMinutes": "auto", "priorMTBFGPUHours": 40.0, "priorSeconds": 60.0}
    await cluster.apply_job(build_manifest("cad", spec(checkpoint=ck), namespace=NS))
    pods = await running(cluster, "cad")

    def live_minutes() -> float | None:
        obj = cluster.get("configmaps", NS, "cad-live")
        return json.loads(obj["data"]["live.json"])["checkpoint"]["every_minutes"] if obj else None

    live = cluster.get("configmaps", NS, "cad-live")
    assert (
        live is not None
        and live["metadata"]["ownerReferences"][0]["uid"] == cluster.job(NS, "cad")["metadata"]["uid"]
    )
    kubernetes_validate.validate(
        {k: live[k] for k in ("apiVersion", "kind", "data")} | {"metadata": {"name": "cad-live"}},
        kubernetes_validate.latest_version(),
        strict=True,
    )
    assert live_minutes() == pytest.approx(33.98, abs=0.01)  # Daly's optimum for the prior
    for pod in pods:
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["tokensmith-live"]["configMap"]["name"] == "cad-live"
    await cluster.wait_for(lambda: status(cluster, "cad").get("checkpointEveryMinutes") is not None)
    ckpt = {"step": 10, "path": "/checkpoints/cad/step-00000010", "time": "2026-01-01T00:00:00Z",
            "blockedSeconds": 600.0}  # fmt: skip
    await cluster.patch_job(NS, "cad", {"status": {"lastCheckpoint": ckpt}}, status=True)
    await cluster.wait_for(
        lambda: (status(cluster, "cad").get("checkpointEveryMinutes") or 0) > 100, what="the new interval"
    )
    minutes = status(cluster, "cad")["checkpointEveryMinutes"]
    await cluster.wait_for(lambda: live_minutes() == round(minutes, 2), what="the live ConfigMap patched")
    assert status(cluster, "cad")["attempt"] == 1 and len(cluster.workers(NS, "cad", 1)) == 2  # no restart
    patches = [
        r for r in cluster.requests("tokensmith-operator") if r.method == "PATCH" and "cad-live" in str(r.url)
    ]
    assert len(patches) == 1  # level-triggered, but only written when it changes
    declared = {(v, p.group, p.resource) for p in rbac.OPERATOR_PERMISSIONS for v in p.verbs}
    assert ("patch", "", "configmaps") in declared
