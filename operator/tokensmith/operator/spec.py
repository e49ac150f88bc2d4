"""The `LLMTrainingJob` resource: its spec and status as pydantic models.

These models are the one source of truth for the resource. The operator validates with them, the
CRD's `openAPIV3Schema` is generated from them (`tokensmith crd`, see `crd.py`), the planner's
`--emit-job` and the local runner build and read manifests with them.

Naming: Kubernetes fields are camelCase (`gpusPerNode`), Python attributes snake_case
(`gpus_per_node`); aliases map one to the other (`model_validate` accepts both, `to_manifest`
writes camelCase). The embedded trainer configuration (`spec.trainer`) is the trainer's own file
format (`tokensmith train --config`), so it keeps its snake_case keys unchanged: a user can copy it
out of a job into a file and back.

Precedence: the job-level sections `model`, `data`, `parallelism` and `checkpoint` describe the
run the way cluster users think of it; whenever one of their fields is set it overrides the
matching field of `spec.trainer` (`spec.model` replaces `trainer.model` whole; the others
field by field). `effective_trainer_config(spec)` applies this rule and is what the worker pods
receive in their ConfigMap; nothing else merges the two.
"""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tokensmith.planner.arch import ModelConfig
from tokensmith.trainer.config import TrainerConfig

GROUP = "tokensmith.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LLMTrainingJob"
PLURAL = "llmtrainingjobs"
SINGULAR = "llmtrainingjob"
SHORT_NAMES = ("llmjob",)

# Exit codes the trainer reserves (docs/cli.md): 0 done, 78 a config the user must fix.
EXIT_SUCCESS = 0
EXIT_CONFIG = 78

Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[str, ...] = ("Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
TERMINAL_PHASES = ("Succeeded", "Failed")

# Failure kinds the operator recognises (see failures.py); `restartPolicy.retryOn` lists a subset.
FailureKind = Literal[
    "ExitCode", "OOMKilled", "Evicted", "Preempted", "NodeLost", "PodLost", "Hang", "Unschedulable"
]
FAILURE_KINDS: tuple[FailureKind, ...] = typing.get_args(FailureKind)
# Who is to blame for a failure (see failures.failure_class): each class has its own restart budget.
FailureClass = Literal["Application", "Infrastructure", "Scheduling"]
FAILURE_CLASSES: tuple[FailureClass, ...] = typing.get_args(FailureClass)

# Run health (rollback and replay, see rollback.py): what a divergence was attributed to, and what a
# divergence that repeats on the same samples does.
RollbackCause = Literal["Hardware", "Data", "Unknown"]
DataPolicy = Literal["skipOnRepeat", "fail"]


def _check_volume_source(source: dict[str, Any], where: str) -> None:
    if len(source) != 1:
        raise ValueError(
            f"{where} must name exactly one volume source (e.g. persistentVolumeClaim: {{claimName: NAME}}), "
            f"got {sorted(source) or 'none'}"
        )


def cel(*rules: tuple[str, str]) -> ConfigDict:
    """Admission-time rules of a model as CEL `x-kubernetes-validations` (Kubernetes >= 1.25,
    https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/
    #validation-rules): (rule, message) pairs, written into the generated CRD beside the field
    schema. Each rule's Python twin is a validator of the same model: the API server rejects the
    object before the operator sees it, the models reject it when the CRD is older than the
    operator; tests/operator/test_cel.py checks that both agree."""
    return ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}
    )


class K8sModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are errors (typos fail loudly)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class StatusModel(K8sModel):
    """Status is written by several parties (operator, trainer, local runner, people with kubectl):
    fields a reader does not know are ignored, never fatal."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# ----------------------------------------------------------------------------------------- spec


class DataSourceSpec(K8sModel):
    """One weighted training source (mirrors the trainer's `data.sources` entries)."""

    path: str = Field(..., description="Directory of token shards as the worker pods see it.")
    weight: float = Field(1.0, gt=0, description="Share of the samples (normalised over the sources).")
    name: str | None = Field(None, description="Name in metrics and status.progress.sourceTokens.")
    epochs: float | None = Field(
        None, gt=0, description="Passes over this source the run may make (default: as many as needed)."
    )


class DataSpec(K8sModel):
    """Where the token shards are (paths as the worker pods see them) and how many tokens to train."""

    train_path: str | None = Field(
        None,
        description="Directory of training token shards (`tokensmith curate` output); overrides "
        "trainer.data.train_path.",
    )
    sources: list[DataSourceSpec] | None = Field(
        None,
        description="Weighted training sources mixed per sample; override trainer.data.sources (and "
        "trainer.data.train_path).",
    )
    valid_path: str | None = Field(
        None, description="Directory of validation shards; overrides trainer.data.valid_path."
    )
    tokenizer_path: str | None = Field(
        None, description="tokenizer.json; overrides trainer.data.tokenizer_path."
    )
    tokens: int | None = Field(
        None, ge=1, description="Token budget of the run; overrides trainer.train.tokens. Success = reached."
    )


class ParallelismSpec(K8sModel):
    """How the model is split over the gang: tensor x pipeline x data (the rest of the world size), with
    DeepSpeed ZeRO. What combines with what is `tokensmith.planner.capability`, which the operator's spec
    check, the planner's search and the trainer share (see docs/operator.md, "Parallel layouts")."""

    tensor: int = Field(
        1, ge=1, description="Tensor-parallel degree: divides the heads, the KV heads and nprocPerNode."
    )
    pipeline: int = Field(1, ge=1, description="Pipeline-parallel degree (1F1B stages, at most the layers).")
    zero_stage: Literal[0, 1, 2, 3] | None = Field(
        None, description="DeepSpeed ZeRO stage; overrides trainer.deepspeed.zero_stage."
    )
    micro_batch: int | None = Field(
        None, ge=1, description="Sequences per process per pass; overrides trainer.train.micro_batch."
    )
    global_batch_tokens: int | None = Field(
        None, ge=1, description="Tokens per optimizer step; overrides trainer.train.global_batch_tokens."
    )


class Toleration(K8sModel):
    """A core/v1 Toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class ResourceSpec(K8sModel):
    """core/v1 ResourceRequirements: quantities as strings ("16Gi", "500m") or integers."""

    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class EnvVar(K8sModel):
    """A core/v1 EnvVar; `valueFrom` is passed through as written (secretKeyRef, fieldRef, ...)."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, description="core/v1 EnvVarSource.")


class VolumeSpec(K8sModel):
    """An extra volume mounted into every worker: a core/v1 volume source plus where to mount it."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    mount_path: str = Field(min_length=1, pattern=r"^/")
    read_only: bool = False
    source: dict[str, Any] = Field(
        description="A core/v1 VolumeSource, e.g. {persistentVolumeClaim: {claimName: data}}.",
        json_schema_extra={"minProperties": 1, "maxProperties": 1},
    )

    @model_validator(mode="after")
    def _one_source(self) -> VolumeSpec:
        _check_volume_source(self.source, f"cluster.volumes[{self.name}].source")
        return self


NPROC_RULE = (
    "!has(self.nprocPerNode) || !has(self.gpusPerNode) || self.gpusPerNode == 0 "
    "|| self.nprocPerNode <= self.gpusPerNode",
    "cluster.nprocPerNode must not exceed gpusPerNode (one process per GPU)",
)


CAPABILITIES_RULE = (
    "!has(self.addCapabilities) || size(self.addCapabilities) == 0 "
    "|| (has(self.securityProfile) && self.securityProfile == 'baseline')",
    "cluster.addCapabilities needs cluster.securityProfile: baseline (restricted drops them all)",
)


class ClusterSpec(K8sModel):
    """The shape of the gang and how its pods are scheduled."""

    model_config = cel(NPROC_RULE, CAPABILITIES_RULE)

    nodes: int = Field(1, ge=1, description="Worker pods (one per node); the gang size.")
    gpus_per_node: int = Field(8, ge=0, description="GPUs each worker requests; 0 runs on CPU (gloo).")
    gpu_resource: str = Field("nvidia.com/gpu", min_length=1, description="Extended resource name of a GPU.")
    nproc_per_node: int | None = Field(
        None,
        ge=1,
        description="Processes per worker (torchrun --nproc-per-node); default: gpusPerNode, or 1 on CPU.",
    )
    image: str | None = Field(
        None,
        description="Trainer image; default: the operator's TOKENSMITH_TRAINER_IMAGE (Helm sets it).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    command: list[str] | None = Field(
        None,
        description="Replaces the worker command (default: `python -m tokensmith.operator.launch` running "
        "`tokensmith train` under torch's elastic launcher with the rendered config).",
    )
    image_pull_secrets: list[str] = Field(default_factory=list, description="Names of image pull secrets.")
    service_account_name: str | None = Field(
        None,
        description="Service account of the workers; default: `tokensmith-trainer` (may patch job status).",
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = None
    scheduler_name: str | None = Field(
        None, description="Pod scheduler; `volcano` also creates a Volcano PodGroup (minMember = nodes)."
    )
    resources: ResourceSpec = Field(
        default_factory=ResourceSpec,
        description="Worker resources; the GPU request is added from gpusPerNode.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment variables for the workers."
    )
    volumes: list[VolumeSpec] = Field(
        default_factory=list, description="Extra volumes (e.g. the token shards)."
    )
    shm_size: str = Field("16Gi", description="Size limit of the memory-backed /dev/shm volume.")
    master_port: int = Field(29500, ge=1, le=65535, description="torchrun rendezvous port on worker 0.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the worker pods.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on the worker pods."
    )
    termination_grace_period_seconds: int = Field(
        120, ge=0, description="Time the trainer gets to write a checkpoint on SIGTERM."
    )
    security_profile: Literal["restricted", "baseline"] = Field(
        "restricted",
        description="Pod Security of the job's pods: `restricted` (default) passes the Kubernetes "
        "Pod Security Standard of that name; `baseline` is the opt-in for fabrics that need more "
        "(privilege escalation allowed, runtime-default capabilities plus addCapabilities). "
        "See docs/security.md.",
    )
    add_capabilities: list[Annotated[str, Field(pattern=r"^[A-Z][A-Z_]*$")]] = Field(
        default_factory=list,
        description="Linux capabilities added to the workers (e.g. IPC_LOCK for RDMA); only with "
        "securityProfile: baseline and when the operator's admission policy allows them.",
    )
    network_policy: bool | None = Field(
        None,
        description="Create a NetworkPolicy: workers accept traffic only from this job's workers and "
        "the operator's namespace, evaluation pods accept none. Default: the operator's setting.",
    )

    @model_validator(mode="after")
    def _capabilities_need_baseline(self) -> ClusterSpec:
        if self.add_capabilities and self.security_profile != "baseline":
            raise ValueError(CAPABILITIES_RULE[1])
        return self

    @model_validator(mode="after")
    def _procs_fit_gpus(self) -> ClusterSpec:
        if self.nproc_per_node is not None and 0 < self.gpus_per_node < self.nproc_per_node:
            raise ValueError(NPROC_RULE[1])
        return self


AUTO = "auto"
MINUTES_PATTERN = r"^(auto|[0-9]+(\.[0-9]+)?)$"


def _minutes(value: Any) -> Any:
    """`everyMinutes` as the API server stores it: a number, `auto`, or a decimal string ("7.5"); one
    clear error for anything else (the union's own errors would name each member)."""
    if isinstance(value, bool):
        _bad_minutes(value)
    if value is None or value == AUTO:
        return value
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        _bad_minutes(value)
    if not minutes >= 0:  # also NaN
        _bad_minutes(value)
    return minutes


def _bad_minutes(value: Any) -> typing.NoReturn:
    raise ValueError(f"must be a number of minutes >= 0 or `auto`, not {value!r}")


# A number of minutes or `auto`. The CRD types it int-or-string (a structural schema has no number-or-string
# type): on a cluster, fractional minutes are written as a string ("7.5"); the models take floats as well.
EveryMinutes = Annotated[
    Annotated[float, Field(ge=0)] | Literal["auto"],
    BeforeValidator(_minutes),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": MINUTES_PATTERN}],
            "description": "Time-based checkpoints every this many minutes (overrides "
            "trainer.checkpoint.every_minutes), or `auto`: the operator steers the interval to Daly's "
            "optimum for the failure rate and checkpoint cost it observes, and hands it to the next "
            "attempt and to the running one (docs/operator.md, Adaptive checkpointing). An integer, "
            '`auto`, or a decimal string such as "7.5".',
        }
    ),
]


class CheckpointSpec(K8sModel):
    """The checkpoint volume (required: without shared storage a restart cannot resume)."""

    volume: dict[str, Any] = Field(
        description="core/v1 VolumeSource of the checkpoints, e.g. {persistentVolumeClaim: {claimName: ck}}.",
        json_schema_extra={"minProperties": 1, "maxProperties": 1},
    )
    mount_path: str = Field(
        "/checkpoints", pattern=r"^/", description="Where the volume is mounted in every pod."
    )
    sub_path: str | None = Field(
        None, description="Directory under the mount for this job's checkpoints; default: the job's name."
    )
    every_steps: int | None = Field(None, ge=0, description="Overrides trainer.checkpoint.every_steps.")
    every_minutes: EveryMinutes | None = None
    initial_minutes: float | None = Field(
        None,
        gt=0,
        description="With everyMinutes: auto, the interval the first attempt starts with (`tokensmith plan "
        "--emit-job` writes the plan's Daly interval here); default: Daly's optimum for the prior.",
    )
    keep: int | None = Field(None, ge=1, description="Overrides trainer.checkpoint.keep.")
    adaptive: bool = Field(
        False,
        description="Deprecated spelling of everyMinutes: auto (a numeric everyMinutes is then the "
        "starting interval, as initialMinutes is).",
    )
    prior_mtbf_gpu_hours: float | None = Field(
        None,
        gt=0,
        alias="priorMTBFGPUHours",
        description="The planner's MTBF per GPU (GPU-hours per failure); default 50,700 (Llama 3).",
    )
    prior_seconds: float | None = Field(
        None, gt=0, description="The planner's checkpoint write seconds, until a save is measured."
    )
    min_minutes: float = Field(5.0, gt=0, description="Lower bound of the adaptive interval.")
    max_minutes: float = Field(1440.0, gt=0, description="Upper bound of the adaptive interval.")

    @model_validator(mode="after")
    def _one_source(self) -> CheckpointSpec:
        _check_volume_source(self.volume, "checkpoint.volume")
        return self

    @model_validator(mode="after")
    def _auto_interval(self) -> CheckpointSpec:
        if self.adaptive and self.every_minutes != AUTO:  # the older spelling: the same meaning
            if self.initial_minutes is None and isinstance(self.every_minutes, float) and self.every_minutes:
                self.initial_minutes = self.every_minutes
            self.every_minutes = "auto"
        if self.initial_minutes is not None and self.every_minutes != AUTO:
            raise ValueError(
                "checkpoint.initialMinutes applies only with everyMinutes: auto; "
                "drop it or set everyMinutes: auto"
            )
        return self

    @property
    def auto(self) -> bool:
        """Whether the operator steers the interval (`everyMinutes: auto`)."""
        return self.every_minutes == AUTO


BACKOFF_RULE = (
    "!has(self.maxBackoffSeconds) || !has(self.backoffSeconds) || self.maxBackoffSeconds == 0.0 "
    "|| self.maxBackoffSeconds >= self.backoffSeconds",
    "restartPolicy.maxBackoffSeconds must be 0 (no cap) or >= backoffSeconds",
)


class RestartPolicySpec(K8sModel):
    """When and how a failed gang is restarted (always whole: the N workers live and die together)."""

    model_config = cel(BACKOFF_RULE)

    max_restarts: int = Field(10, ge=0, description="Restarts before the job ends Failed.")
    backoff_seconds: float = Field(30.0, ge=0, description="Wait before the first restart.")
    backoff_multiplier: float = Field(2.0, ge=1, description="Each further restart waits this much longer.")
    max_backoff_seconds: float = Field(600.0, ge=0, description="Cap of the exponential backoff.")
    retry_on: list[FailureKind] = Field(
        default_factory=lambda: list(FAILURE_KINDS),
        description="Failure kinds that are retried; others end the job Failed.",
    )
    non_retryable_exit_codes: list[int] = Field(
        default_factory=lambda: [EXIT_CONFIG],
        description="Worker exit codes that are never retried (78: the trainer's config error).",
    )
    hang_timeout_seconds: float = Field(
        1800.0, ge=0, description="No progress heartbeat for this long = hung gang (0 disables)."
    )
    pending_timeout_seconds: float = Field(
        0.0,
        ge=0,
        description="A gang not fully running this long after creation is deleted and retried "
        "(Unschedulable): frees the GPUs a partial gang holds without a gang scheduler (0 disables).",
    )
    max_infrastructure_restarts: int = Field(
        20,
        ge=0,
        description="Restarts after Infrastructure failures (lost or NotReady node, eviction, GPU "
        "errors); they do not use up maxRestarts, which counts Application failures.",
    )
    max_scheduling_restarts: int | None = Field(
        None,
        ge=0,
        description="Restarts after Scheduling failures (preemption, unschedulable gang); unlimited "
        "when unset.",
    )
    max_attempts_without_progress: int = Field(
        3,
        ge=0,
        description="This many attempts in a row ending in an Application failure without a "
        "checkpoint newer than the one they resumed from end the job Failed/NoProgress (0 disables).",
    )
    force_delete_after_seconds: float = Field(
        300.0,
        ge=0,
        description="A deleted worker still present this long after its grace period, on a node "
        "that is NotReady/unreachable or gone, is force-deleted (grace period 0).",
    )

    # -- run health: rollback and replay (rollback.py) --
    max_rollbacks: int = Field(
        3,
        ge=0,
        description="Rollbacks to the last healthy checkpoint after the trainer reports divergence (exit "
        "65) before the job ends Failed; counted apart from maxRestarts.",
    )
    data_policy: DataPolicy = Field(
        "skipOnRepeat",
        description="A divergence that repeats at the same step on other nodes is the data's (cause Data): "
        "skipOnRepeat adds the step's sample range to the trainer's data.skip_samples for the next "
        "attempt; fail ends the job Failed/DataDiverged.",
    )
    replay_on_other_nodes: bool = Field(
        True,
        description="Replay a diverged attempt on nodes other than its own (required node anti-affinity), "
        "so a repeat points at the data and a pass at the hardware; turn off when the cluster has no "
        "spare nodes.",
    )

    @model_validator(mode="after")
    def _backoff_cap(self) -> RestartPolicySpec:
        if self.max_backoff_seconds and self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError(BACKOFF_RULE[1])
        return self


class NodeHealthSpec(K8sModel):
    """What the operator does about nodes implicated in infrastructure failures (suspect nodes)."""

    suspect_ttl_seconds: float = Field(
        3600.0,
        ge=0,
        description="A suspect node is avoided for this long after its last failure (a gang that needs "
        "every node of the cluster waits that long).",
    )
    max_suspect_nodes: int = Field(
        32, ge=0, description="At most this many suspect nodes are kept (the oldest are forgotten)."
    )
    not_ready_timeout_seconds: float = Field(
        60.0,
        ge=0,
        description="A worker whose node has been NotReady/unreachable (or gone) this long is lost "
        "(Infrastructure failure).",
    )
    cordon: bool = Field(
        False,
        description="Also cordon suspect nodes (spec.unschedulable); needs the chart's "
        "nodeHealth.cordon RBAC.",
    )
    react_to_disruptions: bool = Field(
        True,
        description="A gang node that is cordoned, tainted NoSchedule/NoExecute or a worker with a "
        "DisruptionTarget condition triggers a checkpoint (SIGTERM) and a planned restart elsewhere.",
    )


class NetworkTopologySpec(K8sModel):
    """Volcano's network-topology hint for the PodGroup (volcano.sh network-topology-aware scheduling)."""

    mode: Literal["hard", "soft"] = "hard"
    highest_tier_allowed: int | None = Field(None, ge=1)


class SchedulingSpec(K8sModel):
    """Admission through a queue: Kueue (plain-pod groups) or, with schedulerName volcano, a Volcano queue."""

    queue_name: str | None = Field(
        None,
        min_length=1,
        description="Kueue LocalQueue (pods get Kueue's pod-group labels) or, with "
        "cluster.schedulerName volcano, the Volcano queue of the PodGroup.",
    )
    workload_priority_class: str | None = Field(
        None, description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class)."
    )
    network_topology: NetworkTopologySpec | None = Field(
        None, description="Volcano PodGroup networkTopology (ignored without Volcano)."
    )


EVAL_GPU_RULE = (
    "!has(self.gpus) || self.gpus == 0 || (has(self.tasks) && size(self.tasks) > 0)",
    "evaluation.gpus without evaluation.tasks would reserve GPUs for nothing; list tasks or set gpus: 0",
)


class EvaluationSpec(K8sModel):
    """Evaluation Jobs (`tokensmith eval`) on completed checkpoints."""

    model_config = cel(EVAL_GPU_RULE)

    tasks: list[str] = Field(
        default_factory=list, description="lm-evaluation-harness tasks; empty disables evaluation."
    )
    every_checkpoints: int = Field(1, ge=1, description="Evaluate every Kth completed checkpoint.")
    limit: int | None = Field(None, ge=1, description="Examples per task (quick evaluations).")
    image: str | None = Field(
        None, description="Evaluator image; default: the operator's TOKENSMITH_EVALUATOR_IMAGE."
    )
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    gpus: int = Field(0, ge=0, description="GPUs for each evaluation pod.")
    args: list[str] = Field(default_factory=list, description="Extra arguments for `tokensmith eval`.")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Evaluation Jobs are killed after this."
    )

    @model_validator(mode="after")
    def _gpus_need_tasks(self) -> EvaluationSpec:
        if self.gpus > 0 and not self.tasks:
            raise ValueError(EVAL_GPU_RULE[1])
        return self


PRICE_RULE = (
    "!has(self.maxCostUSD) || has(self.pricePerGPUHour)",
    "budget.maxCostUSD needs budget.pricePerGPUHour to turn GPU-hours into dollars",
)


class BudgetSpec(K8sModel):
    """A spending limit the operator enforces: the gang is stopped (with a final checkpoint on SIGTERM)
    and the job ends Failed/BudgetExceeded once it is used up."""

    model_config = cel(PRICE_RULE)

    max_gpu_hours: float | None = Field(
        None, gt=0, alias="maxGPUHours", description="GPU-hours the job may use."
    )
    max_cost_usd: float | None = Field(
        None, gt=0, alias="maxCostUSD", description="Dollars the job may spend."
    )
    price_per_gpu_hour: float | None = Field(
        None, ge=0, alias="pricePerGPUHour", description="USD per GPU-hour, for costUSD and maxCostUSD."
    )

    @model_validator(mode="after")
    def _price_for_dollars(self) -> BudgetSpec:
        if self.max_cost_usd is not None and self.price_per_gpu_hour is None:
            raise ValueError(PRICE_RULE[1])
        return self


TOPOLOGY_RULE = (
    "!has(self.scheduling) || !has(self.scheduling.networkTopology) || "
    "(has(self.cluster) && has(self.cluster.schedulerName) && self.cluster.schedulerName == 'volcano')",
    "scheduling.networkTopology is a Volcano PodGroup hint: it needs cluster.schedulerName: volcano",
)


class LLMTrainingJobSpec(K8sModel):
    """What to train, on what, and how to survive failures."""

    model_config = cel(TOPOLOGY_RULE)

    model: ModelConfig | None = Field(
        None, description="Architecture (a preset and/or fields); replaces trainer.model when given."
    )
    data: DataSpec = Field(default_factory=DataSpec)
    trainer: TrainerConfig = Field(
        default_factory=TrainerConfig,
        description="The trainer's own configuration (`tokensmith train --config` format, snake_case keys).",
    )
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    checkpoint: CheckpointSpec
    restart_policy: RestartPolicySpec = Field(default_factory=RestartPolicySpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    suspend: bool = Field(
        False, description="True deletes the gang and keeps the checkpoints; False resumes."
    )
    node_health: NodeHealthSpec = Field(default_factory=NodeHealthSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished job (and its children) this long after it ends."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="The job ends Failed/DeadlineExceeded this long after it started."
    )

    @model_validator(mode="after")
    def _topology_needs_volcano(self) -> LLMTrainingJobSpec:
        if self.scheduling.network_topology is not None and self.cluster.scheduler_name != "volcano":
            raise ValueError(TOPOLOGY_RULE[1])
        return self

    @property
    def procs_per_node(self) -> int:
        return self.cluster.nproc_per_node or self.cluster.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.cluster.nodes * self.procs_per_node

    @property
    def accounted_devices(self) -> int:
        """Devices billed per hour: GPUs, or on CPU-only jobs one per process (so budgets still work)."""
        per_node = self.cluster.gpus_per_node or self.procs_per_node
        return self.cluster.nodes * per_node


# --------------------------------------------------------------------------------------- status


class Condition(StatusModel):
    """A standard metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class SigtermSave(StatusModel):
    """The trainer's SIGTERM checkpoint decision: saved only when the last save took under half the grace
    period left (docs/trainer.md, "Checkpoints")."""

    step: int = Field(ge=0)
    saved: bool
    grace_left_seconds: float | None = None
    expected_save_seconds: float | None = Field(None, description="The last save's seconds until durable.")


class Progress(StatusModel):
    """Written by trainer rank 0 (status.progress) or by the local runner."""

    step: int = Field(0, ge=0)
    tokens: int = Field(0, ge=0)
    loss: float | None = None
    heartbeat_time: datetime | None = None
    total_tokens: int | None = Field(None, description="The token budget, for `kubectl get` (step/total).")
    tokens_per_second: float | None = None
    source_tokens: dict[str, int] | None = Field(
        None, description="The realised data mixture: tokens each training source gave so far."
    )
    sigterm: SigtermSave | None = None


class CheckpointRef(StatusModel):
    """The last complete checkpoint (written by trainer rank 0 once every rank has saved it)."""

    step: int = Field(ge=0)
    path: str
    time: datetime | None = None
    healthy: bool | None = Field(
        None,
        description="The trainer's health verdict: no skipped or non-finite step and no open loss spike "
        "since the previous checkpoint (absent: a trainer without health checks).",
    )
    blocked_seconds: float | None = Field(
        None, ge=0, description="Seconds training was blocked by this save (asynchronous: staging only)."
    )
    durable_seconds: float | None = Field(
        None, ge=0, description="Seconds from the start of this save until its manifest was written."
    )


class GoodputObserved(StatusModel):
    """What the run has shown so far (goodput.py): interruptions, MTBF and checkpoint cost."""

    interruptions: int = Field(0, ge=0, description="Failure-driven restarts plus disruption restarts.")
    mtbf_gpu_hours: float | None = Field(
        None, ge=0, alias="mtbfGPUHours", description="Total GPU-hours per interruption (none before one)."
    )
    mean_checkpoint_seconds: float | None = Field(
        None, ge=0, description="Mean seconds training was blocked per checkpoint save (trainer reports)."
    )


class GoodputLedger(StatusModel):
    """The operator's running sums behind the goodput fields (goodput.py); not for people."""

    time: datetime | None = Field(None, description="Wall-clock GPU-hours are counted up to this time.")
    total_gpu_hours: float = Field(0.0, ge=0, alias="totalGPUHours")
    restart_gpu_hours: float = Field(0.0, ge=0, alias="restartGPUHours")
    checkpoint_seconds: float = Field(0.0, ge=0, description="Sum of blocked seconds of the saves seen.")
    checkpoint_saves: int = Field(0, ge=0, description="Saves that reported their blocked seconds.")
    checkpoint_step: int | None = Field(None, description="Newest checkpoint step counted.")


class EvaluationResult(StatusModel):
    """One evaluation of one checkpoint step."""

    step: int = Field(ge=0)
    job: str | None = Field(None, description="Name of the evaluation Job (absent when run locally).")
    phase: Literal["Running", "Succeeded", "Failed"] = "Running"
    results: dict[str, Any] = Field(
        default_factory=dict, description="Metric name -> value (the evaluator's short JSON)."
    )
    message: str | None = None


class FailureRecord(StatusModel):
    """Why the last attempt ended (for the restart decision and for people)."""

    kind: str
    reason: str
    message: str = ""
    retryable: bool = True
    attempt: int = 0
    worker: int | None = None
    exit_code: int | None = None
    time: datetime | None = None
    failure_class: FailureClass | None = Field(
        None, description="Application, Infrastructure or Scheduling: which restart budget it uses."
    )
    nodes: list[str] = Field(default_factory=list, description="Nodes of the failing worker(s).")


class SuspectNode(StatusModel):
    """A node implicated in an infrastructure failure: later attempts avoid it until `expires`."""

    name: str
    reason: str
    time: datetime | None = None
    expires: datetime | None = None
    failures: int = 1


# ------------------------------------------------------------- status: run health (rollback.py)


class DivergenceReport(StatusModel):
    """Written by trainer rank 0 just before it exits 65: the run diverged."""

    step: int = Field(ge=0, description="The first bad step.")
    kind: str = Field(description="nonfinite (NaN/Inf loss or gradient norm) or spike (loss spike).")
    samples: list[int] | None = Field(
        None, description="[start, end) global sample indices of that step.", min_length=2, max_length=2
    )
    attempt: int | None = Field(None, description="TOKENSMITH_ATTEMPT of the trainer that reported it.")
    time: datetime | None = None


class RollbackBaseline(StatusModel):
    """Where a rollback would return to: the last healthy checkpoint's step and the job's gpuHours when
    the operator first saw it (a rollback loses what was spent after it)."""

    step: int = Field(ge=0)
    gpu_hours: float = Field(0.0, ge=0, alias="gpuHours")


class RollbackRecord(StatusModel):
    """One rollback: the attempt that diverged, where, why (once the replay tells), and what it cost."""

    attempt: int = Field(ge=0, description="The attempt that diverged.")
    step: int | None = Field(None, description="The first bad step (the trainer's report).")
    kind: str = Field("unknown", description="nonfinite, spike, or unknown (exit 65 without a report).")
    cause: RollbackCause = Field(
        "Unknown",
        description="Hardware: the replay on other nodes passed the step; Data: it diverged at the same "
        "step again; Unknown: not decided (yet).",
    )
    samples: list[int] | None = Field(None, description="[start, end) global sample indices of the step.")
    nodes: list[str] = Field(default_factory=list, description="Nodes of the diverged attempt.")
    resume_step: int | None = Field(
        None, description="The healthy checkpoint step the replay starts from (none: from scratch)."
    )
    replay_attempt: int = Field(ge=0, description="The attempt that replays the lost steps.")
    lost_gpu_hours: float = Field(
        0.0, ge=0, alias="lostGPUHours", description="GPU-hours spent since the healthy checkpoint."
    )
    gpu_hours_at: float = Field(0.0, ge=0, alias="gpuHoursAt", description="Job gpuHours at the rollback.")
    time: datetime | None = None


class LLMTrainingJobStatus(StatusModel):
    """The status document; the local runner writes the same one to `status.json`."""

    phase: Phase = "Pending"
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    restarts: int = Field(
        0,
        ge=0,
        description="Failure-driven restarts so far, all classes (suspend/resume and planned restarts "
        "do not count).",
    )
    attempt: int = Field(0, ge=0, description="Current gang attempt (1 = the first); 0 before any gang.")
    start_time: datetime | None = None
    completion_time: datetime | None = None
    attempt_start_time: datetime | None = Field(
        None, description="When the current attempt's gang was created."
    )
    attempt_nodes: int | None = Field(
        None, description="Gang size of the current attempt (spec edits apply from the next attempt)."
    )
    running_since: datetime | None = Field(None, description="When every worker of the attempt was running.")
    gang_ready: bool = Field(False, description="All workers of the current attempt have been seen running.")
    restart_after: datetime | None = Field(None, description="Earliest time of the next attempt (backoff).")
    progress: Progress | None = None
    last_checkpoint: CheckpointRef | None = None
    checkpoints_observed: int = Field(
        0, ge=0, description="Distinct completed checkpoints the operator has seen."
    )
    last_observed_checkpoint_step: int | None = None
    gpu_hours: float = Field(0.0, ge=0, alias="gpuHours")
    cost_usd: float | None = Field(None, ge=0, alias="costUSD")
    accounted_time: datetime | None = Field(None, description="GPU-hours are counted up to this time.")
    evaluations: list[EvaluationResult] = Field(default_factory=list)
    last_failure: FailureRecord | None = None
    restarts_by_class: dict[str, int] = Field(
        default_factory=dict, description="Failure-driven restarts per failure class."
    )
    planned_restarts: int = Field(
        0,
        ge=0,
        description="Restarts for disruption notices (cordon, taint, DisruptionTarget): not failures.",
    )
    attempts_without_progress: int = Field(
        0, ge=0, description="Attempts in a row that failed without a newer checkpoint."
    )
    attempt_resume_step: int | None = Field(
        None, description="Checkpoint step the current attempt resumed from (none: from scratch)."
    )
    gpu_hours_lost_by_class: dict[str, float] = Field(
        default_factory=dict,
        description="GPU-hours of work lost (since the last checkpoint) per failure class.",
    )
    suspect_nodes: list[SuspectNode] = Field(
        default_factory=list, description="Nodes the next attempts avoid (required node anti-affinity)."
    )
    message: str | None = Field(None, description="One line about the current phase.")
    progress_text: str | None = Field(
        None, description="Tokens done / total for `kubectl get`, e.g. 1.2B/7B (17%)."
    )
    # -- run health: rollback and replay (rollback.py) --
    divergence: DivergenceReport | None = Field(
        None, description="The trainer's last divergence report (written by trainer rank 0)."
    )
    last_healthy_checkpoint: CheckpointRef | None = Field(
        None,
        description="The newest healthy checkpoint (written by trainer rank 0): what a rollback resumes.",
    )
    rollback_baseline: RollbackBaseline | None = None
    diverged_exit_time: datetime | None = Field(
        None,
        description="When an exit 65 was first seen before the trainer's divergence report (which gets "
        "a few seconds to arrive: the pod's end and the status patch race).",
    )
    rollbacks: int = Field(0, ge=0, description="Rollbacks to a healthy checkpoint so far.")
    rollback_records: list[RollbackRecord] = Field(default_factory=list)
    skip_samples: list[list[int]] = Field(
        default_factory=list,
        description="[start, end) sample ranges every later attempt skips (cause Data, skipOnRepeat).",
    )
    lost_gpu_hours: dict[str, float] = Field(
        default_factory=dict,
        alias="lostGPUHours",
        description="GPU-hours lost, by cause (goodput.py): redone (work since the last checkpoint "
        "of a failed attempt), rollback (steps redone after a rollback), restart (restart, backoff and "
        "scheduling time), checkpoint (training blocked by saves); productive + lost = total.",
    )
    lost_cost_usd: dict[str, float] = Field(
        default_factory=dict, alias="lostCostUSD", description="lostGPUHours in dollars (with a price)."
    )
    # -- goodput (goodput.py) --
    goodput: float | None = Field(
        None, ge=0, le=1, description="productiveGPUHours / total GPU-hours since the start (wall clock)."
    )
    productive_gpu_hours: float | None = Field(
        None, ge=0, alias="productiveGPUHours", description="GPU-hours of steps that count."
    )
    observed: GoodputObserved | None = None
    checkpoint_every_minutes: float | None = Field(
        None,
        ge=0,
        description="The checkpoint interval of an everyMinutes: auto job (cadence.py): the next attempt's "
        "and, through the job's live-settings ConfigMap, the running attempt's.",
    )
    goodput_ledger: GoodputLedger | None = None


# --------------------------------------------------------------------------------------- helpers


def effective_trainer_config(
    spec: LLMTrainingJobSpec,
    job_name: str | None = None,
    skip_samples: typing.Sequence[typing.Sequence[int]] = (),
) -> TrainerConfig:
    """The trainer configuration the workers run: `spec.trainer` with the job-level sections applied
    (see the module docstring for the precedence rule), plus the sample ranges the operator decided to
    skip (`status.skipSamples`, added to the trainer's own `data.skip_samples`). Raises ValueError when
    the result is invalid (e.g. a global batch that is not a multiple of micro batch x seq_len)."""
    cfg = spec.trainer.model_dump(mode="python")
    if skip_samples:  # only then: a trainer config without the field stays valid
        own = [list(r) for r in cfg["data"].get("skip_samples") or []]
        cfg["data"]["skip_samples"] = own + [list(r) for r in skip_samples if list(r) not in own]
    if spec.model is not None:
        cfg["model"] = spec.model.model_dump(mode="python")
    data = spec.data
    for ours, theirs in (
        ("train_path", "train_path"),
        ("valid_path", "valid_path"),
        ("tokenizer_path", "tokenizer_path"),
    ):
        value = getattr(data, ours)
        if value is not None:
            cfg["data"][theirs] = value
    if data.sources is not None:
        cfg["data"]["sources"] = [s.model_dump(mode="python") for s in data.sources]
        cfg["data"]["train_path"] = None  # job-level sources replace the trainer's one-source shorthand
    elif data.train_path is not None:
        cfg["data"]["sources"] = []
    if data.tokens is not None:
        cfg["train"]["tokens"] = data.tokens
    par = spec.parallelism
    cfg["parallelism"]["tensor"] = par.tensor
    cfg["parallelism"]["pipeline"] = par.pipeline
    if par.zero_stage is not None:
        cfg["deepspeed"]["zero_stage"] = par.zero_stage
    if par.micro_batch is not None:
        cfg["train"]["micro_batch"] = par.micro_batch
    if par.global_batch_tokens is not None:
        cfg["train"]["global_batch_tokens"] = par.global_batch_tokens
    ck = spec.checkpoint
    cfg["checkpoint"]["dir"] = checkpoint_dir(spec, job_name)
    for field in ("every_steps", "every_minutes", "keep"):
        value = getattr(ck, field)
        if value is not None:
            cfg["checkpoint"][field] = value
    if ck.auto:  # the interval this attempt starts with; the running trainer is told of changes (cadence.py)
        from tokensmith.operator import cadence

        cfg["checkpoint"]["every_minutes"] = cadence.starting_minutes(spec)
    return TrainerConfig.model_validate(cfg)


def checkpoint_dir(spec: LLMTrainingJobSpec, job_name: str | None) -> str:
    """The job's checkpoint directory as the pods see it: mountPath/subPath (default: the job name)."""
    sub = spec.checkpoint.sub_path if spec.checkpoint.sub_path is not None else (job_name or "")
    base = spec.checkpoint.mount_path.rstrip("/") or "/"
    return f"{base}/{sub.strip('/')}" if sub.strip("/") else base


def token_budget(spec: LLMTrainingJobSpec) -> int | None:
    """Tokens the run trains for (`data.tokens`, else the trainer's `train.tokens`)."""
    return spec.data.tokens if spec.data.tokens is not None else spec.trainer.train.tokens


def build_manifest(
    name: str,
    spec: LLMTrainingJobSpec | dict[str, Any],
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A complete `LLMTrainingJob` manifest ({apiVersion, kind, metadata, spec}) ready for
    `kubectl apply` or `tokensmith run --local`. The spec is validated; fields left at their
    defaults are omitted so that the file stays short and future defaults apply."""
    model = spec if isinstance(spec, LLMTrainingJobSpec) else LLMTrainingJobSpec.model_validate(spec)
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": spec_to_dict(model),
    }


def spec_to_dict(spec: LLMTrainingJobSpec) -> dict[str, Any]:
    """The spec as Kubernetes JSON (camelCase, defaults and nulls left out)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude_none=True)


def status_to_dict(status: LLMTrainingJobStatus) -> dict[str, Any]:
    """The status as Kubernetes JSON (camelCase, nulls left out)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def format_validation_error(err: ValidationError, prefix: str = "spec") -> str:
    """A pydantic error as one line per problem, with Kubernetes-style field paths."""
    lines = []
    for item in err.errors():
        loc = ".".join(str(part) for part in item["loc"] if part not in ("function-after",))
        msg = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{prefix}.{loc}: {msg}" if loc else f"{prefix}: {msg}")
    return "; ".join(lines)


def parse_manifest(doc: dict[str, Any]) -> tuple[dict[str, Any], LLMTrainingJobSpec]:
    """Check apiVersion/kind of a manifest and validate its spec; returns (metadata, spec).
    Raises ValueError with one line per problem."""
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ValueError(
            f"expected apiVersion {API_VERSION} and kind {KIND}, "
            f"got {doc.get('apiVersion')!r} {doc.get('kind')!r}"
        )
    metadata = doc.get("metadata") or {}
    if not metadata.get("name"):
        raise ValueError("metadata.name is required")
    return metadata, LLMTrainingJobSpec.model_validate(doc.get("spec") or {})
