"""Restart accounting per failure class, fail-fast without progress, and the work a failure lost.

Budgets (compare JobSet's single `failurePolicy.maxRestarts` and its `rules` per pod-failure reason,
jobset#976, and Kubernetes Job's `podFailurePolicy` with `Ignore` for DisruptionTarget):
- Application failures (crash, config, hang, the container's own OOM) use `maxRestarts`;
- Infrastructure failures (lost/NotReady node, eviction, GPU errors) use `maxInfrastructureRestarts`;
- Scheduling failures (preemption, an unschedulable gang) use `maxSchedulingRestarts`, unlimited
  by default: being preempted is not the job's fault;
- planned restarts after a disruption notice use nothing.
Backoff grows per class with that class's count (`policy.backoff_seconds`), so a flaky node does
not make the next crash wait longer, and vice versa.

No progress: an attempt that ends in an Application failure without a checkpoint newer than the
one it resumed from made no progress; `maxAttemptsWithoutProgress` of them in a row end the job
(Failed/NoProgress) before the restart budget burns more GPU-hours on a run that cannot advance.
Infrastructure and Scheduling failures neither count nor reset the streak (not the run's fault);
a newer checkpoint resets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tokensmith.operator import policy
from tokensmith.operator.observed import Failure
from tokensmith.operator.spec import LLMTrainingJobSpec, LLMTrainingJobStatus, RestartPolicySpec


@dataclass(frozen=True)
class Verdict:
    """What a failure means for the job: restart after `wait` seconds, or end with `reason`."""

    restart: bool
    reason: str = ""
    message: str = ""
    wait: float = 0.0
    count: int = 0  # this class's restarts after this one
    limit: int | None = None


def limit(failure_class: str, rp: RestartPolicySpec) -> int | None:
    """The restart budget of a failure class (None: unlimited)."""
    if failure_class == "Infrastructure":
        return rp.max_infrastructure_restarts
    if failure_class == "Scheduling":
        return rp.max_scheduling_restarts
    return rp.max_restarts


def used_restarts(st: LLMTrainingJobStatus, failure_class: str) -> int:
    """Restarts of one class so far. A status written before classes existed has only the total:
    it counts as Application (the budget it used then)."""
    if not st.restarts_by_class:
        return st.restarts if failure_class == "Application" else 0
    return st.restarts_by_class.get(failure_class, 0)


def made_progress(st: LLMTrainingJobStatus) -> bool:
    """Did the current attempt write a checkpoint newer than the one it resumed from?"""
    ckpt = st.last_checkpoint
    if ckpt is None:
        return False
    return st.attempt_resume_step is None or ckpt.step > st.attempt_resume_step


def streak_after(st: LLMTrainingJobStatus, failure: Failure) -> int:
    """Attempts without progress in a row, counting the one that just failed."""
    if made_progress(st):
        return 0
    if failure.failure_class != "Application":
        return st.attempts_without_progress
    return st.attempts_without_progress + 1


def judge(st: LLMTrainingJobStatus, failure: Failure, rp: RestartPolicySpec) -> Verdict:
    """Restart or not, and after how long (pure: `st` is the status before the failure is counted)."""
    if not failure.retryable:
        return Verdict(False, failure.reason, failure.message)
    streak = streak_after(st, failure)
    if rp.max_attempts_without_progress and streak >= rp.max_attempts_without_progress:
        ckpt = st.last_checkpoint
        since = f"checkpoint step {ckpt.step}" if ckpt else "the start (no checkpoint yet)"
        message = (
            f"{failure.message}; {streak} attempts in a row failed without a checkpoint newer than "
            f"{since} (restartPolicy.maxAttemptsWithoutProgress = {rp.max_attempts_without_progress})"
        )
        return Verdict(False, "NoProgress", message)
    cls = failure.failure_class
    used = used_restarts(st, cls)
    cap = limit(cls, rp)
    if cap is not None and used >= cap:
        field = {"Infrastructure": "maxInfrastructureRestarts", "Scheduling": "maxSchedulingRestarts"}
        name = field.get(cls, "maxRestarts")
        reason = "MaxRestartsExceeded" if cls == "Application" else f"Max{cls}RestartsExceeded"
        message = f"{failure.message}; all {cap} restarts used for {cls} failures (restartPolicy.{name})"
        return Verdict(False, reason, message)
    return Verdict(True, wait=policy.backoff_seconds(used + 1, rp), count=used + 1, limit=cap)


def lost_gpu_hours(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, now: datetime) -> float:
    """GPU-hours of the failed attempt since its last durable state: the later of when its gang
    became complete and its last checkpoint (work before either is either not compute or saved)."""
    start = st.running_since
    if start is None:
        return 0.0
    ckpt = st.last_checkpoint
    if ckpt is not None and ckpt.time is not None and made_progress(st) and ckpt.time > start:
        start = ckpt.time
    seconds = max((now - start).total_seconds(), 0.0)
    return seconds / 3600.0 * spec.accounted_devices
