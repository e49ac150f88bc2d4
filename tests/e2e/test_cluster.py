"""End to end against a real cluster (kind or any other): the API server accepts the generated CRD,
rejects nonsense through its schema, and the real operator restarts a failing gang and finishes.

Runs only when TOKENSMITH_E2E_KUBECONFIG names a kubeconfig; uses busybox workers (the command is
overridden per job), so no Tokensmith image is needed:

    kind create cluster && TOKENSMITH_E2E_KUBECONFIG=~/.kube/config pytest tests/e2e -s
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import pytest

KUBECONFIG = os.environ.get("TOKENSMITH_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        not KUBECONFIG, reason="TOKENSMITH_E2E_KUBECONFIG is not set (needs a real cluster, e.g. kind)"
    ),
]

GROUP, VERSION, PLURAL = "tokensmith.dev", "v1alpha1", "llmtrainingjobs"


@pytest.fixture(scope="module")
def api() -> Any:
    from kubernetes import client, config

    config.load_kube_config(config_file=KUBECONFIG)
    os.environ["KUBECONFIG"] = str(KUBECONFIG)  # the operator's kopf login reads it
    from tokensmith.operator.crd import build_crd

    ext = client.ApiextensionsV1Api()
    crd = build_crd()
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as err:
        if err.status != 409:
            raise
        current = ext.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    for _ in range(60):
        cond = ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in cond):
            break
        time.sleep(1)
    ns = f"tokensmith-e2e-{uuid.uuid4().hex[:6]}"
    # the real PodSecurity admission controller admits every pod the operator creates (docs/security.md)
    restricted = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    client.CoreV1Api().create_namespace({"metadata": {"name": ns, "labels": restricted}})
    yield client, ns
    client.CoreV1Api().delete_namespace(ns)


def job(name: str, command: str, **spec: Any) -> dict[str, Any]:
    from tokensmith.operator.spec import build_manifest

    body = {
        "checkpoint": {"volume": {"emptyDir": {}}},
        "cluster": {
            "nodes": 2,
            "gpusPerNode": 0,
            "image": "busybox:1.36",
            "command": ["sh", "-c", command],
            "shmSize": "64Mi",
            "terminationGracePeriodSeconds": 1,
        },
        "data": {"tokens": 1000},
        "parallelism": {"microBatch": 1, "globalBatchTokens": 256},
        "restartPolicy": {"backoffSeconds": 2, "maxRestarts": 2, "hangTimeoutSeconds": 0},
        **spec,
    }
    return build_manifest(name, body)


def test_api_server_rejects_nonsense(api: Any) -> None:
    client, ns = api
    custom = client.CustomObjectsApi()
    bad = job("bad", "true")
    bad["spec"]["cluster"]["nodes"] = 0
    with pytest.raises(client.ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, bad)
    assert err.value.status == 422 and "nodes" in err.value.body


def test_api_server_applies_the_cel_rule(api: Any) -> None:
    client, ns = api
    bad = job("caps", "true")
    bad["spec"]["cluster"]["addCapabilities"] = ["IPC_LOCK"]  # without securityProfile: baseline
    with pytest.raises(client.ApiException) as err:
        client.CustomObjectsApi().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, bad)
    assert (
        err.value.status == 422
        and "addCapabilities needs cluster.securityProfile: baseline" in err.value.body
    )


def test_gang_restarts_and_succeeds(api: Any) -> None:
    client, ns = api
    from tokensmith.operator.main import OperatorConfig, operate

    custom = client.CustomObjectsApi()
    # attempt 1 fails on worker 1; attempt 2 succeeds
    command = 'if [ "$TOKENSMITH_ATTEMPT" = 1 ] && [ "$NODE_RANK" = 1 ]; then exit 1; fi; sleep 3; exit 0'
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job("gang", command))

    async def run() -> dict[str, Any]:
        stop = asyncio.Event()
        config = OperatorConfig(
            namespaces=(ns,), peering=None, metrics_port=None, liveness=None, interval=2.0
        )
        task = asyncio.create_task(operate(config, connection=None, stop_flag=stop))
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                obj = await asyncio.to_thread(
                    custom.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, "gang"
                )
                if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    return obj
                await asyncio.sleep(2)
            raise TimeoutError("job did not finish in 300 s")
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    obj = asyncio.run(run())
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert obj["status"]["restarts"] == 1 and obj["status"]["attempt"] == 2
