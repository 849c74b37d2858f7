"""The ``cellvi`` command line: ``fit``, ``latent``, ``normalize``, ``de``, ``info``.

Installed as the ``cellvi`` console script; ``cellvi --help`` lists the subcommands and
``cellvi SUBCOMMAND --help`` their options. It sits above every other layer and uses only
the public Python API, so its messages about bad input are the API's own.
"""

from cellvi.cli._main import cli, main
from cellvi.cli._report import write_training_report

__all__ = ["cli", "main", "write_training_report"]
