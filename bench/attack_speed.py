#!/usr/bin/env python
"""How fast is one gradinv attack iteration? Two ratios, measured in ONE process, methods interleaved.

For each case (default: the CPU-fast setting, model ``bn_cnn`` at 64 px, clients of N = 1 and N = 4 images
with batch size B = N, one local epoch) a real client is trained on real grayscale images (scikit-image's
bundled pictures) and four things are timed on its update (see :mod:`gradinv.bench.case`):

* ``compiled``  one iteration of gradinv's attack loop as it runs for long attacks (``AttackConfig.compile``
                ``on``, or ``auto`` from 5000 iterations: the ``paper``/``gpu`` presets): objective and gradient
                as one ``torch.compile``-d graph (``gradinv.attack.compiled``) + Adam step. Compiled before
                the warm-up, untimed; ``compile_seconds`` is that first call (cold inductor cache: tens of
                seconds; warm, e.g. a second run: seconds);
* ``eager``     the same iteration as it runs for short attacks (the ``fast`` preset): ``InversionObjective``
                forward (functional replay with ``create_graph=True`` + exact BN running-stat replay) +
                ``autograd.grad`` to the images/labels + Adam step;
* ``training``  one local-training pass of the same client: ``TrainingRecipe.train`` on the real ``nn.Module``
                with ``torch.optim.SGD`` (all local steps of a round);
* ``reference`` the same math in the released reference code's structure: deepcopy + ``load_state_dict`` and a
                new ``torch.optim.SGD`` every iteration, ``setattr`` parameter swaps, and the BN statistics from a
                separate ``model_bn`` forward with hooks re-registered every iteration (update term kept
                differentiable; loss and image gradient are checked equal to gradinv's before timing).

The compiled step's loss and gradient are checked against the eager step's before timing (``compiled_rel_diff``;
float32 rounding in inductor's fused reductions gives up to ~2e-3 relative on the image gradient at N=4,
accepted up to ``compiled_check_tolerance``; in float64 the two agree to 1e-14).

Protocol: ``torch.set_num_threads(2)`` (``--threads``), denormals flushed to zero for every method (CPU
only; ``--keep-denormals`` to keep them: the client's N=1 training step on some images runs ~40x slower on
denormals in oneDNN's stride-2 conv backward, which would flatter the first ratio), ``--warmup 2`` untimed
repetitions, then ``--reps 7`` timed repetitions (median reported), each sample the mean of ``--inner 10``
calls; the order of the four methods rotates every repetition. On a shared CPU absolute times are noisy;
the ratios are the result. Each case also reports ``*_min`` ratios (of the fastest samples), and a NOTE is
printed when the load average shows other processes competing for the cores (two threads on a busy 2-core
machine can run 10-50x slower in bursts, OpenMP threads spinning while descheduled; ``--threads 1`` or
``--omp-passive`` is steadier there).

Targets (PASS/FAIL printed per case; the exit status is 0 whatever the figures unless ``--check``):

* ``iteration_over_training_pass`` = compiled / training           <= 3.5
* ``reference_loop_over_gradinv``  = reference / eager             >= 1.25  (same math, same loop structure)

Also reported, no target: ``iteration_over_training_pass_eager`` = eager / training (about 4-5 on the 2-core
CPU) and ``compile_seconds``.

The last stdout line is one JSON object. Its top-level ``iteration_over_training_pass`` and
``reference_loop_over_gradinv`` are the WORST case over the cases run (largest first ratio, smallest second
ratio), so the top level passes only if every case does; ``cases`` holds every case's figures and samples.

Usage::

    python bench/attack_speed.py                         # defaults: bn_cnn 64 px, N = 1 and 4, B = N
    python bench/attack_speed.py --num-images 1,2,4 --device cuda
    python bench/attack_speed.py --check                 # exit 1 when a target is missed
    gradinv bench-case --num-images 4 --profile          # one case, with torch.profiler's operator tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"image counts must be integers >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    # OpenMP reads OMP_WAIT_POLICY once, when torch loads: set it before anything imports torch.
    torch_was_loaded = "torch" in sys.modules
    if "--omp-passive" in (sys.argv[1:] if argv is None else argv) and not torch_was_loaded:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

    from gradinv.bench.case import TARGETS, CaseSpec, format_table, meets, run_case
    from gradinv.cli.bench_case import add_case_arguments
    from gradinv.cli.common import parse_device
    from gradinv.errors import GradinvError

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_case_arguments(parser, single=False)
    parser.add_argument("--num-images", type=_counts, default=[1, 4], metavar="N1,N2,...",
                        help="client sizes, one case each, batch size = N (default 1,4)")
    parser.add_argument("--check", action="store_true", help="exit 1 when any case misses a target")
    parser.add_argument("--omp-passive", action="store_true",
                        help="set OMP_WAIT_POLICY=PASSIVE (idle OpenMP threads sleep instead of spinning): on a CPU "
                             "shared with busy processes, 2-thread timings otherwise swing 10-50x; must come before "
                             "torch is imported, so it only works when this script starts the process")
    args = parser.parse_args(argv)
    if args.omp_passive and torch_was_loaded:
        print("attack_speed: error: --omp-passive needs a fresh process (torch is already imported)", file=sys.stderr)
        return 2

    import torch

    results = []
    try:
        device = parse_device(args.device)
        for count in args.num_images:
            case = CaseSpec(args.model, args.resolution, count, count, args.epochs)
            print(f"timing {case.label()} ...", file=sys.stderr, flush=True)
            results.append(run_case(case, reps=args.reps, warmup=args.warmup, inner=args.inner, threads=args.threads,
                                    device=device, seed=args.seed, flush_denormal=not args.keep_denormals))
    except GradinvError as exc:
        print(f"attack_speed: error: {exc}", file=sys.stderr)
        return 2

    print(format_table(results))
    cores = os.cpu_count() or 1
    busiest = max(max(r["load_average_1min"]) for r in results)
    load_note = None
    if busiest + args.threads > cores + 0.5 and device.type == "cpu":
        load_note = (f"1-min load average reached {busiest:.1f} on {cores} cores while timing with {args.threads} "
                     "thread(s): other processes competed for the CPU, so times are inflated and noisy; the *_min "
                     "ratios are less disturbed, and --threads 1 is steadier on a shared CPU")
        print(f"NOTE: {load_note}")
    worst = {
        "iteration_over_training_pass": max(r["iteration_over_training_pass"] for r in results),
        "reference_loop_over_gradinv": min(r["reference_loop_over_gradinv"] for r in results),
    }
    untargeted = {
        "iteration_over_training_pass_eager": max(r["iteration_over_training_pass_eager"] for r in results),
        "compile_seconds": [r["compile_seconds"] for r in results],
    }
    verdicts = {key: meets(key, value) for key, value in worst.items()}
    for key, (op, bound) in TARGETS.items():
        print(f"{key} (worst case) = {worst[key]:.2f}, target {op} {bound}: {'PASS' if verdicts[key] else 'FAIL'}")
    summary = {
        **worst,
        **untargeted,
        "top_level": "worst case over the cases run (compile_seconds: per case)",
        "targets": {key: f"{op} {bound}" for key, (op, bound) in TARGETS.items()},
        "pass": verdicts,
        "load_note": load_note,
        "cases": results,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(summary))
    return 1 if args.check and not all(verdicts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
