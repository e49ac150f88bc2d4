"""Issue 15's short chaos soak: the real kopf operator, in its own process, on the emulated cluster drives
a 64-node x 8-GPU job for two simulated days on a compressed clock that the harness owns
(tokensmith.operator.soak); the harness plays the trainer (steps, saves that block for the configured
seconds and are reported when complete, a SIGTERM save after a disruption notice, heartbeats) and injects
failures from a seeded schedule with the Llama 3 mix (chaos.py): worker crashes, a hang, a lost node and a
preemption notice."""

from __future__ import annotations

import pytest

from tokensmith.operator import goodput, soak
from tokensmith.planner.reliability import daly_interval, wall_time

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(180)]

HOURS = 48.0  # simulated
MTBF_JOB_H = 6.0  # a hard cluster, so that two days see several failures
DELTA_S = 120.0
TAU_H = float(daly_interval(DELTA_S / 3600, MTBF_JOB_H))  # the planner's fixed interval for this MTBF


async def test_short_soak_survives_every_failure_and_accounts_every_gpu_hour() -> None:
    cfg = soak.SoakConfig(hours=HOURS, mtbf_job_hours=MTBF_JOB_H, every_minutes=TAU_H * 60, delta_s=DELTA_S)
    res = await soak.run(cfg)
    final, gpus = res.status, cfg.gpus
    kinds = {f.kind for f in res.failures}
    print({"failures": len(res.failures), "kinds": res.injected, "lost_steps": res.lost_steps,
           "goodput": final["goodput"], "lost": final["lostGPUHours"], "attempts": res.attempts,
           "reconciles": res.reconciles, "requests": res.requests, "cpu_s": res.operator_cpu_s,
           "real_s": res.real_s})  # fmt: skip
    assert kinds == {"gpu", "application", "hang", "node_lost", "preemption"}  # every kind, by the seed
    # survived: every failure injected and recovered from, exactly one new attempt each, no duplicate gang
    assert res.injected == [f.kind for f in res.failures]
    assert res.duplicates == 0
    assert res.stalls == 0  # the operator kept up with the compressed clock
    assert res.attempts == len(res.failures) + 1
    assert final["phase"] == "Running" and final["attempt"] == res.attempts
    # every injected failure is counted, and nothing else: failures as restarts, the notice as planned
    planned = res.injected.count("preemption")
    assert final["observed"]["interruptions"] == len(res.failures)
    assert final["restarts"] == len(res.failures) - planned and final["plannedRestarts"] == planned
    # monotone progress: saves only move forward; every attempt resumes from the newest save
    assert res.checkpoint_steps == sorted(set(res.checkpoint_steps)) and res.checkpoint_steps
    assert res.resume_steps == sorted(res.resume_steps) and res.final_step >= res.checkpoint_steps[-1]
    # steps lost per failure <= one checkpoint interval + the step in flight
    assert res.lost_bounds == [int(TAU_H * 3600 // cfg.step_s) + 1] * len(res.failures)
    assert all(0 <= n <= b for n, b in zip(res.lost_steps, res.lost_bounds, strict=True)), res.lost_steps
    # every lost step is accounted to a cause: the ledger's `redone` holds each failure's lost steps, and no
    # more than detection allows: per failure the rest of its tick and the next (the harness sees the
    # failure one tick later) plus two minutes of restart-rate ticks until the operator notices; per hang
    # the hang timeout
    lost_h = sum(res.lost_steps) * cfg.step_s / 3600 * gpus
    failed, hangs = len(res.failures) - planned, res.injected.count("hang")
    slack_h = (failed * (2 * cfg.fast_s + 120) + hangs * cfg.hang_timeout_s) / 3600
    assert lost_h <= final["lostGPUHours"]["redone"] <= lost_h + slack_h * gpus
    assert final["lostGPUHours"]["redone"] == pytest.approx(sum(final["gpuHoursLostByClass"].values()))
    # the accounting adds up
    total = goodput.total_gpu_hours_of(final)
    assert final["productiveGPUHours"] + sum(final["lostGPUHours"].values()) == pytest.approx(total, abs=1e-6)
    assert goodput.ledger_problem(final) is None
    assert final["observed"]["meanCheckpointSeconds"] == pytest.approx(DELTA_S)
    # goodput near Daly's eq. 13 for the same MTBF, checkpoint cost and the restart time this emulated
    # cluster shows (detection + backoff + gang start)
    restart_h = final["lostGPUHours"]["restart"] / gpus / len(res.failures)
    mtbf_h = final["observed"]["mtbfGPUHours"] / gpus  # the MTBF this schedule had
    predicted = HOURS / float(wall_time(HOURS, TAU_H, DELTA_S / 3600, restart_h, mtbf_h))
    assert final["goodput"] == pytest.approx(predicted, rel=0.10)
