"""The cluster admin's policy for what an `LLMTrainingJob` may ask for, checked before any pod exists
(pure; the operator's flags and the Helm chart's `policy` values set it; docs/security.md explains it).

The operator creates pods on behalf of whoever may create `LLMTrainingJob`s, so without a policy a
person who may create jobs but not pods could still get any volume (a `hostPath` of the node), any
image and any service account of the namespace through a job. The policy closes that: a job that asks
for more ends `Failed/PolicyViolation` with one line naming the field, the value and the flag that
would allow it. What is the same for every cluster (capabilities only with the baseline profile) is
also a CEL rule in the CRD, so the API server refuses it at `kubectl apply`.

Not to be confused with `policy.py`, the restart policy's backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tokensmith.operator.spec import LLMTrainingJobSpec

# The default allowed volume types: storage for data and checkpoints, and the namespaced objects a job
# is meant to read. Pod Security "restricted" allows the same minus nfs; no hostPath (the node's files).
DEFAULT_VOLUME_TYPES = frozenset(
    {
        "persistentVolumeClaim",
        "csi",
        "nfs",
        "emptyDir",
        "configMap",
        "secret",
        "projected",
        "ephemeral",
        "downwardAPI",  # only the pod's own metadata
    }
)
DEFAULT_PROFILES = frozenset({"restricted", "baseline"})
RESERVED_LABEL_PREFIX = "tokensmith.dev/"
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
REASON = "PolicyViolation"


@dataclass(frozen=True)
class AdmissionPolicy:
    """What jobs may ask for. The defaults are the safe ones; the chart's `policy` values relax them."""

    volume_types: frozenset[str] = DEFAULT_VOLUME_TYPES
    image_prefixes: tuple[str, ...] = ()  # empty: any image
    allow_service_account: bool = False  # may a job name its own cluster.serviceAccountName?
    # when allowed: labels the named ServiceAccount must carry (empty: any account of the namespace)
    service_account_selector: tuple[tuple[str, str], ...] = ()
    profiles: frozenset[str] = DEFAULT_PROFILES  # cluster.securityProfile values allowed
    capabilities: frozenset[str] = field(default_factory=frozenset)  # cluster.addCapabilities allowed

    @property
    def needs_service_accounts(self) -> bool:
        """Whether the driver must observe ServiceAccounts' labels for `check`."""
        return self.allow_service_account and bool(self.service_account_selector)


def check(
    spec: LLMTrainingJobSpec,
    policy: AdmissionPolicy,
    accounts: Mapping[str, Mapping[str, str]] | None = None,
) -> str | None:
    """The first way the job breaks the policy, as one line; None when it complies.
    `accounts`: the labels of the namespace's ServiceAccounts, by name (needed only with a selector)."""
    for problem in _problems(spec, policy, accounts):
        return problem
    return None


def _problems(
    spec: LLMTrainingJobSpec, policy: AdmissionPolicy, accounts: Mapping[str, Mapping[str, str]] | None
) -> Iterable[str]:
    c = spec.cluster
    # Always: the operator's own labels select pods for Services, NetworkPolicies and its bookkeeping
    # (a job labelled as another job would join that job's network), and an annotation must not take
    # away the AppArmor confinement Pod Security requires.
    for key in c.labels:
        if key.startswith(RESERVED_LABEL_PREFIX):
            yield f"spec.cluster.labels {key!r}: the {RESERVED_LABEL_PREFIX} labels are the operator's own"
    for key, value in c.annotations.items():
        if (
            key.startswith(APPARMOR_ANNOTATION)
            and value != "runtime/default"
            and not value.startswith("localhost/")
        ):
            yield (
                f"spec.cluster.annotations {key}={value}: AppArmor must stay runtime/default or localhost/* "
                "(Pod Security baseline)"
            )
    volumes = [("spec.checkpoint.volume", spec.checkpoint.volume)] + [
        (f"spec.cluster.volumes[{v.name}].source", v.source) for v in c.volumes
    ]
    for where, source in volumes:
        for kind in source:
            if kind not in policy.volume_types:
                yield (
                    f"{where} is a {kind} volume, which the operator's policy does not allow (allowed: "
                    f"{', '.join(sorted(policy.volume_types))}; "
                    "the admin can add it with --allowed-volume-types)"
                )
    if "secret" not in policy.volume_types:
        for var in c.env:
            if var.value_from and "secretKeyRef" in var.value_from:
                yield (
                    f"spec.cluster.env[{var.name}] reads a Secret, which the operator's policy does not "
                    "allow (secret is not an allowed volume type)"
                )
    images = [("spec.cluster.image", c.image), ("spec.evaluation.image", spec.evaluation.image)]
    for where, image in images:
        if image and policy.image_prefixes and not image.startswith(policy.image_prefixes):
            yield (
                f"{where} {image!r} is not from an allowed registry (allowed prefixes: "
                f"{', '.join(policy.image_prefixes)}; see --allowed-image-prefix)"
            )
    account = c.service_account_name
    if account is not None:
        if not policy.allow_service_account:
            yield (
                f"spec.cluster.serviceAccountName {account!r}: jobs may not choose their service account "
                "under the operator's policy (leave it unset: the operator creates one that may only "
                "report this job's status; the admin can allow it with --allow-job-service-account)"
            )
        elif policy.service_account_selector:
            labels = (accounts or {}).get(account)
            wanted = dict(policy.service_account_selector)
            if labels is None or any(labels.get(k) != v for k, v in wanted.items()):
                selector = ",".join(f"{k}={v}" for k, v in policy.service_account_selector)
                yield (
                    f"spec.cluster.serviceAccountName {account!r} is not a ServiceAccount of this namespace "
                    f"labelled {selector} (the operator's policy allows only those)"
                )
    if c.security_profile not in policy.profiles:
        yield (
            f"spec.cluster.securityProfile {c.security_profile} is not allowed by the operator's policy "
            f"(allowed: {', '.join(sorted(policy.profiles))})"
        )
    extra = sorted(set(c.add_capabilities) - policy.capabilities)
    if extra:
        allowed = ", ".join(sorted(policy.capabilities)) or "none"
        yield (
            f"spec.cluster.addCapabilities {extra} not allowed by the operator's policy (allowed: {allowed}; "
            "see --allow-capability)"
        )


# core/v1 VolumeSource's fields: a volume type outside these is a typo.
VOLUME_TYPES = frozenset(
    {
        "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi",
        "downwardAPI", "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk",
        "gitRepo", "glusterfs", "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim",
        "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
        "storageos", "vsphereVolume",
    }
)  # fmt: skip


def from_flags(
    volume_types: str | None = None,
    image_prefixes: Iterable[str] = (),
    allow_service_account: bool = False,
    service_account_selector: str = "",
    profiles: str | None = None,
    capabilities: Iterable[str] = (),
) -> AdmissionPolicy:
    """The policy from `tokensmith operator run`'s flags (comma-separated lists); ValueError on a typo."""
    kw: dict[str, object] = {}
    if volume_types is not None:
        chosen = frozenset(filter(None, (t.strip() for t in volume_types.split(","))))
        unknown = sorted(chosen - VOLUME_TYPES)
        if unknown:
            raise ValueError(
                f"--allowed-volume-types: unknown volume type(s) {unknown} (core/v1 VolumeSource fields)"
            )
        kw["volume_types"] = chosen
    if profiles is not None:
        chosen = frozenset(filter(None, (t.strip() for t in profiles.split(","))))
        if not chosen or chosen - DEFAULT_PROFILES:
            raise ValueError(f"--allowed-security-profiles: {profiles!r}: choose from restricted, baseline")
        kw["profiles"] = chosen
    caps = frozenset(c.strip().upper() for c in capabilities if c.strip())
    return AdmissionPolicy(
        image_prefixes=tuple(p for p in image_prefixes if p),
        allow_service_account=allow_service_account,
        service_account_selector=parse_selector(service_account_selector),
        capabilities=caps,
        **kw,  # type: ignore[arg-type]
    )


def parse_selector(text: str) -> tuple[tuple[str, str], ...]:
    """`key=value,key2=value2` (a Kubernetes equality selector) as pairs; raises ValueError."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"service-account selector {text!r}: expected key=value[,key=value]")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def pod_security_refusal(status: int, message: str) -> str | None:
    """When the API server's PodSecurity admission refused a pod (403, "violates PodSecurity"): the
    one-line reason the job fails with (retrying cannot help until the job or the namespace changes)."""
    if status != 403 or "violates PodSecurity" not in message:
        return None
    why = message.split("violates ", 1)[1].splitlines()[0]
    return (
        f"the namespace refused the job's pods: {why}; fix the job (e.g. a PVC instead of an nfs volume, "
        "securityProfile: restricted) or the namespace's pod-security.kubernetes.io/enforce label "
        "(docs/security.md)"
    )
