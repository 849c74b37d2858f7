"""Options shared by the subcommands, and parsers of their values."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

from cellvi._settings import settings

F = TypeVar("F", bound=Callable[..., Any])

VERBOSITIES = ("DEBUG", "INFO", "WARNING", "ERROR")


def output_options(function: F) -> F:
    """``--quiet`` and ``--verbosity``, on every subcommand."""
    function = click.option(
        "--verbosity",
        type=click.Choice(VERBOSITIES, case_sensitive=False),
        default="WARNING",
        show_default=True,
        help="What else to print: INFO adds Lightning's device summary, DEBUG everything "
        "(third-party warnings, tracebacks of failures).",
    )(function)
    return click.option(
        "--quiet",
        "-q",
        is_flag=True,
        help="No progress bars (errors and warnings are still printed).",
    )(function)


@contextlib.contextmanager
def output_settings(verbosity: str) -> Iterator[None]:
    """For one command: ``cellvi.settings.verbosity``, and warnings printed on one line each.

    Both are put back afterwards, so a command run from Python (``cellvi.cli.cli``) leaves
    the caller's settings as they were.
    """
    previous = settings.verbosity
    with warnings.catch_warnings():
        settings.verbosity = verbosity.upper()
        warnings.showwarning = _show_warning
        if settings.verbosity <= logging.DEBUG:
            warnings.simplefilter("default")
        try:
            yield
        finally:
            settings.verbosity = previous


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``cellvi: warning: <message>``, on one line of stderr."""
    text = " ".join(str(message).split())
    if settings.verbosity <= logging.DEBUG:
        text += f" ({category.__name__}, {filename}:{lineno})"
    print(f"cellvi: warning: {text}", file=sys.stderr if file is None else file)


# Where a command runs (Lightning's accelerator names), for fits and queries alike.
_accelerator_option = click.option(
    "--accelerator",
    default="auto",
    show_default=True,
    help="Where to run: auto (a GPU when there is one), cpu, gpu, cuda, mps.",
)


def device_options(function: F) -> F:
    """``--accelerator`` and ``--devices`` (Lightning's names)."""
    function = click.option(
        "--devices",
        default="auto",
        show_default=True,
        help="Devices: 'auto', a number of devices, or indices such as '0' or '0,1'.",
    )(function)
    return _accelerator_option(function)


def parse_devices(value: str) -> int | str | list[int]:
    """``"auto"``, ``"2"`` (a count) or ``"0,1"`` (indices), as Lightning takes them."""
    value = value.strip()
    if value == "auto":
        return value
    try:
        if "," in value:
            return [int(part) for part in value.split(",") if part.strip()]
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use 'auto', a number or indices such as '0,1'.", param_hint="--devices"
        ) from None


def query_device_options(function: F) -> F:
    """``--accelerator`` and ``--device``: where a saved model runs its queries."""
    function = click.option(
        "--device",
        default="auto",
        show_default=True,
        help="Device index, or 'auto'.",
    )(function)
    return _accelerator_option(function)


def parse_device(value: str) -> int | str:
    """``"auto"`` or a device index."""
    value = value.strip()
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use 'auto' or a device index such as 0.", param_hint="--device"
        ) from None


def split_keys(values: Iterable[str]) -> list[str] | None:
    """Keys given as ``--opt a --opt b`` or ``--opt a,b``; None when none."""
    keys = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return keys or None
