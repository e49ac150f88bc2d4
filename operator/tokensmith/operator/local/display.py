"""The live status line and event lines of `tokensmith run --local`.

On a terminal the line is redrawn in place and events scroll above it; otherwise (CI logs, pipes)
each change of the line is printed once as a plain line (GPU-hours alone do not count as a change).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from tokensmith.core.units import format_si
from tokensmith.operator.observed import EmitEvent
from tokensmith.operator.spec import LLMTrainingJobStatus

_MARK = {"Succeeded": "ok", "Failed": "failed", "Running": "running"}


def status_line(status: LLMTrainingJobStatus, total_steps: int | None, gpu_hours: bool = True) -> str:
    """One line: phase, attempt, step/total, loss, tokens/s, last checkpoint, evaluations, GPU-hours."""
    parts = [f"{status.phase:<10}", f"attempt {status.attempt}"]
    prog = status.progress
    step = prog.step if prog else 0
    parts.append(f"step {step}/{total_steps}" if total_steps else f"step {step}")
    if prog is not None and prog.loss is not None:
        parts.append(f"loss {prog.loss:.3f}")
    if prog is not None and prog.tokens_per_second:
        parts.append(f"{format_si(prog.tokens_per_second)} tok/s")
    ck = status.last_checkpoint
    parts.append(f"ckpt {ck.step}" if ck else "ckpt -")
    if status.rollbacks:  # run health: rollbacks and the healthy checkpoint they return to
        healthy = status.last_healthy_checkpoint
        parts.append(f"rollbacks {status.rollbacks} (healthy {healthy.step if healthy else '-'})")
    if status.evaluations:
        evals = " ".join(f"{e.step}:{_MARK.get(e.phase, e.phase)}" for e in status.evaluations[-4:])
        parts.append(f"evals {evals}")
    if gpu_hours:
        parts.append(f"{status.gpu_hours:.4f} GPU-h")
    return " | ".join(parts)


def event_line(event: EmitEvent) -> str:
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    return f"{stamp} {event.type:<7} {event.reason}: {event.message}"


class Display:
    """Prints status lines and events (to stderr by default, so stdout stays for --format json)."""

    def __init__(self, total_steps: int | None, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total_steps = total_steps
        self.quiet = quiet
        self._last = ""
        self._drawn = False

    def status(self, status: LLMTrainingJobStatus) -> None:
        if self.quiet:
            return
        if self.tty:
            line = status_line(status, self.total_steps)
            self.stream.write("\r\x1b[2K" + line)
            self._drawn = True
            self.stream.flush()
            return
        line = status_line(status, self.total_steps, gpu_hours=False)
        if line != self._last:
            self._last = line
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            self.stream.write(f"{stamp} {line} | {status.gpu_hours:.4f} GPU-h\n")
            self.stream.flush()

    def event(self, event: EmitEvent) -> None:
        if self.quiet:
            return
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
        self.stream.write(event_line(event) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
