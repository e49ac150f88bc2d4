"""The `tokensmith` command: one click group whose subcommands load lazily.

`tokensmith --help` must stay fast (goal < 0.5 s), so this module imports nothing heavy:
each subcommand lives in its component's package and is imported only when it is invoked
(or when its own `--help` is asked for).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from tokensmith.core.errors import EXIT_INTERNAL, TokensmithError

# name -> ("module:attribute", one-line help shown by `tokensmith --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("tokensmith.planner.cli:plan", "Pick model size, tokens and cluster shape from scaling laws."),
    "curate": ("tokensmith.trainer.data.cli:curate", "Filter, de-duplicate, redact and tokenize raw text."),
    "data": ("tokensmith.trainer.data.cli:data", "Inspect curated token shards (cat, stats)."),
    "train": ("tokensmith.trainer.cli:train", "Train a decoder-only transformer with DeepSpeed."),
    "export": ("tokensmith.trainer.cli:export", "Export a checkpoint as a Hugging Face model."),
    "eval": ("tokensmith.evaluator.cli:eval_", "Score a checkpoint on benchmarks and perplexity."),
    "run": (
        "tokensmith.operator.local.cli:run",
        "Run an LLMTrainingJob manifest (--local: on this machine).",
    ),
    "operator": ("tokensmith.operator.cli:operator", "Run the Kubernetes operator."),
    "crd": ("tokensmith.operator.cli:crd", "Print the LLMTrainingJob CustomResourceDefinition."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        target, _ = SUBCOMMANDS[cmd_name]
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static help text so that `tokensmith --help` imports no component.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in SUBCOMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokensmith", prog_name="tokensmith")
def cli() -> None:
    """Tokensmith: plan, curate, train, evaluate and operate LLM pretraining runs.

    Exit codes: 0 success; 1 internal error (a bug: please report it); 2 bad input or usage;
    78 a trainer configuration the user must fix (never retried by the operator).
    """


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: turn expected errors into one line and a documented exit code."""
    try:
        return cli.main(args=argv, standalone_mode=True)
    except TokensmithError as err:  # raised outside click's own handling (e.g. during lazy import)
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # pragma: no cover - last resort, keeps tracebacks off users' screens
        click.echo(
            f"internal error: {type(err).__name__}: {err} (set TOKENSMITH_DEBUG=1 for a traceback)", err=True
        )
        import os

        if os.environ.get("TOKENSMITH_DEBUG"):
            raise
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    main()
