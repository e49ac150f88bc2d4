"""Start the operator: kopf with our registry, credentials shared with our client, metrics, peering."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from tokensmith.operator.admission import AdmissionPolicy
from tokensmith.operator.children import Defaults


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    peering: str | None = "tokensmith"  # None: standalone
    priority: int = 0
    metrics_port: int | None = 9090
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    interval: float = 10.0
    defaults: Defaults = field(default_factory=Defaults)
    policy: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    verbose: bool = False
    watch_nodes: bool = True  # needs the chart's read-only node ClusterRole


async def operate(
    config: OperatorConfig,
    *,
    connection: Any = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
    settings_hook: Any = None,
    runtime_hook: Any = None,
) -> None:
    """Run the operator until `stop_flag` (in-process: tests and benchmarks pass a `connection`,
    a kopf.ConnectionInfo for the emulator; otherwise kopf's service-account/kubeconfig login)."""
    import kopf

    from tokensmith.operator.handlers import Runtime, build_registry
    from tokensmith.operator.kube import Endpoint, KubeClient

    client = KubeClient(Endpoint(server="http://unset"))
    runtime = Runtime(
        client=client,
        defaults=config.defaults,
        policy=config.policy,
        interval=config.interval,
        settings_hook=settings_hook,
        watch_nodes=config.watch_nodes,
    )
    registry = build_registry(runtime)

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **_: Any) -> Any:
        info = connection
        if info is None:
            info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
                settings=settings
            )
        if info is None:
            raise kopf.LoginError("no Kubernetes credentials: not in a pod and no kubeconfig found")
        client.endpoint = Endpoint.from_kopf(info)
        return info

    if config.metrics_port:
        runtime.metrics.serve(config.metrics_port)
    if runtime_hook is not None:
        runtime_hook(runtime)
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=config.peering is None,
            peering_name=config.peering,
            priority=config.priority,
            liveness_endpoint=config.liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await client.close()


def run_operator(config: OperatorConfig) -> None:
    """`tokensmith operator run`: blocks until SIGINT/SIGTERM."""
    logging.basicConfig(
        level=logging.DEBUG if config.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(operate(config))
