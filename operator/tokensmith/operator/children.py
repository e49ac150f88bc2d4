"""The Kubernetes objects a job owns, as plain manifests (pure functions; validated in the tests
against the real Kubernetes schemas with kubernetes-validate).

Per job: a headless Service (rendezvous DNS: worker-0.<job>.<ns>.svc, published before readiness),
a ConfigMap with the rendered trainer config (and, for reference, the DeepSpeed config it implies),
for `checkpoint.everyMinutes: auto` a second ConfigMap with the live settings the running trainer
watches (mounted as a directory, so the kubelet refreshes it: the trainer needs no API access for it),
the per-job ServiceAccount/Role/RoleBinding that lets trainer rank 0 patch this job's status and
nothing else, and with `schedulerName: volcano` a Volcano PodGroup (minMember = nodes) so that the
scheduler places the whole gang or nothing. Per attempt: N worker pods. Per evaluated checkpoint:
one batch/v1 Job. Everything carries an ownerReference to the job (deleting the job deletes them)
and the labels tokensmith.dev/job, tokensmith.dev/role and, where it applies, tokensmith.dev/attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokensmith.operator import cadence, hardening, names, netpol, queues
from tokensmith.operator.observed import GangPlan
from tokensmith.operator.spec import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    LLMTrainingJobSpec,
    checkpoint_dir,
    effective_trainer_config,
)
from tokensmith.trainer.live import LIVE_ENV

CONFIG_MOUNT = "/etc/tokensmith"
CONFIG_FILE = "trainer.yaml"
# Beside, not under, CONFIG_MOUNT: a mount point inside a read-only ConfigMap volume cannot be created.
LIVE_MOUNT = "/etc/tokensmith-live"
LIVE_VOLUME = "tokensmith-live"
DEEPSPEED_FILE = "deepspeed.json"
VOLCANO_SCHEDULERS = queues.VOLCANO_SCHEDULERS
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"


@dataclass(frozen=True)
class JobRef:
    """Identity of the owning LLMTrainingJob."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Defaults:
    """Operator-wide defaults (the Helm chart sets them through the operator's environment)."""

    trainer_image: str = "ghcr.io/tokensmith/trainer:0.1.0"
    evaluator_image: str = "ghcr.io/tokensmith/evaluator:0.1.0"
    report_interval_seconds: float = 15.0
    network_policy: bool = False  # per-job NetworkPolicies for jobs that do not say (netpol.py)
    scrape_namespace: str | None = None  # the operator's namespace: its pods may reach the workers


def owner_reference(job: JobRef) -> dict[str, Any]:
    """No `blockOwnerDeletion`: with the OwnerReferencesPermissionEnforcement admission plugin it
    would need `update` on `llmtrainingjobs/finalizers`, and background deletion does not use it."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": job.name, "uid": job.uid, "controller": True}


def _meta(job: JobRef, name: str, role: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    # the operator's own labels last: a job's labels can never relabel its pods as another job's
    labels = {**(extra or {}), **names.job_labels(job.name), names.LABEL_ROLE: role}
    return {
        "name": name,
        "namespace": job.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(job)],
    }


# ------------------------------------------------------------------------------- per job


def rendezvous_service(job: JobRef, spec: LLMTrainingJobSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(job, names.service_name(job.name), names.ROLE_RENDEZVOUS),
        "spec": {
            "clusterIP": "None",  # headless: DNS records per pod, no virtual IP
            # torchrun's rendezvous happens before any pod is Ready: publish addresses right away
            "publishNotReadyAddresses": True,
            "selector": {names.LABEL_JOB: job.name, names.LABEL_ROLE: names.ROLE_WORKER},
            "ports": [{"name": "rendezvous", "port": spec.cluster.master_port, "protocol": "TCP"}],
        },
    }


def trainer_config_map(
    job: JobRef, spec: LLMTrainingJobSpec, skip_samples: tuple[tuple[int, int], ...] = ()
) -> dict[str, Any]:
    """The effective trainer config (spec.trainer + job-level sections + the sample ranges a rollback
    decided to skip) and its DeepSpeed config."""
    import yaml

    cfg = effective_trainer_config(spec, job.name, skip_samples)
    data = {CONFIG_FILE: yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)}
    deepspeed = _deepspeed_config(spec, cfg)
    if deepspeed is not None:
        data[DEEPSPEED_FILE] = json.dumps(deepspeed, indent=2, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(job, names.config_map_name(job.name), names.ROLE_CONFIG),
        "data": data,
    }


def live_config_map(job: JobRef, spec: LLMTrainingJobSpec) -> dict[str, Any] | None:
    """The live settings of an (effective, `cadence.effective_spec`) spec as a ConfigMap, or None when
    the job has none (`everyMinutes` is not `auto`). The operator patches it when the interval changes;
    the kubelet refreshes the mounted copy (about a minute: its sync period plus its ConfigMap cache)."""
    settings = cadence.live_settings(spec)
    if settings is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(job, names.live_config_map_name(job.name), names.ROLE_CONFIG),
        "data": {cadence.LIVE_FILE: cadence.live_document(settings)},
    }


def _deepspeed_config(spec: LLMTrainingJobSpec, cfg: Any) -> dict[str, Any] | None:
    """What the trainer will hand DeepSpeed (it renders its own at start, knowing the device; this
    copy is for people and reviews). None when the trainer's renderer is unavailable."""
    try:
        from tokensmith.trainer.dsconfig import choose_precision, render
    except ImportError:  # pragma: no cover - the trainer portion is part of the same distribution
        return None
    gpu = spec.cluster.gpus_per_node > 0
    precision = choose_precision(cfg.train.precision, cuda=gpu, bf16_supported=gpu)
    return render(cfg, spec.world_size, precision)


def trainer_service_account(job: JobRef) -> list[dict[str, Any]]:
    """ServiceAccount + Role + RoleBinding: trainer rank 0 may get/patch `llmtrainingjobs/status`
    of this one job (resourceNames), nothing else. Skipped when the job names its own account."""
    sa = trainer_account_name(job.name)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(job, sa, names.ROLE_WORKER)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(job, sa, names.ROLE_WORKER),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "resources": [f"{PLURAL}/status"],
                    "resourceNames": [job.name],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(job, sa, names.ROLE_WORKER),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": job.namespace}],
        },
    ]


def trainer_account_name(job: str) -> str:
    return f"{job}-trainer"


def pod_group(job: JobRef, spec: LLMTrainingJobSpec) -> dict[str, Any] | None:
    """Volcano's gang: the scheduler binds all `minMember` pods at once or none."""
    if spec.cluster.scheduler_name not in VOLCANO_SCHEDULERS:
        return None
    pg_spec = queues.volcano_pod_group_spec(spec, _gang_resources(spec))
    return {
        "apiVersion": "scheduling.volcano.sh/v1beta1",
        "kind": "PodGroup",
        "metadata": _meta(job, names.pod_group_name(job.name), names.ROLE_WORKER),
        "spec": pg_spec,
    }


def job_children(
    job: JobRef,
    spec: LLMTrainingJobSpec,
    skip_samples: tuple[tuple[int, int], ...] = (),
    defaults: Defaults | None = None,
) -> list[dict[str, Any]]:
    """The per-job objects every attempt shares, in creation order (NetworkPolicies first, so that no
    pod ever runs without them)."""
    defaults = defaults or Defaults()
    wanted = spec.cluster.network_policy
    out = []
    if wanted or (wanted is None and defaults.network_policy):
        out += netpol.policies(lambda n, role: _meta(job, n, role), job.name, defaults.scrape_namespace)
    out += [rendezvous_service(job, spec), trainer_config_map(job, spec, skip_samples)]
    live = live_config_map(job, spec)
    if live is not None:
        out.append(live)
    if spec.cluster.service_account_name is None:
        out += trainer_service_account(job)
    group = pod_group(job, spec)
    if group is not None:
        out.append(group)
    return out


# ---------------------------------------------------------------------------- per attempt


def worker_env(
    job: JobRef, spec: LLMTrainingJobSpec, attempt: int, index: int, defaults: Defaults
) -> list[dict]:
    """torchrun's multi-node environment, plus what the trainer's status reporter reads."""
    env = {
        "MASTER_ADDR": names.master_addr(job.name, job.namespace),
        "MASTER_PORT": str(spec.cluster.master_port),
        "NNODES": str(spec.cluster.nodes),
        "NODE_RANK": str(index),
        "NPROC_PER_NODE": str(spec.procs_per_node),
        "WORLD_SIZE": str(spec.world_size),
        "TOKENSMITH_JOB_NAME": job.name,
        "TOKENSMITH_JOB_NAMESPACE": job.namespace,
        "TOKENSMITH_ATTEMPT": str(attempt),
        "TOKENSMITH_CONFIG": f"{CONFIG_MOUNT}/{CONFIG_FILE}",
        "TOKENSMITH_REPORT_INTERVAL_SECONDS": f"{defaults.report_interval_seconds:g}",
        # the trainer decides from this whether a SIGTERM checkpoint fits before the kubelet's SIGKILL
        "TOKENSMITH_TERMINATION_GRACE_SECONDS": str(spec.cluster.termination_grace_period_seconds),
    }
    if spec.checkpoint.auto:  # the running trainer watches its live settings (trainer/live.py)
        env[LIVE_ENV] = f"{LIVE_MOUNT}/{cadence.LIVE_FILE}"
    if spec.cluster.gpus_per_node == 0:
        env["DS_ACCELERATOR"] = "cpu"
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    for var in spec.cluster.env:  # the user's variables come last and win
        out = [e for e in out if e["name"] != var.name]
        out.append(var.model_dump(mode="json", by_alias=True, exclude_none=True))
    return out


def _resources(spec: LLMTrainingJobSpec) -> dict[str, Any]:
    requests = dict(spec.cluster.resources.requests)
    limits = dict(spec.cluster.resources.limits)
    if spec.cluster.gpus_per_node > 0:  # extended resources: request == limit
        requests[spec.cluster.gpu_resource] = spec.cluster.gpus_per_node
        limits[spec.cluster.gpu_resource] = spec.cluster.gpus_per_node
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _gang_resources(spec: LLMTrainingJobSpec) -> dict[str, Any]:
    """minResources of the PodGroup: the whole gang's requests (numbers only; quantities as given)."""
    per_pod = _resources(spec).get("requests", {})
    out: dict[str, Any] = {}
    for key, value in per_pod.items():
        out[key] = value * spec.cluster.nodes if isinstance(value, int) else value
    return out


# The pods' security contexts and writable scratch come from hardening.py (Pod Security "restricted").
EVAL_SHM_SIZE = "1Gi"  # /dev/shm of evaluation pods (DataLoader workers)


def _checkpoint_volume(spec: LLMTrainingJobSpec) -> dict[str, Any]:
    return {"name": "checkpoints", **spec.checkpoint.volume}


def worker_pod(
    job: JobRef,
    spec: LLMTrainingJobSpec,
    attempt: int,
    index: int,
    defaults: Defaults,
    avoid_nodes: tuple[str, ...] = (),
    group_size: int | None = None,
    plan: GangPlan = GangPlan(),
) -> dict[str, Any]:
    """One worker; `avoid_nodes` become a required node anti-affinity (suspect nodes), `group_size`
    the attempt's gang size for queue admission (default: spec.cluster.nodes)."""
    c = spec.cluster
    queue_labels, queue_annotations = queues.kueue_metadata(spec, job.name, attempt, group_size or c.nodes)
    labels = {
        **c.labels,
        **queue_labels,
        names.LABEL_ATTEMPT: str(attempt),
        names.LABEL_INDEX: str(index),
    }
    meta = _meta(job, names.worker_pod_name(job.name, attempt, index), names.ROLE_WORKER, labels)
    annotations = {**c.annotations, **queue_annotations}
    if c.scheduler_name in VOLCANO_SCHEDULERS:
        annotations[VOLCANO_GROUP_ANNOTATION] = names.pod_group_name(job.name)
    if annotations:
        meta["annotations"] = annotations
    mounts = [
        {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "checkpoints", "mountPath": spec.checkpoint.mount_path},
    ] + [{"name": v.name, "mountPath": v.mount_path, "readOnly": v.read_only} for v in c.volumes]
    volumes = [
        {"name": "config", "configMap": {"name": names.config_map_name(job.name)}},
        # NCCL and the data loader's workers share memory through /dev/shm; the container default is 64 MiB
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": c.shm_size}},
        _checkpoint_volume(spec),
    ] + [{"name": v.name, **v.source} for v in c.volumes]
    if spec.checkpoint.auto:  # a whole-directory mount: a subPath mount would never be refreshed
        mounts.append({"name": LIVE_VOLUME, "mountPath": LIVE_MOUNT, "readOnly": True})
        volumes.append({"name": LIVE_VOLUME, "configMap": {"name": names.live_config_map_name(job.name)}})
    container: dict[str, Any] = {
        "name": "trainer",
        "image": c.image or defaults.trainer_image,
        "command": c.command or ["python", "-m", "tokensmith.operator.launch"],
        "env": worker_env(job, spec, attempt, index, defaults),
        "ports": [{"name": "rendezvous", "containerPort": c.master_port, "protocol": "TCP"}],
        "resources": _resources(spec),
        "volumeMounts": mounts,
        # the last lines of the log become the termination message when the trainer wrote none
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if c.image_pull_policy:
        container["imagePullPolicy"] = c.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the operator restarts whole gangs, never single workers
        "hostname": names.worker_hostname(index),
        "subdomain": names.service_name(job.name),
        "serviceAccountName": c.service_account_name or trainer_account_name(job.name),
        "terminationGracePeriodSeconds": c.termination_grace_period_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    hardening.harden(pod_spec, c.security_profile, c.add_capabilities)
    hardening.service_account_token(pod_spec, rank_zero=index == 0)
    _scheduling(pod_spec, spec)
    if avoid_nodes:
        pod_spec["affinity"] = node_anti_affinity(avoid_nodes)
    _rollback_plan(pod_spec, plan)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def node_anti_affinity(avoid: tuple[str, ...]) -> dict[str, Any]:
    """A required node affinity excluding these nodes by name (`matchFields` on metadata.name is
    exact, unlike the kubernetes.io/hostname label, which may differ from the node's name)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": sorted(avoid)}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


# Run health (rollback.py): where a rolled-back attempt resumes.
RESUME_ENV = "TOKENSMITH_RESUME_FROM"


def _rollback_plan(pod_spec: dict[str, Any], plan: GangPlan) -> None:
    if plan.resume_from is not None:
        for container in pod_spec["containers"]:
            env = [e for e in container.get("env", []) if e["name"] != RESUME_ENV]
            container["env"] = [*env, {"name": RESUME_ENV, "value": plan.resume_from}]


def _scheduling(pod_spec: dict[str, Any], spec: LLMTrainingJobSpec) -> None:
    c = spec.cluster
    if c.node_selector:
        pod_spec["nodeSelector"] = dict(c.node_selector)
    if c.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in c.tolerations
        ]
    if c.priority_class_name:
        pod_spec["priorityClassName"] = c.priority_class_name
    if c.scheduler_name:
        pod_spec["schedulerName"] = c.scheduler_name
    if c.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in c.image_pull_secrets]


def worker_pods(
    job: JobRef,
    spec: LLMTrainingJobSpec,
    attempt: int,
    indices: tuple[int, ...],
    defaults: Defaults,
    avoid_nodes: tuple[str, ...] = (),
    group_size: int | None = None,
    plan: GangPlan = GangPlan(),
) -> list[dict[str, Any]]:
    return [worker_pod(job, spec, attempt, i, defaults, avoid_nodes, group_size, plan) for i in indices]


# --------------------------------------------------------------------------- evaluation


def evaluation_output(spec: LLMTrainingJobSpec, job_name: str, step: int) -> str:
    """Where an evaluation Job writes its full JSON (beside the checkpoints, kept with them)."""
    return f"{checkpoint_dir(spec, job_name)}/evals/step-{step}.json"


def evaluation_job(
    job: JobRef, spec: LLMTrainingJobSpec, step: int, checkpoint_path: str, name: str, defaults: Defaults
) -> dict[str, Any]:
    """A batch/v1 Job running `tokensmith eval` on one checkpoint; its short JSON result comes back
    through the container's termination message (no extra permissions, < 4 KiB)."""
    ev = spec.evaluation
    args = ["tokensmith", "eval", "--checkpoint", checkpoint_path, "--tasks", ",".join(ev.tasks)]
    if ev.limit is not None:
        args += ["--limit", str(ev.limit)]
    if ev.gpus > 0:
        args += ["--device", "cuda"]
    valid = spec.data.valid_path or spec.trainer.data.valid_path
    if valid:
        args += ["--perplexity-data", valid]
    args += ["--output", evaluation_output(spec, job.name, step), *ev.args]
    labels = {names.LABEL_STEP: str(step)}
    resources: dict[str, Any] = {}
    requests, limits = dict(ev.resources.requests), dict(ev.resources.limits)
    if ev.gpus > 0:
        requests[spec.cluster.gpu_resource] = ev.gpus
        limits[spec.cluster.gpu_resource] = ev.gpus
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    container: dict[str, Any] = {
        "name": "evaluator",
        "image": ev.image or defaults.evaluator_image,
        "command": args,
        "resources": resources,
        "volumeMounts": [{"name": "checkpoints", "mountPath": spec.checkpoint.mount_path}]
        + [
            {"name": v.name, "mountPath": v.mount_path, "readOnly": v.read_only} for v in spec.cluster.volumes
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # the evaluator talks to no API
        "containers": [container],
        "volumes": [_checkpoint_volume(spec)] + [{"name": v.name, **v.source} for v in spec.cluster.volumes],
    }
    # evaluation needs no extra capabilities: always restricted
    hardening.harden(pod_spec, "restricted", shm_size=EVAL_SHM_SIZE)
    if ev.gpus > 0:
        _scheduling(pod_spec, spec)
    elif spec.cluster.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.cluster.image_pull_secrets]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # a failed evaluation is recorded, not retried (never two runs of a step)
        "template": {
            "metadata": {
                "labels": {**names.job_labels(job.name), names.LABEL_ROLE: names.ROLE_EVAL, **labels}
            },
            "spec": pod_spec,
        },
    }
    if ev.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = ev.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(job, name, names.ROLE_EVAL, labels),
        "spec": job_spec,
    }
