"""An in-process Kubernetes for testing the real operator: kmock's API emulator on loopback plus the
controllers a real cluster would run beside it, each as small as the tests need.

kmock's `KubernetesEmulator` stores objects, serves list/watch/get/create/patch/delete and keeps
finalizers, but (version 0.8) assigns no uid, resourceVersion or generation and runs no
controllers. `EmulatedCluster` adds exactly what the operator relies on, and says so:
- uid, creationTimestamp, a resourceVersion set once at creation (kopf's JSON patches `test` it;
  it is not bumped on writes, so optimistic-concurrency conflicts are not emulated), generation
  (bumped on spec writes) and names for `generateName` (kopf's Events);
- a garbage collector: objects whose owners (by uid) are gone are deleted, as Kubernetes' GC does
  with background propagation;
- a kubelet: pods become Running after `start_delay`; a test ends them with exit codes, reasons and
  termination messages (`terminate`), or loses their node (`lose_node`);
- a Job controller for evaluation Jobs: one pod per Job, and the Job's Complete/Failed condition
  once that pod ends; the evaluator "runs" for `eval_delay` and reports `eval_results` through its
  termination message, like `tokensmith eval` does;
- `report_progress` / `report_checkpoint`: the status patches trainer rank 0 sends;
- nodes (`nodes=N`: node-0 ... node-N-1, Ready) and a scheduler that binds each worker pod to a free
  Ready node it tolerates and its required node anti-affinity (`matchFields metadata.name NotIn`)
  allows, one worker per node; `fail_node` (Ready=Unknown plus the unreachable taint, as the node
  lifecycle controller does), `cordon`, `taint`, `disrupt` (a DisruptionTarget condition);
- graceful deletion: a deleted pod stays Terminating (deletionTimestamp = now + grace, held by a
  kubelet finalizer) until its node's kubelet confirms it after `stop_delay`; on a failed node
  never, unless deleted with grace period 0 (jobset#574's stuck pods);
- Kueue's pod webhook and admission (`kueue=True`): pods labelled `kueue.x-k8s.io/queue-name` get
  the `kueue.x-k8s.io/admission` scheduling gate at creation; `admit(group)` removes it;
- the PodSecurity admission controller for namespaces listed in `pod_security` (namespace -> level),
  refusing pods that break the level with the API server's 403 (the check is `podsecurity.py`).
Label selectors are not evaluated by the emulator; kopf filters by labels itself, so nothing
depends on them. kmock is a test dependency: import this module only in tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import kmock
from kmock._internal import apps, k8s

from tokensmith.operator import names
from tokensmith.operator.spec import GROUP, PLURAL, VERSION

HARNESS_AGENT = "tokensmith-test-harness"
KUBELET_FINALIZER = "emulator.tokensmith.dev/kubelet"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_GATE = "kueue.x-k8s.io/admission"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
JOBS_PATH = f"/apis/{GROUP}/{VERSION}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Emulator(k8s.KubernetesEmulator):
    """kmock's emulator plus uid/resourceVersion/generation/creationTimestamp (see the module doc)."""

    _versions = itertools.count(1)
    served: list[Served]
    enforce: dict[str, str]  # namespace -> Pod Security level its admission enforces

    async def _handle(self, request: Any) -> Any:
        # kmock matches each request against its whole request history (quadratic over a long run):
        # keep a light log of our own and only the recent history there.
        if not hasattr(self, "served"):
            self.served = []
        method = request.method.value if hasattr(request.method, "value") else str(request.method)
        served = Served(method.upper(), request.url, str(request.headers.get("User-Agent", "")))
        self.served.append(served)
        del self._requests[:-1]  # the current request stays: kmock matches it by identity
        delete_grace: int | None = None
        if request.resource is not None and request.resource.plural == "pods":
            delete_grace = self._pods(request, served)
        if (
            request.resource is not None
            and request.action == kmock.action.CREATE
            and isinstance(request.data, dict)
        ):
            _pod_security_admission(self, request)
            md = request.data.setdefault("metadata", {})
            if not md.get("name") and md.get("generateName"):  # Events use generateName
                md["name"] = f"{md['generateName']}{uuid.uuid4().hex[:10]}"
            md.setdefault("uid", str(uuid.uuid4()))
            md.setdefault("creationTimestamp", _now())
            md["resourceVersion"] = str(next(self._versions))
            md["generation"] = 1
        elif (
            request.resource is not None
            and request.action == kmock.action.UPDATE
            and request.name
            and isinstance(request.data, dict)
            and "spec" in request.data
            and not request.subresource
        ):
            key = (request.resource, request.namespace, request.name)
            old = self._objects[key].get("metadata", {}) if key in self._objects else {}
            request.data.setdefault("metadata", {})["generation"] = int(old.get("generation", 1)) + 1
        try:
            response = await super()._handle(request)
        except k8s.KubernetesError as err:  # rendered as a Status object by kmock
            served.status = err.status
            raise
        served.status = getattr(response, "status", 0)
        if delete_grace:  # graceful: the grace period ends at the deletionTimestamp
            key = (request.resource, request.namespace, request.name)
            obj = self._objects[key] if key in self._objects else None  # noqa: SIM401 - no .get()
            if obj is not None and not obj.deleted:
                until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delete_grace)
                obj.patch(
                    {
                        "metadata": {
                            "deletionTimestamp": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "deletionGracePeriodSeconds": delete_grace,
                        }
                    }
                )
                await self._buses[request.resource].put({"type": "MODIFIED", "object": obj.raw})
        return response

    def _pods(self, request: Any, served: Served) -> int | None:
        """Pod specifics: the kubelet's finalizer and Kueue's gate at creation; at deletion, the grace
        period (returned when the pod is to stay Terminating), or none (grace 0: gone at once)."""
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            md = request.data.setdefault("metadata", {})
            md["finalizers"] = [*md.get("finalizers", []), KUBELET_FINALIZER]
            labels = md.get("labels") or {}
            if getattr(self, "kueue", False) and KUEUE_QUEUE_LABEL in labels:
                spec = request.data.setdefault("spec", {})
                spec["schedulingGates"] = [*spec.get("schedulingGates", []), {"name": KUEUE_GATE}]
            return None
        if request.action != kmock.action.DELETE or request.name is None:
            return None
        key = (request.resource, request.namespace, request.name)
        obj = self._objects[key] if key in self._objects else None  # noqa: SIM401 - no .get()
        if obj is None or obj.deleted:
            return None
        body = request.data if isinstance(request.data, dict) else {}
        grace = body.get("gracePeriodSeconds")
        if grace is None:
            grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        served.grace = int(grace)
        if int(grace) == 0 or not (obj.get("spec") or {}).get("nodeName"):
            # force deletion, or a pod no kubelet runs: the API server removes it at once
            obj.patch({"metadata": {"finalizers": []}})
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        return max(int(grace), 1)


def _pod_security_admission(emu: _Emulator, request: Any) -> None:
    """The PodSecurity admission controller of a namespace labelled
    `pod-security.kubernetes.io/enforce: LEVEL`: a pod that breaks the level is refused with 403 and a
    message in the API server's words (`violates PodSecurity "LEVEL:latest": ...`)."""
    level = getattr(emu, "enforce", {}).get(request.namespace or "")
    if level is None or request.resource.plural != "pods":
        return
    from tokensmith.operator import podsecurity

    problems = podsecurity.violations({**request.data, "kind": "Pod"}, level)
    if problems:
        name = (request.data.get("metadata") or {}).get("name", "")
        detail = ", ".join(p.split(": ", 1)[-1] for p in problems)
        raise k8s.KubernetesError(
            status=403,
            reason="Forbidden",
            message=f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": {detail}',
        )


RESOURCES: dict[str, dict[str, Any]] = {
    f"{GROUP}/{VERSION}/{PLURAL}": dict(
        kind="LLMTrainingJob", singular="llmtrainingjob", namespaced=True, subresources={"status"}
    ),
    "v1/pods": dict(kind="Pod", singular="pod", namespaced=True, subresources={"status"}),
    "v1/services": dict(kind="Service", singular="service", namespaced=True),
    "v1/configmaps": dict(kind="ConfigMap", singular="configmap", namespaced=True),
    "v1/serviceaccounts": dict(kind="ServiceAccount", singular="serviceaccount", namespaced=True),
    "v1/events": dict(kind="Event", singular="event", namespaced=True),
    "v1/namespaces": dict(kind="Namespace", singular="namespace", namespaced=False),
    "v1/nodes": dict(kind="Node", singular="node", namespaced=False),
    "rbac.authorization.k8s.io/v1/roles": dict(kind="Role", singular="role", namespaced=True),
    "rbac.authorization.k8s.io/v1/rolebindings": dict(
        kind="RoleBinding", singular="rolebinding", namespaced=True
    ),
    "networking.k8s.io/v1/networkpolicies": dict(
        kind="NetworkPolicy", singular="networkpolicy", namespaced=True
    ),
    "batch/v1/jobs": dict(kind="Job", singular="job", namespaced=True, subresources={"status"}),
    "scheduling.volcano.sh/v1beta1/podgroups": dict(kind="PodGroup", singular="podgroup", namespaced=True),
    "kopf.dev/v1/clusterkopfpeerings": dict(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False
    ),
    "kopf.dev/v1/kopfpeerings": dict(kind="KopfPeering", singular="kopfpeering", namespaced=True),
    "apiextensions.k8s.io/v1/customresourcedefinitions": dict(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False
    ),
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


@dataclass
class Served:
    """One request the emulator served, and its HTTP status."""

    method: str
    url: Any  # yarl.URL
    agent: str
    status: int = 0
    grace: int | None = None  # pod deletions: the grace period asked for (or the pod's default)


def api_call(method: str, url: Any) -> tuple[str, str, str] | None:
    """(verb, group, resource) of one request, as RBAC sees it (None for discovery)."""
    parts = [p for p in str(url.path).split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return None
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    named = len(rest) >= 2
    method = method.upper()
    if method == "GET":
        verb = "watch" if url.query.get("watch") in ("true", "1") else ("get" if named else "list")
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
            method, method.lower()
        )
    return verb, group, resource


class EmulatedCluster:
    """`async with EmulatedCluster() as cluster:` - the emulator, its controllers, and test helpers."""

    def __init__(
        self,
        start_delay: float = 0.05,
        eval_delay: float = 0.2,
        tick: float = 0.02,
        nodes: int = 12,
        stop_delay: float = 0.05,
        kueue: bool = False,
    ) -> None:
        self.start_delay = start_delay
        self.eval_delay = eval_delay
        self.tick = tick
        self.node_count = nodes
        self.stop_delay = stop_delay
        self.kueue = kueue
        self.failed_nodes: set[str] = set()
        self.eval_results: dict[int, dict[str, Any]] = {}  # step -> short JSON; missing: a default result
        self.eval_failures: dict[int, str] = {}  # step -> error message (the evaluator exits 2)
        self.auto_start = True
        # namespace -> the Pod Security level its (emulated) PodSecurity admission enforces
        self.pod_security: dict[str, str] = {}
        self._emu: Any = None
        self._server: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._seen_running: dict[str, float] = {}
        self.url = ""

    async def __aenter__(self) -> EmulatedCluster:
        self._emu = await self._stack.enter_async_context(_Emulator())
        self._emu.enforce = self.pod_security  # shared: a test may label namespaces at any time
        self._server = await self._stack.enter_async_context(apps.Server(self._emu))
        self.url = str(self._server.url).rstrip("/")
        for key, info in RESOURCES.items():
            self._emu.resources[key] = kmock.ResourceInfo(verbs=VERBS, **info)
        self._emu.kueue = self.kueue
        self._session = aiohttp.ClientSession(headers={"User-Agent": HARNESS_AGENT})
        for i in range(self.node_count):
            await self.add_node(f"node-{i}")
        self._tasks = [asyncio.create_task(self._controllers())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
        await self._stack.aclose()

    def connection(self) -> Any:
        import kopf

        return kopf.ConnectionInfo(server=self.url, insecure=True, default_namespace="default")

    # ------------------------------------------------------------------------ reading

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Live objects of a resource ("pods", "jobs", "llmtrainingjobs", ...), from memory (shared
        dicts: read them, never change them)."""
        out = []
        for (resource, ns, _name), obj in list(self._emu.objects.items()):
            if resource.plural == plural and (namespace is None or ns == namespace) and not obj.deleted:
                out.append(obj.raw)
        return out

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.objects(plural, namespace) if o["metadata"]["name"] == name), None)

    def job(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(PLURAL, namespace, name)
        assert obj is not None, f"job {namespace}/{name} does not exist"
        return obj

    def workers(self, namespace: str, job: str, attempt: int | None = None) -> list[dict[str, Any]]:
        pods = [
            p
            for p in self.objects("pods", namespace)
            if (p["metadata"].get("labels") or {}).get(names.LABEL_JOB) == job
            and p["metadata"]["labels"].get(names.LABEL_ROLE) == names.ROLE_WORKER
        ]
        if attempt is not None:
            pods = [p for p in pods if p["metadata"]["labels"][names.LABEL_ATTEMPT] == str(attempt)]
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def requests(self, agent_prefix: str | None = None) -> list[Served]:
        """Requests the emulator served (all but the harness's own, or those whose User-Agent starts
        with `agent_prefix`: "kopf" for kopf, "tokensmith-operator" for the handlers' client)."""
        reqs = list(getattr(self._emu, "served", []))
        if agent_prefix is None:
            return [r for r in reqs if not r.agent.startswith(HARNESS_AGENT)]
        return [r for r in reqs if r.agent.startswith(agent_prefix)]

    def api_calls(self, agent_prefix: str | None = None) -> set[tuple[str, str, str]]:
        """The (verb, group, resource) triples of the requests served (discovery URLs left out: every
        authenticated client may read them) - what an RBAC Role must allow."""
        calls = set()
        for req in self.requests(agent_prefix):
            call = api_call(req.method, req.url)
            if call is not None:
                calls.add(call)
        return calls

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition"
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(self.tick)

    # ------------------------------------------------------------------------ writing

    async def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        assert self._session is not None
        headers = {"Content-Type": content_type} if content_type else {}
        async with self._session.request(method, self.url + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {data}")
            return data

    async def apply_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ns = manifest["metadata"].setdefault("namespace", "default")
        created: dict[str, Any] = await self._call("POST", f"{JOBS_PATH}/namespaces/{ns}/{PLURAL}", manifest)
        return created

    async def patch_job(self, namespace: str, name: str, patch: dict[str, Any], status: bool = False) -> Any:
        path = f"{JOBS_PATH}/namespaces/{namespace}/{PLURAL}/{name}" + ("/status" if status else "")
        return await self._call("PATCH", path, patch, "application/merge-patch+json")

    async def create(self, api_path: str, obj: dict[str, Any]) -> Any:
        """Create any object, e.g. create("/api/v1/namespaces/ml/serviceaccounts", {...})."""
        return await self._call("POST", api_path, obj)

    async def delete_job(self, namespace: str, name: str) -> Any:
        return await self._call("DELETE", f"{JOBS_PATH}/namespaces/{namespace}/{PLURAL}/{name}")

    async def report_progress(
        self, namespace: str, job: str, step: int, tokens: int, loss: float = 3.0
    ) -> None:
        """What trainer rank 0 sends (tokensmith.trainer.reporting.progress_patch)."""
        progress = {"step": step, "tokens": tokens, "loss": loss, "heartbeatTime": _now()}
        await self.patch_job(namespace, job, {"status": {"progress": progress}}, status=True)

    async def report_checkpoint(
        self, namespace: str, job: str, step: int, path: str | None = None, healthy: bool | None = None
    ) -> None:
        ckpt: dict[str, Any] = {
            "step": step,
            "path": path or f"/checkpoints/{job}/step-{step:08d}",
            "time": _now(),
        }
        patch: dict[str, Any] = {"lastCheckpoint": ckpt}
        if healthy is not None:  # the trainer's health verdict (run health), and its newest healthy one
            ckpt["healthy"] = healthy
            if healthy:
                patch["lastHealthyCheckpoint"] = {k: ckpt[k] for k in ("step", "path", "time")}
        await self.patch_job(namespace, job, {"status": patch}, status=True)

    async def report_divergence(
        self,
        namespace: str,
        job: str,
        step: int,
        samples: tuple[int, int],
        kind: str = "nonfinite",
        attempt: int | None = None,
    ) -> None:
        """What trainer rank 0 sends before it exits 65 (run health: `status.divergence`; the attempt
        only when given: the trainer's patch carries its time)."""
        report: dict[str, Any] = {"step": step, "kind": kind, "samples": list(samples), "time": _now()}
        if attempt is not None:
            report["attempt"] = attempt
        await self.patch_job(namespace, job, {"status": {"divergence": report}}, status=True)

    async def _patch(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any], sub: str = ""
    ) -> None:
        api = "/api/v1" if plural in ("pods", "services", "configmaps") else "/apis/batch/v1"
        path = f"{api}/namespaces/{namespace}/{plural}/{name}" + (f"/{sub}" if sub else "")
        await self._call("PATCH", path, patch, "application/merge-patch+json")

    async def terminate(
        self, namespace: str, pod: str, exit_code: int, reason: str | None = None, message: str | None = None
    ) -> None:
        """The container exits: Succeeded on 0, Failed otherwise (the kubelet's view)."""
        term: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        }
        if message:
            term["message"] = message
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "main", "ready": False, "state": {"terminated": term}}],
        }
        await self._patch("pods", namespace, pod, {"status": status}, "status")

    async def evict(self, namespace: str, pod: str, reason: str = "Evicted") -> None:
        status = {"phase": "Failed", "reason": reason, "message": f"The node was low on resource ({reason})."}
        await self._patch("pods", namespace, pod, {"status": status}, "status")

    async def lose_node(self, namespace: str, pod: str) -> None:
        await self._patch("pods", namespace, pod, {"status": {"phase": "Unknown"}}, "status")

    # ------------------------------------------------------------------------ nodes, queues

    async def add_node(self, name: str) -> None:
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": _now()}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"conditions": [ready]},
        }
        await self._call("POST", "/api/v1/nodes", body)

    def node_of(self, namespace: str, pod: str) -> str | None:
        obj = self.get("pods", namespace, pod)
        return ((obj or {}).get("spec") or {}).get("nodeName")

    async def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        await self._call("PATCH", f"/api/v1/nodes/{name}", patch, "application/merge-patch+json")

    async def fail_node(self, name: str) -> None:
        """The node stops reporting: Ready=Unknown and the unreachable NoExecute taint (what the node
        lifecycle controller writes); its kubelet neither starts nor finishes pods any more."""
        self.failed_nodes.add(name)
        ready = {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "lastTransitionTime": _now(),
        }
        taint = {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": _now()}
        await self.patch_node(name, {"spec": {"taints": [taint]}, "status": {"conditions": [ready]}})

    async def cordon(self, name: str) -> None:
        await self.patch_node(name, {"spec": {"unschedulable": True}})

    async def taint(self, name: str, key: str, effect: str = "NoSchedule", value: str = "") -> None:
        node = self.get("nodes", "", name) or {}
        taints = [
            *((node.get("spec") or {}).get("taints") or []),
            {"key": key, "value": value, "effect": effect},
        ]
        await self.patch_node(name, {"spec": {"taints": taints}})

    async def disrupt(self, namespace: str, pod: str, reason: str = "EvictionByEvictionAPI") -> None:
        """A DisruptionTarget condition on a running pod (an eviction or preemption is coming)."""
        obj = self.get("pods", namespace, pod) or {}
        cond = {"type": "DisruptionTarget", "status": "True", "reason": reason, "lastTransitionTime": _now()}
        conditions = [*((obj.get("status") or {}).get("conditions") or []), cond]
        await self._patch("pods", namespace, pod, {"status": {"conditions": conditions}}, "status")

    async def admit(self, namespace: str, group: str) -> int:
        """Kueue admits a pod group: the scheduling gates of its pods are removed. Returns how many."""
        pods = [
            p
            for p in self.objects("pods", namespace)
            if (p["metadata"].get("labels") or {}).get(KUEUE_GROUP_LABEL) == group
            and (p.get("spec") or {}).get("schedulingGates")
        ]
        for pod in pods:
            await self._patch("pods", namespace, pod["metadata"]["name"], {"spec": {"schedulingGates": []}})
        return len(pods)

    async def create_peering(self, name: str) -> None:
        """The cluster-wide KopfPeering object kopf's peering uses (the Helm chart creates it)."""
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        await self._call("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", body)

    async def delete_pod(self, namespace: str, pod: str) -> None:
        await self._call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod}")

    # ------------------------------------------------------------------------ controllers

    async def _controllers(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._kubelet(loop.time())
                await self._job_controller()
                await self._garbage_collector()
            except (RuntimeError, aiohttp.ClientError):
                pass  # an object vanished between reading and writing: the next tick sees the truth
            await asyncio.sleep(self.tick)

    def _schedulable(self, pod: dict[str, Any], taken: set[str | None]) -> str | None:
        """The first node this pod may go to (None: stays Pending)."""
        spec = pod.get("spec") or {}
        tolerations = spec.get("tolerations") or []
        avoid: set[str] = set()
        terms = (
            ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or {}
        ).get("nodeSelectorTerms") or []
        for term in terms:
            for expr in term.get("matchFields") or []:
                if expr.get("key") == "metadata.name" and expr.get("operator") == "NotIn":
                    avoid.update(expr.get("values") or [])
        for node in sorted(
            self.objects("nodes"), key=lambda n: int(n["metadata"]["name"].rpartition("-")[2] or 0)
        ):
            name = node["metadata"]["name"]
            nspec = node.get("spec") or {}
            if name in avoid or name in taken or name in self.failed_nodes or nspec.get("unschedulable"):
                continue
            blocked = [
                t
                for t in nspec.get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute")
                and not any(
                    (tol.get("operator") == "Exists" and not tol.get("key")) or tol.get("key") == t.get("key")
                    for tol in tolerations
                )
            ]
            if not blocked:
                return name
        return None

    async def _kubelet(self, now: float) -> None:
        pods = self.objects("pods")
        taken: set[str | None] = {
            (p.get("spec") or {}).get("nodeName")
            for p in pods
            if (p["metadata"].get("labels") or {}).get(names.LABEL_ROLE) == names.ROLE_WORKER
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        }
        for pod in pods:
            meta, status = pod["metadata"], pod.get("status") or {}
            name, ns = meta["name"], meta["namespace"]
            phase = status.get("phase")
            node = (pod.get("spec") or {}).get("nodeName")
            if node in self.failed_nodes:
                continue  # its kubelet is gone: nothing starts, nothing confirms a deletion
            if meta.get("deletionTimestamp"):
                marked = self._seen_running.setdefault(f"{ns}/{name}/deleted", now)
                if now - marked >= self.stop_delay and KUBELET_FINALIZER in (meta.get("finalizers") or []):
                    rest = [f for f in meta.get("finalizers") or [] if f != KUBELET_FINALIZER]
                    await self._patch("pods", ns, name, {"metadata": {"finalizers": rest}})
                continue
            if (pod.get("spec") or {}).get("schedulingGates"):
                continue  # not admitted (Kueue)
            if phase is None and node is None and self.node_count and self.auto_start:
                is_worker = (meta.get("labels") or {}).get(names.LABEL_ROLE) == names.ROLE_WORKER
                chosen = self._schedulable(pod, taken if is_worker else set())
                if chosen is not None:
                    taken.add(chosen)
                    await self._patch("pods", ns, name, {"spec": {"nodeName": chosen}})
                continue
            if phase is None and self.auto_start:
                first = self._seen_running.setdefault(f"{ns}/{name}/created", now)
                if now - first >= self.start_delay:
                    self._seen_running[f"{ns}/{name}"] = now
                    container = {"name": "main", "ready": True, "state": {"running": {}}}
                    running = {"phase": "Running", "containerStatuses": [container]}
                    await self._patch("pods", ns, name, {"status": running}, "status")
            elif (
                phase == "Running"
                and (meta.get("labels") or {}).get(names.LABEL_ROLE) == names.ROLE_EVAL
                and now - self._seen_running.get(f"{ns}/{name}", now) >= self.eval_delay
            ):
                await self._finish_eval(ns, name, int(meta["labels"][names.LABEL_STEP]))

    async def _finish_eval(self, namespace: str, pod: str, step: int) -> None:
        if step in self.eval_failures:
            message = json.dumps({"schema": "tokensmith.eval/v1", "error": self.eval_failures[step]})
            await self.terminate(namespace, pod, 2, "Error", message)
            return
        results = self.eval_results.get(step, {"tokensmith_local": {"acc": 0.25 + step / 1e4}})
        message = json.dumps({"schema": "tokensmith.eval/v1", "step": step, "results": results})
        await self.terminate(namespace, pod, 0, "Completed", message)

    async def _job_controller(self) -> None:
        pods_by_job: dict[tuple[str, str], dict[str, Any]] = {}
        for pod in self.objects("pods"):
            job_name = (pod["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name")
            if job_name:
                pods_by_job[(pod["metadata"]["namespace"], job_name)] = pod
        for job in self.objects("jobs"):
            meta = job["metadata"]
            key = (meta["namespace"], meta["name"])
            if (job.get("status") or {}).get("conditions"):
                continue
            found = pods_by_job.get(key)
            if found is None:
                template = job["spec"]["template"]
                labels = {
                    **(template.get("metadata", {}).get("labels") or {}),
                    "batch.kubernetes.io/job-name": meta["name"],
                }
                owner = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                }
                pod_meta = {"name": f"{meta['name']}-0", "namespace": meta["namespace"], "labels": labels}
                pod_meta["ownerReferences"] = [owner]
                body = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"], "metadata": pod_meta}
                await self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/pods", body)
                await self._patch(
                    "jobs", meta["namespace"], meta["name"], {"status": {"active": 1}}, "status"
                )
                continue
            phase = (found.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                ok = phase == "Succeeded"
                cond = {
                    "type": "Complete" if ok else "Failed",
                    "status": "True",
                    "lastTransitionTime": _now(),
                }
                if not ok:
                    cond.update(
                        reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit"
                    )
                status = {"active": 0, "succeeded" if ok else "failed": 1, "conditions": [cond]}
                await self._patch("jobs", meta["namespace"], meta["name"], {"status": status}, "status")

    async def _garbage_collector(self) -> None:
        live = {
            (o.get("metadata") or {}).get("uid")
            for (r, _n, _m), o in list(self._emu.objects.items())
            if not o.deleted
        }
        for (resource, ns, name), obj in list(self._emu.objects.items()):
            if obj.deleted:
                continue
            owners = (obj.get("metadata") or {}).get("ownerReferences") or []
            if owners and all(ref.get("uid") not in live for ref in owners):
                api = "/api/v1" if resource.group == "" else f"/apis/{resource.group}/{resource.version}"
                with contextlib.suppress(RuntimeError):
                    await self._call("DELETE", f"{api}/namespaces/{ns}/{resource.plural}/{name}")


class OperatorUnderTest:
    """The real operator (`main.operate`) in a thread with its own event loop, as it would run in
    its own process (kopf's shutdown waits for every task its loop spawned; the emulator's are not
    its business). `restart()` simulates a crash and a new replica."""

    def __init__(
        self,
        cluster: EmulatedCluster,
        interval: float = 0.5,
        namespaces: tuple[str, ...] = (),
        peering: str | None = None,
        priority: int = 0,
        policy: Any = None,
        defaults: Any = None,
    ) -> None:
        self.cluster = cluster
        self.policy = policy  # an admission.AdmissionPolicy; None: the default policy
        self.defaults = defaults  # a children.Defaults; None: the test images
        self.peering = peering
        self.priority = priority
        self.interval = interval
        self.namespaces = namespaces
        self.runtime: Any = None
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None

    async def start(self) -> None:
        from tokensmith.operator.admission import AdmissionPolicy
        from tokensmith.operator.children import Defaults
        from tokensmith.operator.main import OperatorConfig, operate

        config = OperatorConfig(
            namespaces=self.namespaces,
            peering=self.peering,
            priority=self.priority,
            metrics_port=None,
            liveness=None,
            interval=self.interval,
            defaults=self.defaults
            or Defaults(trainer_image="tokensmith/trainer:test", evaluator_image="tokensmith/evaluator:test"),
            policy=self.policy or AdmissionPolicy(),
        )
        stop, ready = threading.Event(), threading.Event()
        connection = self.cluster.connection()

        def settings_hook(settings: Any) -> None:
            settings.watching.reconnect_backoff = 0.1
            settings.batching.idle_timeout = 0.1
            settings.batching.batch_window = 0.01
            settings.peering.lifetime = 30
            settings.peering.mandatory = self.peering is not None

        def runtime_hook(rt: Any) -> None:
            self.runtime = rt

        def main() -> None:
            asyncio.run(
                operate(
                    config,
                    connection=connection,
                    stop_flag=stop,
                    ready_flag=ready,
                    settings_hook=settings_hook,
                    runtime_hook=runtime_hook,
                )
            )

        self._stop = stop
        self._thread = threading.Thread(target=main, name="tokensmith-operator-under-test", daemon=True)
        self._thread.start()
        if not await asyncio.to_thread(ready.wait, 30):
            raise TimeoutError("the operator did not become ready in 30 s")

    async def stop(self) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, 30)
        self._thread = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> OperatorUnderTest:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
