"""``musclesam`` entry point: builds the sub-command parsers and turns user errors into exit code 2.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` which registers the
parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from typing import Sequence

from ..errors import InputWarning, MuscleSAMError
from ..version import __version__
from . import cmd_bench, cmd_demo, cmd_evaluate, cmd_export, cmd_sample, cmd_segment, cmd_train, cmd_web

EXIT_USER_ERROR = 2

COMMANDS = (cmd_demo, cmd_segment, cmd_evaluate, cmd_export, cmd_train, cmd_bench, cmd_web, cmd_sample)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="musclesam",
        description="Uncertainty-aware SAM-ensemble segmentation of thigh muscle MRI. Demo and research use only; not for clinical use.",
    )
    parser.add_argument("--version", action="version", version=f"musclesam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: staging folders are removed, nothing half-published


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and threading.current_thread() is threading.main_thread():  # the real command line, not a test
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():  # input warnings as one line each, before any result
            warnings.simplefilter("always", InputWarning)
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
                if issubclass(category, InputWarning):
                    print(f"musclesam {args.command}: warning: {message}", file=sys.stderr)
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            return int(args.func(args) or 0)
    except MuscleSAMError as exc:
        print(f"musclesam {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"musclesam {args.command}: interrupted", file=sys.stderr)
        return 130
