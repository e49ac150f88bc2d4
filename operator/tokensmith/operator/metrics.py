"""Prometheus metrics of the operator (prometheus-client, served on --metrics-port).

A registry per operator instance (tests run several in one process); names follow Prometheus'
conventions (base units, _total for counters, _seconds for durations).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from tokensmith.operator.spec import FAILURE_CLASSES, PHASES, LLMTrainingJobStatus

JOB = ["namespace", "job"]
JOB_CLASS = ["namespace", "job", "failure_class"]


def job_gauges(status: LLMTrainingJobStatus, now: datetime) -> dict[str, float | None]:
    """Per-job gauge values from a status (pure; None: not known yet, the series is removed)."""
    progress, ckpt = status.progress, status.last_checkpoint
    beat = progress.heartbeat_time if progress else None
    return {
        "heartbeat_age": (now - beat).total_seconds() if beat else None,
        "checkpoint_age": (now - ckpt.time).total_seconds() if ckpt and ckpt.time else None,
        "tokens_per_second": progress.tokens_per_second if progress else None,
    }


class OperatorMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.jobs = Gauge("tokensmith_jobs", "LLMTrainingJobs by phase", ["phase"], registry=self.registry)
        self.restarts = Counter(
            "tokensmith_gang_restarts_total",
            "Gang restarts after failures",
            ["reason"],
            registry=self.registry,
        )
        self.gpu_hours = Gauge(
            "tokensmith_job_gpu_hours", "GPU-hours used per job", ["namespace", "job"], registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "tokensmith_reconcile_duration_seconds",
            "Time of one reconcile (read, decide, write)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.api_requests = Counter(
            "tokensmith_api_requests_total",
            "API requests by the handlers",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.heartbeat_age = Gauge(
            "tokensmith_job_heartbeat_age_seconds",
            "Seconds since trainer rank 0's last heartbeat",
            JOB,
            registry=self.registry,
        )
        self.checkpoint_age = Gauge(
            "tokensmith_job_last_checkpoint_age_seconds",
            "Seconds since the last complete checkpoint",
            JOB,
            registry=self.registry,
        )
        self.tokens_per_second = Gauge(
            "tokensmith_job_tokens_per_second",
            "Training throughput trainer rank 0 reports",
            JOB,
            registry=self.registry,
        )
        self.job_restarts = Gauge(
            "tokensmith_job_restarts",
            "Failure-driven restarts per failure class",
            JOB_CLASS,
            registry=self.registry,
        )
        self.gpu_hours_lost = Gauge(
            "tokensmith_job_gpu_hours_lost",
            "GPU-hours lost to failures (work since the last checkpoint)",
            JOB_CLASS,
            registry=self.registry,
        )
        self.planned_restarts = Gauge(
            "tokensmith_job_planned_restarts",
            "Restarts for disruption notices (not failures)",
            JOB,
            registry=self.registry,
        )
        self.goodput = Gauge(
            "tokensmith_job_goodput", "Productive / total GPU-hours (goodput.py)", JOB, registry=self.registry
        )
        self.lost_gpu_hours = Gauge(
            "tokensmith_job_lost_gpu_hours",
            "GPU-hours lost by cause: redone, rollback, restart, checkpoint (goodput.py)",
            ["namespace", "job", "cause"],
            registry=self.registry,
        )
        self.checkpoint_every_minutes = Gauge(
            "tokensmith_job_checkpoint_every_minutes",
            "The adaptive checkpoint interval (cadence.py)",
            JOB,
            registry=self.registry,
        )
        # run health (rollback.py)
        self.rollbacks = Gauge(
            "tokensmith_job_rollbacks",
            "Rollbacks to the last healthy checkpoint",
            JOB,
            registry=self.registry,
        )
        self.rollback_gpu_hours_lost = Gauge(
            "tokensmith_job_rollback_gpu_hours_lost",
            "GPU-hours thrown away by rollbacks (work since the last healthy checkpoint)",
            JOB,
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}

    def observe_job(self, namespace: str, name: str, phase: str, gpu_hours: float) -> None:
        self._phases[(namespace, name)] = phase
        self._refresh()
        self.gpu_hours.labels(namespace, name).set(gpu_hours)

    def observe_status(self, namespace: str, name: str, status: LLMTrainingJobStatus, now: datetime) -> None:
        """The per-job gauges (heartbeat and checkpoint age, throughput, restarts and losses by class)."""
        gauges = {"heartbeat_age": self.heartbeat_age, "checkpoint_age": self.checkpoint_age,
                  "tokens_per_second": self.tokens_per_second}  # fmt: skip
        for key, value in job_gauges(status, now).items():
            if value is None:
                with contextlib.suppress(KeyError):
                    gauges[key].remove(namespace, name)
            else:
                gauges[key].labels(namespace, name).set(value)
        for cls in FAILURE_CLASSES:
            self.job_restarts.labels(namespace, name, cls).set(status.restarts_by_class.get(cls, 0))
            self.gpu_hours_lost.labels(namespace, name, cls).set(status.gpu_hours_lost_by_class.get(cls, 0.0))
        self.planned_restarts.labels(namespace, name).set(status.planned_restarts)
        for gauge, value in ((self.goodput, status.goodput),
                             (self.checkpoint_every_minutes, status.checkpoint_every_minutes)):  # fmt: skip
            if value is not None:
                gauge.labels(namespace, name).set(value)
        for cause, hours in status.lost_gpu_hours.items():
            self.lost_gpu_hours.labels(namespace, name, cause).set(hours)
        self.rollbacks.labels(namespace, name).set(status.rollbacks)
        self.rollback_gpu_hours_lost.labels(namespace, name).set(status.lost_gpu_hours.get("rollback", 0.0))

    def forget_job(self, namespace: str, name: str) -> None:
        self._phases.pop((namespace, name), None)
        self._refresh()
        for gauge in (self.gpu_hours, self.heartbeat_age, self.checkpoint_age, self.tokens_per_second,
                      self.planned_restarts, self.goodput, self.checkpoint_every_minutes, self.rollbacks,
                      self.rollback_gpu_hours_lost):  # fmt: skip
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)
        for cls in FAILURE_CLASSES:
            for gauge in (self.job_restarts, self.gpu_hours_lost):
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, name, cls)
        from tokensmith.operator.goodput import CAUSES

        for cause in CAUSES:
            with contextlib.suppress(KeyError):
                self.lost_gpu_hours.remove(namespace, name, cause)

    def _refresh(self) -> None:
        for phase in PHASES:
            self.jobs.labels(phase).set(sum(1 for p in self._phases.values() if p == phase))

    def serve(self, port: int) -> Any:
        from prometheus_client import start_http_server

        return start_http_server(port, registry=self.registry)
