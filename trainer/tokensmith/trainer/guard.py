"""The health guardrails' hook into the training step (the thin imperative part; the rules are
`tokensmith.trainer.health`, the DeepSpeed specifics `tokensmith.trainer.skipstep`).

Per optimizer step, after the last micro-step's backward and before the update, one SUM all-reduce of
[loss, non-finite flag, squared gradient norm share, SIGTERM seen, checkpoint due] gives every rank the
same numbers; each rank's `Monitor` then reaches the same verdict, and the update is applied or skipped
without a further collective. The loop used to all-reduce the flags every step and the losses at every
log step; this one all-reduce replaces both.

Fault injection (tests and drills; rank 0 only, so the other ranks learn of it through the all-reduce
like they would of a real fault): `health.inject_nan_at_step` and `health.inject_spike_at_step` fire
once per checkpoint directory (a marker file `ROOT/.health-injected` remembers them), as a transient
hardware fault would: a replay of the same step passes. `health.inject_bad_samples` makes the loss NaN
whenever a sample position in its range is read, by any rank, in any attempt: the fault follows the
data, so a replay diverges at the same step until `data.skip_samples` skips the range.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokensmith.core.io import atomic_write_text
from tokensmith.trainer.config import HealthConfig, TrainerConfig
from tokensmith.trainer.health import Monitor, Rules, Verdict

log = logging.getLogger("tokensmith.trainer")

INJECTED = ".health-injected"
SPIKE_FACTOR = 100.0


def rules_of(cfg: HealthConfig) -> Rules:
    return Rules(
        policy=cfg.policy,
        spike_window=cfg.spike_window,
        spike_sigma=cfg.spike_sigma,
        spike_min_history=cfg.spike_min_history,
        spike_min_std=cfg.spike_min_std,
        max_bad_steps=cfg.max_bad_steps,
        bad_window=cfg.bad_window,
    )


@dataclass
class StepOutcome:
    """What one step produced, as every rank agrees on it."""

    step: int
    loss: float
    grad_norm: float | None
    verdict: Verdict
    samples: tuple[int, int]
    sigterm: bool
    checkpoint_due: bool
    consumed: list[int] = field(default_factory=list)


class Guard:
    def __init__(self, cfg: TrainerConfig, root: Path, rank: int, world: int) -> None:
        self.cfg, self.root, self.rank, self.world = cfg.health, root, rank, world
        self.monitor = Monitor(rules_of(cfg.health))
        marker = root / INJECTED
        self.fired: set[str] = set(json.loads(marker.read_text())) if marker.is_file() else set()

    # --- fault injection --------------------------------------------------------------------------
    def inject(self, loss: Any, step: int, positions: Any) -> Any:
        """`loss` of one micro-step, poisoned when a configured fault hits it."""
        bad = self.cfg.inject_bad_samples
        if bad is not None and bool(((positions >= bad[0]) & (positions < bad[1])).any()):
            return loss * float("nan")
        if self.rank != 0:
            return loss
        if self.cfg.inject_nan_at_step == step and self._fire(f"nan@{step}"):
            return loss * float("nan")
        if self.cfg.inject_spike_at_step == step and self._fire(f"spike@{step}"):
            return loss * SPIKE_FACTOR
        return loss

    def _fire(self, name: str) -> bool:
        if name in self.fired:
            return False
        self.fired.add(name)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / INJECTED, json.dumps(sorted(self.fired)))
        log.warning("health: injecting fault %s", name)
        return True

    # --- the step's decision ----------------------------------------------------------------------
    def decide(
        self,
        engine: Any,
        dist: Any,
        step: int,
        loss: Any,
        samples: tuple[int, int],
        sigterm: bool,
        checkpoint_due: bool,
    ) -> StepOutcome:
        """The step's single all-reduce, the verdict, and the optimizer update (or its skip)."""
        import torch

        from tokensmith.trainer.skipstep import local_grad_square, skip_optimizer_step

        if not self.cfg.enabled:  # the loop without guardrails (what the benchmark compares with)
            flags = [float(sigterm), float(checkpoint_due)]
            vector = torch.stack([loss.detach().float(), *torch.tensor(flags, device=loss.device)])
            dist.all_reduce(vector)
            total, term, due = vector.tolist()
            engine.step()
            return StepOutcome(
                step, total / self.world, None, Verdict(None, None, True), samples, term > 0, due > 0
            )
        square = local_grad_square(engine, self.world).to(loss.device, torch.float32)
        loss32 = loss.detach().float()
        vector = torch.stack(
            [
                torch.nan_to_num(loss32, nan=0.0, posinf=0.0, neginf=0.0),
                (~torch.isfinite(loss32)).float(),
                square,
                torch.tensor(float(sigterm), device=loss.device),
                torch.tensor(float(checkpoint_due), device=loss.device),
            ]
        )
        dist.all_reduce(vector)
        total, nonfinite, norm_sq, term, due = vector.tolist()
        mean_loss = total / self.world if nonfinite == 0 else math.nan
        grad_norm = math.sqrt(norm_sq) if math.isfinite(norm_sq) else math.inf
        verdict = self.monitor.observe(step, mean_loss, grad_norm, samples)
        if verdict.apply:
            engine.step()
        else:
            skip_optimizer_step(engine)
        return StepOutcome(step, mean_loss, grad_norm, verdict, samples, term > 0, due > 0)
