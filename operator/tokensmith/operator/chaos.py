"""Seeded failure schedules and a discrete-event model of a checkpointed run (pure; no I/O).

Used by the goodput tests and the long soak benchmark (benchmarks/goodput_soak.py) to compare an
adaptive checkpoint interval (cadence.py) with a fixed one on the same failure schedule.

Failure mix: Llama 3 (Dubey et al. 2024, arXiv:2407.21783, Table 5) attributes its 419 unexpected
interruptions in 54 days on 16,384 GPUs mostly to GPUs (faulty GPU, HBM3, SRAM, system processor:
58.7% GPU issues by the paper's count), then software bugs, network switches/cables and host
maintenance. We map them onto what the operator sees: `gpu` (a worker dies: Xid/ECC, exit != 0),
`hang` (NCCL watchdog, network: heartbeats stop), `node_lost` (host, PSU, NIC: the node goes NotReady),
`application` (software bug: exit != 0), `preemption` (maintenance: a disruption notice). The weights
below are our reading of that breakdown, rounded; each failure's kind is drawn independently of when it
happens, which is all the soak needs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LLAMA3_MIX: dict[str, float] = {
    "gpu": 0.587,
    "application": 0.13,
    "hang": 0.10,
    "node_lost": 0.107,
    "preemption": 0.076,
}


@dataclass(frozen=True)
class Failure:
    hour: float  # wall-clock hours since the start of the run
    kind: str


def schedule(
    seed: int, mtbf_job_hours: float, horizon_hours: float, mix: dict[str, float] | None = None
) -> list[Failure]:
    """Failures of an exponential process with mean `mtbf_job_hours`, kinds drawn from `mix`."""
    rng = random.Random(seed)
    kinds, weights = zip(*(mix or LLAMA3_MIX).items(), strict=True)
    out: list[Failure] = []
    t = rng.expovariate(1.0 / mtbf_job_hours)
    while t < horizon_hours:
        out.append(Failure(t, rng.choices(kinds, weights)[0]))
        t += rng.expovariate(1.0 / mtbf_job_hours)
    return out


# The interval policy: (failures so far, wall hours so far) -> checkpoint interval in hours.
Policy = Callable[[int, float], float]


@dataclass(frozen=True)
class Outcome:
    wall_hours: float
    work_hours: float
    redone_hours: float
    restart_hours: float
    checkpoint_hours: float
    failures: int
    checkpoints: int
    intervals: tuple[float, ...]  # the interval in force after each failure (hours)

    @property
    def goodput(self) -> float:
        return self.work_hours / self.wall_hours if self.wall_hours else 0.0


def simulate(
    work_hours: float,
    failures: Sequence[Failure],
    delta_hours: float,
    restart_hours: float,
    policy: Policy,
) -> Outcome:
    """Run `work_hours` of compute, saving every policy() hours at delta_hours each, through the
    failures (a failure loses the work since the last complete save and costs restart_hours; a
    failure during a restart or a save is handled alike). Time is wall-clock hours for the job;
    wall = work + redone + restart + checkpoint exactly."""
    t = done = redone = restart = ckpt_time = 0.0
    n = saves = 0
    intervals: list[float] = []
    queue = sorted(failures, key=lambda f: f.hour)
    i = 0
    tau = policy(0, 0.0)
    while done < work_hours - 1e-12:
        seg = min(tau, work_hours - done)
        end = t + seg + (delta_hours if done + seg < work_hours else 0.0)
        while i < len(queue) and queue[i].hour < t:  # failures during a restart are absorbed by it
            i += 1
        if i < len(queue) and queue[i].hour < end:
            at = queue[i].hour
            i += 1
            computed = min(at - t, seg)
            redone += computed
            ckpt_time += max(at - t - seg, 0.0)
            n += 1
            restart += restart_hours
            t = at + restart_hours
            tau = policy(n, t)
            intervals.append(tau)
            continue
        done += seg
        if done < work_hours:
            ckpt_time += delta_hours
            saves += 1
        t = end
    return Outcome(t, work_hours, redone, restart, ckpt_time, n, saves, tuple(intervals))
