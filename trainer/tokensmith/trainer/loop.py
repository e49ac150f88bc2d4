"""The training run: distributed set-up, DeepSpeed engine, data, steps, evaluation, checkpoints.

This is the imperative shell; the decisions it takes are pure functions elsewhere (sampler order,
learning rate, DeepSpeed config, checkpoint selection). Every process runs `train(cfg)`; rank 0 also
writes metrics, checkpoints' bookkeeping and progress reports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tokensmith.core.errors import EXIT_DIVERGED, ConfigError
from tokensmith.trainer import checkpoint as ck
from tokensmith.trainer import guard, live, saving
from tokensmith.trainer.checkpoint import model_hash
from tokensmith.trainer.config import TrainerConfig

log = logging.getLogger("tokensmith.trainer")

EXIT_SIGTERM = 128 + signal.SIGTERM  # retryable: the operator restarts the gang from the checkpoint
FAIL_AT_STEP_ENV = "TOKENSMITH_FAIL_AT_STEP"  # testing hook: SIGKILL every rank after this step (once
# the checkpoints in flight are durable)
GRACE_ENV = "TOKENSMITH_TERMINATION_GRACE_SECONDS"
RESUME_ENV = "TOKENSMITH_RESUME_FROM"  # latest | latest_healthy | a checkpoint name; wins over the config


def step_seed(seed: int, step: int, rank: int) -> int:
    """Per-step, per-rank RNG seed (dropout): a pure function, so resume needs no saved generator state
    and stays exact when the world size changes."""
    digest = hashlib.sha256(f"{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def default_tokenizer(cfg: TrainerConfig) -> Path | None:
    """data.tokenizer_path, else the tokenizer.json that `tokensmith curate` wrote beside the (first)
    training split (every source shares it: `open_training_data` checks)."""
    if cfg.data.tokenizer_path:
        return Path(cfg.data.tokenizer_path)
    sources = cfg.data.training_sources()
    if sources:
        first = Path(sources[0].path)
        for candidate in (first / "tokenizer.json", first.parent / "tokenizer.json"):
            if candidate.is_file():
                return candidate
    return None


def open_split(path: str | None, what: str) -> Any:
    """A ShardSet, or ConfigError (78): a missing or unfinished data path is the user's to fix."""
    from tokensmith.trainer.data.shards import ShardFormatError, ShardSet

    if not path:
        raise ConfigError(
            f"set data.{what}_path to a directory of token shards written by `tokensmith curate`"
        )
    try:
        return ShardSet.open(path)
    except ShardFormatError as err:
        raise ConfigError(f"data.{what}_path: {err.message}") from err


def preflight(cfg: TrainerConfig, world_size: int) -> None:
    """Every check that needs no GPU and no process group, so that a launcher (or the operator's pod)
    fails with exit 78 before starting a gang: budget, batch split, data paths, vocabulary, and that an
    existing checkpoint directory was made by the same architecture."""
    from tokensmith.trainer.sources import open_training_data

    cfg.total_steps()
    cfg.grad_accumulation(world_size)
    open_training_data(cfg)  # every source: present, long enough, one tokenizer, epochs within limits
    if cfg.data.valid_path:
        open_split(cfg.data.valid_path, "valid")
    for done in ck.complete(Path(cfg.checkpoint.dir)):
        try:
            previous = ck.read_config(done)
        except Exception:  # an unreadable one is skipped at resume with a warning
            continue
        if model_hash(previous) != model_hash(cfg):
            raise ConfigError(
                f"checkpoint.dir {cfg.checkpoint.dir} holds checkpoints of a different model "
                f"({done.name}); use a new checkpoint.dir or the same model section"
            )
        break


@dataclass
class Control:
    """Signals and timers that every rank must agree on before acting (combined by an all-reduce)."""

    sigterm_at: float | None = None
    last_save: float = field(default_factory=time.monotonic)
    save_seconds: float | None = None
    every_minutes: float = 0.0  # checkpoint.every_minutes, changed by live settings (live.py; rank 0)

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.sigterm_at is None:
            self.sigterm_at = time.monotonic()
            log.warning("SIGTERM: finishing this step, then checkpointing if the grace period allows")

    def grace_left(self, grace: float) -> float:
        assert self.sigterm_at is not None
        return grace - (time.monotonic() - self.sigterm_at)


def _init_distributed() -> tuple[int, int, int]:
    """Rank, world size, local rank; a single process without torchrun gets a private group."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    """One process of a run. `run()` returns the exit code (0: budget reached)."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.control = Control()

    # --- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        import torch.distributed as dist

        from tokensmith.planner.arch import flops_per_token
        from tokensmith.trainer import dsconfig
        from tokensmith.trainer.metrics import peak_flops
        from tokensmith.trainer.parallel import engine as parallel_engine
        from tokensmith.trainer.parallel.accounting import Recorder
        from tokensmith.trainer.reporting import JsonLines, make_reporter
        from tokensmith.trainer.sampler import BatchPlan, Windows
        from tokensmith.trainer.sources import open_training_data

        cfg = self.cfg
        self.rank, self.world, local_rank = _init_distributed()
        preflight(cfg, self.world)
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        if not self.cuda and os.environ.get("TOKENSMITH_DS_SHM_COMM") != "1":
            # On CPU DeepSpeed JIT-compiles a shared-memory all-reduce at start-up: minutes on first use,
            # and a build killed half way leaves a lock file that every later run waits on forever.
            # gloo does the job for CPU runs; TOKENSMITH_DS_SHM_COMM=1 restores DeepSpeed's choice.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="nccl" if self.cuda else "gloo", verbose=False)
        self.dist = dist
        self.precision = dsconfig.choose_precision(
            cfg.train.precision, self.cuda, self.cuda and torch.cuda.is_bf16_supported()
        )
        ds_config = dsconfig.render(cfg, self.world, self.precision)
        self.root = Path(cfg.checkpoint.dir)
        self.step = 0
        self.data_position = 0
        self.tokens = 0
        self.checkpoints = 0  # checkpoints written by the run's lineage (consolidate_every counts them)
        self.resumed_from: Path | None = None
        self.layout = cfg.layout(self.world)
        chosen = self.select_checkpoint()
        load_dir: Path | None = None
        self.portable_from: Path | None = None  # resume through the layout-free state (parallel/portable.py)
        if chosen is not None:
            from tokensmith.trainer.parallel.portable import resume_route

            load_dir = chosen[0]
            now = (self.world, self.layout.tensor, self.layout.pipeline)
            route = resume_route(chosen[1], now, cfg.deepspeed.zero_stage, (load_dir / ck.PORTABLE).is_dir())
            if route == "portable":
                self.portable_from = load_dir / ck.PORTABLE
            elif route.startswith("universal"):
                load_dir = self.universal_copy(chosen[0])
                if route == "universal":
                    ds_config["checkpoint"] = {"load_universal": True}
                else:
                    self.portable_from = load_dir / ck.DS_TAG
        self.accumulation = ds_config["gradient_accumulation_steps"]
        # TP and PP ranks of one data-parallel replica read the same samples.
        self.plan = BatchPlan(cfg.train.micro_batch, self.layout.data, self.accumulation)
        self.total_steps = cfg.total_steps()

        self.train_data = open_training_data(cfg, check_budget=False)
        self.valid_windows = (
            Windows(open_split(cfg.data.valid_path, "valid"), cfg.model.seq_len)
            if cfg.data.valid_path
            else None
        )

        self.built = parallel_engine.build(cfg, self.world, self.rank, ds_config, self.cuda)
        self.engine, self.optimizer = self.built.engine, self.built.optimizer
        self.dp_rank = self.built.dp_rank
        self.recorder: Recorder | None = Recorder(self.built)  # model-state bytes, logged once
        from tokensmith.trainer.asyncsave import BackgroundWriter, make_engine

        self.writer = BackgroundWriter() if cfg.checkpoint.async_save else None
        self.ckpt_engine = make_engine(self.writer)
        self.engine.checkpoint_engine = self.ckpt_engine  # DeepSpeed writes every file through it
        self.flops_per_token = flops_per_token(cfg.model)
        self.peak = peak_flops(torch.cuda.get_device_name(self.device) if self.cuda else None)
        self.tokenizer = default_tokenizer(cfg)
        self.grace = float(os.environ.get(GRACE_ENV, cfg.checkpoint.grace_seconds))
        self.control.every_minutes = cfg.checkpoint.every_minutes
        self.live = live.Watcher.from_env() if self.rank == 0 else None
        self.guard = guard.Guard(cfg, self.root, self.rank, self.world)
        if chosen is not None and load_dir is not None:
            self.load(chosen[0], load_dir, chosen[1])
        metrics_path = Path(cfg.train.metrics_file or self.root / "metrics.jsonl")
        self.metrics: JsonLines | None = None
        self.reporter = make_reporter(self.rank, cfg.train.tokens)
        if self.rank == 0:
            _truncate_metrics(metrics_path, self.step)
            self.metrics = JsonLines(metrics_path)
        if cfg.checkpoint.on_sigterm:
            signal.signal(signal.SIGTERM, self.control.on_sigterm)

    # --- resume -----------------------------------------------------------------------------------
    def resume_candidates(self) -> list[Path]:
        """Checkpoints to try, newest first, by `TOKENSMITH_RESUME_FROM` / `checkpoint.resume_from`:
        latest (all), latest_healthy (healthy ones) or one named checkpoint (ConfigError if absent)."""
        choice = self.resume_choice()
        found = ck.candidates(self.root)
        if choice == "latest":
            return found
        if choice == "latest_healthy":
            return [p for p in found if not (p / ck.MANIFEST).is_file() or ck.is_healthy(p)]
        named = [p for p in found if p.name == choice]
        if not named:
            names = ", ".join(p.name for p in ck.complete(self.root)[:5]) or "none"
            raise ConfigError(
                f"resume from {choice!r}: no such checkpoint in {self.root} (complete ones: {names}); "
                f"set {RESUME_ENV} / checkpoint.resume_from to latest, latest_healthy or a checkpoint name"
            )
        return named

    def resume_choice(self) -> str:
        return os.environ.get(RESUME_ENV) or self.cfg.checkpoint.resume_from

    def select_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint (of those `resume_candidates` allows) that verifies on every rank (each
        rank checks its share of the files); torn or corrupt ones are skipped with a warning. When an
        older one is chosen on purpose (a rollback), the newer ones are moved aside (`ck.roll_back_past`)
        so that no later restart resumes from the abandoned future."""
        checksums = self.cfg.checkpoint.verify == "checksum"
        for candidate in self.resume_candidates():
            problems = ck.verify(candidate, checksums, self.rank, self.world)
            if not problems and not (candidate / ck.DS_TAG).is_dir():
                problems = [f"{candidate.name}: weights only (no optimizer state), cannot resume from it"]
            gathered: list[list[str] | None] = [None] * self.world
            self.dist.all_gather_object(gathered, problems)
            all_problems = [p for ps in gathered for p in (ps or [])]
            if all_problems:
                if self.resume_choice() == candidate.name:  # asked for by name: no silent fallback
                    raise ConfigError(
                        f"resume from {candidate.name}: it does not verify ({'; '.join(all_problems[:3])}); "
                        f"choose another with {RESUME_ENV} / checkpoint.resume_from"
                    )
                if self.rank == 0:
                    log.warning("skipping checkpoint %s: %s", candidate.name, "; ".join(all_problems[:3]))
                continue
            state = ck.read_state(candidate)
            if state.get("model_hash") != model_hash(self.cfg):
                raise ConfigError(
                    f"{candidate} was written for a different model; use a new checkpoint.dir "
                    "or restore the model section it was trained with"
                )
            self._roll_back_past(int(state["step"]), candidate.name)
            return candidate, state
        self._roll_back_past(0, None)
        return None

    def _roll_back_past(self, step: int, name: str | None) -> None:
        if self.resume_choice() == "latest":
            return  # nothing newer is complete and intact: torn ones are pruned as usual
        if self.rank == 0:
            moved = ck.roll_back_past(self.root, step)
            if moved:
                log.warning(
                    "rolled back to %s: moved %s to %s",
                    name or "the start",
                    ", ".join(p.name for p in moved),
                    self.root / ck.ROLLED_BACK,
                )
            if name is not None:
                ck.set_latest(self.root, name)
                if ck.is_healthy(self.root / name):
                    ck.set_latest(self.root, name, ck.LATEST_HEALTHY)
        self.dist.barrier()

    def universal_copy(self, candidate: Path) -> Path:
        """ZeRO partitions the optimizer state by world size; to resume on another one, rank 0 converts
        the checkpoint with DeepSpeed's `ds_to_universal` (once; kept under ROOT/.universal until the
        next save) and every rank loads that with `load_universal`."""
        import subprocess

        target = self.root / ".universal" / candidate.name
        if self.rank == 0 and not (target / "done").is_file():
            shutil.rmtree(target, ignore_errors=True)
            tmp = target.with_name(f".{candidate.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            command = [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(candidate / ck.DS_TAG),
                "--output_folder",
                str(tmp / ck.DS_TAG),
                "--num_extract_workers",
                str(min(8, os.cpu_count() or 1)),
                "--num_merge_workers",
                "2",
            ]
            log.warning("world size changed: converting %s to a universal checkpoint", candidate.name)
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"ds_to_universal failed on {candidate}: {done.stderr[-2000:]}")
            (tmp / "done").write_text("ok\n")
            os.replace(tmp, target)
        self.dist.barrier()
        return target

    def _plain_layout(self) -> bool:
        return self.layout.tensor == 1 and self.layout.pipeline == 1

    def _layout_state(self) -> dict[str, int]:
        return {"tensor": self.layout.tensor, "pipeline": self.layout.pipeline}

    def load(self, candidate: Path, load_dir: Path, state: dict[str, Any]) -> None:
        if self.portable_from is not None:
            from tokensmith.trainer.parallel import portable

            portable.load(self.built, self.portable_from, int(state["step"]))
        else:
            self.engine.load_checkpoint(
                str(load_dir),
                tag=ck.DS_TAG,
                load_module_strict=True,
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
            )
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.data_position = int(state["samples_seen"])
        self.checkpoints = int(state.get("checkpoints", 0))
        self.resumed_from = candidate
        if self.rank == 0:
            log.warning(
                "resumed from %s (step %d, %d tokens, saved by %d processes, now %d)",
                candidate,
                self.step,
                self.tokens,
                state.get("world_size", 0),
                self.world,
            )

    # --- one step ---------------------------------------------------------------------------------
    def batch(self, positions: Any) -> tuple[Any, Any, Any]:
        import numpy as np
        import torch

        batch, source, window = self.train_data.batch(positions)
        rows = torch.from_numpy(batch).to(self.device, non_blocking=True)
        # One source: the window ids; a mixture: [source, window] pairs (for train.record_samples).
        ids = window if len(self.train_data.names) == 1 else np.stack([source, window], axis=1)
        return rows[:, :-1], rows[:, 1:], ids

    def train_step(self) -> guard.StepOutcome:
        """One optimizer step (all micro-steps). Before the optimizer update, the step's one all-reduce
        makes every rank agree on the loss, the gradient norm, non-finite values and the control flags;
        the health verdict then applies or skips the update (guard.py)."""
        import torch
        import torch.nn.functional as F

        from tokensmith.trainer.sampler import take_positions
        from tokensmith.trainer.schedule import lr_at

        t = self.cfg.train
        lr = lr_at(self.step, t.lr, self.total_steps, t.warmup_steps, t.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.lr = lr
        # Seeded per data-parallel replica: the TP ranks of a replica must drop the same activations.
        torch.manual_seed(step_seed(t.seed, self.step, self.dp_rank))
        loss_sum = torch.zeros((), device=self.device)
        skip = self.cfg.data.skip_samples
        step_positions = take_positions(self.data_position, self.plan.global_batch, skip)
        micro_positions = [
            self.plan.local(step_positions, self.dp_rank, micro) for micro in range(self.accumulation)
        ]
        if self.built.pipeline:
            return self._pipeline_step(step_positions, micro_positions)
        consumed: list[Any] = []
        for micro, positions in enumerate(micro_positions):
            x, y, ids = self.batch(positions)
            consumed.extend(i.tolist() if hasattr(i, "tolist") else int(i) for i in ids)
            logits = self.engine(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
            loss = self.guard.inject(loss, self.step + 1, positions)
            self.engine.backward(loss)
            loss_sum += loss.detach()
            if micro < self.accumulation - 1:
                self.engine.step()  # not a boundary: DeepSpeed only counts the micro-step
        outcome = self.guard.decide(
            self.engine,
            self.dist,
            self.step + 1,
            loss_sum / self.accumulation,
            (int(step_positions[0]), int(step_positions[-1]) + 1),
            self.control.sigterm_at is not None,
            self._checkpoint_due(),
        )
        return self._advance(outcome, consumed, step_positions)

    def _pipeline_step(self, step_positions: Any, micro_positions: list[Any]) -> guard.StepOutcome:
        """1F1B through DeepSpeed's pipeline engine (micro-batches = accumulation steps). The engine runs
        its optimizer update inside `train_batch`; that update is held back (the engine's
        `_take_model_step` deferred) until the step's one all-reduce and the health verdict, so a bad
        step is skipped under pipeline parallelism too (health's fault injectors act on the loss the loop
        computes, which the pipeline computes inside its stages: they are not applied here)."""
        batches = [self.batch(positions) for positions in micro_positions]
        consumed = [i.tolist() if hasattr(i, "tolist") else int(i) for _, _, ids in batches for i in ids]
        engine, deferred = self.engine, []
        engine._take_model_step = lambda *a, **k: deferred.append((a, k))  # shadows the method once
        try:
            loss = engine.train_batch(data_iter=iter([(x, y) for x, y, _ in batches]))
        finally:
            del engine._take_model_step
        ((args, kwargs),) = deferred
        take_step = type(engine)._take_model_step

        def step() -> None:  # what guard.decide calls (through skipstep when the step is skipped)
            engine._force_grad_boundary = True
            try:
                take_step(engine, *args, **kwargs)
            finally:
                engine._force_grad_boundary = False

        engine.step = step  # PipelineEngine.step itself refuses: only train_batch is public
        try:
            outcome = self.guard.decide(
                engine,
                self.dist,
                self.step + 1,
                loss.detach().float(),
                (int(step_positions[0]), int(step_positions[-1]) + 1),
                self.control.sigterm_at is not None,
                self._checkpoint_due(),
            )
        finally:
            del engine.step
        return self._advance(outcome, consumed, step_positions)

    def _advance(
        self, outcome: guard.StepOutcome, consumed: list[Any], step_positions: Any
    ) -> guard.StepOutcome:
        outcome.consumed = consumed
        self.data_position = int(step_positions[-1]) + 1
        self.tokens += self.plan.global_batch * self.cfg.model.seq_len
        self.step += 1
        return outcome

    def _checkpoint_due(self) -> bool:
        """Whether a time-based checkpoint is due: rank 0's clock and interval decide, and the flag reaches
        every rank through the step's all-reduce (so a live change of the interval needs no collective)."""
        if self.rank != 0:
            return False
        self._apply_live_settings()
        minutes = self.control.every_minutes
        return bool(minutes) and time.monotonic() - self.control.last_save >= minutes * 60

    def _apply_live_settings(self) -> None:
        """A changed live-settings file (live.py): apply it and say so in the metrics."""
        settings = self.live.poll() if self.live is not None else None
        if settings is None:
            return
        for change in live.changes(self.control.every_minutes, settings):
            self.control.every_minutes = change.new
            log.info(
                "live settings: %s %g -> %g from step %d",
                change.setting,
                change.old,
                change.new,
                self.step + 1,
            )
            self._log(
                {
                    "type": "live",
                    "step": self.step,
                    "setting": change.setting,
                    "old": change.old,
                    "new": change.new,
                }
            )

    def evaluate(self) -> float | None:
        """Mean validation loss over `train.eval_batches` micro-batches per rank (the same windows in
        every evaluation: positions 0, 1, 2, ... of the split, spread over ranks)."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        if self.valid_windows is None or self.valid_windows.num_samples == 0:
            return None
        micro = self.cfg.train.micro_batch
        dp = self.layout.data
        total = torch.zeros(2, device=self.device)
        batches = []
        for b in range(self.cfg.train.eval_batches):
            start = (b * dp + self.dp_rank) * micro
            ids = np.arange(start, start + micro) % self.valid_windows.num_samples
            rows = torch.from_numpy(self.valid_windows.batch(ids)).to(self.device)
            batches.append((rows[:, :-1], rows[:, 1:]))
        if self.built.pipeline:
            # eval_batch averages over the micro-batches and the data-parallel group, on every stage
            loss = self.engine.eval_batch(iter(batches), num_micro_batches=len(batches))
            return float(loss)
        self.engine.eval()
        with torch.no_grad():
            for x, y in batches:
                logits = self.engine(x)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
                total += torch.stack([loss.detach(), torch.ones((), device=self.device)])
        self.engine.train()
        self.dist.all_reduce(total)
        return float(total[0] / total[1])

    # --- checkpoints ------------------------------------------------------------------------------
    def save(self, trigger: str = "schedule") -> Path:
        """Write a checkpoint (saving.py: the blocking part here, the rest in the background)."""
        return saving.save(self, trigger)

    def _preallocate(self) -> None:
        """The async staging buffers, allocated in the background now rather than in the first save."""
        saving.preallocate(self)

    def wait_for_saves(self) -> None:
        """Block until this rank's background checkpoint writes (rank 0: the manifest too) are done."""
        if self.writer is not None:
            self.writer.wait()

    def _log_model_state(self) -> None:
        """Once per process: the bytes of parameters, gradients and optimizer state each rank holds
        (docs/trainer.md compares them with the planner's model-state memory)."""
        measured = self.recorder.measure() if self.recorder is not None else {}
        self.recorder = None
        gathered: list[Any] = [None] * self.world
        self.dist.all_gather_object(gathered, measured)
        layout = {"tensor": self.layout.tensor, "pipeline": self.layout.pipeline, "data": self.layout.data}
        self._log({"type": "model_state", "step": self.step, **layout, "ranks": gathered})

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        from tokensmith.trainer.metrics import max_memory_gb, mfu

        cfg = self.cfg
        fail_at = int(os.environ.get(FAIL_AT_STEP_ENV, "0") or 0)
        bar = _progress_bar(self.rank, self.step, self.total_steps)
        window_start, window_tokens = time.perf_counter(), 0
        loss_total, loss_steps = 0.0, 0  # applied steps' (all-reduced) losses since the last log
        last_saved = self.step if self.resumed_from else -1
        staged = self.writer is None  # async saves: staging buffers allocated after the first step
        while self.step < self.total_steps:
            outcome = self.train_step()  # every rank agrees on its numbers and flags (one all-reduce)
            consumed = outcome.consumed
            if not staged:
                staged = True
                self._preallocate()
            if self.recorder is not None:
                self._log_model_state()
            if outcome.verdict.bad:
                self._log_health(outcome)
            if outcome.verdict.diverged is not None:
                return self._diverged(outcome)
            if outcome.verdict.apply:
                loss_total, loss_steps = loss_total + outcome.loss, loss_steps + 1
            window_tokens += self.plan.global_batch * cfg.model.seq_len
            if bar is not None:
                bar.update(1)
            sigterm, time_due = outcome.sigterm, outcome.checkpoint_due
            finished = self.step >= self.total_steps
            log_now = self.step % cfg.train.log_every_steps == 0 or finished or sigterm
            if cfg.train.record_samples:
                gathered: list[Any] = [None] * self.world
                self.dist.all_gather_object(gathered, consumed)
                # one rank per data-parallel replica (pipe 0, tensor 0), in data-parallel order
                gathered = gathered[: self.layout.data * self.layout.tensor : self.layout.tensor]
            if log_now:
                elapsed = time.perf_counter() - window_start
                tps = window_tokens / elapsed if elapsed > 0 else 0.0
                mean_loss = loss_total / loss_steps if loss_steps else None
                record: dict[str, Any] = {
                    "type": "train",
                    "step": self.step,
                    "tokens": self.tokens,
                    "loss": mean_loss,
                    "lr": self.lr,
                    "grad_norm": outcome.grad_norm if math.isfinite(outcome.grad_norm or 0.0) else None,
                    "skipped_steps": self.guard.monitor.skipped,
                    "tokens_per_s": tps,
                    "mfu": mfu(tps, self.flops_per_token, self.world, self.peak),
                    "memory_gb": max_memory_gb(self.cuda),
                    "cpu_s": time.process_time(),  # this process's CPU seconds so far (all threads)
                    # the realised mixture: tokens each source gave so far (a pure count, see mixture.py)
                    "source_tokens": self.train_data.realised_tokens(self.data_position, cfg.model.seq_len),
                }
                if cfg.train.record_samples:
                    record["samples"] = _in_position_order(gathered, self.plan)
                self._log(record)
                if mean_loss is not None:
                    self.reporter.progress(
                        self.step,
                        self.tokens,
                        mean_loss,
                        self.lr,
                        tps,
                        source_tokens=record["source_tokens"],
                    )
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps:,.0f}")
                window_start, window_tokens = time.perf_counter(), 0
                loss_total, loss_steps = 0.0, 0
            every = cfg.train.eval_every_steps
            if (every and self.step % every == 0) or (finished and self.valid_windows is not None):
                valid = self.evaluate()
                if valid is not None:
                    self._log({"type": "eval", "step": self.step, "tokens": self.tokens, "valid_loss": valid})
            if sigterm:
                return self._on_sigterm(last_saved)
            every_steps = cfg.checkpoint.every_steps
            if finished or time_due or (every_steps and self.step % every_steps == 0):
                self.save(trigger="final" if finished else "schedule")
                last_saved = self.step
            if fail_at and self.step == fail_at:
                self.wait_for_saves()  # tests know which checkpoints exist: those before the kill
                os.kill(os.getpid(), signal.SIGKILL)
        if bar is not None:
            bar.close()
        if last_saved != self.step:  # e.g. resumed from the final checkpoint: nothing left to do
            self.save(trigger="final")
        self.wait_for_saves()
        self.reporter.done(self.step, self.tokens)
        self._log({"type": "done", "step": self.step, "tokens": self.tokens})
        return 0

    def _log_health(self, outcome: guard.StepOutcome) -> None:
        v = outcome.verdict
        record = {"type": "health", "step": outcome.step, "kind": v.kind, "action": v.action}
        loss = outcome.loss if math.isfinite(outcome.loss) else None
        grad_norm = outcome.grad_norm if math.isfinite(outcome.grad_norm or 0.0) else None
        self._log({**record, "loss": loss, "grad_norm": grad_norm, "samples": list(outcome.samples)})
        if self.rank == 0:
            log.warning("health: step %d %s, %s", outcome.step, v.kind, v.action)

    def _diverged(self, outcome: guard.StepOutcome) -> int:
        """More bad steps than the policy allows: report the first one and stop with 65 (no checkpoint:
        the state may already be damaged; the last healthy checkpoint is where a replay starts)."""
        first = outcome.verdict.diverged
        assert first is not None
        self.wait_for_saves()  # an earlier checkpoint still being written is finished first
        samples = list(first.samples)
        self.reporter.diverged(first.step, first.kind, samples)
        self._log(
            {
                "type": "diverged",
                "step": first.step,
                "kind": first.kind,
                "samples": samples,
                "at_step": outcome.step,
            }
        )
        if self.rank == 0:
            log.error(
                "diverged: more than %d bad steps within %d steps (first: step %d, %s, samples [%d, %d)); "
                "exit %d",
                self.cfg.health.max_bad_steps,
                self.cfg.health.bad_window,
                first.step,
                first.kind,
                samples[0],
                samples[1],
                EXIT_DIVERGED,
            )
        return EXIT_DIVERGED

    def _on_sigterm(self, last_saved: int) -> int:
        """Checkpoint when the last save took less than half the grace left (rank 0 decides for all)."""
        import torch

        decision = torch.zeros(1, device=self.device)
        left = needed = 0.0
        if self.rank == 0:
            self.wait_for_saves()  # a save in flight counts against the grace period too
            left = self.control.grace_left(self.grace)
            needed = self.control.save_seconds or 0.0
            decision[0] = float(
                self.cfg.checkpoint.on_sigterm and last_saved != self.step and 2 * needed < left
            )
            if not decision[0] and last_saved != self.step:
                log.warning(
                    "SIGTERM: %.0f s of grace left, the last save took %.0f s: not saving", left, needed
                )
        self.dist.broadcast(decision, src=0)
        if decision[0]:
            self.save(trigger="sigterm")
        self.wait_for_saves()  # the SIGTERM checkpoint must be durable before the process exits
        saved = bool(decision[0])
        record = {"type": "sigterm", "step": self.step, "saved": saved}
        self._log({**record, "grace_left_s": left, "expected_save_s": needed})
        self.reporter.sigterm(self.step, saved, left, needed)
        return EXIT_SIGTERM

    def _log(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:  # JsonLines locks: the checkpoint writer thread logs too
            self.metrics.write({**record, "time": time.time()})

    def close(self, clean: bool) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()  # type: ignore[union-attr]
        if hasattr(self, "reporter"):
            self.reporter.close()
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()  # type: ignore[union-attr]
        if self.dist.is_initialized():
            if clean:
                self.dist.barrier()
            self.dist.destroy_process_group()


def _in_position_order(gathered: list[list[int]], plan: Any) -> list[int]:
    """Rank-major lists of ids (micro-step by micro-step) back into global position order."""
    micro, world = plan.micro_batch, plan.world_size
    out: list[int] = []
    for a in range(plan.accumulation):
        for r in range(world):
            out.extend(gathered[r][a * micro : (a + 1) * micro])
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """After a resume, drop records of steps the restored state has not reached (they will be redone)."""
    if not path.is_file():
        return
    from tokensmith.core.io import atomic_write_text

    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if int(record.get("step", 0)) <= step and record.get("type") != "done":
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _progress_bar(rank: int, start: int, total: int) -> Any:
    if rank != 0 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)


def train(cfg: TrainerConfig) -> int:
    """Run (or resume) training in this process; returns the exit code."""
    trainer = Trainer(cfg)
    clean = False
    try:
        trainer.setup()
        code = trainer.run()
        clean = True
        return code
    finally:
        if hasattr(trainer, "dist"):
            trainer.close(clean)
