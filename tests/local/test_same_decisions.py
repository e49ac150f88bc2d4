"""The local runner and the operator take the same decision for the same event sequence.

Each scenario is a list of events (a worker starts, exits with a code or a signal, the trainer
reports progress or a checkpoint, an evaluation ends, time passes, suspend). Two drivers play it:
- Kubernetes: real worker pod and evaluation Job manifests (`children`), their statuses as the
  kubelet and Job controller write them, observed through the kopf handler's own path
  (`observe.worker_from_pod` via `handlers.observed_from_indices`, `handlers.read_status`), the
  trainer's status patches (`reporting.progress_patch` / `checkpoint_patch`) merged into the stored
  status, and the status written back the way `handlers._write_status` does (trainer keys excluded);
- local: process states and `tokensmith eval` termination files through `local.observe`, the
  trainer's report lines written by the real `FileReporter` and folded by the runner's tail.
Both call `reconcile`; every decision (phase, reason, actions, the status without timestamps) must
match step by step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tokensmith.operator import children, handlers
from tokensmith.operator.local.observe import ProcessState, eval_observation, fold_reports, worker_observation
from tokensmith.operator.local.processes import ReportTail
from tokensmith.operator.local.runner import read_status as read_local_status
from tokensmith.operator.local.runner import write_status as write_local_status
from tokensmith.operator.observed import (
    CreateEvaluation,
    CreateGang,
    Decision,
    DeleteWorkers,
    EmitEvent,
    Observed,
)
from tokensmith.operator.reconcile import reconcile
from tokensmith.operator.spec import LLMTrainingJobSpec, LLMTrainingJobStatus, status_to_dict, token_budget
from tokensmith.trainer.reporting import (
    FileReporter,
    checkpoint_patch,
    divergence_patch,
    merge,
    progress_patch,
)

NAME, NS = "tiny", "default"


def make_spec(**over: Any) -> LLMTrainingJobSpec:
    spec: dict[str, Any] = {
        "model": {"preset": "tiny"},
        "data": {"trainPath": "/data/train", "validPath": "/data/valid", "tokens": 81920},
        "parallelism": {"microBatch": 8, "globalBatchTokens": 8192},
        "cluster": {"nodes": 2, "gpusPerNode": 0, "nprocPerNode": 1},
        "checkpoint": {"volume": {"emptyDir": {}}, "everySteps": 5},
        "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 10, "hangTimeoutSeconds": 600},
        "evaluation": {"tasks": ["arc_easy_local"], "limit": 5},
    }
    for key, value in over.items():
        section, _, field_name = key.partition("__")
        spec.setdefault(section, {})[field_name] = value
    return LLMTrainingJobSpec.model_validate(spec)


# ---------------------------------------------------------------------------------- drivers


@dataclass
class KubeDriver:
    """Pods, Jobs and the stored status as the API server would hold them."""

    spec: LLMTrainingJobSpec
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    eval_pods: dict[int, dict[str, Any]] = field(default_factory=dict)
    raw_status: dict[str, Any] = field(default_factory=dict)

    def _worker(self, index: int, attempt: int) -> dict[str, Any] | None:
        return next(
            (
                p
                for p in self.pods.values()
                if p["metadata"]["labels"]["tokensmith.dev/worker-index"] == str(index)
                and p["metadata"]["labels"]["tokensmith.dev/attempt"] == str(attempt)
            ),
            None,
        )

    def exit(self, index: int, attempt: int, code: int, message: str | None) -> None:
        pod = self._worker(index, attempt)
        assert pod is not None
        term: dict[str, Any] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
        if message:
            term["message"] = message
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "state": {"terminated": term}}],
        }

    def report(self, patch: dict[str, Any]) -> None:
        self.raw_status = merge(self.raw_status, patch["status"])

    def eval_end(self, step: int, code: int, termination: str) -> None:
        job = self.jobs[step]
        ok = code == 0
        job["status"] = {
            "conditions": [{"type": "Complete" if ok else "Failed", "status": "True"}],
            "succeeded" if ok else "failed": 1,
        }
        self.eval_pods[step]["status"] = {
            "phase": "Succeeded" if ok else "Failed",
            "containerStatuses": [
                {"name": "evaluator", "state": {"terminated": {"exitCode": code, "message": termination}}}
            ],
        }

    def decide(self, now: datetime) -> Decision:
        from tokensmith.operator import observe

        key = (NS, NAME)
        pod_index: dict[Any, list[Any]] = {key: []}
        for pod in self.pods.values():
            w = observe.worker_from_pod(pod)
            assert w is not None
            pod_index[key].append(w)
        for step, pod in self.eval_pods.items():
            pod_index[key].append({"step": str(step), "status": dict(pod.get("status") or {})})
        jobs_index = {
            key: [{"metadata": j["metadata"], "status": j.get("status") or {}} for j in self.jobs.values()]
        }
        observed = handlers.observed_from_indices(NS, NAME, now, None, pod_index, jobs_index)
        status = handlers.read_status(self.raw_status)
        decision = reconcile(NAME, self.spec, status, observed)
        self.apply(status, decision)
        return decision

    def apply(self, old: LLMTrainingJobStatus, decision: Decision) -> None:
        job = children.JobRef(NAME, NS, "uid-1")
        for action in decision.actions:
            if isinstance(action, CreateGang):
                for pod in children.worker_pods(
                    job, self.spec, action.attempt, action.indices, children.Defaults()
                ):
                    pod["status"] = {"phase": "Running"}  # the kubelet starts it at once
                    self.pods.setdefault(pod["metadata"]["name"], pod)
            elif isinstance(action, CreateEvaluation):
                manifest = children.evaluation_job(
                    job, self.spec, action.step, action.path, action.name, children.Defaults()
                )
                self.jobs.setdefault(action.step, manifest)
                self.eval_pods.setdefault(action.step, {"status": {"phase": "Running"}})
        before, after = status_to_dict(old), status_to_dict(decision.status)
        for k in set(before) | set(after):  # handlers._write_status: trainer-owned keys are not sent
            if k in handlers.TRAINER_STATUS or before.get(k) == after.get(k):
                continue
            if k in after:
                self.raw_status[k] = after[k]
            else:
                self.raw_status.pop(k, None)
        for action in decision.actions:
            if isinstance(action, DeleteWorkers):
                for w in action.workers:
                    pod = self.pods.get(w.name or "")
                    if pod is not None:
                        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"

    def reap(self) -> None:
        """Pods being deleted are gone by the next look (grace period over)."""
        self.pods = {n: p for n, p in self.pods.items() if not p["metadata"].get("deletionTimestamp")}


@dataclass
class LocalDriver:
    """Processes and files as the local runner sees them."""

    spec: LLMTrainingJobSpec
    tmp: Path
    procs: dict[tuple[int, int], ProcessState] = field(default_factory=dict)
    evals: dict[int, tuple[str, int | None, str | None]] = field(default_factory=dict)
    tail: ReportTail = field(default_factory=ReportTail)

    def __post_init__(self) -> None:
        self.report = self.tmp / "report.jsonl"
        self.status_path = self.tmp / "status.json"
        self.reporter = FileReporter(self.report)

    def exit(self, index: int, attempt: int, code: int, message: str | None) -> None:
        old = self.procs[(index, attempt)]
        self.procs[(index, attempt)] = ProcessState(index, attempt, code, old.terminating, message, old.name)

    def eval_end(self, step: int, code: int, termination: str) -> None:
        name, _, _ = self.evals[step]
        self.evals[step] = (name, code, termination)

    def decide(self, now: datetime) -> Decision:
        status = read_local_status(self.status_path)
        # the runner tags every report line with the attempt whose worker wrote it
        records = [{**r, "attempt": status.attempt} for r in self.tail.read([self.report])]
        status = fold_reports(status, records, token_budget(self.spec))
        workers = tuple(worker_observation(p) for p in self.procs.values())
        evals = tuple(eval_observation(s, n, c, t) for s, (n, c, t) in self.evals.items())
        decision = reconcile(NAME, self.spec, status, Observed(now=now, workers=workers, evaluations=evals))
        for action in decision.actions:
            if isinstance(action, CreateGang):
                for i in action.indices:
                    name = f"{NAME}-a{action.attempt}-w{i}"
                    self.procs.setdefault(
                        (i, action.attempt), ProcessState(i, action.attempt, None, name=name)
                    )
            elif isinstance(action, CreateEvaluation):
                self.evals.setdefault(action.step, (action.name, None, None))
        write_local_status(self.status_path, decision.status)
        for action in decision.actions:
            if isinstance(action, DeleteWorkers):
                for w in action.workers:
                    p = self.procs[(w.index, w.attempt)]
                    self.procs[(w.index, w.attempt)] = ProcessState(
                        p.index, p.attempt, p.returncode, True, p.last_line, p.name
                    )
        return decision

    def reap(self) -> None:
        self.procs = {k: p for k, p in self.procs.items() if not p.terminating}


# ---------------------------------------------------------------------------------- scenarios


def _summary(decision: Decision) -> dict[str, Any]:
    def strip(doc: Any) -> Any:
        if isinstance(doc, dict):
            return {k: strip(v) for k, v in doc.items() if not k.lower().endswith("time") and k != "message"}
        if isinstance(doc, list):
            return [strip(v) for v in doc]
        return doc

    actions = []
    for a in decision.actions:
        if isinstance(a, DeleteWorkers):
            actions.append(("DeleteWorkers", sorted((w.attempt, w.index) for w in a.workers)))
        elif isinstance(a, EmitEvent):
            actions.append(("EmitEvent", a.type, a.reason))
        else:
            actions.append(a)
    return {"status": strip(status_to_dict(decision.status)), "actions": actions}


EVAL_OK = json.dumps({"schema": "tokensmith.eval/v1", "step": 5, "results": {"arc_easy_local": {"acc": 0.4}}})
EVAL_ERR = json.dumps({"schema": "tokensmith.eval/v1", "error": "checkpoint step-00000005 is missing"})

SCENARIOS: dict[str, tuple[dict[str, Any], list[tuple[Any, ...]]]] = {
    "success with evaluation": (
        {},
        [("progress", 3), ("checkpoint", 5), ("eval", 5, 0, EVAL_OK), ("progress", 10), ("checkpoint", 10),
         ("exit", 1, 0), ("exit", 0, 0), ("eval", 10, 0, EVAL_OK)],
    ),
    "worker killed, restart from checkpoint": (
        {},
        [("checkpoint", 5), ("progress", 7), ("exit", 1, 137, "killed"), ("reap",), ("tick", 5),
         ("tick", 6), ("progress", 8), ("exit", 0, 0), ("exit", 1, 0)],
    ),
    "config error is never retried": ({}, [("exit", 0, 78, "set data.train_path"), ("reap",)]),
    "too many restarts": (
        {"restartPolicy__maxRestarts": 1, "restartPolicy__backoffSeconds": 0},
        [("exit", 0, 1, "boom"), ("reap",), ("tick", 1), ("exit", 1, 143), ("reap",)],
    ),
    "budget exhausted keeps the checkpoint": (
        {"budget__maxGPUHours": 0.01},
        [("checkpoint", 5), ("tick", 10), ("tick", 10), ("exit", 0, 143), ("exit", 1, 143), ("reap",)],
    ),
    "suspend and resume": (
        {},
        [("checkpoint", 5), ("suspend", True), ("exit", 0, 143), ("exit", 1, 143), ("reap",),
         ("suspend", False), ("progress", 6)],
    ),
    "failed evaluation does not fail the job": (
        {},
        [("checkpoint", 5), ("eval", 5, 2, EVAL_ERR), ("exit", 0, 0), ("exit", 1, 0)],
    ),
    "hang": (
        {"restartPolicy__hangTimeoutSeconds": 60},
        [("progress", 2), ("tick", 30), ("tick", 31), ("reap",), ("tick", 11)],
    ),
    "three attempts without a newer checkpoint: NoProgress": (
        {"restartPolicy__maxRestarts": 10, "restartPolicy__backoffSeconds": 0},
        [("checkpoint", 5), ("exit", 0, 1, "boom"), ("reap",), ("tick", 1), ("exit", 1, 137), ("reap",),
         ("tick", 1), ("exit", 0, 1, "boom"), ("reap",), ("tick", 1), ("exit", 0, 1, "boom"), ("reap",),
         ("tick", 1)],
    ),
    "a newer checkpoint resets the no-progress count": (
        {"restartPolicy__maxRestarts": 10, "restartPolicy__backoffSeconds": 0},
        [("exit", 0, 1), ("reap",), ("tick", 1), ("exit", 0, 1), ("reap",), ("tick", 1),
         ("checkpoint", 5), ("exit", 0, 1), ("reap",), ("tick", 1), ("progress", 6)],
    ),
    "diverged once: rollback to the healthy checkpoint, the replay passes (Hardware)": (
        {},
        [("checkpoint", 5, True), ("progress", 7), ("checkpoint", 10, False), ("diverge", 7, [56, 64]),
         ("exit", 0, 65, "diverged"), ("exit", 1, 1), ("reap",), ("tick", 10), ("checkpoint", 10, True),
         ("exit", 0, 0), ("exit", 1, 0)],
    ),
    "diverged twice at the same samples: Data, skipped": (
        {},
        [("checkpoint", 5, True), ("diverge", 7, [56, 64]), ("exit", 0, 65), ("exit", 1, 1), ("reap",),
         ("tick", 10), ("diverge", 7, [56, 64]), ("exit", 0, 65), ("exit", 1, 1), ("reap",), ("tick", 10),
         ("checkpoint", 10, True), ("exit", 0, 0), ("exit", 1, 0)],
    ),
    "a crash after a rollback is a restart, not another rollback": (
        {},
        [("checkpoint", 5, True), ("diverge", 7, [56, 64]), ("exit", 0, 65), ("exit", 1, 1), ("reap",),
         ("tick", 10), ("exit", 1, 137, "killed"), ("reap",), ("tick", 10)],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_both_drivers_decide_alike(name: str, tmp_path: Path) -> None:
    over, events = SCENARIOS[name]
    spec = make_spec(**over)
    kube, local = KubeDriver(spec.model_copy(deep=True)), LocalDriver(spec.model_copy(deep=True), tmp_path)
    now = datetime.now(UTC)  # the trainer stamps its reports with the real clock (hang detection)
    steps = [("tick", 0), *events]  # the first look creates the gang
    seen_phases = []
    for event in steps:
        kind = event[0]
        attempt = handlers.read_status(kube.raw_status).attempt
        if kind == "tick":
            now += timedelta(seconds=event[1])
        elif kind == "progress":
            step = event[1]
            kube.report(progress_patch(step, step * 8192, 5.0, 100.0, token_budget(spec)))
            local.reporter.progress(step, step * 8192, 5.0, 1e-3, 100.0)
        elif kind == "checkpoint" and len(event) == 2:
            path = f"/checkpoints/{NAME}/step-{event[1]:08d}"
            kube.report(checkpoint_patch(event[1], path))
            local.reporter.checkpoint(event[1], path)
        elif kind == "checkpoint":  # with the trainer's health verdict (run health, issue 13)
            path = f"/checkpoints/{NAME}/step-{event[1]:08d}"
            kube.report(checkpoint_patch(event[1], path, healthy=event[2]))
            local.reporter.checkpoint(event[1], path, healthy=event[2])
        elif kind == "diverge":  # the trainer's divergence report, before it exits 65
            # with the attempt (TOKENSMITH_ATTEMPT), as the trainer sends it: its time alone could not be
            # compared with this test's shifted clock
            kube.report(divergence_patch(event[1], "nonfinite", event[2], attempt))
            local.reporter.diverged(event[1], "nonfinite", event[2])
        elif kind == "exit":
            index, code = event[1], event[2]
            message = event[3] if len(event) > 3 else None
            kube.exit(index, attempt, code, message)
            # the launcher (`tokensmith train --nproc`) reports a rank killed by signal N as 128 + N
            local.exit(index, attempt, code, message)
        elif kind == "eval":
            kube.eval_end(event[1], event[2], event[3])
            local.eval_end(event[1], event[2], event[3])
        elif kind == "reap":
            kube.reap()
            local.reap()
        elif kind == "suspend":
            kube.spec.suspend = local.spec.suspend = event[1]
        a, b = kube.decide(now), local.decide(now)
        assert _summary(a) == _summary(b), f"{name}: decisions differ after {event}"
        seen_phases.append(a.status.phase)
    final = seen_phases[-1]
    expected = {
        "success with evaluation": "Succeeded",
        "worker killed, restart from checkpoint": "Succeeded",
        "config error is never retried": "Failed",
        "too many restarts": "Failed",
        "budget exhausted keeps the checkpoint": "Failed",
        "suspend and resume": "Running",
        "failed evaluation does not fail the job": "Succeeded",
        "hang": "Pending",
        "three attempts without a newer checkpoint: NoProgress": "Failed",
        "a newer checkpoint resets the no-progress count": "Running",
        "diverged once: rollback to the healthy checkpoint, the replay passes (Hardware)": "Succeeded",
        "diverged twice at the same samples: Data, skipped": "Succeeded",
        "a crash after a rollback is a restart, not another rollback": "Pending",
    }[name]
    assert final == expected, seen_phases
    status = read_local_status(local.status_path)
    if name == "budget exhausted keeps the checkpoint":
        assert status.last_failure is not None and status.last_failure.reason == "BudgetExceeded"
        assert status.last_checkpoint is not None and status.last_checkpoint.step == 5
    if name == "worker killed, restart from checkpoint":
        assert status.attempt == 2 and status.restarts == 1
    if name == "suspend and resume":
        assert "Suspended" in seen_phases and status.restarts == 0 and status.attempt == 2
    if name == "failed evaluation does not fail the job":
        assert status.evaluations[0].phase == "Failed"
    if name.startswith("diverged once"):
        assert status.rollbacks == 1 and status.restarts == 0 and status.attempt == 2
        assert [r.cause for r in status.rollback_records] == ["Hardware"]
        assert status.last_healthy_checkpoint is not None and status.last_healthy_checkpoint.step == 10
    if name.startswith("diverged twice"):
        assert [r.cause for r in status.rollback_records] == ["Data", "Data"]
        assert status.skip_samples == [[56, 64]] and status.attempt == 3
    if name.startswith("a crash after a rollback"):
        assert status.rollbacks == 1 and status.restarts == 1 and status.attempt == 3
    if name == "success with evaluation":
        assert [e.phase for e in status.evaluations] == ["Succeeded", "Succeeded"]
    if name == "three attempts without a newer checkpoint: NoProgress":
        assert status.last_failure is not None and status.attempt == 4
        assert [c.reason for c in status.conditions if c.type == "Failed"] == ["NoProgress"]
        assert status.restarts_by_class == {"Application": 3} and status.attempts_without_progress == 3
    if name == "a newer checkpoint resets the no-progress count":
        assert status.attempt == 4 and status.attempts_without_progress == 0
