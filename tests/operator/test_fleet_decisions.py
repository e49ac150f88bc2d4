"""The pure fleet-scale decisions, table-driven: failure classes, restart budgets per class,
NoProgress, stuck pods, lost nodes, disruption notices, suspect nodes, queues and lifecycle."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tokensmith.operator import children, lifecycle, nodes, queues, restarts
from tokensmith.operator.failures import classify_worker
from tokensmith.operator.observed import (
    CordonNode,
    CreateGang,
    DeleteJob,
    DeleteWorkers,
    Failure,
    NodeObservation,
    Observed,
    WorkerObservation,
)
from tokensmith.operator.reconcile import reconcile
from tokensmith.operator.spec import (
    CheckpointRef,
    LLMTrainingJobStatus,
    NodeHealthSpec,
    RestartPolicySpec,
    SuspectNode,
    Toleration,
)

from .test_reconcile import NAME, T0, events, make_spec, running_status

REF = children.JobRef("job", "ns", "uid-1")


def w(index: int, phase: str = "Running", attempt: int = 1, **kw: object) -> WorkerObservation:
    return WorkerObservation(index=index, attempt=attempt, phase=phase, name=f"p{attempt}-{index}", **kw)  # type: ignore[arg-type]


def node(name: str, ready: bool = True, since_s: float = 0, **kw: object) -> NodeObservation:
    return NodeObservation(name=name, ready=ready, ready_since=T0 - timedelta(seconds=since_s), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("worker", "cls", "reason"),
    [
        (w(0, "Failed", exit_code=1), "Application", "WorkerFailed"),
        (w(0, "Failed", exit_code=78), "Application", "ConfigError"),
        (w(0, "Failed", exit_code=137, reason="OOMKilled"), "Application", "OOMKilled"),
        (
            w(0, "Failed", exit_code=1, message="NVRM: Xid 79, GPU has fallen off the bus"),
            "Infrastructure",
            "GPUError",
        ),
        (
            w(0, "Failed", exit_code=1, message="uncorrectable ECC error encountered"),
            "Infrastructure",
            "GPUError",
        ),
        (w(0, "Failed", reason="Evicted"), "Infrastructure", "Evicted"),
        (w(0, "Failed", reason="TerminationByKubelet"), "Infrastructure", "Evicted"),
        (w(0, "Failed", reason="DeletionByTaintManager"), "Infrastructure", "NodeLost"),
        (w(0, "Unknown"), "Infrastructure", "NodeLost"),
        (w(0, "Failed", reason="PreemptionByScheduler"), "Scheduling", "Preempted"),
    ],
)
def test_failure_classes_and_the_failing_node(worker: WorkerObservation, cls: str, reason: str) -> None:
    found = classify_worker(replace(worker, node="gpu-7"), RestartPolicySpec())
    assert found is not None and (found.failure_class, found.reason) == (cls, reason)
    assert found.nodes == ("gpu-7",)


def _failure(cls: str) -> Failure:
    return Failure("ExitCode", "X", "boom", retryable=True, failure_class=cls)


@pytest.mark.parametrize(
    ("cls", "used", "policy", "restart", "reason"),
    [
        ("Application", {"Application": 1}, {"maxRestarts": 2}, True, ""),
        ("Application", {"Application": 2}, {"maxRestarts": 2}, False, "MaxRestartsExceeded"),
        ("Infrastructure", {"Application": 2}, {"maxRestarts": 2}, True, ""),  # its own budget
        (
            "Infrastructure",
            {"Infrastructure": 3},
            {"maxInfrastructureRestarts": 3},
            False,
            "MaxInfrastructureRestartsExceeded",
        ),
        ("Scheduling", {"Scheduling": 500}, {}, True, ""),  # preemptions are free by default
        (
            "Scheduling",
            {"Scheduling": 1},
            {"maxSchedulingRestarts": 1},
            False,
            "MaxSchedulingRestartsExceeded",
        ),
    ],
)
def test_budgets_per_class(cls: str, used: dict, policy: dict, restart: bool, reason: str) -> None:
    rp = RestartPolicySpec.model_validate({"maxAttemptsWithoutProgress": 0, **policy})
    st = LLMTrainingJobStatus(restarts_by_class=used, restarts=sum(used.values()))
    verdict = restarts.judge(st, _failure(cls), rp)
    assert (verdict.restart, verdict.reason) == (restart, reason)


def test_backoff_grows_per_class() -> None:
    rp = RestartPolicySpec(backoff_seconds=10, backoff_multiplier=2, max_attempts_without_progress=0)
    st = LLMTrainingJobStatus(restarts_by_class={"Application": 3, "Infrastructure": 0})
    assert restarts.judge(st, _failure("Application"), rp).wait == 80
    assert restarts.judge(st, _failure("Infrastructure"), rp).wait == 10


@pytest.mark.parametrize(
    ("streak", "resume", "ckpt", "cls", "after", "fails"),
    [
        (0, None, None, "Application", 1, False),
        (2, None, None, "Application", 3, True),  # the third attempt in a row without a checkpoint
        (2, 10, 10, "Application", 3, True),  # resumed from 10, wrote nothing newer
        (2, 10, 20, "Application", 0, False),  # a newer checkpoint resets the streak
        (2, None, None, "Infrastructure", 2, False),  # not the run's fault: neither counts nor resets
        (2, None, None, "Scheduling", 2, False),
    ],
)
def test_no_progress(
    streak: int, resume: int | None, ckpt: int | None, cls: str, after: int, fails: bool
) -> None:
    st = LLMTrainingJobStatus(
        attempts_without_progress=streak,
        attempt_resume_step=resume,
        last_checkpoint=CheckpointRef(step=ckpt, path="/c") if ckpt is not None else None,
    )
    assert restarts.streak_after(st, _failure(cls)) == after
    verdict = restarts.judge(st, _failure(cls), RestartPolicySpec(max_restarts=100))
    assert (verdict.reason == "NoProgress") is fails


def test_lost_gpu_hours_count_from_the_later_of_gang_start_and_checkpoint() -> None:
    spec = make_spec()  # 2 nodes x 2 processes on CPU = 4 devices
    st = LLMTrainingJobStatus(running_since=T0, attempt_resume_step=None)
    assert restarts.lost_gpu_hours(spec, st, T0 + timedelta(hours=1)) == pytest.approx(4.0)
    st.last_checkpoint = CheckpointRef(step=5, path="/c", time=T0 + timedelta(minutes=45))
    assert restarts.lost_gpu_hours(spec, st, T0 + timedelta(hours=1)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("worker", "known", "after", "stuck"),
    [
        (
            w(0, terminating=True, node="n1", deletion_time=T0 - timedelta(seconds=301)),
            {"n1": node("n1", False)},
            300,
            True,
        ),
        (
            w(0, terminating=True, node="n1", deletion_time=T0 - timedelta(seconds=299)),
            {"n1": node("n1", False)},
            300,
            False,
        ),
        (
            w(0, terminating=True, node="n1", deletion_time=T0 - timedelta(seconds=999)),
            {"n1": node("n1")},
            300,
            False,
        ),  # healthy kubelet: wait
        (
            w(0, terminating=True, node="gone", deletion_time=T0 - timedelta(seconds=1)),
            {"n1": node("n1")},
            0,
            True,
        ),  # node deleted
        (w(0, terminating=False, node="n1"), {"n1": node("n1", False)}, 0, False),  # not deleted yet
        (
            w(0, terminating=True, node="n1", deletion_time=T0 - timedelta(seconds=999)),
            None,
            0,
            False,
        ),  # no node knowledge
    ],
)
def test_stuck_terminating_pods(
    worker: WorkerObservation, known: dict | None, after: float, stuck: bool
) -> None:
    assert bool(nodes.stuck([worker], known, T0, after)) is stuck


def test_stuck_pods_are_force_deleted_in_any_phase_and_never_block_the_next_attempt() -> None:
    spec = make_spec(restartPolicy={"forceDeleteAfterSeconds": 10, "backoffSeconds": 0})
    st = running_status(spec).model_copy(update={"phase": "Restarting", "restart_after": T0})
    old = w(1, terminating=True, node="bad", deletion_time=T0 - timedelta(seconds=11))
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=(old,), nodes={"bad": node("bad", False)}))
    forced = [a for a in d.actions if isinstance(a, DeleteWorkers) and a.force]
    assert forced and forced[0].workers == (old,) and "ForceDeleted" in events(d)
    assert any(isinstance(a, CreateGang) for a in d.actions) and d.status.attempt == 2
    young = replace(old, deletion_time=T0 - timedelta(seconds=5))
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=(young,), nodes={"bad": node("bad", False)}))
    assert not [a for a in d.actions if isinstance(a, DeleteWorkers) and a.force]
    assert d.requeue_after is not None and d.requeue_after <= 5.1  # looks again when it becomes stuck


def test_a_worker_on_a_not_ready_node_fails_infrastructure_and_the_node_is_suspect() -> None:
    spec = make_spec(
        restartPolicy={"maxRestarts": 0}, nodeHealth={"notReadyTimeoutSeconds": 30, "cordon": True}
    )
    st = running_status(spec)
    gang = (w(0, node="a"), w(1, node="b"))
    fresh = {"a": node("a"), "b": node("b", False, since_s=10)}
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang, nodes=fresh))
    assert d.status.phase == "Running" and d.requeue_after is not None and d.requeue_after <= 20.1
    old = {"a": node("a"), "b": node("b", False, since_s=31)}
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang, nodes=old))
    assert d.status.phase == "Restarting" and d.status.last_failure is not None
    assert d.status.last_failure.failure_class == "Infrastructure" and d.status.last_failure.nodes == ["b"]
    assert [s.name for s in d.status.suspect_nodes] == ["b"]
    assert CordonNode("b", d.actions[0].reason) in d.actions  # type: ignore[union-attr]
    d = reconcile(NAME, spec, d.status, Observed(now=T0 + timedelta(seconds=60), nodes=old))
    gang_action = next(a for a in d.actions if isinstance(a, CreateGang))
    assert gang_action.avoid_nodes == ("b",)


@pytest.mark.parametrize(
    ("obs", "tolerations", "notice"),
    [
        (node("a", unschedulable=True), [], "cordoned"),
        (node("a", taints=(("maintenance", "", "NoExecute"),)), [], "tainted maintenance:NoExecute"),
        (
            node("a", taints=(("nvidia.com/gpu", "present", "NoSchedule"),)),
            [Toleration(key="nvidia.com/gpu", operator="Exists")],
            None,
        ),
        (node("a", taints=(("node.kubernetes.io/disk-pressure", "", "NoSchedule"),)), [], None),
        (node("a", taints=(("x", "", "PreferNoSchedule"),)), [], None),
        (node("a", taints=(("x", "", "NoSchedule"),)), [Toleration(operator="Exists")], None),
        (node("a", False, unschedulable=True), [], None),  # a NotReady node is a lost node, not a notice
    ],
)
def test_disruption_notices(obs: NodeObservation, tolerations: list, notice: str | None) -> None:
    found = nodes.notices([w(0, node="a")], {"a": obs}, tolerations)
    assert (found[0][1] if found else None) is None if notice is None else notice in found[0][1]


def test_a_notice_is_a_planned_restart_not_a_failure() -> None:
    spec = make_spec(restartPolicy={"maxRestarts": 0})
    st = running_status(spec)
    gang = (w(0, node="a"), w(1, node="b", disruption="EvictionByEvictionAPI"))
    d = reconcile(NAME, spec, st, Observed(now=T0, workers=gang, nodes={"a": node("a"), "b": node("b")}))
    assert d.status.phase == "Restarting" and d.status.planned_restarts == 1 and d.status.restarts == 0
    assert d.status.last_failure is None and "CheckpointRequested" in events(d)
    deleted = next(a for a in d.actions if isinstance(a, DeleteWorkers))
    assert not deleted.force and len(deleted.workers) == 2  # graceful: SIGTERM, the trainer checkpoints
    assert d.status.restart_after == T0  # no backoff


def test_suspects_expire_and_are_bounded() -> None:
    health = NodeHealthSpec(suspect_ttl_seconds=100, max_suspect_nodes=2)
    s = nodes.add_suspects([], ["a"], "NodeLost", T0, health)
    s = nodes.add_suspects(s, ["b"], "NodeLost", T0 + timedelta(seconds=10), health)
    s = nodes.add_suspects(s, ["c", "a"], "GPUError", T0 + timedelta(seconds=20), health)
    assert [(x.name, x.failures) for x in s] == [("a", 2), ("c", 1)]  # b was the oldest
    assert nodes.avoid(s, T0 + timedelta(seconds=119)) == ("a", "c")
    assert nodes.avoid(s, T0 + timedelta(seconds=121)) == ()
    assert nodes.avoid([SuspectNode(name="x", reason="r")], T0) == ("x",)


def test_kueue_labels_per_attempt_and_volcano_group_fields() -> None:
    spec = make_spec(scheduling={"queueName": "team-a", "workloadPriorityClass": "high"})
    pod = children.worker_pod(REF, spec, 3, 0, children.Defaults(), ("bad",), 5)
    labels, ann = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels[queues.KUEUE_QUEUE] == "team-a" and labels[queues.KUEUE_GROUP] == "job-a3"
    assert labels[queues.KUEUE_PRIORITY] == "high"
    assert ann == {queues.KUEUE_TOTAL: "5", queues.KUEUE_RETRIABLE: "false"}
    assert pod["spec"]["affinity"] == children.node_anti_affinity(("bad",))
    volcano = make_spec(
        cluster={"schedulerName": "volcano", "priorityClassName": "train"},
        scheduling={"queueName": "research", "networkTopology": {"mode": "soft", "highestTierAllowed": 2}},
    )
    group = children.pod_group(REF, volcano)
    assert group is not None
    assert group["spec"]["queue"] == "research" and group["spec"]["priorityClassName"] == "train"
    assert group["spec"]["networkTopology"] == {"mode": "soft", "highestTierAllowed": 2}
    vpod = children.worker_pod(REF, volcano, 1, 0, children.Defaults())
    assert queues.KUEUE_QUEUE not in vpod["metadata"]["labels"]
    plain = children.worker_pod(REF, make_spec(), 1, 0, children.Defaults())
    assert "affinity" not in plain["spec"] and queues.KUEUE_QUEUE not in plain["metadata"]["labels"]


def test_queued_gang_is_pending_queued_and_not_unschedulable() -> None:
    spec = make_spec(scheduling={"queueName": "q"}, restartPolicy={"pendingTimeoutSeconds": 5})
    st = reconcile(NAME, spec, LLMTrainingJobStatus(), Observed(now=T0)).status
    gated = (w(0, "Pending", gated=True), w(1, "Pending", gated=True))
    d = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(seconds=60), workers=gated))
    queued = next(c for c in d.status.conditions if c.type == "Queued")
    assert (
        d.status.phase == "Pending"
        and queued.status == "True"
        and "admission by q" in (d.status.message or "")
    )
    d = reconcile(NAME, spec, d.status, Observed(now=T0 + timedelta(seconds=61), workers=(w(0), w(1))))
    assert d.status.phase == "Running"
    assert next(c for c in d.status.conditions if c.type == "Queued").status == "False"


def test_ttl_and_active_deadline() -> None:
    spec = make_spec(ttlSecondsAfterFinished=60, activeDeadlineSeconds=3600)
    st = running_status(spec)
    d = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(seconds=10), workers=(w(0), w(1))))
    assert d.requeue_after is not None and d.requeue_after <= 3590.1
    d = reconcile(NAME, spec, st, Observed(now=T0 + timedelta(seconds=3600), workers=(w(0), w(1))))
    assert d.status.phase == "Failed" and d.status.last_failure is not None
    assert d.status.last_failure.reason == "DeadlineExceeded"
    assert any(isinstance(a, DeleteWorkers) for a in d.actions)
    done = d.status
    d = reconcile(NAME, spec, done, Observed(now=T0 + timedelta(seconds=3630)))
    assert not any(isinstance(a, DeleteJob) for a in d.actions) and d.requeue_after == pytest.approx(30.05)
    d = reconcile(NAME, spec, done, Observed(now=T0 + timedelta(seconds=3661)))
    assert any(isinstance(a, DeleteJob) for a in d.actions) and "TTLExpired" in events(d)
    assert lifecycle.deadline_exceeded(make_spec(), st, T0 + timedelta(days=999)) is None


def test_pods_with_anti_affinity_and_kueue_labels_validate_against_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.utils.latest_version()
    spec = make_spec(scheduling={"queueName": "team-a", "workloadPriorityClass": "high"})
    for pod in children.worker_pods(REF, spec, 2, (0, 1), children.Defaults(), ("n1", "n2"), 2):
        kubernetes_validate.validate(pod, version, strict=True)


def test_a_kueue_or_scheduler_preemption_notice_restarts_without_suspecting_the_node() -> None:
    from tokensmith.operator.observe import worker_from_pod

    pod = children.worker_pod(REF, make_spec(), 1, 1, children.Defaults())
    pod["spec"]["nodeName"] = "b"
    cond = {"type": "TerminationTarget", "status": "True", "reason": "StoppedByKueue", "message": "Preempted"}
    pod["status"] = {"phase": "Running", "conditions": [cond]}
    seen = worker_from_pod(pod)
    assert seen is not None and seen.disruption == "StoppedByKueue"
    spec = make_spec()
    d = reconcile(NAME, spec, running_status(spec), Observed(now=T0, workers=(w(0, node="a"), seen)))
    assert d.status.phase == "Restarting" and d.status.planned_restarts == 1 and d.status.suspect_nodes == []
    pod["status"] = {"phase": "Failed", "conditions": [cond]}
    failed = worker_from_pod(pod)
    assert failed is not None
    found = classify_worker(failed, RestartPolicySpec())
    assert found is not None and (found.kind, found.failure_class) == ("Preempted", "Scheduling")
