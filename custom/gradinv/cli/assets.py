"""``gradinv assets``: build the offline assets once (LPIPS weights, the sample data set). No network."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("assets", help="build the offline assets: LPIPS weights and the sample data set")
    parser.add_argument("--force", action="store_true", help="rebuild the sample data set")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gradinv.data import build_sample
    from gradinv.metrics.lpips_weights import ensure_lpips_weights

    print(f"[gradinv assets] LPIPS weights: {ensure_lpips_weights(quiet=True)}")
    print(f"[gradinv assets] sample data:   {build_sample(force=args.force, quiet=True)}")
    return 0
