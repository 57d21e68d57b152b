r"""The ``strnn-fast`` command line.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed arguments and returning
an exit code.

Example:
    >>> main(["--help"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ..threads import cpu_threads

# Subcommand modules, in the order `--help` lists them.
COMMANDS = ("demo", "fit", "sample", "logprob", "intervene", "counterfactual", "factorize", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="strnn-fast", description="Structured Neural Networks: factorize, fit, sample, intervene."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so that ``finally`` blocks remove temporary files."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _label(args: argparse.Namespace) -> str:
    return f"strnn-fast {args.command}".strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code.

    2 with a one-line message for bad input, a full disk or an unwritable file; on SIGINT (130)
    or SIGTERM (143) one line, after temporary files are removed (``fit`` first saves the best
    weights so far, see :mod:`strnn_fast.cli.fit`); 0 when stdout is closed early (``| head``).
    """
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers only there
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    args = argparse.Namespace(command="")
    try:
        # Inside the try: a Ctrl-C while the subcommands import is one line too.
        args = build_parser().parse_args(argv)
        with cpu_threads(args.threads):  # the thread policy (strnn_fast.threads), once for every command
            return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as err:  # OSError: missing, existing, unreadable files
        if isinstance(err, BrokenPipeError):  # the reader went away (`| head -1`): not an error here
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"{_label(args)}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_label(args)}: interrupted; no output was written", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{_label(args)}: terminated; no output was written", file=sys.stderr)
        return 143
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
