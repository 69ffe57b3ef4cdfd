"""``gradinv bench-case``: time one attack iteration of one client configuration (:mod:`gradinv.bench.case`).

This module stays light (argparse only); the harness, and torch with it, load when the command runs.
"""

from __future__ import annotations

import argparse
import json


def add_case_arguments(parser: argparse.ArgumentParser, *, single: bool = True) -> None:
    """Options shared by ``gradinv bench-case`` and ``bench/attack_speed.py``."""
    parser.add_argument("--model", default="bn_cnn", help="architecture (default bn_cnn)")
    parser.add_argument("--resolution", type=int, default=64, help="image side in px (default 64)")
    if single:
        parser.add_argument("--num-images", type=int, default=1, metavar="N", help="client images (default 1)")
        parser.add_argument("--batch-size", type=int, default=None, metavar="B", help="local batch size (default N)")
    parser.add_argument("--epochs", type=int, default=1, help="local epochs (default 1)")
    parser.add_argument("--reps", type=int, default=7,
                        help="timed repetitions per method; the median is reported (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first (default 2)")
    parser.add_argument("--inner", type=int, default=10, help="calls per timed sample, averaged (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (CUDA if available)")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="do not flush denormals to zero (by default they are flushed for every method: on CPU, "
                             "oneDNN's stride-2 conv backward of the client's N=1 training step can run ~40x slower "
                             "on denormals, which would flatter the iteration/training ratio)")
    parser.add_argument("--seed", type=int, default=0)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gradinv bench-case`` to the ``gradinv`` parser."""
    parser = subparsers.add_parser(
        "bench-case",
        help="time one attack iteration vs. a local-training pass and a reference-style loop (one configuration)",
        description=("Time one gradinv attack iteration against one local-training pass of the same client and "
                     "against a reference-style loop with the same math (interleaved, median of --reps after "
                     "--warmup). Prints a table and, as the last line, a JSON object. "
                     "bench/attack_speed.py runs the default cases."),
    )
    add_case_arguments(parser)
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of the eager and the compiled iteration")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gradinv.bench.case import CaseSpec, format_table, profile_case, run_case
    from gradinv.cli.common import parse_device

    case = CaseSpec(args.model, args.resolution, args.num_images, args.batch_size or args.num_images, args.epochs)
    device = parse_device(args.device)
    result = run_case(case, reps=args.reps, warmup=args.warmup, inner=args.inner, threads=args.threads,
                      device=device, seed=args.seed, flush_denormal=not args.keep_denormals)
    print(format_table([result]))
    if args.profile:
        print(profile_case(case, threads=args.threads, device=device, seed=args.seed,
                           flush_denormal=not args.keep_denormals))
    print(json.dumps(result))
    return 0
