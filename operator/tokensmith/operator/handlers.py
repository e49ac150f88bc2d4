"""The kopf handlers: read (kopf's indices and the job's live body), decide (`reconcile.py`), write.

One kopf daemon per LLMTrainingJob runs the reconcile loop. It wakes up when something about the
job changes (a pod or evaluation Job event, a spec change, a progress or checkpoint report from the
trainer), when the decision asked to look again (backoff end, hang deadline, budget end), and at
least every `interval` seconds. Pods and Jobs come from kopf indices filled by its watches, so a
reconcile issues no LIST and no GET: only the writes the decision asks for, plus one status patch
when the status changed. kopf's peering makes extra replicas standbys; an operator restarted at any
moment rebuilds everything from the API (labels, status) - see `reconcile.py` for the write order
that makes this safe.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from tokensmith.operator import admission, cadence, children, names, observe
from tokensmith.operator.kube import ApiError, KubeClient
from tokensmith.operator.metrics import OperatorMetrics
from tokensmith.operator.observed import (
    CordonNode,
    CreateEvaluation,
    CreateGang,
    Decision,
    DeleteJob,
    DeleteWorkers,
    EmitEvent,
    EvalObservation,
    NodeObservation,
    Observed,
    WorkerObservation,
)
from tokensmith.operator.reconcile import reconcile, reject
from tokensmith.operator.spec import (
    GROUP,
    PLURAL,
    TERMINAL_PHASES,
    VERSION,
    LLMTrainingJobSpec,
    LLMTrainingJobStatus,
    format_validation_error,
    status_to_dict,
)

log = logging.getLogger("tokensmith.operator")

# Status keys that change on every reconcile while a gang runs; alone they are written at most once
# per interval (GPU-hours stay accurate to one interval, and an idle reconcile costs no request).
# (and the goodput ledger, which advances with the clock: goodput.py)
VOLATILE_STATUS = {
    "accountedTime", "gpuHours", "costUSD", "progressText",
    "goodput", "productiveGPUHours", "lostGPUHours", "lostCostUSD", "observed", "goodputLedger",
}  # fmt: skip
# Trainer-written status keys whose change should wake the reconciler (checkpoints, heartbeats).
TRAINER_STATUS = ("progress", "lastCheckpoint", "divergence", "lastHealthyCheckpoint")


@dataclass
class Runtime:
    """State shared by the handlers of one operator process (memory only: all of it can be lost)."""

    client: KubeClient
    defaults: children.Defaults
    policy: admission.AdmissionPolicy = field(default_factory=admission.AdmissionPolicy)
    interval: float = 10.0
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    max_parallel_writes: int = 16
    # kopf settings applied at startup (tests shorten kopf's own timers here)
    settings_hook: Any = None
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    seen: dict[tuple[str, str], Any] = field(default_factory=dict)
    last_write: dict[tuple[str, str], float] = field(default_factory=dict)
    # the status keys this process last wrote per job: read-your-own-writes while the watch stream
    # has not yet delivered them (else a reconcile could act on its own stale status)
    own_status: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # the live settings each job's ConfigMap was last written with (children.live_config_map)
    live_written: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # pods created but not yet seen in the index (avoids re-POSTing them on the next reconcile)
    inflight: dict[str, float] = field(default_factory=dict)
    shared_children: dict[tuple[str, str], int] = field(default_factory=dict)
    node_state: dict[str, Any] = field(default_factory=dict)
    watch_nodes: bool = True
    reconciles: int = 0
    # the operator's clock (tests drive a compressed one: the goodput soak)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # called after every reconcile (the soak paces its compressed clock by the operator's progress)
    after_reconcile: Callable[[], None] | None = None

    def wake(self, namespace: str, job: str) -> None:
        event = self.wakeups.get((namespace, job))
        if event is not None:
            event.set()


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """A kopf registry with the operator's handlers bound to `rt`."""
    registry = kopf.OperatorRegistry()
    has_job = {names.LABEL_JOB: kopf.PRESENT}

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.scanning.disabled = True  # no namespace/CRD listing: least privilege, and kmock needs it
        # kopf's bookkeeping in annotations, never in our structural status (the API server would prune it)
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        if rt.settings_hook is not None:
            rt.settings_hook(settings)

    @kopf.index("pods", labels=has_job, registry=registry, id="tokensmith_pods")  # type: ignore[arg-type]
    def pods_index(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
        key = (namespace, labels[names.LABEL_JOB])
        worker = observe.worker_from_pod(body)
        if worker is not None:
            rt.inflight.pop(worker.name or "", None)
            return {key: worker}
        if labels.get(names.LABEL_ROLE) == names.ROLE_EVAL:
            return {key: {"step": labels.get(names.LABEL_STEP), "status": dict(body.get("status") or {})}}
        return None

    @kopf.index("batch", "v1", "jobs", labels=has_job, registry=registry, id="tokensmith_jobs")  # type: ignore[arg-type]
    def jobs_index(namespace: str, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
        if labels.get(names.LABEL_ROLE) != names.ROLE_EVAL:
            return None
        return {
            (namespace, labels[names.LABEL_JOB]): {
                "metadata": dict(body.metadata),
                "status": dict(body.status),
            }
        }

    if rt.policy.needs_service_accounts:  # jobs may name accounts carrying the policy's labels

        @kopf.index("serviceaccounts", registry=registry, id="tokensmith_accounts")  # type: ignore[arg-type]
        def accounts_index(namespace: str, name: str, labels: Mapping[str, str], **_: Any) -> Any:
            return {namespace: (name, dict(labels))}

    if rt.watch_nodes:  # cluster-wide read; the chart can turn it off (nodeHealth.watchNodes)

        @kopf.index("nodes", registry=registry, id="tokensmith_nodes")
        def nodes_index(name: str, body: kopf.Body, **_: Any) -> Any:
            node = observe.node_from(body)
            return {name: node} if node is not None else None

        @kopf.on.event("nodes", registry=registry)
        def node_changed(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
            # only what the decisions read: readiness, cordon, taints (not the periodic status updates)
            node = observe.node_from(body) if type != "DELETED" else None
            fingerprint = (node.ready, node.unschedulable, node.taints) if node is not None else None
            if rt.node_state.get(name) != fingerprint:
                rt.node_state[name] = fingerprint
                for event in list(rt.wakeups.values()):  # rare: wake every job, each looks at its own pods
                    event.set()

    @kopf.on.event("pods", labels=has_job, registry=registry)
    @kopf.on.event("batch", "v1", "jobs", labels=has_job, registry=registry)  # type: ignore[arg-type]
    def child_changed(namespace: str, labels: Mapping[str, str], **_: Any) -> None:
        rt.wake(namespace, labels[names.LABEL_JOB])

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[arg-type]
    def job_changed(namespace: str, name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
        status = body.get("status") or {}
        fingerprint = (repr(body.get("spec")), *(repr(status.get(k)) for k in TRAINER_STATUS))
        if type == "DELETED":
            for memory in (rt.seen, rt.own_status, rt.shared_children, rt.last_write, rt.live_written):
                memory.pop((namespace, name), None)
            rt.metrics.forget_job(namespace, name)
            return
        if rt.seen.get((namespace, name)) != fingerprint:
            rt.seen[(namespace, name)] = fingerprint
            rt.wake(namespace, name)

    @kopf.daemon(  # type: ignore[arg-type]
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="reconciler",
        initial_delay=0,
        cancellation_backoff=2.0,
        cancellation_timeout=5.0,
    )
    async def reconciler(
        name: str,
        namespace: str,
        uid: str,
        body: kopf.Body,
        stopped: kopf.DaemonStopped,
        tokensmith_pods: kopf.Index[Any, Any],
        tokensmith_jobs: kopf.Index[Any, Any],
        **kwargs: Any,
    ) -> None:
        tokensmith_nodes = kwargs.get("tokensmith_nodes")  # absent with --no-watch-nodes
        key = (namespace, name)
        accounts = kwargs.get("tokensmith_accounts")
        wake = rt.wakeups.setdefault(key, asyncio.Event())
        # a new object may reuse a deleted one's name
        for memory in (rt.own_status, rt.shared_children, rt.live_written):
            memory.pop(key, None)
        try:
            while not stopped:
                wake.clear()
                wait = await reconcile_once(
                    rt,
                    name,
                    namespace,
                    uid,
                    body,
                    tokensmith_pods,
                    tokensmith_jobs,
                    tokensmith_nodes,
                    accounts,
                )
                if stopped:
                    break
                await _sleep(wake, stopped, min(wait if wait is not None else rt.interval, rt.interval))
        finally:
            rt.wakeups.pop(key, None)

    return registry


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    waiter = asyncio.ensure_future(wake.wait())
    stopper = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({waiter, stopper}, timeout=max(timeout, 0.01), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()


# ------------------------------------------------------------------------------- one pass


def observed_from_indices(
    namespace: str,
    name: str,
    now: datetime,
    generation: int | None,
    pods: Any,
    jobs: Any,
    nodes_index: Any = None,
) -> Observed:
    """The job's observation from kopf's indices (no API request)."""
    key = (namespace, name)
    workers = tuple(v for v in pods.get(key, ()) if isinstance(v, WorkerObservation))
    nodes: dict[str, NodeObservation] | None = None
    if nodes_index:  # empty: not synced yet (or no grant): know nothing rather than "every node gone"
        nodes = {}
        for w in workers:
            if w.node and w.node not in nodes:
                found = next(iter(nodes_index.get(w.node, ())), None)
                if isinstance(found, NodeObservation):
                    nodes[w.node] = found
    eval_pods: dict[str, list[dict[str, Any]]] = {}
    for v in pods.get(key, ()):
        if isinstance(v, dict):
            eval_pods.setdefault(str(v.get("step")), []).append(v)
    evaluations: list[EvalObservation] = []
    for job in jobs.get(key, ()):
        step = (job["metadata"].get("labels") or {}).get(names.LABEL_STEP)
        obs = observe.evaluation_from(job, eval_pods.get(str(step), []))
        if obs is not None:
            evaluations.append(obs)
    return Observed(
        now=now, workers=workers, evaluations=tuple(evaluations), generation=generation, nodes=nodes
    )


def read_status(raw: Mapping[str, Any] | None) -> LLMTrainingJobStatus:
    """The stored status. A field someone corrupted (a hand edit) is dropped with a warning, the rest
    is kept: the restart count and the attempt must survive a bad `progress`."""
    data = dict(raw or {})
    for _ in range(len(data) + 1):
        try:
            return LLMTrainingJobStatus.model_validate(data)
        except ValidationError as err:
            bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
            log.warning("ignoring unreadable status fields: %s", format_validation_error(err, "status"))
            if not bad & set(data):
                break
            data = {k: v for k, v in data.items() if k not in bad}
    return LLMTrainingJobStatus()


async def reconcile_once(
    rt: Runtime,
    name: str,
    namespace: str,
    uid: str,
    body: Mapping[str, Any],
    pods: Any,
    jobs: Any,
    nodes: Any = None,
    accounts: Any = None,
) -> float | None:
    """Read, decide, write; returns the seconds after which to look again."""
    started = time.perf_counter()
    now = rt.clock()
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    stored = current_status(rt, namespace, name, body.get("status"))
    status = read_status(stored)
    spec: LLMTrainingJobSpec | None = None
    observed = observed_from_indices(namespace, name, now, generation, pods, jobs, nodes)
    try:
        spec = LLMTrainingJobSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as err:  # the schema let it through (an old CRD?) but the models did not
        decision = reject(status, format_validation_error(err), now, generation, observed.workers)
    else:
        if accounts is not None:
            known = {n: labels for n, labels in accounts.get(namespace, ())}
            observed = dataclasses.replace(observed, service_accounts=known)
        decision = reconcile(name, spec, status, observed, rt.policy)
    job = children.JobRef(name=name, namespace=namespace, uid=uid)
    try:
        await apply(rt, job, spec, body, status, decision)
    except ApiError as err:
        refusal = admission.pod_security_refusal(err.status, err.message)
        if refusal is None:  # next pass retries; never crash the daemon
            log.warning("%s/%s: writing the decision failed, will retry: %s", namespace, name, err)
            return min(rt.interval, 2.0)
        # the namespace's Pod Security admission refused the pods: no retry can help
        decision = reject(
            status, refusal, now, generation, observed.workers, reason=admission.REASON, kind="Policy"
        )
        try:
            await apply(rt, job, None, body, status, decision)
        except (ApiError, OSError, asyncio.TimeoutError) as again:
            log.warning("%s/%s: recording the refusal failed, will retry: %s", namespace, name, again)
            return min(rt.interval, 2.0)
    except (OSError, asyncio.TimeoutError) as err:  # next pass retries; never crash the daemon
        log.warning("%s/%s: writing the decision failed, will retry: %s", namespace, name, err)
        return min(rt.interval, 2.0)
    finally:
        rt.reconciles += 1
        rt.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        if rt.after_reconcile is not None:
            rt.after_reconcile()
    rt.metrics.observe_job(namespace, name, decision.status.phase, decision.status.gpu_hours)
    rt.metrics.observe_status(namespace, name, decision.status, now)
    return decision.requeue_after


async def apply(
    rt: Runtime,
    job: children.JobRef,
    spec: LLMTrainingJobSpec | None,
    body: Mapping[str, Any],
    old: LLMTrainingJobStatus,
    decision: Decision,
) -> None:
    """Carry out a decision in the order `reconcile.py` documents: create, record, delete, tell."""
    sem = asyncio.Semaphore(rt.max_parallel_writes)
    if spec is not None:  # a new attempt runs with the adaptive checkpoint interval (cadence.py)
        spec = cadence.effective_spec(spec, decision.status)

    async def create(obj: dict[str, Any]) -> None:
        async with sem:
            await rt.client.create(obj)
            rt.metrics.api_requests.labels("create", obj["kind"]).inc()

    for action in decision.actions:
        if isinstance(action, CreateGang) and spec is not None:
            await _ensure_job_children(rt, job, spec, action.attempt, create, action.plan.skip_samples)
            pods = children.worker_pods(
                job,
                spec,
                action.attempt,
                action.indices,
                rt.defaults,
                action.avoid_nodes,
                action.group_size,
                action.plan,
            )
            fresh = [p for p in pods if time.monotonic() - rt.inflight.get(p["metadata"]["name"], -1e9) > 30]
            for p in fresh:
                rt.inflight[p["metadata"]["name"]] = time.monotonic()
            await asyncio.gather(*(create(p) for p in fresh))
        elif isinstance(action, CreateEvaluation) and spec is not None:
            await create(
                children.evaluation_job(job, spec, action.step, action.path, action.name, rt.defaults)
            )

    await _write_status(
        rt, job, current_status(rt, job.namespace, job.name, body.get("status")), decision.status
    )
    if spec is not None and decision.status.phase not in TERMINAL_PHASES:
        await _sync_live_settings(rt, job, spec)

    for action in decision.actions:
        if isinstance(action, DeleteWorkers):
            grace = 0 if action.force else None
            await asyncio.gather(*(_delete_pod(rt, job, w, sem, grace) for w in action.workers if w.name))
        elif isinstance(action, CordonNode):
            await _cordon(rt, body, action)
        elif isinstance(action, DeleteJob):
            await rt.client.delete(f"{GROUP}/{VERSION}", PLURAL, job.namespace, job.name)
            rt.metrics.api_requests.labels("delete", "LLMTrainingJob").inc()
    for action in decision.actions:
        if isinstance(action, EmitEvent):
            kopf.event(
                cast(kopf.Body, body), type=action.type, reason=action.reason, message=action.message[:1000]
            )
            restarted = action.reason in ("Restarting", "RollingBack")  # a rollback counts as reason Diverged
            if restarted and decision.status.last_failure is not None:
                rt.metrics.restarts.labels(decision.status.last_failure.reason).inc()


async def _ensure_job_children(
    rt: Runtime,
    job: children.JobRef,
    spec: LLMTrainingJobSpec,
    attempt: int,
    create: Any,
    skip_samples: tuple[tuple[int, int], ...] = (),
) -> None:
    """Service, ConfigMap, trainer identity, PodGroup: created once; the config and the PodGroup
    (minMember, queue) refreshed per attempt (spec edits take effect at the next attempt)."""
    key = (job.namespace, job.name)
    if rt.shared_children.get(key) == attempt:
        return
    for obj in children.job_children(job, spec, skip_samples, rt.defaults):
        if obj["kind"] == "ConfigMap":
            created = await rt.client.create(obj)
            if created is None:  # exists from an earlier attempt: bring it up to date
                await rt.client.patch(
                    "v1", "configmaps", job.namespace, obj["metadata"]["name"], {"data": obj["data"]}
                )
            if obj["metadata"]["name"] == names.live_config_map_name(job.name):
                rt.live_written[key] = obj["data"]
        elif obj["kind"] == "PodGroup":
            created = await rt.client.create(obj)
            if created is None:  # the gang size or queue may have been edited since the last attempt
                await rt.client.patch(
                    obj["apiVersion"],
                    "podgroups",
                    job.namespace,
                    obj["metadata"]["name"],
                    {"spec": obj["spec"]},
                )
        else:
            await create(obj)
    rt.shared_children[key] = attempt


async def _sync_live_settings(rt: Runtime, job: children.JobRef, spec: LLMTrainingJobSpec) -> None:
    """Level-triggered: the job's live-settings ConfigMap holds what the status says now (the running
    trainer watches its mounted copy). One patch when they differ from what this process last wrote
    (after an operator restart: one patch, the same content), none otherwise; created if missing."""
    wanted = children.live_config_map(job, spec)
    key = (job.namespace, job.name)
    if wanted is None or rt.live_written.get(key) == wanted["data"]:
        return
    try:
        await rt.client.patch(
            "v1", "configmaps", job.namespace, wanted["metadata"]["name"], {"data": wanted["data"]}
        )
        rt.metrics.api_requests.labels("patch", "ConfigMap").inc()
    except ApiError as err:
        if err.status != 404:
            raise
        await rt.client.create(wanted)  # deleted by hand, or the job has no gang yet
        rt.metrics.api_requests.labels("create", "ConfigMap").inc()
    rt.live_written[key] = wanted["data"]


async def _delete_pod(
    rt: Runtime,
    job: children.JobRef,
    worker: WorkerObservation,
    sem: asyncio.Semaphore,
    grace: int | None = None,
) -> None:
    async with sem:
        await rt.client.delete("v1", "pods", job.namespace, worker.name or "", grace_seconds=grace)
        rt.metrics.api_requests.labels("delete", "Pod").inc()


async def _cordon(rt: Runtime, body: Mapping[str, Any], action: CordonNode) -> None:
    """Opt-in; without the chart's nodeHealth.cordon grant the node is only avoided (an Event says so)."""
    try:
        await rt.client.patch("v1", "nodes", "", action.node, {"spec": {"unschedulable": True}})
        rt.metrics.api_requests.labels("patch", "Node").inc()
        message = f"cordoned node {action.node}: {action.reason}"
        kopf.event(cast(kopf.Body, body), type="Warning", reason="NodeCordoned", message=message[:1000])
    except (ApiError, PermissionError) as err:
        message = f"could not cordon node {action.node} (chart value nodeHealth.cordon?): {err}"
        kopf.event(cast(kopf.Body, body), type="Warning", reason="CordonFailed", message=message[:1000])


def current_status(rt: Runtime, namespace: str, name: str, raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored status with this process's own last writes laid over it (the trainer's keys
    always come from the API: only the trainer writes them)."""
    merged = dict(raw or {})
    own = rt.own_status.get((namespace, name))
    if own is not None:
        for key in set(merged) | set(own):
            if key in TRAINER_STATUS:
                continue
            if key in own:
                merged[key] = own[key]
            else:
                merged.pop(key, None)
    return merged


async def _write_status(
    rt: Runtime, job: children.JobRef, stored: dict[str, Any], new: LLMTrainingJobStatus
) -> None:
    """Patch the keys that differ from the stored status (all of them the first time)."""
    before, after = stored, status_to_dict(new)
    # The trainer writes progress/lastCheckpoint concurrently: never send them back (a stale copy
    # would overwrite a newer report).
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)} - set(TRAINER_STATUS)
    if not changed:
        return
    key = (job.namespace, job.name)
    if changed <= VOLATILE_STATUS and time.monotonic() - rt.last_write.get(key, 0.0) < rt.interval:
        return
    patch: dict[str, Any] = {k: after.get(k) for k in changed}  # merge patch: null removes a key
    await rt.client.patch(f"{GROUP}/{VERSION}", PLURAL, job.namespace, job.name, {"status": patch}, "status")
    rt.metrics.api_requests.labels("patch", "LLMTrainingJob/status").inc()
    rt.last_write[key] = time.monotonic()
    rt.own_status[key] = {k: v for k, v in after.items() if k not in TRAINER_STATUS}
