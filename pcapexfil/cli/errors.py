"""Errors on one line: the commands' own (`fail`), and click's usage errors.

click's standalone mode prints usage, a hint and the error on several lines; a sensor's
logs and scripts want `pcapexfil: error: <what>` on one line with the same exit status
(2 for usage errors, the exception's own code otherwise).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

# click >= 8.2 raises this (a UsageError carrying the help text) for a bare group/command.
_NO_ARGS_IS_HELP: tuple[type, ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if t is not None)


def one_line_errors(group: click.Group) -> Callable[..., Any]:
    """A replacement for `group.main` that runs it non-standalone and prints click's
    errors as one line (help, --version and sys.exit inside commands work as before)."""
    original = group.main

    def main(args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return original(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = original(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            if isinstance(exc, _NO_ARGS_IS_HELP):  # bare `pcapexfil CMD`: the help is the message
                click.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"pcapexfil: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"pcapexfil: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("pcapexfil: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    return main


def fail(message: str, status: int = 2) -> NoReturn:
    click.echo(f"pcapexfil: error: {message}", err=True)
    sys.exit(status)


def io_error(exc: OSError, default: str) -> str:
    """One line naming the file of an I/O error."""
    return f"{exc.filename or default}: {exc.strerror or exc}"
