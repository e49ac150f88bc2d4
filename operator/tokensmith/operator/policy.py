"""Restart timing: capped exponential backoff, as Kubernetes' own CrashLoopBackOff and Job
`backoffLimit` do (10 s doubling to 5 min there; ours is configured per job)."""

from __future__ import annotations

from datetime import datetime, timedelta

from tokensmith.operator.spec import RestartPolicySpec


def backoff_seconds(restart: int, policy: RestartPolicySpec) -> float:
    """Wait before restart number `restart` (1 = the first): base x multiplier^(restart-1), capped."""
    if restart < 1:
        return 0.0
    delay = policy.backoff_seconds * policy.backoff_multiplier ** (restart - 1)
    return min(delay, policy.max_backoff_seconds) if policy.max_backoff_seconds > 0 else delay


def restart_time(now: datetime, restart: int, policy: RestartPolicySpec) -> datetime:
    return now + timedelta(seconds=backoff_seconds(restart, policy))


def restarts_left(restarts: int, policy: RestartPolicySpec) -> int:
    return max(policy.max_restarts - restarts, 0)
