"""The local driver: observe processes -> `reconcile` (the operator's own decision) -> apply.

One loop, the local twin of `handlers.reconcile_once`: fold the trainer's new report lines into the
status (as its status patches would), observe worker and evaluation processes, call `reconcile`,
then apply the Decision in the documented order (create, record `status.json`, delete, tell).

Ctrl-C is `spec.suspend`: the first one sets it in memory, so `reconcile` itself deletes the gang
(SIGTERM: the trainer finishes its step and writes a checkpoint) and records phase Suspended; the
next `run` of the same job clears it and `reconcile` resumes from the last checkpoint without
counting a restart, as `kubectl patch ... suspend: false` does. A second Ctrl-C kills everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from tokensmith.core.io import atomic_write_text
from tokensmith.operator import cadence, evaluation
from tokensmith.operator.local import timeline
from tokensmith.operator.local.manifest import LocalJob
from tokensmith.operator.local.observe import fold_reports, worker_observation
from tokensmith.operator.local.processes import Evaluations, Gang, ReportTail
from tokensmith.operator.observed import (
    CreateEvaluation,
    CreateGang,
    Decision,
    DeleteWorkers,
    EmitEvent,
    Observed,
)
from tokensmith.operator.reconcile import reconcile
from tokensmith.operator.spec import (
    TERMINAL_PHASES,
    LLMTrainingJobStatus,
    status_to_dict,
    token_budget,
)

POLL_SECONDS = 0.5
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "runner.lock"


def read_status(path: Path) -> LLMTrainingJobStatus:
    """The saved status, or a fresh one (an unreadable file is an error the user must look at)."""
    from pydantic import ValidationError

    from tokensmith.core.errors import TokensmithError

    if not path.exists():
        return LLMTrainingJobStatus()
    try:
        return LLMTrainingJobStatus.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as err:
        raise TokensmithError(
            f"{path} is not a readable status document ({str(err).splitlines()[0]}); "
            "move it away or run with --fresh"
        ) from err


def write_status(path: Path, status: LLMTrainingJobStatus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(status_to_dict(status), indent=2) + "\n")


@dataclass
class Interrupts:
    """SIGINT/SIGTERM to the runner: the first asks for a clean stop, the second for a kill."""

    count: int = 0
    event: threading.Event = field(default_factory=threading.Event)

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.event.set()

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old_int = signal.signal(signal.SIGINT, self.handler)
        old_term = signal.signal(signal.SIGTERM, self.handler)

        def restore() -> None:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)

        return restore


@dataclass
class RunResult:
    status: LLMTrainingJobStatus
    interrupted: bool
    history: Path


class LocalRunner:
    """Runs one job to a terminal phase (or until interrupted)."""

    def __init__(
        self,
        job: LocalJob,
        inject_failure_step: int | None = None,
        max_parallel_evals: int = 1,
        on_change: Callable[[LLMTrainingJobStatus], None] | None = None,
        on_event: Callable[[EmitEvent], None] | None = None,
        fresh: bool = False,
    ) -> None:
        self.job = job
        self.fresh = fresh
        self.spec = job.spec.model_copy(deep=True)
        self.gang = Gang(job, inject_failure_step)
        self.evals = Evaluations(job, max_parallel_evals)
        self.tail = ReportTail()
        self.on_change = on_change or (lambda st: None)
        self.on_event = on_event or (lambda ev: None)
        self.interrupts = Interrupts()
        self.history_path = job.run_dir / HISTORY_FILE
        self.report_files: dict[Path, int] = {}  # report file -> attempt, kept after a worker is gone
        self._written: dict[str, Any] | None = None  # the status document last written
        self.ledger = timeline.Recorder()  # the goodput ledger over time, for the report (timeline.py)

    # ----------------------------------------------------------------------------- recording

    def _history(self, record: dict[str, Any]) -> None:
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        with self.history_path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")

    def _reports(self, status: LLMTrainingJobStatus) -> LLMTrainingJobStatus:
        records: list[dict[str, Any]] = []
        for w in list(self.gang.workers.values()):
            self.report_files[w.report] = w.attempt
        for path, attempt in self.report_files.items():
            for rec in self.tail.read([path]):
                rec = {**rec, "attempt": attempt}
                self._history(rec)
                records.append(rec)
        if not records:
            return status
        # On Kubernetes each checkpoint reaches the operator as its own status patch. Here a batch
        # can hold several (a fast run between two looks); all but the last are counted and
        # scheduled with the operator's own `evaluation.schedule`, or they would be skipped.
        ckpts = [i for i, rec in enumerate(records) if rec.get("type") == "checkpoint"]
        start = 0
        for i in ckpts[:-1]:
            status = fold_reports(status, records[start : i + 1], token_budget(self.spec))
            start = i + 1
            known = {e.step for e in self.evals.observations()}
            new, actions = evaluation.schedule(self.job.name, self.spec, status, known)
            self.apply(status, Decision(status=new, actions=tuple(actions)))
            status = new
        return fold_reports(status, records[start:], token_budget(self.spec))

    def _ledger(self, status: LLMTrainingJobStatus, now: datetime) -> None:
        """Record the goodput ledger where its trend changes (timeline.Recorder)."""
        point = timeline.sample(status, now)
        for s in self.ledger.see(point) if point is not None else []:
            self._history(s.record())

    # ----------------------------------------------------------------------------- the loop

    def observe(self, now: datetime) -> Observed:
        workers = tuple(worker_observation(s) for s in self.gang.states())
        return Observed(now=now, workers=workers, evaluations=self.evals.observations())

    def apply(self, old: LLMTrainingJobStatus, decision: Decision) -> None:
        """Create, record, delete, tell: the order `reconcile.py` documents."""
        # the adaptive checkpoint interval (cadence.py): the next attempt's config, and the running one's
        # live settings (the file it watches, as the operator's live ConfigMap on a cluster)
        effective = cadence.effective_spec(self.spec, decision.status)
        if decision.status.phase not in TERMINAL_PHASES:
            self.gang.job = replace(self.gang.job, spec=effective)
            self.gang.write_live_settings()
        for action in decision.actions:
            if isinstance(action, CreateGang):
                started = self.gang.create(action.attempt, action.indices, action.plan)
                if started and action.attempt != old.attempt:
                    ckpt = decision.status.last_checkpoint
                    if action.plan.resume_from is not None:  # a rollback: the healthy one
                        ckpt = decision.status.last_healthy_checkpoint
                    self._history(
                        {
                            "type": "attempt",
                            "attempt": action.attempt,
                            "resume_step": ckpt.step if ckpt else 0,
                            "time": datetime.now(UTC).isoformat(),
                        }
                    )
            elif isinstance(action, CreateEvaluation):
                self.evals.create(action.step, action.path, action.name)
        doc = status_to_dict(decision.status)
        if doc != self._written:  # also the trainer's reports folded in before `reconcile`
            write_status(self.job.status_path, decision.status)
            self._written = doc
        # CordonNode and DeleteJob (ttlSecondsAfterFinished) concern Kubernetes nodes and objects; one
        # machine has neither, and no pod is ever stuck on a lost node (no forced deletions).
        for action in decision.actions:
            if isinstance(action, DeleteWorkers):
                self.gang.delete([w.name for w in action.workers if w.name])
        for action in decision.actions:
            if isinstance(action, EmitEvent):
                self._history(
                    {
                        "type": "event",
                        "event": action.type,
                        "reason": action.reason,
                        "message": action.message,
                        "attempt": decision.status.attempt,
                        "time": datetime.now(UTC).isoformat(),
                    }
                )
                self.on_event(action)

    def run(self) -> RunResult:
        with self._exclusive():
            if self.fresh:
                self._wipe()
            self.job.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.job.job_path, json.dumps(self.job.document(), indent=2) + "\n")
            status = read_status(self.job.status_path)
            orphans = self.gang.stop_orphans()
            if orphans:
                message = f"stopped {', '.join(orphans)}, left running by a runner that died"
                self.on_event(EmitEvent("Warning", "OrphansStopped", message))
            self._readopt_evaluations(status)
            restore = self.interrupts.install()
            try:
                status = self._loop(status)
            finally:
                restore()
                self.gang.kill_all()
                self.evals.stop()
                for s in self.ledger.flush():
                    self._history(s.record())
        return RunResult(status, self.interrupts.count > 0, self.history_path)

    def _wipe(self) -> None:
        """--fresh: forget this job's checkpoints, status and logs (under the lock, so never another
        runner's files)."""
        import shutil

        for child in list(self.job.checkpoint_dir.iterdir()):
            if child == self.job.run_dir:
                for inner in list(child.iterdir()):
                    if inner.name != LOCK_FILE:
                        shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
            else:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One runner per job directory: a second `run` of the same job would start a second gang."""
        import fcntl

        from tokensmith.core.errors import TokensmithError

        path = self.job.run_dir / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                raise TokensmithError(
                    f"job {self.job.name} in {self.job.checkpoint_dir} is already being run "
                    f"(runner pid {owner}); stop that one first (Ctrl-C) or use another --workdir"
                ) from err
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    def _loop(self, status: LLMTrainingJobStatus) -> LLMTrainingJobStatus:
        shown: dict[str, Any] | None = None
        while True:
            if self.interrupts.count >= 2:
                self.gang.kill_all()
                self.evals.stop()
                return status
            if self.interrupts.count == 1 and not self.spec.suspend:
                self.spec.suspend = True  # Ctrl-C = suspend: reconcile deletes the gang gracefully
            self.gang.enforce_grace()
            # Look at the processes before reading their reports: a worker writes its reports
            # before it exits, so an exit seen here comes with every report it made (the final
            # checkpoint included); the other order can see the exit but miss the last lines.
            observed = self.observe(datetime.now(UTC))
            status = self._reports(status)
            decision = reconcile(self.job.name, self.spec, status, observed)
            self.apply(status, decision)
            status = decision.status
            self._ledger(status, observed.now)
            self.evals.start_waiting()
            view = status_to_dict(status)
            view.pop("accountedTime", None)
            if view != shown:
                shown = view
                self.on_change(status)
            if self._done(status):
                status = self._reports(status)
                write_status(self.job.status_path, status)
                return status
            wait = decision.requeue_after if decision.requeue_after is not None else POLL_SECONDS
            self.interrupts.event.wait(min(max(wait, 0.05), POLL_SECONDS))
            self.interrupts.event.clear()

    def _readopt_evaluations(self, status: LLMTrainingJobStatus) -> None:
        """Evaluations recorded as Running by an earlier, interrupted run: their processes died with
        it, so they run again (on a cluster their Jobs would have survived the operator)."""
        from tokensmith.operator.names import eval_job_name
        from tokensmith.trainer.checkpoint import checkpoint_name

        for entry in status.evaluations:
            if entry.phase == "Running":
                path = self.job.checkpoint_dir / checkpoint_name(entry.step)
                name = entry.job or eval_job_name(self.job.name, entry.step)
                self.evals.create(entry.step, str(path), name)

    def _done(self, status: LLMTrainingJobStatus) -> bool:
        if self.gang.alive:
            return False
        if status.phase in TERMINAL_PHASES:
            # Ctrl-C does not wait for evaluations: they stay Running in status.json and run again
            # at the next `run` of this job (see _readopt_evaluations).
            return not self.evals.busy or self.interrupts.count > 0
        return bool(status.phase == "Suspended" and self.spec.suspend)
