"""The ``matryoshka`` command line: one module per command, each with ``register(commands)``
(its options) and ``run(args)`` (its work, returning the exit status).

Errors from bad input (``ValueError``, ``TypeError``, a missing file, a corrupted index, ...)
become one line ``matryoshka COMMAND: error: ...`` on stderr and exit status 2; a provider or
storage failure exits with 1. ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import traceback
from collections.abc import Sequence

from ..encoders.base import EncoderError
from . import copy, demo, evaluate, fit_projection, index, plan, search, train, tune

__all__ = ["build_parser", "main"]

COMMANDS = (demo, evaluate, plan, index, search, tune, copy, fit_projection, train)
#: Errors that mean the input was wrong: exit status 2.
INPUT_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    ImportError,
    ArithmeticError,
    RecursionError,
)
#: Errors of a provider or the store: exit status 1.
RUN_ERRORS = (EncoderError, sqlite3.Error)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``matryoshka`` command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="matryoshka",
        description="Matryoshka embeddings for retrieval: truncate, quantize, search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``matryoshka`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.handler(args))
    except INPUT_ERRORS as exc:
        return _fail(args, exc, 2)
    except RUN_ERRORS as exc:
        return _fail(args, exc, 1)
    except KeyboardInterrupt:
        print(f"matryoshka {args.command}: interrupted", file=sys.stderr)
        return 130


def _fail(args: argparse.Namespace, exc: BaseException, status: int) -> int:
    if args.verbose:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"matryoshka {args.command}: error: {message}", file=sys.stderr)
    return status
