"""Rollback and replay (rollback.py) through the pure `reconcile`: divergence (exit 65) rolls back to the
last healthy checkpoint on other nodes, the replay tells Hardware from Data, Data ranges are skipped,
budgets and lost GPU-hours; plus the pieces the drivers deliver (pod env/affinity, config, reports)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from tokensmith.core.errors import EXIT_DIVERGED
from tokensmith.operator import children, observe, rollback
from tokensmith.operator.observed import (
    CreateGang,
    Decision,
    DeleteWorkers,
    EmitEvent,
    GangPlan,
    Observed,
    WorkerObservation,
)
from tokensmith.operator.reconcile import reconcile
from tokensmith.operator.spec import (
    CheckpointRef,
    DivergenceReport,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    Progress,
    effective_trainer_config,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAME = "job"
NODES = [f"node-{i}" for i in range(8)]


def make_spec(**restart: Any) -> LLMTrainingJobSpec:
    return LLMTrainingJobSpec.model_validate(
        {
            "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ck"}}},
            "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 2},
            "data": {"tokens": 100_000},
            "parallelism": {"microBatch": 2, "globalBatchTokens": 2048},
            "budget": {"pricePerGPUHour": 2.0},
            "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 10, "hangTimeoutSeconds": 0, **restart},
        }
    )


@dataclass
class Cluster:
    """Workers on named nodes: a new gang takes the first free nodes its anti-affinity allows (a
    scheduler in miniature), so the replay's nodes really differ from the diverged attempt's."""

    spec: LLMTrainingJobSpec
    now: datetime = T0
    st: LLMTrainingJobStatus = field(default_factory=LLMTrainingJobStatus)
    workers: dict[tuple[int, int], WorkerObservation] = field(default_factory=dict)
    plans: dict[int, GangPlan] = field(default_factory=dict)
    avoided: dict[int, tuple[str, ...]] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    placed: dict[int, set[str]] = field(default_factory=dict)  # attempt -> its nodes (outlives reaping)

    def decide(self) -> Decision:
        d = reconcile(NAME, self.spec, self.st, Observed(now=self.now, workers=tuple(self.workers.values())))
        busy = {w.node for w in self.workers.values()}
        for a in d.actions:
            if isinstance(a, CreateGang):
                self.plans[a.attempt], self.avoided[a.attempt] = a.plan, a.avoid_nodes
                free = [n for n in NODES if n not in a.avoid_nodes and n not in busy]
                for i in a.indices:
                    node = free.pop(0)
                    busy.add(node)
                    self.placed.setdefault(a.attempt, set()).add(node)
                    name = f"{NAME}-a{a.attempt}-w{i}"
                    self.workers[(a.attempt, i)] = WorkerObservation(
                        i, a.attempt, "Pending", name=name, node=node
                    )
            elif isinstance(a, DeleteWorkers):
                for w in a.workers:
                    self.workers[(w.attempt, w.index)] = replace(
                        self.workers[(w.attempt, w.index)], terminating=True
                    )
        self.st = d.status
        self.decisions.append(d)
        return d

    def current(self) -> list[WorkerObservation]:
        return [w for (a, _), w in self.workers.items() if a == self.st.attempt]

    def play(self, event: tuple[Any, ...]) -> Decision:
        kind, args = event[0], event[1:]
        if kind == "run":
            for w in self.current():
                self.workers[(w.attempt, w.index)] = replace(w, phase="Running")
        elif kind == "tick":
            self.now += timedelta(seconds=args[0])
        elif kind == "ckpt":  # the trainer's status.lastCheckpoint patch, with its health verdict
            step, healthy = args
            self.st = self.st.model_copy(
                update={"last_checkpoint": CheckpointRef(step=step, path=f"/ck/step-{step}", healthy=healthy)}
            )
        elif kind == "progress":
            prog = Progress(step=args[0], tokens=args[0] * 2048, loss=3.0, heartbeat_time=self.now)
            self.st = self.st.model_copy(update={"progress": prog})
        elif kind in ("diverge", "diverge-silently"):  # report (or not), then 65 on rank 0's node
            if kind == "diverge":
                step, samples = args
                report = DivergenceReport(
                    step=step, kind="nonfinite", samples=samples, attempt=self.st.attempt, time=self.now
                )
                self.st = self.st.model_copy(update={"divergence": report})
            for w in self.current():  # worker 0 exits 65, the others fall with it (torch tears down)
                code = EXIT_DIVERGED if w.index == 0 else 1
                self.workers[(w.attempt, w.index)] = replace(w, phase="Failed", exit_code=code)
        elif kind == "crash":
            w = self.current()[0]
            self.workers[(w.attempt, w.index)] = replace(w, phase="Failed", exit_code=1)
        elif kind == "succeed":
            for w in self.current():
                self.workers[(w.attempt, w.index)] = replace(w, phase="Succeeded", exit_code=0)
        elif kind == "reap":
            self.workers = {k: w for k, w in self.workers.items() if not w.terminating}
        return self.decide()


def run(spec: LLMTrainingJobSpec, events: list[tuple[Any, ...]]) -> Cluster:
    cluster = Cluster(spec)
    cluster.decide()
    for event in events:
        cluster.play(event)
    return cluster


def attempt_nodes(c: Cluster, attempt: int) -> set[str]:
    return c.placed.get(attempt, set())


def causes(c: Cluster) -> list[str]:
    return [r.cause for r in c.st.rollback_records]


def event_reasons(c: Cluster) -> list[str]:
    return [a.reason for d in c.decisions for a in d.actions if isinstance(a, EmitEvent)]


ROLL = [("reap",), ("tick", 10), ("tick", 0)]  # the gang goes, the backoff ends, the next attempt starts
HEALTHY_START = [("run",), ("tick", 900), ("ckpt", 4, True), ("tick", 0), ("progress", 6), ("tick", 900)]

SCENARIOS: dict[str, tuple[dict[str, Any], list[tuple[Any, ...]], dict[str, Any]]] = {
    "one-off NaN: the replay on other nodes passes -> Hardware": (
        {},
        [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("tick", 5), ("progress", 7),
         ("succeed",)],
        {"phase": "Succeeded", "causes": ["Hardware"], "suspects": "attempt 1", "skip": [], "rollbacks": 1,
         "restarts": 0, "condition": ("False", "Hardware")},
    ),
    "bad samples: the replay diverges at the same step -> Data, skipped": (
        {},
        [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("tick", 60), ("diverge", 6, [48, 56]),
         *ROLL, ("run",), ("ckpt", 8, True), ("tick", 0), ("succeed",)],
        {"phase": "Succeeded", "causes": ["Data", "Data"], "suspects": [], "skip": [[48, 56]], "rollbacks": 2,
         "restarts": 0, "condition": ("False", "Recovered")},
    ),
    "dataPolicy fail stops at the repeat": (
        {"dataPolicy": "fail"},
        [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("diverge", 6, [48, 56])],
        {"phase": "Failed", "reason": "DataDiverged", "causes": ["Data", "Data"], "skip": [], "rollbacks": 1},
    ),
    "the rollback budget is separate and runs out": (
        {"maxRollbacks": 1, "maxRestarts": 0},
        [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("diverge", 5, [40, 48])],
        {"phase": "Failed", "reason": "MaxRollbacksExceeded", "causes": ["Unknown", "Unknown"],
         "rollbacks": 1, "restarts": 0},
    ),
    "the replay passes, then diverges later: the first was Hardware, the second is open": (
        {},
        [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("tick", 60), ("diverge", 9, [72, 80]),
         *ROLL, ("run",)],
        {"phase": "Running", "causes": ["Hardware", "Unknown"], "suspects": "attempt 1", "rollbacks": 2,
         "condition": ("True", "NonFinite")},
    ),
    "a crash during the replay is an ordinary restart, still from the healthy checkpoint": (
        {},
        [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("crash",), ("reap",), ("tick", 10),
         ("tick", 0), ("run",)],
        {"phase": "Running", "causes": ["Unknown"], "rollbacks": 1, "restarts": 1},
    ),
    "exit 65 without a report: the last progress step stands in": (
        {},
        [*HEALTHY_START, ("diverge-silently",), ("tick", rollback.REPORT_GRACE_SECONDS), *ROLL],
        {"phase": "Pending", "causes": ["Unknown"], "rollbacks": 1, "step": 6, "kind": "unknown"},
    ),
    "no healthy checkpoint yet: roll back to scratch": (
        {},
        [("run",), ("tick", 60), ("ckpt", 4, False), ("tick", 0), ("diverge", 3, [24, 32]), *ROLL],
        {"phase": "Pending", "causes": ["Unknown"], "rollbacks": 1, "resume_step": None},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_rollback_scenarios(name: str) -> None:
    over, events, want = SCENARIOS[name]
    c = run(make_spec(**over), events)
    st = c.st
    assert st.phase == want["phase"], (st.phase, st.message)
    if "reason" in want:
        phase_cond = next(x for x in st.conditions if x.type == st.phase)
        assert phase_cond.reason == want["reason"], phase_cond
    assert causes(c) == want["causes"]
    assert st.rollbacks == want["rollbacks"]
    if "restarts" in want:
        assert st.restarts == want["restarts"]
    if "suspects" in want:
        expected = sorted(attempt_nodes(c, 1)) if want["suspects"] == "attempt 1" else want["suspects"]
        assert [s.name for s in st.suspect_nodes] == expected
    if "skip" in want:
        assert st.skip_samples == want["skip"]
    if "condition" in want:
        cond = next(x for x in st.conditions if x.type == rollback.CONDITION)
        assert (cond.status, cond.reason) == want["condition"]
    if "step" in want:
        assert st.rollback_records[0].step == want["step"] and st.rollback_records[0].kind == want["kind"]
    if "resume_step" in want:
        assert st.rollback_records[0].resume_step == want["resume_step"]
    # every rollback is an Event; every attempt after one resumes from the healthy pointer
    assert event_reasons(c).count("RollingBack") == st.rollbacks
    for attempt, plan in c.plans.items():
        rolled = any(r.replay_attempt <= attempt for r in st.rollback_records)
        assert (plan.resume_from == rollback.RESUME_HEALTHY) == rolled, (attempt, plan)


def test_replay_runs_on_other_nodes_and_suspects_are_avoided_later() -> None:
    c = run(make_spec(), [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",)])
    first = attempt_nodes(c, 1)
    assert c.avoided[2] == tuple(sorted(first))
    assert not attempt_nodes(c, 2) & first
    # the replay passes (Hardware); a later ordinary restart still avoids the suspects
    for event in [("tick", 5), ("progress", 7), ("crash",), ("reap",), ("tick", 10), ("tick", 0)]:
        c.play(event)
    assert causes(c) == ["Hardware"] and [s.name for s in c.st.suspect_nodes] == sorted(first)
    assert c.avoided[3] == tuple(sorted(first))
    assert "DivergenceAttributed" in event_reasons(c)


def test_a_replay_with_no_room_elsewhere_falls_back_to_any_node() -> None:
    """The replay's gang cannot be placed away from the diverged nodes (it stays Pending here): after
    pendingTimeoutSeconds (Unschedulable) the next attempt replays where the cluster allows."""
    spec = make_spec(maxRestarts=3)
    spec.restart_policy.pending_timeout_seconds = 60
    c = run(spec, [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL])
    first = attempt_nodes(c, 1)
    assert c.avoided[2] == tuple(sorted(first))
    for event in [("tick", 61), ("reap",), ("tick", 10), ("tick", 0)]:  # never scheduled: Unschedulable
        c.play(event)
    assert c.st.last_failure is not None and c.st.last_failure.reason == "Unschedulable"
    assert c.st.attempt == 3 and c.avoided[3] == ()
    assert c.plans[3].resume_from == rollback.RESUME_HEALTHY


def test_replay_on_other_nodes_can_be_turned_off() -> None:
    c = run(make_spec(replayOnOtherNodes=False), [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL])
    assert c.plans[2] == GangPlan(resume_from=rollback.RESUME_HEALTHY) and c.avoided[2] == ()


def test_a_data_replay_needs_no_other_nodes_and_carries_the_skip() -> None:
    events = [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("diverge", 6, [48, 56]), *ROLL]
    c = run(make_spec(), events)
    assert c.plans[3] == GangPlan(resume_from=rollback.RESUME_HEALTHY, skip_samples=((48, 56),))
    assert c.avoided[3] == ()


def test_progress_from_before_the_rollback_does_not_count_as_a_pass() -> None:
    """The trainer may run a few (skipped) steps past the bad one before exiting 65; that stale progress
    must not settle the replay as Hardware."""
    events = [*HEALTHY_START, ("progress", 9), ("diverge", 6, [48, 56]), *ROLL, ("run",), ("tick", 5)]
    c = run(make_spec(), events)
    assert c.st.progress is not None and c.st.progress.step == 9
    assert causes(c) == ["Unknown"]


def test_an_exit_65_waits_briefly_for_the_report_that_races_it() -> None:
    """On Kubernetes the pod's end can be seen before the trainer's status patch: wait for it."""
    c = run(make_spec(), [*HEALTHY_START, ("diverge-silently",)])
    d = c.decisions[-1]
    assert c.st.phase == "Running" and not d.actions and d.requeue_after == rollback.REPORT_GRACE_SECONDS
    c.now += timedelta(seconds=3)
    report = DivergenceReport(step=6, kind="nonfinite", samples=[48, 56], time=c.now)
    c.st = c.st.model_copy(update={"divergence": report})  # arrives within the grace
    d = c.decide()
    assert d.status.phase == "Restarting" and d.status.rollback_records[0].samples == [48, 56]
    assert d.status.diverged_exit_time is None


def test_lost_gpu_hours_are_the_work_since_the_healthy_checkpoint_or_the_last_rollback() -> None:
    spec = make_spec()
    devices = spec.accounted_devices  # 2 nodes x 2 processes
    c = run(spec, [*HEALTHY_START, ("diverge", 6, [48, 56])])
    first = c.st.rollback_records[0]
    # the checkpoint was seen after 900 s of a running gang, the divergence after another 900 s
    assert first.lost_gpu_hours == pytest.approx(900 / 3600 * devices)
    assert c.st.lost_gpu_hours["rollback"] == pytest.approx(first.lost_gpu_hours)
    assert c.st.lost_cost_usd["rollback"] == pytest.approx(first.lost_gpu_hours * 2.0)
    for event in [*ROLL, ("run",), ("tick", 1800), ("diverge", 6, [48, 56])]:
        c.play(event)
    second = c.st.rollback_records[1]
    assert second.lost_gpu_hours == pytest.approx(1800 / 3600 * devices)  # from the first rollback on
    assert c.st.lost_gpu_hours["rollback"] == pytest.approx(first.lost_gpu_hours + second.lost_gpu_hours)
    assert c.st.lost_gpu_hours["rollback"] < c.st.gpu_hours


def test_a_stale_divergence_report_does_not_turn_a_crash_into_a_rollback() -> None:
    c = run(make_spec(), [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("crash",)])
    assert c.st.phase == "Restarting" and c.st.restarts == 1 and c.st.rollbacks == 1
    assert c.st.last_failure is not None and c.st.last_failure.reason == "WorkerFailed"


def test_a_fresh_report_with_a_torn_down_gang_is_a_divergence_even_without_65() -> None:
    """The trainer reported divergence for this attempt; its launcher's exit code was lost (e.g. 1)."""
    c = run(make_spec(), HEALTHY_START)
    report = DivergenceReport(step=6, kind="spike", samples=[48, 56], attempt=1)
    c.st = c.st.model_copy(update={"divergence": report})
    w = c.current()[1]
    c.workers[(1, 1)] = replace(w, phase="Failed", exit_code=1)
    d = c.decide()
    assert d.status.phase == "Restarting" and d.status.rollback_records[0].kind == "spike"
    cond = next(x for x in d.status.conditions if x.type == rollback.CONDITION)
    assert (cond.status, cond.reason) == ("True", "LossSpike")


@pytest.mark.parametrize(
    ("healthy", "recorded"),
    [(True, 4), (False, None), (None, None)],  # absent: a trainer without health checks
)
def test_only_healthy_checkpoints_become_the_rollback_target(
    healthy: bool | None, recorded: int | None
) -> None:
    st = LLMTrainingJobStatus(last_checkpoint=CheckpointRef(step=4, path="/ck/step-4", healthy=healthy))
    rollback.note_healthy(st)
    got = st.last_healthy_checkpoint
    assert (got.step if got else None) == recorded


# ---------------------------------------------------------------- what the drivers deliver


def test_rollback_pods_resume_from_the_healthy_pointer_and_avoid_nodes() -> None:
    spec = make_spec()
    job = children.JobRef("job", "ml", "uid-1")
    plan = GangPlan(rollback.RESUME_HEALTHY, ((48, 56),))
    pod = children.worker_pod(job, spec, 2, 0, children.Defaults(), ("node-1", "node-0"), plan=plan)
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env[children.RESUME_ENV] == "latest_healthy"
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["node-0", "node-1"]}]}
    ]
    plain = children.worker_pod(job, spec, 1, 0, children.Defaults())
    assert "affinity" not in plain["spec"]
    assert children.RESUME_ENV not in {e["name"] for e in plain["spec"]["containers"][0]["env"]}


def _trainer_knows_skip_samples() -> bool:
    from tokensmith.trainer.config import DataConfig

    return "skip_samples" in DataConfig.model_fields


@pytest.mark.skipif(
    not _trainer_knows_skip_samples(), reason="needs the trainer's data.skip_samples (issue 13)"
)
def test_skipped_samples_reach_the_trainer_config() -> None:
    spec = make_spec()
    cfg = effective_trainer_config(spec, "job", ((48, 56),))
    assert cfg.data.skip_samples == [[48, 56]]  # type: ignore[attr-defined]
    cm = children.trainer_config_map(children.JobRef("job", "ml", "u"), spec, ((48, 56),))
    assert "skip_samples:\n  - - 48\n    - 56" in cm["data"][children.CONFIG_FILE]


def test_without_a_skip_the_config_is_unchanged() -> None:
    spec = make_spec()
    assert effective_trainer_config(spec, "job", ()) == effective_trainer_config(spec, "job")


def test_reports_fold_into_divergence_and_checkpoint_health() -> None:
    st = observe.apply_report(
        LLMTrainingJobStatus(), {"type": "checkpoint", "step": 4, "path": "/ck/step-4", "healthy": True}
    )
    assert st.last_checkpoint is not None and st.last_checkpoint.healthy is True
    st = observe.apply_report(
        st,
        {"type": "diverged", "step": 6, "kind": "nonfinite", "samples": [48, 56], "attempt": 2,
         "time": "2026-01-01T00:00:00Z"},
    )  # fmt: skip
    assert st.divergence == DivergenceReport(step=6, kind="nonfinite", samples=[48, 56], attempt=2, time=T0)


def test_pods_report_their_node() -> None:
    pod = children.worker_pod(children.JobRef("job", "ml", "u"), make_spec(), 1, 0, children.Defaults())
    pod["spec"]["nodeName"] = "node-7"
    pod["status"] = {"phase": "Running"}
    w = observe.worker_from_pod(pod)
    assert w is not None and w.node == "node-7"


def test_the_local_summary_and_status_line_show_rollbacks() -> None:
    from tokensmith.operator.local.display import status_line
    from tokensmith.operator.local.report import History, summary, summary_text

    c = run(make_spec(), [*HEALTHY_START, ("diverge", 6, [48, 56]), *ROLL, ("run",), ("ckpt", 8, True)])
    data = summary(c.st, History(), None)
    (entry,) = data["rollbacks"]
    assert entry["cause"] == "Hardware" and entry["resume_step"] == 4 and entry["samples"] == [48, 56]
    assert data["lost_gpu_hours"]["rollback"] == pytest.approx(entry["lost_gpu_hours"])
    text = summary_text(data, None)
    assert (
        "attempt 1 diverged (nonfinite) at step 6, samples [48, 56): rolled back to 4, cause Hardware" in text
    )
    assert "rollbacks 1 (healthy 8)" in status_line(c.st, 20)


START = T0 + timedelta(seconds=100.5)  # the current attempt (2) started here
# the trainer's report times are whole seconds: SAME_SECOND is the start's own second, before it
BEFORE, AFTER = START - timedelta(seconds=30), START + timedelta(seconds=30)
SAME_SECOND = START.replace(microsecond=0)
# (report attempt, report time, exit code of worker 0) -> the divergence's kind, None for no divergence.
# The attempt, when the trainer sends it (TOKENSMITH_ATTEMPT), decides and the clocks are never read: a
# trainer whose clock runs ahead or behind the operator's is still attributed right. Without it the
# report's time is compared with the attempt's start (strictly after it unless a 65 vouches for it).
MATCHING: list[tuple[int | None, datetime | None, int, str | None]] = [
    (2, AFTER, 1, "spike"),  # this attempt's report: a torn-down gang is a divergence without 65
    (2, BEFORE, 1, "spike"),  # this attempt's, sent by a trainer whose clock runs behind
    (2, None, 1, "spike"),
    (1, AFTER, 1, None),  # the previous attempt's, though its clock says otherwise: a plain crash
    (1, AFTER, EXIT_DIVERGED, "unknown"),  # a 65 with only an old report: the report is not used
    (None, AFTER, 1, "spike"),  # no attempt (an older trainer): by time
    (None, BEFORE, 1, None),
    (None, BEFORE, EXIT_DIVERGED, "unknown"),
    (None, SAME_SECOND, 1, None),  # strict without a 65
    (None, SAME_SECOND, EXIT_DIVERGED, "spike"),  # with a 65, the start's own second counts
    (None, None, 1, None),
    (None, None, EXIT_DIVERGED, "spike"),
    (3, AFTER, EXIT_DIVERGED, "unknown"),  # another attempt's (a later one: never this attempt's)
]


@pytest.mark.parametrize(("attempt", "sent", "code", "kind"), MATCHING)
def test_a_divergence_report_is_matched_by_attempt_and_by_time_only_without_one(
    attempt: int | None, sent: datetime | None, code: int, kind: str | None
) -> None:
    report = DivergenceReport(step=6, kind="spike", samples=[48, 56], attempt=attempt, time=sent)
    st = LLMTrainingJobStatus(attempt=2, attempt_start_time=START, divergence=report)
    workers = {
        0: WorkerObservation(0, 2, "Failed", exit_code=code, node="node-0"),
        1: WorkerObservation(1, 2, "Failed", exit_code=1, node="node-1"),
    }
    found = rollback.divergence(st, workers)
    assert (found.kind if found is not None else None) == kind
    if kind == "spike":
        assert found is not None and (found.step, found.samples) == (6, (48, 56))
