#!/usr/bin/env python
"""gradinv beside its peers on the same client updates: breaching and the paper's attack as released.

For every case one client update is built with :func:`gradinv.simulation.simulate_client` (the same model, images,
recipe and seed for every method); each method then attacks that update:

* ``gradinv``        :func:`gradinv.attack.attack_update` with its defaults (the model's default preset);
* ``breaching``      breaching 0.1.2's ``invertinggradients`` attack on a FedAvg local-update user, given the
  per-step labels, without BN buffers (see :mod:`gradinv.peers.breaching_peer` for why that is its strongest fair
  setting); needs the ``peers`` extra and is skipped, with the reason, without it;
* ``paper_released`` the paper's released objective as it actually ran (BN-statistics matching with its one-step
  formula, TV/L2, prior start, soft labels; see :mod:`gradinv.peers.paper_released`).

Every reconstruction is scored with :func:`gradinv.metrics.evaluate_reconstruction` (best-match pairing; SSIM, PSNR,
LPIPS, min-max-normalised SSIM, fair to an attack that recovers structure but not brightness, and the prior's own
SSIM, what an attack must beat to have learnt anything). Cases (the
sample set's held-out ``test`` split, classes interleaved so that the first two images have different labels):

* ``1img``        1 image;
* ``2img-b2``     2 images, batch 2;
* ``4img-b4``     4 images, batch 4;
* ``8img-b4``     8 images, batch 4 (2 local steps, the paper's site-1 setting).

Default budgets (each peer its own, sized for a shared CPU): gradinv its preset's, breaching 2000 iterations, the
released attack 2000 iterations; ``--iterations K`` gives gradinv K iterations per image and each peer the same
total (K x N, gradinv's total); ``--equal-time`` reruns the
peers on the first case with as many iterations as fit in gradinv's measured seconds there.

The last stdout line is one JSON object ``{"cases": [...]}`` with every figure and, per peer row, the ratios
gradinv/peer of SSIM and seconds.

Usage::

    python bench/peers.py                               # all cases, bn_cnn at 64 px
    python bench/peers.py --cases 1img,2img-b2 --equal-time
    python bench/peers.py --images DIR --model resnet18_monai --resolution 224
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

CASES = {"1img": (1, 1), "2img-b2": (2, 2), "4img-b4": (4, 4), "8img-b4": (8, 4)}
METHODS = ("gradinv", "breaching", "paper_released")
PEER_ITERATIONS = {"breaching": 2000, "paper_released": 2000}
MIN_CLASSES = 2


def _interleaved(items: list[dict]) -> list[dict]:
    """Items ordered class by class in turn, so every prefix mixes the labels as evenly as possible."""
    by_label: dict[int, list[dict]] = {}
    for item in items:
        by_label.setdefault(int(item["label"]), []).append(item)
    queues = [sorted(group, key=lambda entry: entry["image"]) for _label, group in sorted(by_label.items())]
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def _case_images(images_dir: Path | None, count: int, resolution: int):
    from gradinv.data import list_images, load_images
    from gradinv.data.sample import sample_split

    if images_dir is None:
        listed = sample_split("test")
        items = _interleaved(listed.items)[:count]
    else:
        listed = list_images(images_dir, n=count, verify=True)
        items = listed.items
    images, labels = load_images(items, resolution)
    return images, labels, max(MIN_CLASSES, len(listed.class_names))


def _score(method: str, case: str, images, labels, reconstruction, prior, seconds: float, iterations: int) -> dict:
    from gradinv.metrics import evaluate_reconstruction

    scores = evaluate_reconstruction(images, reconstruction, prior=prior, true_labels=labels)
    return {"case": case, "method": method, "ssim": scores["ssim"], "ssim_minmax": scores["ssim_minmax"],
            "prior_ssim": scores["prior_ssim"],
            "psnr": scores["psnr"], "lpips": scores["lpips"], "seconds": round(seconds, 2), "iterations": iterations}


def run_case(case: str, args: argparse.Namespace, budgets: dict[str, int | None], methods: list[str],
             equal_budgets: bool = False) -> list[dict]:
    """Build one client update and attack it with every method; one row per method.

    ``equal_budgets``: each peer gets gradinv's total iterations for this case instead of ``budgets``' figure.
    """
    from gradinv.attack import attack_update, get_preset
    from gradinv.attack.presets import preset_for_model
    from gradinv.data.sample import load_prior
    from gradinv.models import build_model
    from gradinv.recipe import TrainingRecipe
    from gradinv.simulation import simulate_client

    num_images, batch_size = CASES[case]
    images, labels, num_classes = _case_images(args.images, num_images, args.resolution)
    recipe = TrainingRecipe(lr=args.lr, batch_size=batch_size, seed=args.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(args.model, num_classes=num_classes, resolution=args.resolution)
    update = simulate_client(model, images, labels, recipe)
    prior_array, _description = load_prior("sample", args.resolution)
    prior = torch.from_numpy(prior_array).float()
    own_budget = budgets["gradinv"]
    config = get_preset(preset_for_model(model), {} if own_budget is None else {"iterations": own_budget})
    if equal_budgets:  # equal budgets: gradinv's iterations are per image, the peers' in total
        budgets = dict(budgets, breaching=config.total_iterations(num_images),
                       paper_released=config.total_iterations(num_images))
    rows = []
    for method in methods:
        if method == "gradinv":
            result = attack_update(model, update.global_state, update.diff, recipe, num_images, config, prior=prior,
                                   num_classes=num_classes, device="cpu", seed=args.seed, progress=False)
            reconstruction, seconds, iterations = result.images, result.seconds, result.iterations
        elif method == "breaching":
            from gradinv.peers.breaching_peer import attack_breaching

            step_labels = [labels[batch] for batch in recipe.batches(num_images)]
            peer = attack_breaching(model, update.global_state, update.diff, num_images, step_labels, labels,
                                    recipe.lr, budgets["breaching"], tuple(model.input_shape), seed=args.seed)
            reconstruction, seconds, iterations = peer.images, peer.seconds, peer.iterations
        else:
            from gradinv.peers.paper_released import attack_released

            peer = attack_released(model, update.global_state, update.diff, num_images, prior, num_classes,
                                   budgets["paper_released"], seed=args.seed)
            reconstruction, seconds, iterations = peer.images, peer.seconds, peer.iterations
        rows.append(_score(method, case, images, labels, reconstruction, prior, seconds, iterations))
        print(f"  [{case}] {method}: done in {seconds:.1f} s", file=sys.stderr, flush=True)
    return rows


def _add_ratios(rows: list[dict]) -> None:
    reference = {row["case"]: row for row in rows if row["method"] == "gradinv"}
    for row in rows:
        mine = reference.get(row["case"])
        if row["method"] == "gradinv" or mine is None:
            continue
        row["ssim_ratio_gradinv_over_peer"] = (round(mine["ssim"] / row["ssim"], 3)
                                               if row["ssim"] and row["ssim"] > 0 else None)
        row["seconds_ratio_gradinv_over_peer"] = round(mine["seconds"] / row["seconds"], 3) if row["seconds"] else None


def _print_table(case: str, rows: list[dict]) -> None:
    print(f"\ncase {case}")
    print(f"{'method':<26} {'SSIM':>6} {'SSIM mm':>8} {'PSNR':>6} {'LPIPS':>6} {'seconds':>8} {'iterations':>10} "
          f"{'prior SSIM':>10}")
    for row in rows:
        lpips = "-" if row["lpips"] is None else f"{row['lpips']:.3f}"
        print(f"{row['method']:<26} {row['ssim']:6.3f} {row['ssim_minmax']:8.3f} {row['psnr']:6.2f} {lpips:>6} "
              f"{row['seconds']:8.1f} {row['iterations']:10d} {row['prior_ssim']:10.3f}")


def _breaching_available() -> str | None:
    """None when breaching imports, else why it does not."""
    try:
        from gradinv.peers.breaching_peer import import_breaching

        import_breaching()
    except Exception as exc:  # noqa: BLE001 - any import failure means the peer cannot run; say why
        return str(exc).splitlines()[0]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="take the cases' images from DIR (first images in sorted order; a flat folder gets "
                             "the documented flat-folder labels) instead of the sample set's test split")
    parser.add_argument("--model", default="bn_cnn", help="registry model (default bn_cnn)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01, help="client SGD learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=None,
                        help="equal budgets: gradinv K per image, each peer the same total (default: each "
                             "method's own)")
    parser.add_argument("--equal-time", action="store_true",
                        help="also rerun the peers on the first case with gradinv's measured seconds as budget")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    from gradinv import compat

    compat.import_torchvision()
    methods = list(METHODS)
    skipped = _breaching_available()
    if skipped is not None:
        print(f"breaching skipped: {skipped}", file=sys.stderr)
        methods.remove("breaching")
    budgets: dict[str, int | None] = {"gradinv": args.iterations}
    budgets.update({peer: args.iterations or default for peer, default in PEER_ITERATIONS.items()})
    rows: list[dict] = []
    for case in cases:
        case_rows = run_case(case, args, budgets, methods, equal_budgets=args.iterations is not None)
        _print_table(case, case_rows)
        rows.extend(case_rows)
    if args.equal_time:
        first = next(row for row in rows if row["method"] == "gradinv")
        equal: dict[str, int | None] = {"gradinv": args.iterations}
        for row in rows:
            if row["case"] == first["case"] and row["method"] != "gradinv":
                per_iteration = row["seconds"] / max(row["iterations"], 1)
                equal[row["method"]] = max(1, math.floor(first["seconds"] / per_iteration))
        equal_rows = run_case(first["case"], args, equal, [method for method in methods if method != "gradinv"])
        for row in equal_rows:
            row["case"] = f"{first['case']}-equal-time"
        equal_rows.insert(0, dict(first, case=f"{first['case']}-equal-time"))
        _print_table(f"{first['case']} at gradinv's time", equal_rows)
        rows.extend(equal_rows)
    _add_ratios(rows)
    print(json.dumps({"cases": rows, "model": args.model, "resolution": args.resolution,
                      "breaching": skipped or "ran", "date": time.strftime("%Y-%m-%d", time.gmtime())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
