"""The container termination message: how an evaluation Job hands its numbers to the operator.

Kubernetes copies the file named by the container's `terminationMessagePath` (default
`/dev/termination-log`) into the pod status (at most 4096 bytes), where the operator reads it with the
permissions it already has on pods. `TOKENSMITH_TERMINATION_LOG` names another file (the local runner,
tests); otherwise the default path is used only when it exists and is writable, so running
`tokensmith eval` on a laptop writes nothing there.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PATH = Path("/dev/termination-log")
ENV = "TOKENSMITH_TERMINATION_LOG"


def termination_path() -> Path | None:
    override = os.environ.get(ENV)
    if override:
        return Path(override)
    if DEFAULT_PATH.exists() and os.access(DEFAULT_PATH, os.W_OK):
        return DEFAULT_PATH
    return None


def write_termination_message(text: str) -> Path | None:
    """Write `text` (already short) to the termination log, if there is one; never fails the run."""
    path = termination_path()
    if path is None:
        return None
    try:
        # Not atomic on purpose: /dev/termination-log is a file the kubelet mounts; it cannot be
        # replaced by a rename, only written.
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        return None
    return path
