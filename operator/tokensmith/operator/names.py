"""Names and labels of a job's children, in one place (the operator, the tests and the Helm chart's
documentation rely on them). Job names are limited by the CRD (`metadata.name`: a DNS-1035 label
of at most 45 characters) so that every derived name stays a valid 63-character label."""

from __future__ import annotations

MAX_JOB_NAME = 45
JOB_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

LABEL_JOB = "tokensmith.dev/job"
LABEL_ATTEMPT = "tokensmith.dev/attempt"
LABEL_ROLE = "tokensmith.dev/role"
LABEL_INDEX = "tokensmith.dev/worker-index"
LABEL_STEP = "tokensmith.dev/step"
ROLE_WORKER = "worker"
ROLE_EVAL = "eval"
ROLE_RENDEZVOUS = "rendezvous"
ROLE_CONFIG = "config"
ANNOTATION_ATTEMPT = "tokensmith.dev/attempt"


def service_name(job: str) -> str:
    """The headless rendezvous Service (also the workers' DNS subdomain)."""
    return job


def config_map_name(job: str) -> str:
    return f"{job}-config"


def live_config_map_name(job: str) -> str:
    """Settings the running trainer picks up without a restart (the adaptive checkpoint interval)."""
    return f"{job}-live"


def pod_group_name(job: str) -> str:
    return job


def worker_pod_name(job: str, attempt: int, index: int) -> str:
    return f"{job}-a{attempt}-w{index}"


def worker_hostname(index: int) -> str:
    """Stable across attempts, so MASTER_ADDR never changes: worker-0.<service>.<namespace>.svc."""
    return f"worker-{index}"


def master_addr(job: str, namespace: str) -> str:
    return f"{worker_hostname(0)}.{service_name(job)}.{namespace}.svc"


def eval_job_name(job: str, step: int) -> str:
    return f"{job}-eval-{step}"


def job_labels(job: str) -> dict[str, str]:
    return {
        LABEL_JOB: job,
        "app.kubernetes.io/name": "tokensmith",
        "app.kubernetes.io/managed-by": "tokensmith-operator",
    }
