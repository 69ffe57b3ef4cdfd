"""``gradinv audit RUN_DIR [--workers N] [--device D] [--model SPEC]``: attack a run's spilled updates later.

The route for a federation whose attacks outgrow the server machine: audit mode spills the updates it could not
attack in the job (``<run_dir>/gradinv/pending/``); this command attacks them with the run's own settings, replaces
their ``not_attacked`` rows in ``metrics.csv`` with the rows the filter would have written, and rebuilds
``report.html``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand to the ``gradinv`` parser."""
    parser = subparsers.add_parser(
        "audit",
        help="attack the updates an audit-mode run spilled, and rebuild its rows and report",
        description=(
            "Attack every update an audit-mode run left under <run_dir>/gradinv/pending/ with the settings the "
            "filter ran with (settings.json), write their metrics.csv rows in place of the not_attacked ones, "
            "delete each spilled update once attacked (unless the run set keep_updates) and rebuild report.html."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder holding gradinv/metrics.csv (or the gradinv folder)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="attack N updates at once, each in its own process (with auto device: one GPU each, "
                        "round robin); the rows and report are the same as with 1 (default 1)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the run's setting)")
    parser.add_argument(
        "--model",
        help="the clients' model (registry name or a JSON class spec); needed when the run attacked the job's own "
        "model (model=None), which settings.json cannot name",
    )
    parser.set_defaults(func=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    """Attack the spilled updates; print one line per update and the report's path."""
    from gradinv.fl.offline_audit import audit_spilled_run

    for row in audit_spilled_run(args.run_dir, device=args.device, model=args.model,
                                 workers=args.workers):
        print(f"round {row['round']} {row['site']}: {row['status']}")
    from gradinv.report.run_report import build_report

    print(build_report(args.run_dir))
    return 0
