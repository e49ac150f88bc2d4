"""Operator benchmark against the in-process emulated cluster (kmock + simulated kubelet).

Measures, for a gang of N nodes (default 64):
1. creation: from `kubectl apply` of a job to all N worker pods existing;
2. restart: from one worker failing to the whole new gang existing, minus the configured backoff;
3. API requests per reconcile: every request the operator sent (kopf and the handlers, not the
   test harness) divided by the reconciles it ran, in steady state and overall;
4. node loss: a node of the running gang stops reporting (Ready=Unknown, unreachable taint); its
   pod stays Terminating. Time from the loss to the whole new gang Running (minus the backoff), and
   to the stuck pod force-deleted (grace period 1 s + forceDeleteAfterSeconds 1 s), with the new
   gang's pods never placed on the lost node.
A baseline in the same run: the same N pod manifests created one request at a time (what a
controller without concurrent writes does) against the same emulator.

    .venv/bin/python benchmarks/operator_gang.py [--nodes 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from tokensmith.operator import children
from tokensmith.operator.spec import LLMTrainingJobSpec, build_manifest
from tokensmith.operator.testing import EmulatedCluster, OperatorUnderTest

NS = "bench"
BACKOFF = 1.0
FORCE_AFTER = 1.0
GRACE = 1


def spec(nodes: int) -> dict[str, Any]:
    return {
        "checkpoint": {"volume": {"persistentVolumeClaim": {"claimName": "ckpt"}}},
        "cluster": {"nodes": nodes, "gpusPerNode": 8, "terminationGracePeriodSeconds": GRACE},
        "model": {"preset": "llama-7b"},
        "data": {"tokens": 10**12},
        "parallelism": {"microBatch": 1, "globalBatchTokens": 4096 * 8 * nodes},
        "restartPolicy": {
            "backoffSeconds": BACKOFF,
            "hangTimeoutSeconds": 0,
            "maxRestarts": 100,
            "forceDeleteAfterSeconds": FORCE_AFTER,
        },
        "nodeHealth": {"notReadyTimeoutSeconds": 0},
    }


async def wait(cluster: EmulatedCluster, predicate: Any, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(0.01)
    return time.perf_counter()


def operator_requests(cluster: EmulatedCluster) -> int:
    return len(cluster.requests("kopf")) + len(cluster.requests("tokensmith-operator"))


async def one_run(nodes: int, index: int) -> dict[str, float]:
    async with (
        EmulatedCluster(tick=0.02, nodes=nodes + 8) as cluster,
        OperatorUnderTest(cluster, interval=2.0) as op,
    ):
        name = f"gang{index}"
        req_start = operator_requests(cluster)
        t0 = time.perf_counter()
        await cluster.apply_job(build_manifest(name, spec(nodes), namespace=NS))
        t_created = await wait(cluster, lambda: len(cluster.workers(NS, name, 1)) == nodes)
        await wait(cluster, lambda: (cluster.job(NS, name).get("status") or {}).get("phase") == "Running")
        create_requests = operator_requests(cluster) - req_start
        # steady state: 5 s of progress reports every 0.5 s
        req0, rec0 = operator_requests(cluster), op.runtime.reconciles
        for step in range(10):
            await cluster.report_progress(NS, name, step=step, tokens=step * 1000)
            await asyncio.sleep(0.5)
        steady = (operator_requests(cluster) - req0) / max(op.runtime.reconciles - rec0, 1)
        steady_reconciles = op.runtime.reconciles - rec0
        # restart: one worker fails
        req_fail = operator_requests(cluster)
        t_fail = time.perf_counter()
        await cluster.terminate(NS, f"{name}-a1-w{nodes // 2}", 1)
        t_regang = await wait(cluster, lambda: len(cluster.workers(NS, name, 2)) == nodes)
        await wait(cluster, lambda: (cluster.job(NS, name).get("status") or {}).get("phase") == "Running")
        restart_requests = operator_requests(cluster) - req_fail
        # node loss: the node of one worker of attempt 2 stops reporting
        lost_pod = f"{name}-a2-w{nodes // 3}"
        lost = cluster.node_of(NS, lost_pod)
        assert lost is not None
        t_lost = time.perf_counter()
        await cluster.fail_node(lost)

        def third_gang_running() -> bool:
            pods = cluster.workers(NS, name, 3)
            return len(pods) == nodes and all((p.get("status") or {}).get("phase") == "Running" for p in pods)

        marks: dict[str, float] = {}

        def both() -> bool:  # note each moment as it happens
            if "created" not in marks and len(cluster.workers(NS, name, 3)) == nodes:
                marks["created"] = time.perf_counter()
            if "gang" not in marks and third_gang_running():
                marks["gang"] = time.perf_counter()
            if "forced" not in marks and cluster.get("pods", NS, lost_pod) is None:
                marks["forced"] = time.perf_counter()
            return len(marks) == 3

        await wait(cluster, both)
        t_gang3, t_forced = marks["gang"], marks["forced"]
        on_lost = [p for p in cluster.workers(NS, name, 3) if p["spec"].get("nodeName") == lost]
        assert not on_lost, "the new gang landed on the lost node"
        overall = operator_requests(cluster) / max(op.runtime.reconciles, 1)
        # baseline: the same pods, one create request at a time, same emulator
        spec_model = LLMTrainingJobSpec.model_validate(spec(nodes))
        job = children.JobRef(name=f"seq{index}", namespace=NS, uid="00000000-0000-4000-8000-000000000000")
        pods = children.worker_pods(job, spec_model, 1, tuple(range(nodes)), children.Defaults())
        t_seq = time.perf_counter()
        for pod in pods:
            await cluster._call("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        seq = time.perf_counter() - t_seq
        return {
            "create_s": t_created - t0,
            "restart_minus_backoff_s": t_regang - t_fail - BACKOFF,
            "steady_requests_per_reconcile": steady,
            "steady_reconciles": steady_reconciles,
            "overall_requests_per_reconcile": overall,
            "requests_create_to_running": create_requests,
            "requests_failure_to_running": restart_requests,
            "sequential_create_s": seq,
            "node_loss_to_gang_created_minus_backoff_s": marks["created"] - t_lost - BACKOFF,
            "node_loss_to_gang_running_minus_backoff_s": t_gang3 - t_lost - BACKOFF,
            "node_loss_to_stuck_pod_force_deleted_s": t_forced - t_lost,
        }


async def main(nodes: int, repeats: int) -> dict[str, Any]:
    runs = [await one_run(nodes, i) for i in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}",
        "nodes": nodes,
        "repeats": repeats,
        "median": med,
        "ratio_sequential_over_operator_create": med["sequential_create_s"] / med["create_s"],
        "runs": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.nodes, args.repeats)), indent=2))
