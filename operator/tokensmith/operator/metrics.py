"""Prometheus metrics of the operator (prometheus-client, served on --metrics-port).

A registry per operator instance (tests run several in one process); names follow Prometheus'
conventions (base units, _total for counters, _seconds for durations).
"""

from __future__ import annotations

import contextlib
from typing import Any

from tokensmith.operator.spec import PHASES


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
        self._phases: dict[tuple[str, str], str] = {}

    def observe_job(self, namespace: str, name: str, phase: str, gpu_hours: float) -> None:
        self._phases[(namespace, name)] = phase
        self._refresh()
        self.gpu_hours.labels(namespace, name).set(gpu_hours)

    def forget_job(self, namespace: str, name: str) -> None:
        self._phases.pop((namespace, name), None)
        self._refresh()
        with contextlib.suppress(KeyError):
            self.gpu_hours.remove(namespace, name)

    def _refresh(self) -> None:
        for phase in PHASES:
            self.jobs.labels(phase).set(sum(1 for p in self._phases.values() if p == phase))

    def serve(self, port: int) -> Any:
        from prometheus_client import start_http_server

        return start_http_server(port, registry=self.registry)
