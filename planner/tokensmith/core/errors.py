"""Errors that reach users as one line, and the exit codes the CLI documents.

A `TokensmithError` raised inside a click command is a `click.ClickException`, so click prints
`Error: <message>` and exits with `exit_code`; nothing else (no traceback) reaches the user.
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # bad input: unknown names, contradictory or out-of-range values, missing files
EXIT_CONFIG = 78  # sysexits.h EX_CONFIG: a trainer config the user must fix; the operator never retries it
# sysexits.h EX_DATAERR: the run diverged (non-finite or spiking loss beyond the health policy's limits);
# the operator rolls back to the last healthy checkpoint instead of resuming from the latest.
EXIT_DIVERGED = 65


class TokensmithError(click.ClickException):
    """An error the user can act on: the message says what is wrong and what to do."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code  # type: ignore[misc]  # click declares it a ClassVar


class ConfigError(TokensmithError):
    """A configuration that can never work as written (exit 78, non-retryable)."""

    exit_code = EXIT_CONFIG


class NotImplementedYet(TokensmithError):
    """A subcommand whose component has not been built yet."""

    def __init__(self, command: str) -> None:
        super().__init__(f"`tokensmith {command}` is not implemented yet", exit_code=EXIT_USAGE)


def placeholder_command(name: str, help_text: str) -> click.Command:
    """A subcommand whose component is not built yet: exits 2 with one line, never a traceback."""

    @click.command(
        name=name,
        help=f"{help_text} (not implemented yet)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def command() -> None:
        raise NotImplementedYet(name)

    return command
