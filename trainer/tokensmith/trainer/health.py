"""Run health: which optimizer steps are bad, what to do about each, and when the run has diverged.

Pure rules over the numbers every rank already agrees on after the step's single all-reduce (the loop
folds loss, squared gradient norm and a non-finite flag into the all-reduce it needs anyway); no I/O,
no torch. The loop (loop.py) applies the verdicts: it skips the optimizer step, writes the metrics
record, marks checkpoints unhealthy, and exits with `EXIT_DIVERGED` (65).

Rules (docs/trainer.md, "Run health"):
- non-finite: the step's mean loss or global gradient norm is NaN/Inf on any rank. Its update is
  never applied (whatever the policy): under bf16 DeepSpeed has no loss scaler to skip it, and one
  NaN update poisons every weight.
- spike: the loss is more than `spike_sigma` standard deviations above the mean of the last
  `spike_window` healthy steps' losses (a one-sided z-score, the rule of OLMo-core's
  SkipStepOptimizer, whose defaults 128 steps / 6 sigma we keep). It is only tested once
  `spike_min_history` healthy losses exist (warm-up losses fall fast and say nothing about spikes).
  The standard deviation is floored at `spike_min_std` x |mean| so that a flat history does not flag
  noise. Bad steps' losses do not enter the history (a spike must not widen its own yardstick).
- policy `warn`: a spike is reported and its update applied; `skip`: its update is skipped;
  `rollback`: skipped too, and it counts towards divergence.
- divergence: more than `max_bad_steps` counted bad steps within the last `bad_window` steps. Under
  `rollback` every bad kind counts; under `warn`/`skip` only non-finite steps do (a run that keeps
  producing NaN is not going to recover by itself). The report names the oldest bad step still
  inside the window (its step, kind and global sample range), which is where a replay must look.
- a checkpoint is healthy when no bad step happened since the previous checkpoint and the newest
  step's loss is not itself above the spike threshold ("no open spike").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["nonfinite", "spike", "corrupt"]
Action = Literal["warn", "skip", "rollback"]
Policy = Literal["warn", "skip", "rollback"]


@dataclass(frozen=True)
class Rules:
    """The health section's thresholds (defaults live in `tokensmith.trainer.config.HealthConfig`)."""

    policy: Policy = "skip"
    spike_window: int = 128
    spike_sigma: float = 6.0
    spike_min_history: int = 64
    spike_min_std: float = 0.001
    max_bad_steps: int = 4
    bad_window: int = 100


@dataclass(frozen=True)
class BadStep:
    step: int
    kind: Kind
    samples: tuple[int, int]


@dataclass(frozen=True)
class Verdict:
    """What to do with one step: apply its update or not, and what to report."""

    kind: Kind | None
    action: Action | None
    apply: bool
    diverged: BadStep | None = None  # set when this step tips the run over: report it and exit 65

    @property
    def bad(self) -> bool:
        return self.kind is not None


def spike_threshold(history: list[float] | deque[float], rules: Rules) -> float | None:
    """The loss above which a step is a spike, or None while the history is too short."""
    n = len(history)
    if n < max(2, rules.spike_min_history):
        return None
    mean = sum(history) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in history) / (n - 1))
    std = max(std, rules.spike_min_std * abs(mean))
    return mean + rules.spike_sigma * std


def classify(loss: float, grad_norm: float | None, threshold: float | None) -> Kind | None:
    """The kind of badness of one step (None: healthy)."""
    if not math.isfinite(loss) or (grad_norm is not None and not math.isfinite(grad_norm)):
        return "nonfinite"
    if threshold is not None and loss > threshold:
        return "spike"
    return None


def action_for(kind: Kind, policy: Policy) -> Action:
    """What the policy does with one bad step before divergence is considered."""
    if kind == "nonfinite":
        return "skip"  # never apply a NaN update, whatever the policy
    if kind == "corrupt":
        return "warn"  # a corrupt checkpoint file: the weights in memory are fine
    return "warn" if policy == "warn" else "skip"


def counts_towards_divergence(kind: Kind, policy: Policy) -> bool:
    return kind == "nonfinite" or (policy == "rollback" and kind == "spike")


@dataclass
class Monitor:
    """The running state of the rules (one per process; every rank feeds it the same numbers, so every
    rank reaches the same verdicts without talking)."""

    rules: Rules
    history: deque[float] = field(default_factory=deque)
    recent_bad: deque[BadStep] = field(default_factory=deque)
    bad_since_checkpoint: int = 0
    open_spike: bool = False
    skipped: int = 0

    def __post_init__(self) -> None:
        self.history = deque(self.history, maxlen=self.rules.spike_window)

    def observe(self, step: int, loss: float, grad_norm: float | None, samples: tuple[int, int]) -> Verdict:
        """Judge step `step` (1-based, the step just computed) and update the state."""
        threshold = spike_threshold(self.history, self.rules)
        kind = classify(loss, grad_norm, threshold)
        self.open_spike = kind == "spike"
        if kind is None:
            self.history.append(loss)
            return Verdict(None, None, apply=True)
        self.bad_since_checkpoint += 1
        action = action_for(kind, self.rules.policy)
        if counts_towards_divergence(kind, self.rules.policy):
            self.recent_bad.append(BadStep(step, kind, samples))
        while self.recent_bad and self.recent_bad[0].step <= step - self.rules.bad_window:
            self.recent_bad.popleft()
        apply = action == "warn"
        if not apply:
            self.skipped += 1
        if len(self.recent_bad) > self.rules.max_bad_steps:
            return Verdict(kind, "rollback", apply=False, diverged=self.recent_bad[0])
        return Verdict(kind, action, apply=apply)

    def checkpoint_healthy(self) -> bool:
        """Whether the steps since the previous checkpoint were healthy; starts the next interval."""
        healthy = self.bad_since_checkpoint == 0 and not self.open_spike
        self.bad_since_checkpoint = 0
        return healthy
