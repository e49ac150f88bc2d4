"""Where the curation stages run: datatrove's local executor (forked processes on this machine) or its Ray
executor (`RayPipelineExecutor`: one Ray actor per task, anywhere in a Ray cluster, e.g. a KubeRay
`RayCluster`/`RayJob`).

Both executors write the same files for a stage: `logs/<stage>/completions/<rank>` once a task is done
(a re-run skips it), `logs/<stage>/stats/<rank>.json` (the report sums them), and each task's outputs
under `.work/`. So a run resumes on either executor, and the report is the same whatever ran it.
Stages run one after another (each waits for the last task of the one before it), which is how the
MinHash stages' dependencies (signatures -> buckets -> clusters -> filter) are kept on Ray too.

Ray is an optional extra (`pip install 'tokensmith[ray]'`), imported only here and only for
`--executor ray`. Without an address, a private local Ray instance is started (as many CPUs as
`--workers`, a small object store: the stages pass files, not objects) and shut down at the end; with
`--ray-address` (or RAY_ADDRESS, which a KubeRay `RayJob` sets) the stages run on that cluster, whose
workers must see OUT through a shared file system or an fsspec URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError
from tokensmith.trainer.data.context import RunContext, Stage

EXECUTORS = ("local", "ray")
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB; the stages exchange files, not objects
MEMORY_PER_CPU_GB = 0.5  # what each task reserves in Ray's scheduler (datatrove's default is 2 GB)
KILL_ENV = "TOKENSMITH_CURATE_KILL_AT"  # testing hook: "STAGE:N" SIGKILLs the driver once N tasks are done


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TokensmithError(
            "--executor ray needs Ray: pip install 'tokensmith[ray]' (or use --executor local)"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[Any]:
    """Connect to a Ray cluster (ADDRESS, else RAY_ADDRESS), or start a private local one with `cpus`
    CPUs that is shut down on exit. Yields the `ray` module."""
    ray = _ray()
    if ray.is_initialized():  # a caller (a notebook, a test) already chose the cluster
        yield ray
        return
    target = address or os.environ.get("RAY_ADDRESS")
    temp: str | None = None
    try:
        if target:
            ray.init(address=target, log_to_driver=False, configure_logging=False)
        else:
            # A short private temp dir: Ray's socket paths must stay under 107 bytes, and a private
            # one keeps this instance apart from any other Ray on the machine.
            temp = tempfile.mkdtemp(prefix="tsray-", dir="/tmp")
            ray.init(
                num_cpus=cpus,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _temp_dir=temp,
            )
    except TokensmithError:
        raise
    except Exception as err:  # ConnectionError, a timeout, a version mismatch, ...
        where = f"the Ray cluster at {target}" if target else "a local Ray instance"
        raise TokensmithError(f"cannot start or reach {where}: {type(err).__name__}: {err}") from err
    try:
        yield ray
    finally:
        ray.shutdown()
        if temp is not None:  # our private instance's session files and logs
            shutil.rmtree(temp, ignore_errors=True)


def make_executor(ctx: RunContext, stage: Stage) -> Any:
    """The datatrove executor of one stage for `ctx.executor`."""
    logs = str(ctx.work / "logs" / stage.name)
    if ctx.executor == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline=stage.pipeline,
            tasks=stage.tasks,
            workers=stage.tasks,  # Ray queues what the cluster's CPUs cannot run yet
            logging_dir=logs,
            cpus_per_task=1,
            mem_per_cpu_gb=MEMORY_PER_CPU_GB,
        )
    from tokensmith.trainer.data.steps import QuietLocalExecutor

    executor = QuietLocalExecutor(
        pipeline=stage.pipeline,
        tasks=stage.tasks,
        workers=max(1, min(ctx.config.workers, stage.tasks)),
        logging_dir=logs,
        start_method="fork",
    )
    executor.log_file = str(ctx.work / "datatrove.log")
    return executor


def run_executor(ctx: RunContext, stage: Stage, executor: Any) -> None:
    """Run the stage's incomplete tasks; TokensmithError when some did not complete (Ray reports a
    failed task in its log instead of raising)."""
    watcher = _kill_hook(ctx, stage)
    executor.run()
    if watcher is not None:
        watcher.set()
    missing = executor.get_incomplete_ranks()
    if missing:
        logs = ctx.work / "logs" / stage.name / "logs"
        raise TokensmithError(
            f"{stage.name}: {len(missing)} of {stage.tasks} task(s) did not complete (ranks "
            f"{', '.join(map(str, missing[:8]))}); see {logs}; re-run the same command to redo only them"
        )


def _kill_hook(ctx: RunContext, stage: Stage) -> threading.Event | None:
    """TOKENSMITH_CURATE_KILL_AT=STAGE:N: SIGKILL this process once N tasks of STAGE are complete (tests
    of resume after a driver killed half-way)."""
    wanted = os.environ.get(KILL_ENV, "")
    name, _, count = wanted.partition(":")
    if name != stage.name or not count.isdigit():
        return None
    done = threading.Event()
    folder = Path(ctx.work / "logs" / stage.name / "completions")

    def watch() -> None:
        while not done.is_set():
            if folder.is_dir() and len(list(folder.iterdir())) >= int(count):
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return done
