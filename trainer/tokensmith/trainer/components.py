"""torchx component: `torchx run -s local_cwd trainer/tokensmith/trainer/components.py:train -j 1x2
--config run.yaml` launches `tokensmith train` with torchrun the way torchx users expect (any torchx
scheduler: local_cwd, local_docker, kubernetes, slurm, ...).

Exit codes pass through: 0 the budget is reached, 78 a config to fix, others retryable.

torchx 0.7's component linter reads the signature's AST and knows only typing.Optional/Dict/List, so
this file spells types that way and keeps its annotations evaluated (no `from __future__`).
"""

# ruff: noqa: UP006, UP035, UP045

from typing import Dict, List, Optional

import torchx.specs as specs
from torchx.components import dist

DEFAULT_IMAGE = "ghcr.io/tokensmith/trainer:latest"


def train(
    *overrides: str,
    config: Optional[str] = None,
    preset: Optional[str] = None,
    image: str = DEFAULT_IMAGE,
    name: str = "tokensmith-train",
    j: str = "1x2",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 4096,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
    rdzv_port: int = 29500,
    mounts: Optional[List[str]] = None,
) -> specs.AppDef:
    """Pretrain a decoder-only transformer with `tokensmith train` (DeepSpeed, exact resume).

    Args:
        overrides: dotted.key=value overrides applied after the preset and the config file
        config: YAML or JSON trainer config file (as the workers see it)
        preset: training preset to start from (tiny, gpt2-124m, gpt2-350m, llama-1b/7b/13b/70b)
        image: container image with tokensmith[trainer] installed (ignored by local_cwd)
        name: job name
        j: {nnodes}x{nproc_per_node}, e.g. 2x8; nproc_per_node is one per GPU
        cpu: CPUs per node
        gpu: GPUs per node (0: DeepSpeed on CPU with gloo)
        memMB: memory per node in MB
        h: a registered named resource (takes precedence over cpu, gpu, memMB)
        env: extra environment variables for the workers
        max_retries: scheduler retries of the whole job (the run resumes from its last checkpoint)
        rdzv_port: port of the c10d rendezvous on the first node (multi-node runs)
        mounts: mounts for the data and checkpoint volumes (type=bind,src=/host,dst=/job)
    """
    args = ["train"]
    if config:
        args += ["--config", config]
    if preset:
        args += ["--preset", preset]
    for override in overrides:
        args += ["--set", override]
    workers_env = dict(env or {})
    if gpu == 0 and h is None:
        workers_env.setdefault("DS_ACCELERATOR", "cpu")
    return dist.ddp(
        *args,
        m="tokensmith.cli",
        image=image,
        name=name,
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env=workers_env,
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        mounts=mounts,
    )
