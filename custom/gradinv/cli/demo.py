"""``gradinv demo``: the default job in the NVFlare simulator, on the bundled sample data.

Three hospitals holding 1, 2 and 4 real medical images train a small BatchNorm CNN with FedAvg for two
rounds; the server's filter reconstructs every update and writes the leakage report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from gradinv.artifact_layout import GRADINV_SUBDIR, METRICS_CSV
from gradinv.errors import GradinvError

DEFAULT_WORKSPACE = Path("workspace") / "demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the default FedAvg + leakage-audit job in the NVFlare simulator",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workspace", type=Path, default=Path(os.environ.get("GRADINV_WORKSPACE", DEFAULT_WORKSPACE)),
                        help="simulator workspace root (default: ./workspace/demo, or $GRADINV_WORKSPACE)")
    parser.add_argument("--rounds", type=int, default=2, help="FedAvg rounds (default 2)")
    parser.add_argument("--images-per-site", default="1,2,4", help="images held by each hospital (default 1,2,4)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="attack iterations per update (default: the preset's 1000)")
    parser.add_argument("--block-threshold", type=float, default=None,
                        help="block updates whose rdlv_max exceeds this (default: measure only)")
    parser.add_argument("--mode", choices=("gate", "audit"), default=None, help="default gate")
    parser.add_argument("--no-images", action="store_true", help="do not save reconstruction images")
    parser.add_argument("--filter-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="any other setting of the server filter (GradInversionAggregatorFilter's arguments), "
                             "repeatable; VALUE is JSON where it parses as JSON, else a string, e.g. "
                             "--filter-arg fail_closed=true --filter-arg prior=none --filter-arg "
                             "'attack_overrides={\"iterations\": 300}' (replaces the demo's own overrides)")
    parser.add_argument("--export", dest="export_to", type=Path, default=None, metavar="DIR",
                        help="only export the job folder (for POC / admin submission) to DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gradinv.fl.job import JobSettings, export_job, simulate

    try:
        images_per_site = [int(n) for n in args.images_per_site.split(",")]
    except ValueError:
        raise GradinvError(f"--images-per-site must be comma-separated integers, "
                           f"got {args.images_per_site!r}") from None
    if args.rounds < 1 or any(n < 1 for n in images_per_site):
        raise GradinvError("--rounds and every --images-per-site value must be >= 1")
    settings = JobSettings(num_rounds=args.rounds, images_per_site=images_per_site, filter=_filter_settings(args))
    if args.export_to:
        print(f"job folder: {export_job(settings, args.export_to)}")
        return 0
    started = time.monotonic()
    print(f"gradinv demo: {len(images_per_site)} hospitals holding {images_per_site} images, {args.rounds} FedAvg "
          f"rounds; every update is inverted on the server before aggregation")
    run_dir = simulate(settings, args.workspace)
    gradinv_dir = run_dir / GRADINV_SUBDIR
    print(f"\ngradinv demo finished in {time.monotonic() - started:.0f} s")
    print(f"  run dir:     {run_dir}")
    print(f"  metrics:     {gradinv_dir / METRICS_CSV}")
    print(f"  report:      {gradinv_dir / 'report.html'}")
    _print_summary(gradinv_dir / METRICS_CSV)
    return 0


def _filter_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The server filter's settings: the demo's attack overrides, the dedicated flags, then ``--filter-arg``."""
    from_flags = {"mode": args.mode, "block_threshold": args.block_threshold,
                  "save_images": False if args.no_images else None}
    values: dict[str, Any] = {"attack_overrides": _demo_attack_overrides(args.iterations)}
    given = {key for key, value in from_flags.items() if value is not None}
    values.update((key, from_flags[key]) for key in given)
    if args.iterations is not None:
        given.add("attack_overrides")
    for text in args.filter_arg:
        key, value = parse_filter_arg(text)
        if key in given:
            raise GradinvError(f"the filter setting {key} is given twice (by --filter-arg, or by its own flag); "
                               "give it once")
        given.add(key)
        values[key] = value
    return values


def parse_filter_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--filter-arg``: KEY a filter setting, VALUE JSON where it parses as JSON, else a string."""
    from gradinv.fl.settings import AuditSettings

    key, separator, raw = text.partition("=")
    key = key.strip()
    known = [field.name for field in dataclasses.fields(AuditSettings)]
    if not separator or key not in known:
        raise GradinvError(f"--filter-arg takes KEY=VALUE with KEY one of {', '.join(known)}; got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _demo_attack_overrides(iterations: int | None) -> dict:
    # The same budget for every update, one run each (no restarts) and a polish half as long as that run keeps the
    # demo near 5 minutes on 2 cores: the preset's 3x polish took it to ~9 minutes, a 1x polish to 328-337 s
    # (2026-12-06); the half polish costs the 2-image hospital ~0.02 SSIM (0.888 -> 0.865 measured alone). Enough
    # for the 1-image hospital to be reconstructed almost exactly; the 2- and 4-image hospitals show how much less
    # this budget recovers from mixed images (which is no proof that mixing protects them).
    overrides = {"iterations_per_image_cap": 1, "restarts": 1, "polish": 0.5}
    if iterations is not None:
        overrides["iterations"] = iterations
    return overrides


def _number(cell: str, digits: int = 3) -> str:
    return "-" if cell == "" else f"{float(cell):.{digits}g}"


def _attack_cell(row: dict[str, str], verdict: bool | None) -> str:
    """``converged``, or ``NOT converged (d=0.64)`` with the final update distance; ``-`` when no attack ran."""
    if verdict is None:
        return "-"
    return "converged" if verdict else f"NOT converged (d={_number(row.get('update_distance', ''), 2)})"


def _print_summary(metrics_csv: Path) -> None:
    import csv

    from gradinv.report.artifacts import to_bool

    if not metrics_csv.exists():
        print("  (no metrics were written; see the server log in the run dir)")
        return
    with open(metrics_csv) as handle:
        rows = list(csv.DictReader(handle))
    # RDLV is relative to the prior: SSIM(prior, original) beside it says how far a perfect reconstruction can go.
    print(f"\n  {'round':>5} {'site':<8} {'images':>6} {'SSIM':>7} {'RDLV':>7} {'prior SSIM':>10} {'LPIPS':>8} "
          f"{'decision':<8} {'seconds':>7}  attack")
    verdicts = [to_bool(row.get("converged")) for row in rows]
    for row, verdict in zip(rows, verdicts):
        print(f"  {row['round']:>5} {row['site']:<8} {row['num_images']:>6} {_number(row['ssim']):>7} "
              f"{_number(row['rdlv']):>7} {_number(row.get('prior_ssim', ''), 2):>10} {_number(row['lpips'], 2):>8} "
              f"{row['decision']:<8} {_number(row['seconds']):>7}  {_attack_cell(row, verdict)}")
    unconverged = verdicts.count(False)
    if unconverged:
        print(f"\n  {unconverged} attack(s) did not converge (the reconstruction does not reproduce the update): "
              "their low scores are not evidence that the hospital is safe.")
