"""The ``gradinv`` command: ``demo | attack | audit | report | data | sweep | assets | bench-case``.

The front-end layer: one module per subcommand in this package, each exposing ``register(subparsers)``. Those
modules import only argparse-level code; each command imports what it drives (the attack core, the NVFlare job,
the report, the sweep) when it runs, so ``gradinv --help`` stays fast. Errors that are the user's to fix
(:class:`gradinv.errors.GradinvError`, argparse's own, an unknown option) print one line, named after the
subcommand, and exit 2; a closed stdout (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys

from gradinv import __version__
from gradinv.cli import assets, attack, audit, bench_case, data, demo, report, sweep
from gradinv.cli.common import OneLineArgumentParser, one_line
from gradinv.errors import GradinvError

#: The subcommands, in the order ``gradinv --help`` lists them.
SUBCOMMANDS = (demo, attack, audit, report, data, sweep, assets, bench_case)
#: Exit status after stdout was closed by its reader (128 + SIGPIPE, what a shell reports for such a kill).
BROKEN_PIPE_STATUS = 141


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="gradinv",
        description="Measure how much of an FL client's training images can be rebuilt from its weight updates.",
    )
    parser.add_argument("--version", action="version", version=f"gradinv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
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


