"""The ``gradinv`` command: ``demo | attack | report | data | sweep | assets | bench-case``.

Each subcommand lives beside the code it drives, in a module exposing ``register(subparsers)``; the
parser imports only those light modules, and each command imports its heavy dependencies when it runs.
Errors that are the user's to fix (:class:`gradinv.errors.GradinvError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradinv",
        description="Measure how much of an FL client's training images can be rebuilt from its weight updates.",
    )
    parser.add_argument("--version", action="version", version=f"gradinv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except GradinvError as exc:
        print(f"gradinv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradinv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
