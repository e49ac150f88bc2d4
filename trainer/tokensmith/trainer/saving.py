"""One checkpoint save of a training run (the protocol in docs/trainer.md, "Checkpoints"): the blocking
part every rank runs (DeepSpeed's save through the staging engine, consolidated weights when this
checkpoint writes them, the small state files) and `SaveJob`, the part that may run in the background
(this rank's writes and hashes; rank 0: post-save verification, the manifest, pointers, pruning and
reports). Kept out of loop.py so the loop reads as a loop; the file layout lives in checkpoint.py."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer import consolidate

if TYPE_CHECKING:
    from tokensmith.trainer.loop import Trainer

log = logging.getLogger("tokensmith.trainer")

SAVE_TIMEOUT_S = 3600.0  # rank 0 waits this long for every rank's files before giving up on a checkpoint


def save(t: Trainer, trigger: str = "schedule") -> Path:
    """Write a checkpoint. Blocking part (every rank): DeepSpeed's save through our staging engine,
    the consolidated weights when this checkpoint writes them (`consolidate.wanted`: every
    `checkpoint.consolidate_every`th and the final one) and the small state files. Then each rank
    writes and hashes the files it produced (in the background with `checkpoint.async_save`), and
    rank 0, once every rank's marker exists, writes the manifest and moves `latest` (and
    `latest_healthy` when healthy). A crash anywhere before the manifest leaves a torn checkpoint
    that resume skips."""
    started = time.monotonic()
    t.wait_for_saves()  # one save in flight at a time: the previous one must be durable
    waited = time.monotonic() - started
    healthy = t.guard.monitor.checkpoint_healthy()  # the same answer on every rank
    t.checkpoints += 1
    consolidated = consolidate.wanted(t.checkpoints, t.cfg.checkpoint.consolidate_every, trigger)
    ckpt = t.root / ck.checkpoint_name(t.step)
    if t.rank == 0:
        if ckpt.exists():  # torn, from an attempt that died while saving this step
            shutil.rmtree(ckpt)
        ckpt.mkdir(parents=True)
    t.dist.barrier()
    t.ckpt_engine.written = []
    fresh = t.ckpt_engine.stager.fresh_bytes
    # An (empty) universal_checkpoint_info lets DeepSpeed's ds_to_universal convert this checkpoint
    # for a different world size (plain data parallel: no tensor/pipeline patterns to declare).
    t.engine.save_checkpoint(
        str(ckpt), tag=ck.DS_TAG, client_state={"universal_checkpoint_info": {}}, save_latest=False
    )
    written = [p.relative_to(ckpt).as_posix() for p in t.ckpt_engine.written]
    if not t._plain_layout():
        from tokensmith.trainer.parallel import portable

        portable.save(t.built, ckpt / ck.PORTABLE, tied_elsewhere(t))
        t.dist.barrier()
        wants = t.rank == 0 and consolidated
        weights = consolidate.portable_weights(ckpt / ck.PORTABLE, parameter_names(t)) if wants else None
        if t.rank == 0:  # every rank's share is on disk after the barrier: the manifest covers it
            portable_dir = ckpt / ck.PORTABLE
            written += sorted(p.relative_to(ckpt).as_posix() for p in portable_dir.rglob("*") if p.is_file())
    elif not consolidated:  # readers rebuild the weights from DeepSpeed's files (consolidate.py)
        weights = None
    elif t.cfg.deepspeed.zero_stage == 3:
        weights = t.engine._zero3_consolidated_16bit_state_dict()  # collective: every rank
        weights = weights if t.rank == 0 else None
    else:
        weights = t.engine.module.state_dict() if t.rank == 0 else None
    # (not under pipeline parallelism: its engine runs no plain forward; docs/trainer.md)
    verify = t.cfg.health.verify_after_save and not t.built.pipeline
    rows, in_memory = verification_loss(t) if verify else (None, None)
    state: dict[str, Any] | None = None
    if t.rank == 0:
        if weights is not None and t.writer is not None:  # stage: the live tensors change
            weights = t.ckpt_engine.stage(ck.WEIGHTS, weights)
        state = {
            "step": t.step,
            "tokens": t.tokens,
            "samples_seen": t.data_position,
            "seed": t.cfg.train.seed,
            "world_size": t.world,
            **t._layout_state(),
            "model_hash": ck.model_hash(t.cfg),
            "precision": t.precision,
            "rng": "reseeded every step from (seed, step, data-parallel rank); no generator state",
            "skip_samples": t.cfg.data.skip_samples,
            "checkpoints": t.checkpoints,
            "consolidated": consolidated,
            "time": time.time(),
        }
    job = SaveJob(
        t,
        ckpt,
        t.step,
        written,
        weights,
        state,
        healthy,
        rows,
        in_memory,
        started,
        trigger,
        consolidated,
    )
    job.fresh_bytes = t.ckpt_engine.stager.fresh_bytes - fresh
    if t.writer is None:
        job.write_own()
        t.dist.barrier()
        if t.rank == 0:
            job.blocked_s = time.monotonic() - started
            job.publish(job.blocked_s)
        t.dist.barrier()
    else:
        # Blocked: waiting for the previous save (if still in flight) plus staging this one.
        job.blocked_s = time.monotonic() - started
        t.writer.submit(job.write_own)
        if t.rank == 0:
            t.writer.submit(lambda: job.publish(None))
    t.control.last_save = time.monotonic()
    if t.rank == 0 and waited > 1.0:
        log.warning("checkpoint %s waited %.1f s for the previous save to finish", ckpt.name, waited)
    return ckpt


def preallocate(t: Trainer) -> None:
    """The async staging buffers, allocated in the background now rather than in the first save."""
    from tokensmith.trainer.asyncsave import preallocate

    assert t.writer is not None
    probe = t.root / ".staging-probe"
    blocked = preallocate(t.engine, t.ckpt_engine, t.writer, probe, t.rank)
    t._log({"type": "staging", "step": t.step, "blocked_s": round(blocked, 4)})


def verification_loss(t: Trainer) -> tuple[Any, float]:
    """The in-memory model's loss on the verification batch (every rank joins the forward: ZeRO-3
    gathers the weights); rank 0 compares it with the saved weights' once they are written."""
    import numpy as np
    import torch

    from tokensmith.trainer import postsave

    # the first micro-batch of sample positions (fixed: the same batch at every save)
    batch, _, _ = t.train_data.batch(np.arange(t.cfg.train.micro_batch, dtype=np.int64))
    rows = torch.from_numpy(batch).to(t.device)
    t.engine.eval()
    in_memory = postsave.batch_loss(t.engine, rows)
    t.engine.train()
    return rows, in_memory


def parameter_names(t: Trainer) -> list[str]:
    """The unsharded model's parameter names (what model.safetensors holds)."""
    import torch

    from tokensmith.trainer.model import Transformer

    with torch.device("meta"):
        return list(Transformer(t.cfg.model).state_dict())


def tied_elsewhere(t: Trainer) -> set[str]:
    """Names this rank holds but an earlier stage writes: the tied table on the last stage."""
    last = t.built.pp_rank == t.layout.pipeline - 1
    return {"tok_emb.weight"} if t.cfg.model.tie_embeddings and last and t.layout.pipeline > 1 else set()


@dataclass
class SaveJob:
    """The part of one checkpoint that may run in the background: this rank's writes and hashes, and
    (rank 0) the manifest, pointers, pruning and reports once every rank's marker exists."""

    trainer: Trainer
    ckpt: Path
    step: int
    written: list[str]  # files DeepSpeed wrote through our engine on this rank (relative)
    weights: dict[str, Any] | None
    state: dict[str, Any] | None  # trainer_state.json (rank 0)
    healthy: bool
    rows: Any
    in_memory: float | None
    started: float
    trigger: str
    consolidated: bool
    blocked_s: float = 0.0
    fresh_bytes: int = 0  # staging memory this save had to allocate (0 once the buffers exist)
    problem: str | None = None

    def write_own(self) -> None:
        t = self.trainer
        own = list(self.written)
        if t.rank == 0:
            assert self.state is not None
            ck.write_state_files(self.ckpt, t.cfg, self.state, t.tokenizer)  # fsyncs: off the blocked path
        if self.weights is not None:
            ck.save_weights(self.weights, self.ckpt / ck.WEIGHTS)
            self.weights = None
            own.append(ck.WEIGHTS)
        ck.write_rank_marker(self.ckpt, t.rank, t.world, files=own)

    def publish(self, durable_s: float | None) -> None:
        t = self.trainer
        ck.wait_for_markers(self.ckpt, t.world, timeout_s=SAVE_TIMEOUT_S)
        if self.in_memory is not None:  # every rank's files exist now: the weights can be rebuilt from them
            from tokensmith.trainer import postsave

            self.problem = postsave.verify(self.ckpt, t.cfg.model, self.rows, self.in_memory, t.precision)
        healthy = self.healthy
        if self.problem is not None:
            healthy = False
            log.error("post-save verification of %s failed: %s", self.ckpt.name, self.problem)
            t._log(
                {
                    "type": "health",
                    "step": self.step,
                    "kind": "corrupt",
                    "action": "warn",
                    "detail": self.problem,
                }
            )
        extra = {
            "model_hash": ck.model_hash(t.cfg),
            "healthy": healthy,
            "consolidated": self.consolidated,
            "skip_samples": t.cfg.data.skip_samples,
        }
        ck.finalize(self.ckpt, t.world, self.step, extra, hash_unclaimed=True)
        if healthy:
            ck.set_latest(t.root, self.ckpt.name, ck.LATEST_HEALTHY)
        ck.set_latest(t.root, self.ckpt.name)
        for gone in ck.prune(t.root, t.cfg.checkpoint.keep):
            log.info("removed old checkpoint %s", gone.name)
        shutil.rmtree(t.root / ".universal", ignore_errors=True)  # a newer native one exists now
        durable = time.monotonic() - self.started if durable_s is None else durable_s
        t.control.save_seconds = durable
        timing = {"blocked_s": round(self.blocked_s, 4), "durable_s": round(durable, 4)}
        t.reporter.checkpoint(self.step, str(self.ckpt), healthy=healthy, **timing)
        t._log(
            {
                "type": "checkpoint",
                "step": self.step,
                "path": str(self.ckpt),
                "healthy": healthy,
                "trigger": self.trigger,
                "consolidated": self.consolidated,
                "async": t.writer is not None,
                "staging_alloc_bytes": self.fresh_bytes,
                **timing,
            }
        )
