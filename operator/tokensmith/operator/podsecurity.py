"""A check of pods against the Kubernetes Pod Security Standards (PSS), "baseline" and "restricted".

Implemented from the published standard, https://kubernetes.io/docs/concepts/security/pod-security-standards/
(the policy of the current Kubernetes release, as the PodSecurity admission controller enforces it with
`pod-security.kubernetes.io/enforce-version: latest`). No maintained Python library on PyPI implements
it (the general IaC scanners' Kubernetes rules do not map one-to-one onto the two profiles), so each
control below names the section of the standard it comes from; the tests feed deliberately bad pods
through every control so that each one demonstrably fails.

`violations(obj, level)` takes a Pod, a pod template holder (Job, Deployment, StatefulSet, DaemonSet,
ReplicaSet, CronJob) or a bare pod spec, and returns one line per broken control; an empty list means
the pod would be admitted by a namespace labelled `pod-security.kubernetes.io/enforce: <level>`.
`level_of(obj)` is the strictest profile a pod passes ("restricted", "baseline" or "privileged").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["baseline", "restricted"]
LEVELS: tuple[Level, ...] = ("baseline", "restricted")

# Baseline "Capabilities": adding anything outside this list is forbidden.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Restricted "Capabilities": drop ALL, add at most NET_BIND_SERVICE.
RESTRICTED_ADD_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Restricted "Volume Types".
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
# Baseline "Sysctls": the safe set.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# Baseline "SELinux": allowed types (unset/"" also allowed); user and role must be unset.
SELINUX_TYPES = frozenset({"container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
TEMPLATE_KINDS = {"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}


@dataclass(frozen=True)
class PodView:
    """One pod's metadata and spec, wherever it sits in an object."""

    where: str  # e.g. "Pod/tiny-a1-w0" or "Job/tiny-eval-50 template"
    metadata: dict[str, Any]
    spec: dict[str, Any]


def pods_of(obj: dict[str, Any]) -> Iterator[PodView]:
    """The pods an object creates: itself (Pod), its template (workload kinds), its job template
    (CronJob); nothing for other kinds."""
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name", "?")
    if kind == "Pod":
        yield PodView(f"Pod/{name}", obj.get("metadata") or {}, obj.get("spec") or {})
    elif kind in TEMPLATE_KINDS:
        template = (obj.get("spec") or {}).get("template") or {}
        yield PodView(f"{kind}/{name} template", template.get("metadata") or {}, template.get("spec") or {})
    elif kind == "CronJob":
        template = ((obj.get("spec") or {}).get("jobTemplate") or {}).get("spec", {}).get("template") or {}
        yield PodView(f"CronJob/{name} template", template.get("metadata") or {}, template.get("spec") or {})
    elif kind is None and "containers" in obj:  # a bare PodSpec
        yield PodView("pod spec", {}, obj)


def violations(obj: dict[str, Any], level: Level = "restricted") -> list[str]:
    """Every control of `level` (restricted includes baseline) the object's pods break, one line each."""
    out: list[str] = []
    for pod in pods_of(obj):
        problems = _baseline(pod.metadata, pod.spec)
        if level == "restricted":
            problems += _restricted(pod.spec)
        out += [f"{pod.where}: {p}" for p in problems]
    return out


def passes(obj: dict[str, Any], level: Level = "restricted") -> bool:
    return not violations(obj, level)


def level_of(obj: dict[str, Any]) -> Literal["restricted", "baseline", "privileged"]:
    """The strictest Pod Security Standard every pod of the object passes."""
    if passes(obj, "restricted"):
        return "restricted"
    return "baseline" if passes(obj, "baseline") else "privileged"


# ------------------------------------------------------------------------------ the controls


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in CONTAINER_LISTS:
        for c in spec.get(key) or []:
            yield f"{key}[{c.get('name', '?')}]", c


def _sc(c: dict[str, Any]) -> dict[str, Any]:
    return c.get("securityContext") or {}


def _baseline(meta: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    # HostProcess
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: securityContext.windowsOptions.hostProcess must be unset or false")
    # Host Namespaces
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"Host Namespaces: {field} must be unset or false")
    # HostPath Volumes
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"HostPath Volumes: volume {v.get('name')!r} is a hostPath")
    # AppArmor (annotations, the pre-1.30 form, and the field)
    for key, value in (meta.get("annotations") or {}).items():
        if (
            key.startswith(APPARMOR_ANNOTATION)
            and value != "runtime/default"
            and not value.startswith("localhost/")
        ):
            out.append(f"AppArmor: annotation {key}={value} must be runtime/default or localhost/*")
    out += _apparmor("securityContext", psc)
    # SELinux, Seccomp at pod level
    out += _selinux("securityContext", psc)
    seccomp = (psc.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_TYPES:
        out.append(
            f"Seccomp: securityContext.seccompProfile.type {seccomp} must be RuntimeDefault or Localhost"
        )
    # Sysctls
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: {s.get('name')} is not in the safe set")
    for where, c in _containers(spec):
        sc = _sc(c)
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(
                f"HostProcess: {where}.securityContext.windowsOptions.hostProcess must be unset or false"
            )
        # Privileged Containers
        if sc.get("privileged"):
            out.append(f"Privileged Containers: {where} is privileged")
        # Capabilities
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"Capabilities: {where} adds {sorted(added - BASELINE_CAPABILITIES)}")
        # Host Ports
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"Host Ports: {where} uses hostPort {port['hostPort']}")
        out += _apparmor(f"{where}.securityContext", sc)
        out += _selinux(f"{where}.securityContext", sc)
        # /proc Mount Type
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"/proc Mount Type: {where}.securityContext.procMount must be Default")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in SECCOMP_TYPES:
            out.append(f"Seccomp: {where} seccompProfile.type {seccomp} must be RuntimeDefault or Localhost")
    return out


def _apparmor(where: str, sc: dict[str, Any]) -> list[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    if kind is not None and kind not in APPARMOR_TYPES:
        return [f"AppArmor: {where}.appArmorProfile.type {kind} must be RuntimeDefault or Localhost"]
    return []


def _selinux(where: str, sc: dict[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type") not in (None, "", *SELINUX_TYPES):
        out.append(f"SELinux: {where}.seLinuxOptions.type {opts['type']} is not a container type")
    for field in ("user", "role"):
        if opts.get(field):
            out.append(f"SELinux: {where}.seLinuxOptions.{field} must be unset")
    return out


def _restricted(spec: dict[str, Any]) -> list[str]:
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    # Volume Types
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if kinds - RESTRICTED_VOLUME_TYPES:
            out.append(f"Volume Types: volume {v.get('name')!r} is {sorted(kinds)[0]}, not an allowed type")
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in SECCOMP_TYPES
    # Running as Non-root user (pod level)
    if psc.get("runAsUser") == 0:
        out.append("Running as Non-root user: securityContext.runAsUser must not be 0")
    for where, c in _containers(spec):
        sc = _sc(c)
        # Privilege Escalation
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(
                f"Privilege Escalation: {where}.securityContext.allowPrivilegeEscalation must be false"
            )
        # Running as Non-root: set on the container, or on the pod and not overridden
        nonroot = sc.get("runAsNonRoot")
        if nonroot is False or (nonroot is None and not pod_nonroot):
            out.append(f"Running as Non-root: {where} must run with runAsNonRoot: true (pod or container)")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: {where}.securityContext.runAsUser must not be 0")
        # Seccomp: RuntimeDefault or Localhost on the container, or on the pod
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None and not pod_seccomp:
            out.append(
                f"Seccomp: {where} needs seccompProfile RuntimeDefault or Localhost (pod or container)"
            )
        # Capabilities: drop ALL, add only NET_BIND_SERVICE
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities: {where} must drop ALL")
        added = set(caps.get("add") or [])
        if added - RESTRICTED_ADD_CAPABILITIES:
            out.append(f"Capabilities: {where} may add only NET_BIND_SERVICE, adds {sorted(added)}")
    return out
