"""Issue 14 on the real kopf operator and the emulated cluster: terminal phases stop the gang, lost
nodes, failure classes, fail-fast without progress, disruption notices, queues and lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tokensmith.operator.spec import build_manifest
from tokensmith.operator.testing import EmulatedCluster, OperatorUnderTest

from .test_integration import NS, events, phase, running, spec, status

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(90)]


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[EmulatedCluster]:
    async with EmulatedCluster() as c:
        yield c


@pytest_asyncio.fixture
async def operator(cluster: EmulatedCluster) -> AsyncIterator[OperatorUnderTest]:
    async with OperatorUnderTest(cluster, interval=0.3) as op:
        yield op


@pytest_asyncio.fixture
async def operator_factory(request: pytest.FixtureRequest) -> AsyncIterator[tuple[EmulatedCluster, Any]]:
    """A cluster with Kueue's webhook emulated and deletions that take 0.3 s (time for the trainer's
    SIGTERM checkpoint), and the operator on it."""
    async with EmulatedCluster(kueue=True, stop_delay=0.3) as c, OperatorUnderTest(c, interval=0.3) as op:
        yield c, op


def live(c: EmulatedCluster, name: str) -> list[str]:
    """Worker pods still running (not finished, not being deleted)."""
    return [
        p["metadata"]["name"]
        for p in c.workers(NS, name)
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


@pytest.mark.parametrize(
    "edit",
    [
        {"budget": {"maxCostUSD": 5}},  # passes the schema, fails the models (no price)
        {"model": {"preset": "llama-typo"}},
        {"parallelism": {"globalBatchTokens": 3000}},  # passes the models, fails the trainer check
    ],
    ids=["cost-without-price", "preset-typo", "batch-not-a-multiple"],
)
async def test_a_spec_edited_into_an_invalid_one_stops_the_gang(
    cluster: EmulatedCluster, operator: OperatorUnderTest, edit: dict[str, Any]
) -> None:
    await cluster.apply_job(build_manifest("edited", spec(), namespace=NS))
    await running(cluster, "edited")
    await cluster.patch_job(NS, "edited", {"spec": edit})
    await cluster.wait_for(lambda: phase(cluster, "edited") == "Failed", what="Failed/InvalidSpec")
    st = status(cluster, "edited")
    assert st["lastFailure"]["reason"] == "InvalidSpec" and st["lastFailure"]["attempt"] == 1
    await cluster.wait_for(lambda: not live(cluster, "edited"), what="gang stopped")
    await cluster.wait_for(lambda: "InvalidSpec" in events(cluster, "edited"), what="event")
    assert not cluster.workers(NS, "edited", 2)


def pod_node(c: EmulatedCluster, pod: str) -> str | None:
    return c.node_of(NS, pod)


def anti_affinity(pod: dict[str, Any]) -> list[str]:
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    return [v for t in terms["nodeSelectorTerms"] for e in t["matchFields"] for v in e["values"]]


FAST_NODES = {
    "cluster": {"terminationGracePeriodSeconds": 1},
    "restartPolicy": {"maxRestarts": 0, "forceDeleteAfterSeconds": 1},
    "nodeHealth": {"notReadyTimeoutSeconds": 0},
}


async def test_a_lost_node_is_infrastructure_its_stuck_pods_are_force_deleted_and_avoided(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("lost", spec(**FAST_NODES), namespace=NS))
    await running(cluster, "lost")
    bad = pod_node(cluster, "lost-a1-w1")
    assert bad is not None
    await cluster.fail_node(bad)
    # attempt 2 does not wait for the pod stuck on the lost node, and avoids that node
    pods = await running(cluster, "lost", attempt=2)
    assert all(anti_affinity(p) == [bad] for p in pods)
    assert bad not in {pod_node(cluster, p["metadata"]["name"]) for p in pods}
    st = status(cluster, "lost")
    failure = st["lastFailure"]
    assert failure["failureClass"] == "Infrastructure" and failure["nodes"] == [bad]
    assert failure["reason"] == "NodeLost" and failure["attempt"] == 1
    assert st["restartsByClass"] == {"Infrastructure": 1}  # maxRestarts is 0: not counted there
    assert [s["name"] for s in st["suspectNodes"]] == [bad]
    # the pod on the lost node stayed Terminating, then was force-deleted (grace 1s + 1s)
    await cluster.wait_for(lambda: cluster.get("pods", NS, "lost-a1-w1") is None, what="force delete")
    forced = [
        r
        for r in cluster.requests("tokensmith-operator")
        if r.method == "DELETE" and r.url.path.endswith("/lost-a1-w1") and r.grace == 0
    ]
    assert len(forced) == 1
    await cluster.wait_for(lambda: "ForceDeleted" in events(cluster, "lost"), what="event")
    assert phase(cluster, "lost") == "Running"


async def test_three_attempts_without_a_newer_checkpoint_end_no_progress(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(
        build_manifest("stuck", spec(restartPolicy={"maxRestarts": 10, "backoffSeconds": 0.2}), namespace=NS)
    )
    for attempt in (1, 2, 3):
        await running(cluster, "stuck", attempt=attempt)
        await cluster.terminate(NS, f"stuck-a{attempt}-w0", 1, message="CUDA error: out of memory")
    await cluster.wait_for(lambda: phase(cluster, "stuck") == "Failed", what="Failed/NoProgress")
    st = status(cluster, "stuck")
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NoProgress" and "3 attempts in a row" in failed["message"]
    assert st["attemptsWithoutProgress"] == 3 and st["restarts"] == 2
    await asyncio.sleep(1.0)
    assert cluster.workers(NS, "stuck", 4) == []  # no fourth gang
    await cluster.wait_for(lambda: not live(cluster, "stuck"), what="gang stopped")


async def test_a_cordoned_node_gets_a_checkpoint_and_a_planned_restart_elsewhere(
    operator_factory: Any,
) -> None:
    cluster, _ = operator_factory
    await cluster.apply_job(build_manifest("maint", spec(**FAST_NODES), namespace=NS))
    await running(cluster, "maint")
    await cluster.report_checkpoint(NS, "maint", 10)
    node = pod_node(cluster, "maint-a1-w0")
    assert node is not None
    await cluster.cordon(node)
    await cluster.wait_for(lambda: "CheckpointRequested" in events(cluster, "maint"), what="notice")
    # SIGTERM = graceful deletion with the pod's grace period; the trainer saves a checkpoint
    graceful = [
        r
        for r in cluster.requests("tokensmith-operator")
        if r.method == "DELETE" and "/maint-a1-" in r.url.path
    ]
    assert graceful and all(r.grace == 1 for r in graceful)
    await cluster.report_checkpoint(NS, "maint", 20)
    pods = await running(cluster, "maint", attempt=2)
    assert node not in {pod_node(cluster, p["metadata"]["name"]) for p in pods}
    st = status(cluster, "maint")
    assert st["plannedRestarts"] == 1 and st["restarts"] == 0 and "lastFailure" not in st
    assert st["attemptResumeStep"] == 20  # the checkpoint written on SIGTERM
    assert not st.get("restartsByClass")


async def test_queue_name_makes_each_attempt_one_kueue_group_and_a_volcano_queue(
    operator_factory: Any,
) -> None:
    cluster, _ = operator_factory
    await cluster.apply_job(build_manifest("q", spec(scheduling={"queueName": "team-a"}), namespace=NS))
    await cluster.wait_for(lambda: len(cluster.workers(NS, "q", 1)) == 2, what="attempt 1 pods")
    for pod in cluster.workers(NS, "q", 1):
        labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        assert labels["kueue.x-k8s.io/pod-group-name"] == "q-a1"
        assert annotations["kueue.x-k8s.io/pod-group-total-count"] == "2"
        assert annotations["kueue.x-k8s.io/retriable-in-group"] == "false"

    def queued() -> bool:
        conds = {c["type"]: c for c in status(cluster, "q").get("conditions", [])}
        return phase(cluster, "q") == "Pending" and conds.get("Queued", {}).get("status") == "True"

    await cluster.wait_for(queued, what="Pending/Queued")
    await asyncio.sleep(0.5)
    assert queued() and not live(cluster, "q")  # nothing runs before admission
    assert await cluster.admit(NS, "q-a1") == 2
    await running(cluster, "q")
    assert next(c for c in status(cluster, "q")["conditions"] if c["type"] == "Queued")["status"] == "False"
    # the gang grows at the next attempt (4 nodes keep the global batch a whole number of steps):
    # that attempt's group counts 4 pods
    await cluster.patch_job(NS, "q", {"spec": {"cluster": {"nodes": 4}}})
    await cluster.terminate(NS, "q-a1-w0", 1)
    await cluster.wait_for(lambda: len(cluster.workers(NS, "q", 2)) == 4, what="attempt 2 pods")
    for pod in cluster.workers(NS, "q", 2):
        assert pod["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "q-a2"
        assert pod["metadata"]["annotations"]["kueue.x-k8s.io/pod-group-total-count"] == "4"
    await cluster.wait_for(queued, what="attempt 2 queued")
    assert await cluster.admit(NS, "q-a2") == 4
    await running(cluster, "q", attempt=2, nodes=4)

    volcano = spec(cluster={"schedulerName": "volcano"}, scheduling={"queueName": "research"})
    await cluster.apply_job(build_manifest("vq", volcano, namespace=NS))
    await cluster.wait_for(lambda: cluster.get("podgroups", NS, "vq") is not None, what="PodGroup")
    group = cluster.get("podgroups", NS, "vq")
    assert group is not None and group["spec"]["queue"] == "research" and group["spec"]["minMember"] == 2
    await cluster.wait_for(lambda: len(cluster.workers(NS, "vq", 1)) == 2, what="volcano pods")
    assert not any("kueue.x-k8s.io/queue-name" in p["metadata"]["labels"] for p in cluster.workers(NS, "vq"))
    # a resized gang: the PodGroup's minMember follows at the next attempt
    await running(cluster, "vq")
    await cluster.patch_job(NS, "vq", {"spec": {"cluster": {"nodes": 4}}})
    await cluster.terminate(NS, "vq-a1-w1", 1)
    await cluster.wait_for(lambda: len(cluster.workers(NS, "vq", 2)) == 4, what="volcano attempt 2")
    await cluster.wait_for(
        lambda: (cluster.get("podgroups", NS, "vq") or {}).get("spec", {}).get("minMember") == 4,
        what="minMember 4",
    )


async def test_a_finished_job_with_a_ttl_disappears_with_its_children(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("brief", spec(ttlSecondsAfterFinished=1), namespace=NS))
    await running(cluster, "brief")
    await cluster.terminate(NS, "brief-a1-w0", 0)
    await cluster.wait_for(lambda: phase(cluster, "brief") == "Succeeded", what="Succeeded")

    def owned() -> list[str]:
        return [
            f"{plural}/{o['metadata']['name']}"
            for plural in ("pods", "services", "configmaps", "serviceaccounts", "roles", "rolebindings")
            for o in cluster.objects(plural, NS)
            if (o["metadata"].get("labels") or {}).get("tokensmith.dev/job") == "brief"
        ]

    await cluster.wait_for(
        lambda: cluster.get("llmtrainingjobs", NS, "brief") is None and not owned(),
        what="job and children deleted",
    )


async def test_active_deadline_ends_the_job_and_stops_the_gang(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("late", spec(activeDeadlineSeconds=2), namespace=NS))
    await running(cluster, "late")
    await cluster.wait_for(lambda: phase(cluster, "late") == "Failed", what="DeadlineExceeded")
    assert status(cluster, "late")["lastFailure"]["reason"] == "DeadlineExceeded"
    await cluster.wait_for(lambda: not live(cluster, "late"), what="gang stopped")


async def test_steady_state_costs_at_most_one_request_per_reconcile_with_the_node_watch(
    cluster: EmulatedCluster, operator: OperatorUnderTest
) -> None:
    await cluster.apply_job(build_manifest("calm", spec(), namespace=NS))
    await running(cluster, "calm")
    await asyncio.sleep(0.5)

    def sent() -> int:
        return len(cluster.requests("kopf")) + len(cluster.requests("tokensmith-operator"))

    req0, rec0 = sent(), operator.runtime.reconciles
    for step in range(8):
        await cluster.report_progress(NS, "calm", step=step, tokens=step * 1000)
        # node status churn that changes nothing the decisions read (a label): no job is woken for it
        await cluster.patch_node("node-5", {"metadata": {"labels": {"heartbeat": str(step)}}})
        await asyncio.sleep(0.2)
    reconciles = operator.runtime.reconciles - rec0
    assert reconciles >= 8
    assert (sent() - req0) / reconciles <= 1.0
