"""What makes the pods the operator creates pass Pod Security "restricted" (pure; see podsecurity.py for
the check and docs/security.md for the threat model).

Every worker and evaluation pod runs as the images' non-root user (uid/gid 10001, images/*/Dockerfile),
with RuntimeDefault seccomp, no privilege escalation, every capability dropped and a read-only root
filesystem. The trainer and the evaluator write only to:
- `/tmp` (Python's tempfile, torch.compile/Inductor's default cache `/tmp/torchinductor_<user>`,
  DeepSpeed's and torchrun's scratch): a disk-backed emptyDir;
- `$HOME=/home/tokensmith`, which holds the caches the images point at (TRITON_CACHE_DIR,
  TORCH_EXTENSIONS_DIR for DeepSpeed's JIT ops, HF_HOME for datasets and tokenizers, XDG_CACHE_HOME for
  the rest): a disk-backed emptyDir (the images' WORKDIR, so a relative path written there works too);
- `/dev/shm` (NCCL, DataLoader workers): a memory-backed emptyDir;
- the checkpoint volume and whatever volumes the job mounts read-write.
The environment variables are set to these paths so that an image with another HOME still writes where
the volumes are; a job's own `cluster.env` entries win.

`securityProfile: baseline` is the documented opt-in for fabrics that need more (e.g. IPC_LOCK for
RDMA memory registration): privilege escalation is no longer forbidden and the capabilities are the
runtime's defaults plus `cluster.addCapabilities` (file capabilities need no_new_privs off); the pod
stays non-root with RuntimeDefault seccomp and a read-only root filesystem.
"""

from __future__ import annotations

from typing import Any, Literal

Profile = Literal["restricted", "baseline"]
PROFILES: tuple[Profile, ...] = ("restricted", "baseline")

# The images' user and group (images/*/Dockerfile: useradd --uid 10001 --gid 10001, USER 10001:10001).
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001
HOME = "/home/tokensmith"
TMP = "/tmp"
SHM = "/dev/shm"
CACHE = f"{HOME}/.cache"
# Where the trainer and evaluator (and the libraries under them) write, as environment variables.
SCRATCH_ENV: tuple[tuple[str, str], ...] = (
    ("HOME", HOME),
    ("TMPDIR", TMP),
    ("XDG_CACHE_HOME", CACHE),
    ("TRITON_CACHE_DIR", f"{CACHE}/triton"),
    ("TORCH_EXTENSIONS_DIR", f"{CACHE}/torch_extensions"),
    ("HF_HOME", f"{CACHE}/huggingface"),
    ("MPLCONFIGDIR", f"{CACHE}/matplotlib"),
)
# (volume name, mount path, emptyDir): disk-backed scratch; the memory-backed /dev/shm is separate.
SCRATCH_VOLUMES: tuple[tuple[str, str], ...] = (("scratch-tmp", TMP), ("scratch-home", HOME))


def pod_security_context(profile: Profile = "restricted") -> dict[str, Any]:
    """Pod level: non-root with the images' ids; fsGroup makes a root-owned volume writable for them."""
    del profile  # both profiles run non-root with RuntimeDefault seccomp
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        # chown a volume only when its root is not ours yet: a checkpoint volume of terabytes is not
        # walked again at every gang restart
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(
    profile: Profile = "restricted", add_capabilities: tuple[str, ...] | list[str] = ()
) -> dict[str, Any]:
    """Container level: restricted drops everything; baseline keeps the runtime's defaults plus what
    the job adds (only allowed there: the CRD and the admission policy say so)."""
    if profile == "restricted":
        return {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        }
    out: dict[str, Any] = {"readOnlyRootFilesystem": True, "privileged": False}
    if add_capabilities:
        out["capabilities"] = {"add": sorted(set(add_capabilities))}
    return out


def harden(
    pod_spec: dict[str, Any],
    profile: Profile = "restricted",
    add_capabilities: tuple[str, ...] | list[str] = (),
    shm_size: str | None = None,
) -> dict[str, Any]:
    """Apply the profile to a pod spec in place (and return it): security contexts, the scratch
    volumes and their environment. `shm_size` adds a memory-backed /dev/shm when the pod has none."""
    pod_spec["securityContext"] = pod_security_context(profile)
    volumes = pod_spec.setdefault("volumes", [])
    mounted = {m.get("mountPath") for c in pod_spec["containers"] for m in c.get("volumeMounts", [])}
    # a path the job already mounts a volume at (its own /tmp, say) keeps that volume
    scratch = [(name, path) for name, path in SCRATCH_VOLUMES if path not in mounted]
    if shm_size is not None and SHM not in mounted:
        scratch.append(("dshm", SHM))
    for name, path in scratch:
        medium = {"medium": "Memory", "sizeLimit": shm_size} if path == SHM else {}
        volumes.append({"name": name, "emptyDir": medium})
    for container in pod_spec["containers"]:
        container["securityContext"] = container_security_context(profile, add_capabilities)
        mounts = container.setdefault("volumeMounts", [])
        mounts += [{"name": name, "mountPath": path} for name, path in scratch]
        env = container.setdefault("env", [])
        names = {e["name"] for e in env}
        container["env"] = [{"name": k, "value": v} for k, v in SCRATCH_ENV if k not in names] + env
    return pod_spec


# Least privilege in the gang: only rank 0 reports status, so only its pod holds an API credential, and
# that one is a bound token the kubelet rotates (the trainer re-reads it on every request).
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "trainer-token"
TOKEN_EXPIRATION_SECONDS = 600  # the API server's minimum; the kubelet refreshes it at 80 %


def service_account_token(pod_spec: dict[str, Any], rank_zero: bool) -> dict[str, Any]:
    """No automatic token in any worker; rank 0 alone gets a projected, short-lived one at the standard
    path (token, the cluster CA, the namespace: what client libraries expect there)."""
    pod_spec["automountServiceAccountToken"] = False
    if not rank_zero:
        return pod_spec
    pod_spec.setdefault("volumes", []).append(
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_EXPIRATION_SECONDS}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                        }
                    },
                ],
            },
        }
    )
    for container in pod_spec["containers"]:
        container.setdefault("volumeMounts", []).append(
            {"name": TOKEN_VOLUME, "mountPath": SA_DIR, "readOnly": True}
        )
    return pod_spec


def mounts_token(pod_spec: dict[str, Any]) -> bool:
    """Whether a pod can read a service-account token (automounted or projected)."""
    if pod_spec.get("automountServiceAccountToken", True):
        return True
    return any(
        "serviceAccountToken" in src
        for v in pod_spec.get("volumes") or []
        for src in (v.get("projected") or {}).get("sources") or []
    )
