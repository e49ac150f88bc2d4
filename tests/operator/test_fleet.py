"""Issue 14 on the real kopf operator and the emulated cluster: terminal phases stop the gang, lost
nodes, failure classes, fail-fast without progress, disruption notices, queues and lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tokensmith.operator.spec import build_manifest
from tokensmith.operator.testing import EmulatedCluster, OperatorUnderTest

from .test_integration import NS, events, phase, running, spec, status

pytestmark = [pytest.mark.slow, pytest.mark.asyncio, pytest.mark.timeout(90)]


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[EmulatedCluster]:
    async with EmulatedCluster() as c:
        yield c


@pytest_asyncio.fixture
async def operator(cluster: EmulatedCluster) -> AsyncIterator[OperatorUnderTest]:
    async with OperatorUnderTest(cluster, interval=0.3) as op:
        yield op


def live(c: EmulatedCluster, name: str) -> list[str]:
    """Worker pods still running (not finished, not being deleted)."""
    return [
        p["metadata"]["name"]
        for p in c.workers(NS, name)
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


@pytest.mark.parametrize(
    "edit",
    [
        {"budget": {"maxCostUSD": 5}},  # passes the schema, fails the models (no price)
        {"model": {"preset": "llama-typo"}},
        {"parallelism": {"globalBatchTokens": 3000}},  # passes the models, fails the trainer check
    ],
    ids=["cost-without-price", "preset-typo", "batch-not-a-multiple"],
)
async def test_a_spec_edited_into_an_invalid_one_stops_the_gang(
    cluster: EmulatedCluster, operator: OperatorUnderTest, edit: dict[str, Any]
) -> None:
    await cluster.apply_job(build_manifest("edited", spec(), namespace=NS))
    await running(cluster, "edited")
    await cluster.patch_job(NS, "edited", {"spec": edit})
    await cluster.wait_for(lambda: phase(cluster, "edited") == "Failed", what="Failed/InvalidSpec")
    st = status(cluster, "edited")
    assert st["lastFailure"]["reason"] == "InvalidSpec" and st["lastFailure"]["attempt"] == 1
    await cluster.wait_for(lambda: not live(cluster, "edited"), what="gang stopped")
    await cluster.wait_for(lambda: "InvalidSpec" in events(cluster, "edited"), what="event")
    assert not cluster.workers(NS, "edited", 2)
