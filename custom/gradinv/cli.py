"""The ``gradinv`` command: ``demo | attack | report | data | sweep | assets | bench-case``.

Each subcommand lives beside the code it drives, in a module exposing ``register(subparsers)``; the
parser imports only those light modules, and each command imports its heavy dependencies when it runs.
Errors that are the user's to fix (:class:`gradinv.errors.GradinvError`, argparse's own, an unknown
option) print one line, named after the subcommand, and exit 2; a closed stdout (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from gradinv import __version__
from gradinv.errors import GradinvError

SUBCOMMAND_MODULES = (
    "gradinv.fl.demo",
    "gradinv.attack.cli",
    "gradinv.report.cli",
    "gradinv.data.cli",
    "gradinv.report.sweep",
    "gradinv.assets",
    "gradinv.attack.bench_case",
)
#: Exit status after stdout was closed by its reader (128 + SIGPIPE, what a shell reports for such a kill).
BROKEN_PIPE_STATUS = 141


def one_line(text: object) -> str:
    """``text`` with every run of white space (newlines and tabs from embedded exceptions, a file name
    with a newline) folded into one space, so that an error message stays one line."""
    return " ".join(str(text).split())


def path_argument(text: str) -> Path:
    """argparse ``type`` of a path option: refuses an empty path, which ``Path`` would read as the current
    folder (so that ``--images "$UNSET"`` cannot silently attack, or write into, whatever the shell is in)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not allowed (it would mean the current folder); give a path")
    return Path(text).expanduser()


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``<prog>: error: <message> (see <prog> --help)``, exit 2.

    Subparsers made with ``add_subparsers`` are of the parent's class, so every ``gradinv`` subcommand
    (``gradinv data datalists`` too) reports its argument errors this way.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="gradinv",
        description="Measure how much of an FL client's training images can be rebuilt from its weight updates.",
    )
    parser.add_argument("--version", action="version", version=f"gradinv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)parser the arguments selected, e.g. that of ``gradinv data datalists``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen_parser(chosen, args)
    return parser


def _quiet_broken_pipe() -> int:
    """stdout's reader went away: point stdout at /dev/null so that the exit flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout without a file descriptor (e.g. replaced in tests)
        pass
    return BROKEN_PIPE_STATUS


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named after the subcommand, not the top-level parser
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a broken pipe shows here, while it can still be handled, not at interpreter exit
        return status
    except GradinvError as exc:
        print(f"{_chosen_parser(parser, args).prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print(f"gradinv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
