"""Progress reports from trainer rank 0 to whoever runs it (docs/architecture.md, "Progress reports").

Three reporters behind one small interface:
- `NullReporter`: outside a cluster and without a report file (nothing to tell);
- `FileReporter`: JSON lines appended to the file named by `TOKENSMITH_REPORT_FILE` (the local runner
  tails it): `{"type": "progress"|"checkpoint"|"diverged"|"done", "step", ..., "time"}`; a checkpoint
  event carries `healthy`, `blocked_s` and `durable_s`; `diverged` carries `kind` and `samples` [start,
  end), the global sample positions of the first bad step, and `attempt` (sent before the trainer
  exits 65);
- `KubernetesReporter`: when `TOKENSMITH_JOB_NAME` and `TOKENSMITH_JOB_NAMESPACE` are set and a
  service-account token exists, a JSON merge patch (RFC 7386) of the job's `status` subresource:
  `status.progress` {step, tokens, loss, heartbeatTime, tokensPerSecond, totalTokens, sourceTokens}
  (rate-limited) and, on each completed checkpoint, `status.lastCheckpoint` {step, path, time, healthy,
  blockedSeconds, durableSeconds} (and `status.lastHealthyCheckpoint` {step, path, time} when healthy);
  before exit 65, `status.divergence` {step, kind, samples, attempt, time}. Standard library only (the
  trainer image has no Kubernetes client); a background thread sends, so a slow or failing API server
  never stalls training; failures are logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import ssl
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("tokensmith.trainer")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ATTEMPT_ENV = "TOKENSMITH_ATTEMPT"  # set by both drivers (the pod builder, the local runner)
GROUP_VERSION = "tokensmith.dev/v1alpha1"
PLURAL = "llmtrainingjobs"


def attempt_from_env() -> int | None:
    """The attempt this trainer belongs to (`TOKENSMITH_ATTEMPT`), None when unset or not a number."""
    value = os.environ.get(ATTEMPT_ENV, "").strip()
    return int(value) if value.isdigit() else None


def rfc3339(t: float | None = None) -> str:
    """UTC time as RFC 3339 with a Z suffix (what Kubernetes writes), second precision."""
    moment = datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Reporter(Protocol):
    def progress(
        self, step: int, tokens: int, loss: float, lr: float, tokens_per_s: float, **extra: Any
    ) -> None: ...

    def checkpoint(self, step: int, path: str, **extra: Any) -> None: ...

    def diverged(self, step: int, kind: str, samples: list[int]) -> None: ...

    def sigterm(self, step: int, saved: bool, grace_left_s: float, expected_save_s: float) -> None: ...

    def done(self, step: int, tokens: int) -> None: ...

    def close(self) -> None: ...


class NullReporter:
    def progress(
        self, step: int, tokens: int, loss: float, lr: float, tokens_per_s: float, **extra: Any
    ) -> None:
        pass

    def checkpoint(self, step: int, path: str, **extra: Any) -> None:
        pass

    def diverged(self, step: int, kind: str, samples: list[int]) -> None:
        pass

    def sigterm(self, step: int, saved: bool, grace_left_s: float, expected_save_s: float) -> None:
        pass

    def done(self, step: int, tokens: int) -> None:
        pass

    def close(self) -> None:
        pass


class JsonLines:
    """Append-only JSON lines, one write and flush per record (readers tail the file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()  # the checkpoint writer thread reports too

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=float) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class FileReporter:
    """The local runner's channel: every event, unthrottled, as a JSON line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._out = JsonLines(path)

    def progress(
        self, step: int, tokens: int, loss: float, lr: float, tokens_per_s: float, **extra: Any
    ) -> None:
        self._out.write(
            {
                "type": "progress",
                "step": step,
                "tokens": tokens,
                "loss": loss,
                "lr": lr,
                "tokens_per_s": tokens_per_s,
                **extra,
                "time": rfc3339(),
            }
        )

    def checkpoint(self, step: int, path: str, **extra: Any) -> None:
        self._out.write({"type": "checkpoint", "step": step, "path": path, **extra, "time": rfc3339()})

    def diverged(self, step: int, kind: str, samples: list[int]) -> None:
        entry = divergence_patch(step, kind, samples, attempt_from_env())["status"]["divergence"]
        self._out.write({"type": "diverged", **entry})

    def sigterm(self, step: int, saved: bool, grace_left_s: float, expected_save_s: float) -> None:
        self._out.write(
            {
                "type": "sigterm",
                "step": step,
                "saved": saved,
                "grace_left_s": round(grace_left_s, 3),
                "expected_save_s": round(expected_save_s, 3),
                "time": rfc3339(),
            }
        )

    def done(self, step: int, tokens: int) -> None:
        self._out.write({"type": "done", "step": step, "tokens": tokens, "time": rfc3339()})

    def close(self) -> None:
        self._out.close()


def progress_patch(
    step: int,
    tokens: int,
    loss: float,
    tokens_per_s: float | None = None,
    total_tokens: int | None = None,
    source_tokens: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The merge patch for `status.progress` (camelCase, as the operator's status model spells it)."""
    progress: dict[str, Any] = {"step": step, "tokens": tokens, "loss": loss, "heartbeatTime": rfc3339()}
    if source_tokens is not None:
        progress["sourceTokens"] = dict(source_tokens)  # the realised data mixture
    if tokens_per_s is not None:
        progress["tokensPerSecond"] = round(tokens_per_s, 1)
    if total_tokens is not None:
        progress["totalTokens"] = total_tokens
    return {"status": {"progress": progress}}


def checkpoint_patch(step: int, path: str, **extra: Any) -> dict[str, Any]:
    """`status.lastCheckpoint` {step, path, time, healthy, blockedSeconds, durableSeconds}; a healthy one
    is also `status.lastHealthyCheckpoint` {step, path, time} (what a rollback resumes from)."""
    names = {"healthy": "healthy", "blocked_s": "blockedSeconds", "durable_s": "durableSeconds"}
    entry = {"step": step, "path": path, "time": rfc3339()}
    entry.update({names[k]: v for k, v in extra.items() if k in names and v is not None})
    status: dict[str, Any] = {"lastCheckpoint": entry}
    if extra.get("healthy"):
        status["lastHealthyCheckpoint"] = {"step": step, "path": path, "time": entry["time"]}
    return {"status": status}


def divergence_patch(step: int, kind: str, samples: list[int], attempt: int | None = None) -> dict[str, Any]:
    """`status.divergence` {step, kind, samples: [start, end), attempt, time}: the first bad step of a
    run that stopped with exit 65 (the operator decides the rollback from it). `attempt` lets the
    operator tell this attempt's report from an earlier one's without comparing clocks (rollback.py);
    left out when unknown (a trainer started by hand)."""
    entry: dict[str, Any] = {"step": step, "kind": kind, "samples": list(samples)}
    if attempt is not None:
        entry["attempt"] = attempt
    entry["time"] = rfc3339()
    return {"status": {"divergence": entry}}


def sigterm_patch(step: int, saved: bool, grace_left_s: float, expected_save_s: float) -> dict[str, Any]:
    """`status.progress.sigterm` {step, saved, graceLeftSeconds, expectedSaveSeconds}: whether the
    SIGTERM checkpoint fit the grace period (saved when the last save took under half of what was left)."""
    entry = {
        "step": step,
        "saved": saved,
        "graceLeftSeconds": round(grace_left_s, 3),
        "expectedSaveSeconds": round(expected_save_s, 3),
    }
    return {"status": {"progress": {"sigterm": entry}}}


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge of two patches (b wins), so a queued patch can absorb a newer one."""
    out = dict(a)
    for key, value in b.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


class KubernetesReporter:
    """Patches `/apis/tokensmith.dev/v1alpha1/namespaces/{ns}/llmtrainingjobs/{name}/status`."""

    def __init__(
        self,
        api: str,
        namespace: str,
        name: str,
        token_path: Path | None = SA_DIR / "token",
        ca_path: Path | None = SA_DIR / "ca.crt",
        min_interval_s: float = 15.0,
        timeout_s: float = 10.0,
        total_tokens: int | None = None,
        attempt: int | None = None,
    ) -> None:
        self.attempt = attempt
        self.url = f"{api.rstrip('/')}/apis/{GROUP_VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        self.token_path, self.ca_path = token_path, ca_path
        self.min_interval_s, self.timeout_s = min_interval_s, timeout_s
        self.total_tokens = total_tokens
        self.sent = 0
        self.failures = 0
        self._last_progress = float("-inf")
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._wake: queue.Queue[bool] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="tokensmith-k8s-reporter", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, total_tokens: int | None = None) -> KubernetesReporter | None:
        """The in-cluster reporter, or None when not inside a job's pod (or without a token)."""
        name, namespace = os.environ.get("TOKENSMITH_JOB_NAME"), os.environ.get("TOKENSMITH_JOB_NAMESPACE")
        token = Path(os.environ.get("TOKENSMITH_SA_TOKEN_FILE", SA_DIR / "token"))
        if not name or not namespace or not token.is_file():
            return None
        host, port = (
            os.environ.get("KUBERNETES_SERVICE_HOST"),
            os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
        )
        if host and ":" in host:
            host = f"[{host}]"  # an IPv6 service address needs brackets in a URL
        api = os.environ.get("TOKENSMITH_KUBE_API") or (f"https://{host}:{port}" if host else None)
        if api is None:
            return None
        interval = float(os.environ.get("TOKENSMITH_REPORT_INTERVAL_SECONDS", "15"))
        ca = token.parent / "ca.crt"
        ca_path = ca if ca.is_file() else None
        return cls(
            api,
            namespace,
            name,
            token,
            ca_path,
            interval,
            total_tokens=total_tokens,
            attempt=attempt_from_env(),
        )

    # --- Reporter interface -----------------------------------------------------------------------
    def progress(
        self, step: int, tokens: int, loss: float, lr: float, tokens_per_s: float, **extra: Any
    ) -> None:
        now = time.monotonic()
        if now - self._last_progress < self.min_interval_s:
            return
        self._last_progress = now
        self._submit(
            progress_patch(step, tokens, loss, tokens_per_s, self.total_tokens, extra.get("source_tokens"))
        )

    def checkpoint(self, step: int, path: str, **extra: Any) -> None:
        self._submit(checkpoint_patch(step, path, **extra))

    def diverged(self, step: int, kind: str, samples: list[int]) -> None:
        self._submit(divergence_patch(step, kind, samples, self.attempt))

    def sigterm(self, step: int, saved: bool, grace_left_s: float, expected_save_s: float) -> None:
        self._submit(sigterm_patch(step, saved, grace_left_s, expected_save_s))

    def done(self, step: int, tokens: int) -> None:
        pass  # the operator learns of completion from the pods' exit codes

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is pending (waiting at most `timeout_s`) and stop the sender thread."""
        self._wake.put(False)
        self._thread.join(timeout_s)

    # --- sending ----------------------------------------------------------------------------------
    def _submit(self, patch: dict[str, Any]) -> None:
        with self._lock:
            self._pending = patch if self._pending is None else merge(self._pending, patch)
        self._wake.put(True)

    def _run(self) -> None:
        while True:
            keep_going = self._wake.get()
            with self._lock:
                patch, self._pending = self._pending, None
            if patch is not None:
                self._send(patch)
            if not keep_going:
                return

    def _send(self, patch: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json", "Accept": "application/json"}
        try:
            if self.token_path is not None:
                # Re-read every time: the kubelet rotates bound service-account tokens.
                headers["Authorization"] = f"Bearer {self.token_path.read_text().strip()}"
            request = urllib.request.Request(
                self.url, data=json.dumps(patch).encode(), headers=headers, method="PATCH"
            )
            context = None
            if self.url.startswith("https://"):
                context = ssl.create_default_context(cafile=str(self.ca_path) if self.ca_path else None)
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=context) as response:
                response.read()
            self.sent += 1
        except (OSError, urllib.error.URLError, ValueError) as err:
            self.failures += 1
            if self.failures <= 3 or self.failures % 100 == 0:
                log.warning(
                    "could not report to the Kubernetes API (%s failures so far): %s", self.failures, err
                )


class MultiReporter:
    def __init__(self, reporters: list[Reporter]) -> None:
        self.reporters = reporters

    def progress(
        self, step: int, tokens: int, loss: float, lr: float, tokens_per_s: float, **extra: Any
    ) -> None:
        for r in self.reporters:
            r.progress(step, tokens, loss, lr, tokens_per_s, **extra)

    def checkpoint(self, step: int, path: str, **extra: Any) -> None:
        for r in self.reporters:
            r.checkpoint(step, path, **extra)

    def diverged(self, step: int, kind: str, samples: list[int]) -> None:
        for r in self.reporters:
            r.diverged(step, kind, samples)

    def sigterm(self, step: int, saved: bool, grace_left_s: float, expected_save_s: float) -> None:
        for r in self.reporters:
            r.sigterm(step, saved, grace_left_s, expected_save_s)

    def done(self, step: int, tokens: int) -> None:
        for r in self.reporters:
            r.done(step, tokens)

    def close(self) -> None:
        for r in self.reporters:
            r.close()


def make_reporter(rank: int, total_tokens: int | None = None) -> Reporter:
    """Rank 0's reporters from the environment; every other rank reports nothing."""
    if rank != 0:
        return NullReporter()
    reporters: list[Reporter] = []
    if os.environ.get("TOKENSMITH_REPORT_FILE"):
        reporters.append(FileReporter(os.environ["TOKENSMITH_REPORT_FILE"]))
    kube = KubernetesReporter.from_env(total_tokens)
    if kube is not None:
        reporters.append(kube)
    if not reporters:
        return NullReporter()
    return reporters[0] if len(reporters) == 1 else MultiReporter(reporters)
