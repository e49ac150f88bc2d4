"""Checkpoint writes off the training path (`checkpoint.async_save`).

DeepSpeed writes every checkpoint file through its pluggable `CheckpointEngine` (`save(state_dict,
path)`, deepspeed/runtime/checkpoint_engine/); ours, `StagingCheckpointEngine`, stages each state dict in
host memory (a private copy of every tensor, with DeepSpeed's own `clone_tensors_for_torch_save`, so
later optimizer steps cannot change what is written) and hands the write to one background thread per
process: training continues while the bytes reach the filesystem. This is the scheme of PyTorch's
`torch.distributed.checkpoint.async_save` (stage to CPU, then write asynchronously) applied to
DeepSpeed's own file layout, so DeepSpeed loads the result unchanged (and `ds_to_universal` converts it).
DeepSpeed's own asynchronous engines (FastCheckpointEngine, DecoupledCheckpointEngine) need its
JIT-compiled libaio op, which CPU machines and many clusters lack.

The same engine runs synchronously (writes inline) when `async_save` is off, and in both modes it
records which files this rank wrote, so each rank can hash exactly its own files for the manifest.
Costs: the staged copy doubles the host memory the state needs while a write is in flight, and the next
save waits for the previous one.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("tokensmith.trainer")


class BackgroundWriter:
    """One thread that runs submitted jobs in order; `wait()` blocks until all are done and re-raises
    the first failure (a failed checkpoint write must fail the run, not vanish)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tokensmith-ckpt-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as err:  # surfaced by wait()
                log.error("background checkpoint write failed: %s", err)
                self._error = err
            finally:
                self._jobs.task_done()

    def wait(self) -> None:
        self._jobs.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"a background checkpoint write failed: {error}") from error

    @property
    def busy(self) -> bool:
        return self._jobs.unfinished_tasks > 0

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)


def make_engine(writer: BackgroundWriter | None) -> Any:
    """A DeepSpeed CheckpointEngine that stages and writes through `writer` (None: inline)."""
    import torch
    from deepspeed.checkpoint.utils import clone_tensors_for_torch_save
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class StagingCheckpointEngine(TorchCheckpointEngine):
        def __init__(self) -> None:
            super().__init__(None)
            self.name = "TokensmithStagingCheckpointEngine"
            self.written: list[Path] = []

        def save(self, state_dict: Any, path: str) -> None:
            self.written.append(Path(path))
            if writer is None:
                torch.save(state_dict, path)
                return
            staged = clone_tensors_for_torch_save(state_dict)  # host memory, private to this save
            writer.submit(lambda: torch.save(staged, path))

        def preserves_storage_sharing(self) -> bool:
            # We copy every tensor ourselves, so DeepSpeed need not clone before calling save().
            return False

    return StagingCheckpointEngine()
