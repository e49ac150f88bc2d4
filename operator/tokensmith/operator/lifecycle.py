"""Job lifetime limits: `activeDeadlineSeconds` (the whole job, across attempts) and
`ttlSecondsAfterFinished` (delete a finished job; its children follow through their
ownerReferences). Same names and meaning as Kubernetes' batch/v1 Job fields
(https://kubernetes.io/docs/concepts/workloads/controllers/job/#job-termination-and-cleanup,
https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/); here the deadline
counts from the job's first reconcile (`status.startTime`) and includes suspended time, like Job's
since the last resume does not: a suspended job's deadline keeps running (documented)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from tokensmith.operator.observed import Decision, DeleteJob, EmitEvent
from tokensmith.operator.spec import TERMINAL_PHASES, LLMTrainingJobSpec, LLMTrainingJobStatus


def deadline_exceeded(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, now: datetime) -> str | None:
    """A one-line reason once the job has been active longer than `activeDeadlineSeconds`."""
    limit = spec.active_deadline_seconds
    if limit is None or st.start_time is None:
        return None
    active = (now - st.start_time).total_seconds()
    if active < limit:
        return None
    return f"active for {active:.0f}s, longer than spec.activeDeadlineSeconds = {limit}"


def seconds_to_deadline(spec: LLMTrainingJobSpec, st: LLMTrainingJobStatus, now: datetime) -> float | None:
    if spec.active_deadline_seconds is None or st.start_time is None:
        return None
    left = spec.active_deadline_seconds - (now - st.start_time).total_seconds()
    return max(left, 0.0) + 0.05


def after_finish(spec: LLMTrainingJobSpec, decision: Decision, now: datetime) -> Decision:
    """The TTL after a terminal phase: delete the job when it has run out, else look again then;
    before that, wake up for the active deadline."""
    st = decision.status
    requeue = decision.requeue_after
    if st.phase not in TERMINAL_PHASES:
        wait = seconds_to_deadline(spec, st, now)
        if wait is not None:
            requeue = wait if requeue is None else min(requeue, wait)
        return replace(decision, requeue_after=requeue)
    ttl = spec.ttl_seconds_after_finished
    if ttl is None or st.completion_time is None:
        return decision
    expiry = st.completion_time + timedelta(seconds=ttl)
    if now >= expiry:
        message = f"finished {st.phase} {ttl}s ago (spec.ttlSecondsAfterFinished): deleting the job"
        actions = (*decision.actions, EmitEvent("Normal", "TTLExpired", message), DeleteJob(message))
        return replace(decision, actions=actions)
    wait = (expiry - now).total_seconds() + 0.05
    return replace(decision, requeue_after=wait if requeue is None else min(requeue, wait))
