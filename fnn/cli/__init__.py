"""The command line: ``fnn COMMAND ...`` (also ``python -m fnn COMMAND ...``).

Each subcommand is one module of this package with ``register(sub)``, which adds its parser
and sets ``run``, the function that takes the parsed arguments and returns the exit status.
``fnn train`` (``fnn.cli.train``) is the main job; ``fnn evaluate``, ``fnn predict`` and
``fnn export`` use the model it saves; ``fnn lr-find`` (``fnn.cli.lr_find``) is the
learning-rate range test; ``fnn compare`` puts runs side by side.
"""

from __future__ import annotations

import argparse
import sys

from fnn.cli import compare, evaluate, export, lr_find, predict, train
from fnn.cli._args import format_confusion

COMMANDS = (train, evaluate, predict, export, lr_find, compare)
"""The subcommand modules, in the order ``fnn --help`` lists them."""

__all__ = ["COMMANDS", "build_parser", "format_confusion", "main"]


def _version() -> str:
    import fnn
    return fnn.__version__


def build_parser() -> argparse.ArgumentParser:
    """The ``fnn`` argument parser with every subcommand of ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="fnn",
                                     description="fnn: a functional neural-network library on JAX.")
    parser.add_argument("--version", action="version", version=f"fnn {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fnn`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
