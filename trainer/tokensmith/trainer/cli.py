"""`tokensmith train` and `tokensmith export`.

Heavy libraries (torch, deepspeed, transformers) are imported inside the commands, never here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from tokensmith.core.errors import EXIT_CONFIG, ConfigError, TokensmithError


def _setup_logging() -> None:
    rank = os.environ.get("RANK")
    prefix = f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {prefix}%(levelname)s %(message)s", stream=sys.stderr
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "torch.distributed.elastic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _launch_args(
    nproc: int, nnodes: int, node_rank: int, master_addr: str | None, master_port: int, forwarded: list[str]
) -> list[str]:
    """torchrun's arguments for `--nproc` (one process per GPU, or N CPU processes with gloo)."""
    args = ["--nproc-per-node", str(nproc), "--nnodes", str(nnodes)]
    if nnodes == 1 and master_addr is None:
        args.append("--standalone")
    else:
        args += ["--node-rank", str(node_rank), "--master-addr", master_addr or "127.0.0.1"]
        args += ["--master-port", str(master_port)]
    return [*args, "--module", "tokensmith.cli", "train", *forwarded]


def _launch(torchrun_args: list[str]) -> int:
    """Run torchrun in this process; map its failures to the trainer's exit codes (78 wins: a config
    error on any rank is the user's to fix, never retried)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_args))
    except ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        if EXIT_CONFIG in codes:
            return EXIT_CONFIG
        code = next((c for c in codes if c), 1)
        return code if code > 0 else 128 - code
    except SignalException as err:
        return 128 + int(err.sigval)
    return 0


@click.command(name="train")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML or JSON trainer config.")
@click.option(
    "--preset", help="Start from a training preset: tiny, gpt2-124m, gpt2-350m, llama-1b/7b/13b/70b."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one dotted key, e.g. --set train.lr=3e-4 --set checkpoint.dir=/ckpt (repeatable).",
)
@click.option("--nproc", type=click.IntRange(min=1), help="Launch N local processes (torchrun) and train.")
@click.option("--nnodes", type=click.IntRange(min=1), default=1, show_default=True, help="With --nproc.")
@click.option("--node-rank", type=click.IntRange(min=0), default=0, show_default=True, help="With --nproc.")
@click.option("--master-addr", help="With --nproc on several nodes: address of node 0.")
@click.option("--master-port", type=int, default=29500, show_default=True, help="With --nproc.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Format of --print-config.",
)
def train(
    config_path: str | None,
    preset: str | None,
    sets: tuple[str, ...],
    nproc: int | None,
    nnodes: int,
    node_rank: int,
    master_addr: str | None,
    master_port: int,
    print_config: bool,
    fmt: str,
) -> None:
    """Train a decoder-only transformer with DeepSpeed (resumes from the newest good checkpoint).

    Run it under torchrun (one process per GPU), or give --nproc N to launch the processes. The config is
    the preset, then the file, then each --set. Exit codes: 0 the token budget is reached; 78 a config
    to fix (never retried); 143 stopped by SIGTERM (checkpoint written when the grace period allowed);
    anything else is worth retrying.
    """
    from tokensmith.core.output import to_json, to_yaml
    from tokensmith.trainer.config import resolve_config

    cfg = resolve_config(config_path, preset, sets)
    if print_config:
        data = cfg.model_dump(mode="json")
        click.echo(to_json(data) if fmt == "json" else to_yaml(data), nl=fmt == "json")
        return
    _setup_logging()
    from tokensmith.trainer.loop import preflight
    from tokensmith.trainer.loop import train as run_training

    if nproc is not None:
        preflight(cfg, nproc * nnodes)  # exit 78 here, before any process starts
        forwarded: list[str] = []
        if config_path:
            forwarded += ["--config", str(Path(config_path).resolve())]
        if preset:
            forwarded += ["--preset", preset]
        for assignment in sets:
            forwarded += ["--set", assignment]
        code = _launch(_launch_args(nproc, nnodes, node_rank, master_addr, master_port, forwarded))
    else:
        code = run_training(cfg)
    if code:
        raise SystemExit(code)


@click.command(name="export")
@click.option(
    "--checkpoint",
    "checkpoint_path",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A checkpoint directory, or checkpoint.dir (then its `latest`).",
)
@click.option("--hf", "hf_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--arch",
    type=click.Choice(["auto", "llama", "gpt2", "gpt-neox"]),
    default="auto",
    show_default=True,
    help="Hugging Face architecture; auto picks the one that represents the model exactly.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Weight dtype in the safetensors file.",
)
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
def export(checkpoint_path: str, hf_dir: str, arch: str, dtype: str, force: bool) -> None:
    """Export a checkpoint as a Hugging Face `transformers` model (safetensors weights + tokenizer).

    Llama for RMSNorm + SwiGLU + RoPE models; GPT-2 for LayerNorm + GELU + learned positions; GPT-NeoX for
    LayerNorm + GELU + RoPE. Other combinations have no exact Hugging Face equivalent and are refused.
    """
    from tokensmith.trainer.export import export_checkpoint

    try:
        result = export_checkpoint(checkpoint_path, hf_dir, arch=arch, dtype=dtype, force=force)
    except ValueError as err:
        raise TokensmithError(str(err)) from err
    click.echo(f"wrote {result.architecture} model (step {result.step}) to {result.path}")


__all__ = ["ConfigError", "export", "train"]
