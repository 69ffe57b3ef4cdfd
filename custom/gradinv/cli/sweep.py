"""``gradinv sweep``: the paper's privacy–utility trade-off, leakage per site against the noise level σ0.

Runs the demo job (or the job in --job) in the NVFlare simulator once per σ0 of the Gaussian privacy filter
(and once per NVFlare filter asked for with --filters, at its default settings), one after another, each in
its own workspace under --out/runs/, and writes under --out:

  sweep.csv           one row per run x site x round: filter, sigma0, site, round, num_images, rdlv, ssim,
                      lpips, test_accuracy (the run's FINAL global model), leak_score, ssim_max, rdlv_max, ...
  privacy_utility.png RDLV per site against σ0, global test accuracy on a second axis
  ssim_vs_sigma0.png  SSIM per site against σ0 (the visual line 0.5), test accuracy on a second axis
  sweep_report.html   self-contained report (mode 0600): plots, calibrated noise per site, the rank correlation
                      of the no-ground-truth leak_score with the true RDLV/SSIM, the table, links to every
                      run's own report.html

Calibrated noise, per site: the smallest σ0 of the grid at which the site's RDLV stays below 0 in every
attacked round (the paper's criterion; relative to the prior), and, separately, the smallest σ0 at which no
image of any attacked round reaches SSIM 0.5 (the visual "no image visibly leaked" line). --calibrate refines
each by bisection between the last failing and the first passing grid value (--calibrate-steps rounds; each
round runs one simulation per distinct midpoint, so at most steps x 2 x sites extra runs, usually fewer
because sites share brackets).

Per-run cost: the default sweep attacks with 300 iterations per image (--iterations; the demo's preset uses
1000) so that the default grid of 3 runs fits ~15 minutes on a 2-core CPU. Pass --iterations 1000 for the
demo's attack strength.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gradinv.errors import GradinvError
from gradinv.sweep.runner import (
    DEFAULT_CALIBRATE_STEPS,
    DEFAULT_FILTERS,
    DEFAULT_ITERATIONS,
    DEFAULT_OUT,
    DEFAULT_SIGMAS,
    JOB_JSON,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="privacy-utility sweep: leakage per site and test accuracy against the noise level sigma0",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sigma0", default=DEFAULT_SIGMAS, metavar="LIST",
                        help=f"comma-separated noise levels of the Gaussian filter (default {DEFAULT_SIGMAS}; "
                             "the paper sweeps 0,5,...,50)")
    parser.add_argument("--filters", default=DEFAULT_FILTERS, metavar="LIST",
                        help="gaussian[,percentile,svt]: percentile and svt (NVFlare's) run once each with their "
                             "defaults and are reported with an empty sigma0 (default gaussian)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"sweep folder (default ./{DEFAULT_OUT})")
    parser.add_argument("--rounds", type=int, default=None, help="FedAvg rounds per run (default: the job's, 2)")
    parser.add_argument("--iterations", type=int, default=None, metavar="K",
                        help=f"attack iterations per image (default: the --job's own override if it sets one, "
                             f"else {DEFAULT_ITERATIONS}; 0 = the attack preset's count)")
    parser.add_argument("--calibrate", action="store_true",
                        help="refine each site's calibrated sigma0 by bisection (extra runs)")
    parser.add_argument("--calibrate-steps", type=int, default=DEFAULT_CALIBRATE_STEPS, metavar="N",
                        help=f"bisection rounds with --calibrate (default {DEFAULT_CALIBRATE_STEPS})")
    parser.add_argument("--job", type=Path, default=None, metavar="JSON",
                        help=f"job settings: a JSON file of JobSettings fields (filter and training as nested "
                             f"objects), or an exported job folder holding {JOB_JSON} (default: the demo job)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse runs under --out that finished with identical settings (e.g. after an "
                             "interruption); only the missing runs are simulated")
    parser.add_argument("--run-timeout", type=float, default=None, metavar="SECONDS",
                        help="give up on a run after this long (default: no limit)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gradinv.sweep.analysis import parse_filters, parse_sigma_grid, plan_runs
    from gradinv.sweep.runner import (
        SweepMeta,
        calibrate_by_bisection,
        describe_load,
        load_average,
        load_job_settings,
        print_calibration,
        run_sweep,
        sweep_base_settings,
        write_outputs,
    )

    sigmas = parse_sigma_grid(args.sigma0)
    filters = parse_filters(args.filters)
    if args.calibrate and "gaussian" not in filters:
        raise GradinvError("--calibrate needs the gaussian filter in --filters")
    if args.calibrate_steps < 0:
        raise GradinvError("--calibrate-steps must be >= 0")
    if args.run_timeout is not None and args.run_timeout <= 0:
        raise GradinvError("--run-timeout must be > 0")
    base = load_job_settings(args.job)
    if base.privacy not in ("none", None) and args.job is not None:
        print(f"gradinv sweep: the job's own privacy filter ({base.privacy}) is replaced by the sweep's filters")
    iterations = args.iterations
    if iterations is None and "iterations" not in (base.filter.attack_overrides or {}):
        iterations = DEFAULT_ITERATIONS
    settings = sweep_base_settings(base, args.rounds, iterations)
    chosen = (settings.filter.attack_overrides or {}).get("iterations")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(sigmas, filters)
    meta = SweepMeta(
        sigmas=sigmas, filters=filters, settings=settings.to_dict(),
        command="gradinv sweep " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["sweep"] else "gradinv sweep",
        started_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"), load_before=load_average(), cpu_count=os.cpu_count(),
        calibrate=args.calibrate, calibrate_steps=args.calibrate_steps if args.calibrate else 0,
        iterations_note=(f"{chosen} attack iterations per image (sweep default {DEFAULT_ITERATIONS}, "
                         f"--iterations to change)" if chosen
                         else f"the '{settings.filter.preset}' preset's attack iterations"),
    )
    sites = settings.sites()
    print(f"gradinv sweep: {len(specs)} runs ({', '.join(s.describe() for s in specs)}), "
          f"{len(sites)} sites holding {list(settings.images_per_site)} images, {settings.num_rounds} rounds, "
          f"{settings.resolution} px, {meta.iterations_note}")
    print(f"  out: {out_dir.resolve()}   load average {describe_load(meta.load_before)} on {meta.cpu_count} CPUs",
          flush=True)
    started = time.monotonic()
    outcomes = run_sweep(specs, settings, out_dir, resume=args.resume, timeout=args.run_timeout, first_index=1,
                         total=len(specs))
    if args.calibrate:
        outcomes += calibrate_by_bisection(outcomes, settings, out_dir, args.calibrate_steps, resume=args.resume,
                                           timeout=args.run_timeout, meta=meta)
    meta.wall_seconds = time.monotonic() - started
    meta.load_after = load_average()
    paths = write_outputs(out_dir, outcomes, meta)
    print(f"\ngradinv sweep finished in {meta.wall_seconds:.0f} s ({meta.wall_seconds / 60:.1f} min); "
          f"load average now {describe_load(meta.load_after)}")
    for name, path in paths.items():
        print(f"  {name + ':':<14}{path}")
    print_calibration(outcomes)
    failed = [o for o in outcomes if not o.succeeded]
    if failed:
        print(f"\n{len(failed)} run(s) failed: " + "; ".join(f"{o.spec.describe()}: {o.message}" for o in failed),
              file=sys.stderr)
        return 1
    return 0
