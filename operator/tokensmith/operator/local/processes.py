"""The imperative shell of the local runner: worker and evaluation processes, report files.

Workers: one launcher process per "node" (`tokensmith train --nproc P`, torchrun inside; several
nodes on one host rendezvous on 127.0.0.1), each in its own session so that a Ctrl-C in the terminal
reaches only the runner, which then stops the gang the operator's way (SIGTERM, grace, SIGKILL).
Evaluations: `tokensmith eval` with the same arguments as the operator's evaluation Job, at most
`max_parallel` at a time (the rest wait, observed as Running, like a Job whose pod is Pending).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tokensmith.operator import cadence, children, names
from tokensmith.operator.local.manifest import LocalJob
from tokensmith.operator.local.observe import ProcessState, eval_observation
from tokensmith.operator.observed import EvalObservation, GangPlan
from tokensmith.trainer.live import LIVE_ENV

FAIL_AT_STEP_ENV = "TOKENSMITH_FAIL_AT_STEP"  # the trainer's testing hook (loop.py)
GRACE_ENV = "TOKENSMITH_TERMINATION_GRACE_SECONDS"
TOKENSMITH = [sys.executable, "-m", "tokensmith.cli"]
# torch's C++ log prefix ("E1123 16:33:05.370000 23396 path/api.py:1002] "): noise in a one-line reason
_GLOG = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+\] ")


def last_line(path: Path, limit: int = 4096) -> str | None:
    """The last non-empty line of a log (the local 'termination message')."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - limit, 0))
            lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return None
    lines = [_GLOG.sub("", ln) for ln in lines if ln]
    return lines[-1] if lines else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(job: LocalJob, extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for var in job.spec.cluster.env:
        if var.value is not None:
            env[var.name] = var.value
    if job.spec.cluster.gpus_per_node == 0 or shutil.which("nvidia-smi") is None:
        env["DS_ACCELERATOR"] = "cpu"
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env.update(extra)
    return env


@dataclass
class Worker:
    index: int
    attempt: int
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    report: Path
    terminating_since: float | None = None

    def state(self) -> ProcessState:
        code = self.proc.poll()
        return ProcessState(
            index=self.index,
            attempt=self.attempt,
            returncode=code,
            terminating=self.terminating_since is not None,
            last_line=last_line(self.log) if code not in (None, 0) else None,
            name=self.name,
        )


@dataclass
class Gang:
    """The worker processes of every attempt still known to the runner."""

    job: LocalJob
    inject_failure_step: int | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)

    def config_path(self, attempt: int) -> Path:
        return self.job.run_dir / f"trainer-attempt-{attempt}.yaml"

    def report_path(self, attempt: int, index: int) -> Path:
        return self.job.run_dir / "reports" / f"attempt-{attempt}-worker-{index}.jsonl"

    def create(self, attempt: int, indices: tuple[int, ...], plan: GangPlan = GangPlan()) -> list[str]:
        """Start the missing workers of `attempt` (idempotent by name, like pod creation). A rollback's
        plan: the resume pointer in the environment, the skipped samples in the config (nodes to avoid
        do not apply on one machine: the replay runs here again)."""
        from tokensmith.core.io import atomic_write_text
        from tokensmith.core.output import to_yaml

        spec = self.job.spec
        cfg_path = self.config_path(attempt)
        if not cfg_path.exists():  # refreshed per attempt, as the operator's ConfigMap is
            cfg = self.job.trainer_config(plan.skip_samples)
            atomic_write_text(cfg_path, to_yaml(cfg.model_dump(mode="json")))
        started = []
        for index in indices:
            name = names.worker_pod_name(self.job.name, attempt, index)
            if name in self.workers:
                continue
            cmd = [*TOKENSMITH, "train", "--config", str(cfg_path), "--nproc", str(spec.procs_per_node)]
            if spec.cluster.nodes > 1:
                port = self.ports.setdefault(attempt, free_port())
                cmd += ["--nnodes", str(spec.cluster.nodes), "--node-rank", str(index)]
                cmd += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
            extra = self.worker_env(attempt, index, plan)
            log = self.job.run_dir / "logs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            self.report_path(attempt, index).parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_environment(self.job, extra),
                    start_new_session=True,
                )
            self.workers[name] = Worker(index, attempt, name, proc, log, self.report_path(attempt, index))
            started.append(name)
        if started:
            self._record()
        return started

    @property
    def live_path(self) -> Path:
        """The live settings the running trainer watches (the operator's live ConfigMap, locally)."""
        return self.job.run_dir / cadence.LIVE_FILE

    def worker_env(self, attempt: int, index: int, plan: GangPlan = GangPlan()) -> dict[str, str]:
        """What a worker process gets on top of the runner's environment (the pod's env, locally)."""
        spec = self.job.spec
        extra = {
            "TOKENSMITH_REPORT_FILE": str(self.report_path(attempt, index)),
            GRACE_ENV: str(spec.cluster.termination_grace_period_seconds),
            "TOKENSMITH_JOB_NAME": self.job.name,
            "TOKENSMITH_ATTEMPT": str(attempt),
        }
        if spec.checkpoint.auto:
            extra[LIVE_ENV] = str(self.live_path)
        if self.inject_failure_step and attempt == 1:
            extra[FAIL_AT_STEP_ENV] = str(self.inject_failure_step)
        if plan.resume_from is not None:
            extra[children.RESUME_ENV] = plan.resume_from
        return extra

    def write_live_settings(self) -> bool:
        """Bring the live-settings file up to date with the (effective) spec; True when it was written.
        Atomic (a rename: the trainer sees the old file or the new one, never half of one)."""
        from tokensmith.core.io import atomic_write_text

        settings = cadence.live_settings(self.job.spec)
        if settings is None:
            return False
        text = cadence.live_document(settings)
        try:
            if self.live_path.read_text(encoding="utf-8") == text:
                return False
        except OSError:
            pass
        self.live_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.live_path, text)
        return True

    @property
    def pids_file(self) -> Path:
        return self.job.run_dir / "workers.json"

    def _record(self) -> None:
        """Which processes this runner started, so that a runner that died without cleaning up (SIGKILL)
        can have its orphans stopped by the next one."""
        from tokensmith.core.io import atomic_write_text

        doc = {
            n: {"pid": w.proc.pid, "config": str(self.config_path(w.attempt))}
            for n, w in self.workers.items()
        }
        atomic_write_text(self.pids_file, json.dumps(doc))

    def stop_orphans(self) -> list[str]:
        """Stop the process groups a dead runner left behind (still alive, still running this job's
        trainer config): SIGTERM (the trainer checkpoints), SIGKILL after the grace period."""
        try:
            doc = json.loads(self.pids_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        alive = {}
        for name, entry in doc.items():
            pid = int(entry.get("pid", 0))
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if pid > 0 and str(entry.get("config")) in cmdline:
                alive[name] = pid
        for pid in alive.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.job.spec.cluster.termination_grace_period_seconds
        while alive and time.monotonic() < deadline and any(_exists(p) for p in alive.values()):
            time.sleep(0.2)
        for pid in alive.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.pids_file.unlink(missing_ok=True)
        return sorted(alive)

    def states(self) -> tuple[ProcessState, ...]:
        return tuple(w.state() for w in self.workers.values())

    def delete(self, worker_names: list[str]) -> None:
        """SIGTERM now (the trainer finishes its step and checkpoints), SIGKILL after the grace period
        (see `enforce_grace`); a finished process is forgotten, like a deleted pod."""
        for name in worker_names:
            w = self.workers.get(name)
            if w is None:
                continue
            if w.proc.poll() is not None:
                del self.workers[name]
                continue
            if w.terminating_since is None:
                w.terminating_since = time.monotonic()
                _signal(w.proc, signal.SIGTERM, group=False)

    def enforce_grace(self) -> None:
        grace = self.job.spec.cluster.termination_grace_period_seconds
        for name, w in list(self.workers.items()):
            if w.terminating_since is None:
                continue
            if w.proc.poll() is not None:
                _signal(w.proc, signal.SIGKILL, group=True)  # stray ranks of a dead launcher
                del self.workers[name]
            elif time.monotonic() - w.terminating_since > grace:
                _signal(w.proc, signal.SIGKILL, group=True)

    def kill_all(self) -> None:
        for w in self.workers.values():
            _signal(w.proc, signal.SIGKILL, group=True)
        for w in self.workers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return any(w.proc.poll() is None for w in self.workers.values())


def _exists(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's zombie is reaped by init, not by us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)  # start_new_session: the process group id is the pid
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Evaluation:
    step: int
    name: str
    command: list[str]
    termination: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Evaluations:
    """`tokensmith eval` processes, one per evaluated checkpoint step."""

    job: LocalJob
    max_parallel: int = 1
    runs: dict[int, Evaluation] = field(default_factory=dict)

    def create(self, step: int, path: str, name: str) -> None:
        if step in self.runs:
            return
        ref = children.JobRef(name=self.job.name, namespace="local", uid="local")
        manifest = children.evaluation_job(ref, self.job.spec, step, path, name, children.Defaults())
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        command = [*TOKENSMITH, *container["command"][1:]]  # the Job's own arguments
        Path(manifest_output(command)).parent.mkdir(parents=True, exist_ok=True)
        base = self.job.run_dir / "evals"
        base.mkdir(parents=True, exist_ok=True)
        self.runs[step] = Evaluation(
            step, name, command, base / f"step-{step}.termination", base / f"step-{step}.log"
        )
        self.start_waiting()

    def start_waiting(self) -> None:
        running = sum(1 for e in self.runs.values() if e.proc is not None and e.proc.poll() is None)
        for ev in sorted(self.runs.values(), key=lambda e: e.step):
            if running >= self.max_parallel:
                return
            if ev.proc is None:
                ev.termination.unlink(missing_ok=True)
                env = dict(os.environ, TOKENSMITH_TERMINATION_LOG=str(ev.termination))
                env.setdefault("CUDA_VISIBLE_DEVICES", "")
                with ev.log.open("ab") as out:
                    ev.proc = subprocess.Popen(
                        ev.command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                running += 1

    def observations(self) -> tuple[EvalObservation, ...]:
        out = []
        for ev in self.runs.values():
            code = ev.proc.poll() if ev.proc is not None else None
            done = code is not None and ev.termination.exists()
            text = ev.termination.read_text(encoding="utf-8") if done else None
            out.append(eval_observation(ev.step, ev.name, code, text, last_line(ev.log) if code else None))
        return tuple(out)

    @property
    def busy(self) -> bool:
        return any(e.proc is None or e.proc.poll() is None for e in self.runs.values())

    def stop(self) -> None:
        for ev in self.runs.values():
            if ev.proc is not None and ev.proc.poll() is None:
                _signal(ev.proc, signal.SIGKILL, group=True)
                ev.proc.wait()


def manifest_output(command: list[str]) -> str:
    """The --output of an evaluation command."""
    return command[command.index("--output") + 1]


@dataclass
class ReportTail:
    """Reads the JSON lines appended to the report files since the last call (a torn last line waits)."""

    offsets: dict[Path, int] = field(default_factory=dict)

    def read(self, paths: list[Path]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for path in sorted(paths):
            try:
                with path.open("rb") as handle:
                    handle.seek(self.offsets.get(path, 0))
                    data = handle.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1
            self.offsets[path] = self.offsets.get(path, 0) + end
            for line in data[:end].decode("utf-8", "replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
        return records


def open_events(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", encoding="utf-8")
