"""How the command line fails: one line on stderr, exit status 1 (2 for bad usage)."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click

from cellvi._settings import settings
from cellvi.cli._options import output_settings

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A command that could not do its job: ``cellvi CMD: error: <reason>``, exit status 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        context = click.get_current_context(silent=True)
        self.command = context.command_path if context is not None else "cellvi"

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the reason, on one line, to stderr."""
        click.echo(f"{self.command}: error: {one_line(self.message)}", err=True, file=file)


def one_line(message: object) -> str:
    """``message`` on one line (the lines of a longer message joined)."""
    return " ".join(str(message).split())


def reason(error: BaseException) -> str:
    """What went wrong, as the Python API said it (a KeyError's message without quotes)."""
    if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
        return error.args[0]
    text = str(error)
    return text if text else type(error).__name__


def reported(function: F) -> F:
    """Run a command under its ``--verbosity``, and turn any error into a :class:`Failure`.

    The failure carries the Python API's own message (a missing key, a model directory that
    is not one, ...). Errors that are not about the input (a bug) carry their type too, and
    ``--verbosity DEBUG`` prints their traceback. Ctrl+C exits with status 130.
    """

    @functools.wraps(function)
    def wrapper(*args: Any, verbosity: str = "WARNING", **kwargs: Any) -> Any:
        with output_settings(verbosity):
            try:
                return function(*args, **kwargs)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except KeyboardInterrupt:
                click.echo("cellvi: interrupted", err=True)
                sys.exit(130)
            except _INPUT_ERRORS as error:
                _debug_traceback()
                raise Failure(reason(error)) from error
            except Exception as error:
                _debug_traceback()
                raise Failure(f"{type(error).__name__}: {reason(error)}") from error

    return wrapper  # type: ignore[return-value]


# Errors whose message says what is wrong with the input (the API's own wording).
_INPUT_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    ModuleNotFoundError,
    PermissionError,
    IsADirectoryError,
    RuntimeError,
)


def _debug_traceback() -> None:
    if settings.verbosity <= logging.DEBUG:
        traceback.print_exc()
