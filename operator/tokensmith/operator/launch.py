"""The worker pods' entry point: torchrun's launcher, but the trainer's exit code survives it.

`torchrun` exits 1 whenever a local worker process fails, so the trainer's documented exit codes
(78 = fix your config, never retried) would be lost and every configuration error retried until
`maxRestarts`. This module runs the same elastic launcher (`torch.distributed.launcher.api`) with
the node's shape from the environment the operator sets (NNODES, NODE_RANK, NPROC_PER_NODE,
MASTER_ADDR, MASTER_PORT) and exits with the first failed process's own code (a process killed by
signal N exits 128 + N, as a shell reports it; the kernel's OOM killer gives 137).

    python -m tokensmith.operator.launch [-- ARGS...]   # default ARGS: train --config $TOKENSMITH_CONFIG
"""

from __future__ import annotations

import os
import sys


def exit_code_of(code: int) -> int:
    """A child's exit code as a shell would report it (signals as 128 + N)."""
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        args = ["train", "--config", os.environ.get("TOKENSMITH_CONFIG", "/etc/tokensmith/trainer.yaml")]
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nnodes = int(os.environ.get("NNODES", "1"))
    endpoint = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}"
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=int(os.environ.get("NPROC_PER_NODE", "1")),
        run_id=os.environ.get("TOKENSMITH_JOB_NAME", "tokensmith"),
        rdzv_backend="static",
        rdzv_endpoint=endpoint,
        rdzv_configs={"rank": int(os.environ.get("NODE_RANK", "0"))},
        max_restarts=0,  # the operator restarts whole gangs; a node never restarts alone
    )
    try:
        elastic_launch(config, sys.executable)("-m", "tokensmith.cli", *args)
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        return exit_code_of(failure.exitcode) or 1
    return 0


if __name__ == "__main__":  # pragma: no cover - runs inside the worker pods
    sys.exit(main())
