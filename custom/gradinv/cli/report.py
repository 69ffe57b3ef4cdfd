"""``gradinv report RUN_DIR [--out FILE]``: build the self-contained HTML leakage report of a run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand to the ``gradinv`` parser."""
    parser = subparsers.add_parser(
        "report",
        help="build the HTML leakage report of a run",
        description=(
            "Build one self-contained report.html (images and plots embedded, mode 0600) from the artifacts the "
            "server filter wrote under <run_dir>/gradinv/. RUN_DIR may be the gradinv folder, the run dir, a "
            "simulator workspace, or a POC job download (<dir>/<job_id>/workspace/gradinv)."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder holding gradinv/metrics.csv (or the gradinv folder)")
    parser.add_argument("--out", metavar="FILE", help="where to write the report (default: <gradinv dir>/report.html)")
    parser.set_defaults(func=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    """Build the report and print its path."""
    from gradinv.report.run_report import build_report  # matplotlib loads only when the command runs

    print(build_report(args.run_dir, args.out))
    return 0
