"""The chaos soak harness (issue 15): the real kopf operator, in its own process, drives a large job on
the emulated cluster (`testing.EmulatedCluster`) on a compressed clock, while this harness plays the
trainer and injects failures from a seeded schedule (`chaos.schedule`, Llama 3's mix). Used by the
short soak in the tests and by the long one in benchmarks/goodput_soak.py. Like `testing`, it needs
kmock: import it only in tests and benchmarks.

Time. The harness owns simulated time: every tick it advances a clock shared with the operator
process (`Runtime.clock`) by a fixed amount, `fast_s` while the gang trains and `slow_s` while the
operator and the emulator (re)start it (their work takes real time: creating 64 pods at the fast rate
would cost simulated hours). Simulated time therefore never passes while the harness, which plays the
trainer, is not running: a clock computed from the wall clock instead made a starved harness look like
a trainer whose heartbeats stopped, and the operator restarted a healthy gang as hung (the short soak's
one-extra-restart flake).

The trainer it plays: a step every `step_s`; every `interval` (the operator's adaptive
`status.checkpointEveryMinutes`, else the spec's) a save that blocks training for `delta_s` and is
reported when it is complete (as `tokensmith train` does: `status.lastCheckpoint` with `time` and
`blockedSeconds`); a failure during a save loses it; on SIGTERM after a disruption notice it saves
the current step before it exits (the planned restart loses no step); a heartbeat each tick.

Measured, besides what the job's status says: steps lost per failure, duplicate gangs (pods of two
attempts alive at once), the operator's API requests (counted at the emulator), its reconciles and
its process CPU time (`time.process_time()` of the operator process, all its threads: kopf's loop,
its executor threads for the sync index handlers, our client).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tokensmith.operator import chaos
from tokensmith.operator.spec import build_manifest
from tokensmith.operator.testing import HARNESS_AGENT, EmulatedCluster, api_call

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS, NAME = "soak", "soak"


@dataclass(frozen=True)
class SoakConfig:
    """One soak: the job, the failure schedule, the clock compression."""

    hours: float  # simulated wall-clock hours of the run
    mtbf_job_hours: float  # the true failure process (job MTBF)
    every_minutes: float  # checkpoint interval (the starting one when adaptive)
    seed: int = 5
    nodes: int = 64
    gpus_per_node: int = 8
    delta_s: float = 120.0  # a save blocks training this long
    step_s: float = 60.0  # one training step per simulated minute
    adaptive: bool = False
    prior_mtbf_gpu_hours: float | None = None  # the planner's MTBF per GPU (adaptive prior)
    hang_timeout_s: float = 3600.0
    backoff_s: float = 60.0
    fast_s: float = 144.0  # simulated seconds per tick while the gang trains
    slow_s: float = 1.2  # ... while it is being (re)started
    tick: float = 0.01  # real seconds between ticks
    interval: float = 0.05  # the operator's --interval (real seconds)
    price: float = 2.0

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def failures(self) -> list[chaos.Failure]:
        # the last two hours stay quiet, so that the last failure is recovered from inside the run
        return chaos.schedule(self.seed, self.mtbf_job_hours, self.hours - 2)

    def spec(self) -> dict[str, Any]:
        checkpoint: dict[str, Any] = {
            "volume": {"persistentVolumeClaim": {"claimName": "ckpt"}},
            "everyMinutes": round(self.every_minutes, 2),
        }
        if self.adaptive:
            checkpoint.update(adaptive=True, priorSeconds=self.delta_s)
            if self.prior_mtbf_gpu_hours is not None:
                checkpoint["priorMTBFGPUHours"] = self.prior_mtbf_gpu_hours
        return {
            "checkpoint": checkpoint,
            "cluster": {
                "nodes": self.nodes,
                "gpusPerNode": self.gpus_per_node,
                "terminationGracePeriodSeconds": 1,
            },
            "model": {"preset": "llama-7b"},
            "data": {"tokens": 10**12},
            "parallelism": {"microBatch": 1, "globalBatchTokens": 4096 * self.gpus},
            "budget": {"pricePerGPUHour": self.price},
            "restartPolicy": {
                "backoffSeconds": self.backoff_s,
                "maxBackoffSeconds": self.backoff_s,
                "hangTimeoutSeconds": self.hang_timeout_s,
                "maxRestarts": 10_000,
                "maxInfrastructureRestarts": 10_000,
                "maxAttemptsWithoutProgress": 0,
                "forceDeleteAfterSeconds": 1,
            },
            "nodeHealth": {"notReadyTimeoutSeconds": 0},
        }


@dataclass
class SoakResult:
    config: SoakConfig
    failures: list[chaos.Failure]
    injected: list[str] = field(default_factory=list)  # kinds, in order
    lost_steps: list[int] = field(default_factory=list)  # per injected failure (0 for a preemption)
    lost_bounds: list[int] = field(default_factory=list)  # per failure: the interval in force + 1, steps
    checkpoint_steps: list[int] = field(default_factory=list)  # completed saves, in order
    resume_steps: list[int] = field(default_factory=list)  # per attempt the trainer ran
    attempts: int = 0
    duplicates: int = 0  # ticks that saw live pods of two attempts
    stalls: int = 0  # ticks the operator did not reconcile within 10 real seconds of a report
    final_step: int = 0
    status: dict[str, Any] = field(default_factory=dict)  # the job's final status
    intervals: list[float] = field(default_factory=list)  # the interval each attempt ran with (minutes)
    reconciles: int = 0
    operator_cpu_s: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)  # the operator's, by verb (watch included)
    sim_hours: float = 0.0
    real_s: float = 0.0

    @property
    def interruptions(self) -> int:
        return int((self.status.get("observed") or {}).get("interruptions", 0))

    @property
    def requests_per_reconcile(self) -> float:
        calls = sum(n for verb, n in self.requests.items() if verb != "watch")
        return calls / self.reconciles if self.reconciles else 0.0


# ------------------------------------------------------------------------- the operator process


def _settings(settings: Any) -> None:  # what OperatorUnderTest sets, for a standalone replica
    settings.watching.reconnect_backoff = 0.1
    settings.batching.idle_timeout = 0.1
    settings.batching.batch_window = 0.01


def _operator_main(url: str, interval: float, clock: Any, stats: Any, ready: Any, stop: Any) -> None:
    """The child process: `main.operate` with its clock read from the shared value (simulated seconds
    since T0); every 0.1 s it publishes [reconciles, process CPU seconds] in `stats`."""
    import kopf

    from tokensmith.operator.admission import AdmissionPolicy
    from tokensmith.operator.children import Defaults
    from tokensmith.operator.main import OperatorConfig, operate

    config = OperatorConfig(
        peering=None,
        metrics_port=None,
        liveness=None,
        interval=interval,
        defaults=Defaults(
            trainer_image="tokensmith/trainer:test", evaluator_image="tokensmith/evaluator:test"
        ),
        policy=AdmissionPolicy(),
    )
    runtime: list[Any] = []
    stop_flag, ready_flag, done = threading.Event(), threading.Event(), threading.Event()

    def hook(rt: Any) -> None:
        rt.clock = lambda: T0 + timedelta(seconds=clock.value)
        rt.after_reconcile = lambda: stats.__setitem__(0, float(rt.reconciles))  # the harness paces on it
        runtime.append(rt)

    parent = os.getppid()

    def publish() -> None:
        while not done.is_set():
            if os.getppid() != parent:  # the harness died: do not outlive it
                stop_flag.set()
                if done.wait(10):
                    return
                os._exit(1)
            if ready_flag.is_set():
                ready.set()
            if stop.is_set():
                stop_flag.set()
            stats[0] = float(runtime[0].reconciles) if runtime else 0.0
            stats[1] = time.process_time()
            done.wait(0.1)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        asyncio.run(
            operate(
                config,
                connection=kopf.ConnectionInfo(server=url, insecure=True, default_namespace="default"),
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                settings_hook=_settings,
                runtime_hook=hook,
            )
        )
    finally:
        done.set()
        publisher.join()
        stats[0] = float(runtime[0].reconciles) if runtime else 0.0
        stats[1] = time.process_time()


class OperatorProcess:
    """The real operator in its own process (spawned: no state shared with the harness but the clock
    and the counters), as it runs in its pod; its CPU time is its own."""

    def __init__(self, url: str, interval: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.clock = ctx.RawValue("d", 0.0)  # simulated seconds since T0; written by the harness only
        self.stats = ctx.RawArray("d", 2)
        self._ready, self._stop = ctx.Event(), ctx.Event()
        self._proc = ctx.Process(
            target=_operator_main,
            args=(url, interval, self.clock, self.stats, self._ready, self._stop),
            name="tokensmith-operator-soak",
            daemon=True,
        )

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.clock.value)

    @property
    def reconciles(self) -> int:
        return int(self.stats[0])

    @property
    def cpu_s(self) -> float:
        return float(self.stats[1])

    async def __aenter__(self) -> OperatorProcess:
        self._proc.start()
        if not await asyncio.to_thread(self._ready.wait, 60):
            self._proc.kill()
            raise TimeoutError("the operator process did not become ready in 60 s")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.to_thread(self._proc.join, 30)
        if self._proc.is_alive():
            self._proc.kill()


# ---------------------------------------------------------------------------------- the harness


@dataclass
class _Trainer:
    """The trainer of the current attempt, in simulated time."""

    attempt: int = 0
    base: int = 0  # step at `since`
    since: datetime = T0
    saved: int = 0  # last complete checkpoint
    save_step: int | None = None  # a save in progress: its step
    save_until: datetime = T0
    last_save_end: datetime = T0
    hung: bool = False
    sigterm_saved: bool = False
    every_minutes: float = 0.0  # the checkpoint interval it runs with
    started: datetime = T0  # when this attempt's gang started training

    def step(self, now: datetime, step_s: float) -> int:
        if self.save_step is not None:
            return self.save_step
        return self.base + int((now - self.since).total_seconds() // step_s)


def _live_pods(cluster: EmulatedCluster) -> dict[int, list[dict[str, Any]]]:
    live: dict[int, list[dict[str, Any]]] = {}
    for p in cluster.objects("pods", NS):
        a = (p["metadata"].get("labels") or {}).get("tokensmith.dev/attempt")
        if a is None or p["metadata"].get("deletionTimestamp"):
            continue
        if (p.get("status") or {}).get("phase") in ("Pending", "Running"):
            live.setdefault(int(a), []).append(p)
    return live


async def _caught_up(op: OperatorProcess, seen: int, limit: float = 10.0) -> bool:
    """Wait until the operator has reconciled since `seen` (False after `limit` real seconds). The
    trainer's report wakes a reconcile that reads it; without this the clock could run ahead of the
    operator's view of the job (its watch stream lags on a loaded machine) and a healthy gang whose
    reports the operator has not read yet would look silent for simulated hours."""
    deadline = time.monotonic() + limit
    while op.reconciles <= seen:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.001)
    return True


def _condition_reason(status: dict[str, Any], ctype: str) -> str | None:
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)
    return cond.get("reason") if cond and cond.get("status") == "True" else None


async def run(cfg: SoakConfig, progress: Any = None) -> SoakResult:
    """Run one soak to `cfg.hours` simulated hours; `progress(sim_hours)` is called now and then."""
    failures = cfg.failures()
    res = SoakResult(cfg, failures)
    rng = random.Random(cfg.seed)
    pending = list(failures)
    end = T0 + timedelta(hours=cfg.hours)
    async with (
        EmulatedCluster(tick=0.01, nodes=cfg.nodes + 16) as c,
        OperatorProcess(c.url, cfg.interval) as op,
    ):
        await c.apply_job(build_manifest(NAME, cfg.spec(), namespace=NS))
        served0, cpu0, rec0, real0 = len(c.requests()), op.cpu_s, op.reconciles, time.monotonic()
        tr, running, last_ckpt, last_report = _Trainer(), False, -1, 0.0

        def st() -> dict[str, Any]:
            return c.job(NS, NAME).get("status") or {}

        seen = op.reconciles  # the operator's reconciles when the trainer last reported
        while (now := op.now()) < end:
            await asyncio.sleep(cfg.tick)
            if running:  # simulated time moves on once the operator has reconciled after the last report
                res.stalls += not await _caught_up(op, seen)
            op.clock.value += cfg.fast_s if running else cfg.slow_s
            now = op.now()
            if progress is not None and time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                progress((now - T0).total_seconds() / 3600)
            s = st()
            ckpt = (s.get("lastCheckpoint") or {}).get("step", 0)
            if ckpt < last_ckpt:
                raise AssertionError(f"status.lastCheckpoint went back from step {last_ckpt} to {ckpt}")
            last_ckpt = ckpt
            live = _live_pods(c)
            if len(live) > 1:
                res.duplicates += 1
            cur = s.get("attempt", 0)
            res.attempts = max(res.attempts, cur, *live)
            pods = live.get(cur, [])
            running = (
                s.get("phase") == "Running"
                and len(pods) == cfg.nodes
                and all((p.get("status") or {}).get("phase") == "Running" for p in pods)
            )
            if not running:
                await _on_sigterm(c, s, tr, now, cfg, res)
                continue
            if cur != tr.attempt:  # a new attempt: the trainer resumes from the last checkpoint
                every = float(s.get("checkpointEveryMinutes") or cfg.every_minutes)
                tr = _Trainer(cur, ckpt, now, ckpt, last_save_end=now, every_minutes=every, started=now)
                res.resume_steps.append(ckpt)
                res.intervals.append(every)
            elif (new_every := s.get("checkpointEveryMinutes")) is not None:
                # live settings: the running trainer applies a new interval (the kubelet's ConfigMap
                # refresh plus its 10 s check: within about one tick of simulated time)
                tr.every_minutes = float(new_every)
            if tr.hung:
                continue
            due = T0 + timedelta(hours=pending[0].hour) if pending else end
            if not pending or due > now:
                await _train(c, tr, now, cfg, res)
                seen = op.reconciles
                continue
            # the failure happens at its time (one that fell in a restart hits the new gang at its start)
            at = max(due, tr.started)
            await _train(c, tr, at, cfg, res)
            seen = op.reconciles
            await _inject(c, pending.pop(0), tr, at, cfg, res, rng.choice(pods)["metadata"]["name"])
        res.sim_hours = (op.now() - T0).total_seconds() / 3600
        res.real_s = time.monotonic() - real0
        await asyncio.sleep(0.3)  # the operator's last status write (at most one interval late)
        res.status = st()
        res.reconciles, res.operator_cpu_s = op.reconciles - rec0, op.cpu_s - cpu0
        for req in c.requests()[served0:]:
            if req.agent.startswith(HARNESS_AGENT):
                continue
            call = api_call(req.method, req.url)
            verb = call[0] if call is not None else "discovery"
            res.requests[verb] = res.requests.get(verb, 0) + 1
    if pending:
        raise AssertionError(f"{len(pending)} failure(s) not injected before the end of the soak")
    return res


async def _train(c: EmulatedCluster, tr: _Trainer, t: datetime, cfg: SoakConfig, res: SoakResult) -> None:
    """The trainer up to time `t` (at most now): saves start exactly when due (a trainer checks at every
    step, not once per harness tick) and are reported once complete; then a heartbeat at `t`."""
    done: list[dict[str, Any]] = []
    while True:
        if tr.save_step is not None:
            if t < tr.save_until:
                break
            tr.saved = tr.base = tr.save_step
            tr.since = tr.last_save_end = tr.save_until
            done.append(
                {
                    "step": tr.saved,
                    "path": f"/ck/{tr.saved}",
                    "time": tr.save_until.isoformat(),
                    "blockedSeconds": cfg.delta_s,
                    "durableSeconds": cfg.delta_s,
                }
            )
            res.checkpoint_steps.append(tr.saved)
            tr.save_step = None
            continue
        # the interval in force: the attempt's starting one, or a newer one from the live settings
        due = tr.last_save_end + timedelta(minutes=tr.every_minutes)
        if t < due or tr.step(due, cfg.step_s) <= tr.saved:
            break
        tr.save_step, tr.save_until = tr.step(due, cfg.step_s), due + timedelta(seconds=cfg.delta_s)
    for ckpt in done[:-1]:  # more than one save in a tick: each is reported (the ledger counts each)
        await c.patch_job(NS, NAME, {"status": {"lastCheckpoint": ckpt}}, status=True)
    step = tr.step(t, cfg.step_s)
    res.final_step = max(res.final_step, step)
    progress = {"step": step, "tokens": step * 10**6, "heartbeatTime": t.isoformat()}
    patch: dict[str, Any] = {"progress": progress}
    if done:
        patch["lastCheckpoint"] = done[-1]
    await c.patch_job(NS, NAME, {"status": patch}, status=True)


async def _inject(
    c: EmulatedCluster,
    f: chaos.Failure,
    tr: _Trainer,
    now: datetime,
    cfg: SoakConfig,
    res: SoakResult,
    victim: str,
) -> None:
    res.injected.append(f.kind)
    res.lost_bounds.append(int(tr.every_minutes * 60 // cfg.step_s) + 1)
    if f.kind == "preemption":  # a notice: the trainer saves on SIGTERM (_on_sigterm), nothing is lost
        res.lost_steps.append(0)
        await c.disrupt(NS, victim)
        return
    res.lost_steps.append(tr.step(now, cfg.step_s) - tr.saved)  # a save in progress is lost too
    if f.kind in ("gpu", "application"):
        await c.terminate(NS, victim, 1)
    elif f.kind == "node_lost":
        await c.lose_node(NS, victim)
    else:
        tr.hung = True  # heartbeats stop: the operator's hang timeout must notice


async def _on_sigterm(
    c: EmulatedCluster, s: dict[str, Any], tr: _Trainer, now: datetime, cfg: SoakConfig, res: SoakResult
) -> None:
    """After a disruption notice the operator deletes the gang (SIGTERM): the trainer saves the step it
    is at within its grace period and reports it (a save already in progress completes)."""
    if tr.attempt == 0 or tr.hung or tr.sigterm_saved or _condition_reason(s, "Restarting") != "Disruption":
        return
    if s.get("attempt") != tr.attempt:
        return
    tr.sigterm_saved = True
    step = tr.step(now, cfg.step_s)
    if step <= tr.saved:
        return
    tr.saved = step
    res.checkpoint_steps.append(step)
    ckpt = {"step": step, "path": f"/ck/{step}", "time": now.isoformat(), "blockedSeconds": cfg.delta_s}
    with contextlib.suppress(RuntimeError):
        await c.patch_job(NS, NAME, {"status": {"lastCheckpoint": ckpt}}, status=True)
