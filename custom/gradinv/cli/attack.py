"""``gradinv attack``: audit a training setup by attacking one simulated client on your own images.

The command plays both sides of one FL round on a folder of images:

1. **client**: the first N images of the folder (sorted order; labels from class subfolders, or assigned by
   :func:`gradinv.data.list_folder`'s documented rule ``(index + seed) % 2`` for a flat folder) train a freshly
   initialised model (seeded) once with a :class:`~gradinv.recipe.TrainingRecipe` (SGD, ``--lr``,
   ``--epochs``, ``--batch-size``; BatchNorm in train mode, so its running statistics move);
2. **attacker**: :func:`gradinv.attack.attack_update` gets only what a server holds (the global state, the
   state-dict diff, the recipe and N) and reconstructs the images, starting from the prior;
3. **scoring**: :func:`gradinv.metrics.evaluate_reconstruction` pairs reconstructions with originals one to one
   (Hungarian, maximum total SSIM); the top-level metrics are means over the client's images of those pairs.

Writes ``<OUT>/reconstruction.png`` (row 1 originals, row 2 their paired reconstructions) and
``<OUT>/metrics.json`` (settings, attack diagnostics, every metric), both mode 0600 in a folder created 0700:
reconstructions of patient images are patient data. ``--json`` prints one JSON object as the last stdout line.

Defaults are the CPU-fast setting: ``bn_cnn`` at 64 px grayscale, preset ``auto`` (``fast`` for a flatten head:
1000 iterations per image, capped at 2 images' worth; ``gap`` for a global-average-pool head), batch size N (one
full-batch step), 1 epoch, lr 0.01, seed 0, no time budget.

Only argument parsing is imported with the CLI; torch, the data loaders and the metrics load when it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from gradinv.cli.common import parse_device, path_argument
from gradinv.errors import AttackInputError, GradinvError

RECONSTRUCTION_PNG = "reconstruction.png"
METRICS_JSON = "metrics.json"
#: Metric keys reported at the top level (means over the client's images) and per image.
METRIC_KEYS = ("ssim", "psnr", "lpips", "rdlv", "label_accuracy")
#: SSIM's 7x7 window needs at least this many pixels per side.
MIN_RESOLUTION = 7
#: The attack optimises every pixel of every image; the paper's model works at 224 px.
MAX_RESOLUTION = 1024
#: ``--seed`` range (it seeds torch, which takes 64-bit seeds, after the attack derives per-run seeds from it).
SEED_RANGE = (-(2**31), 2**31 - 1)
#: Classes of the model when the folder gives fewer (a flat folder, or one class folder): a one-output
#: cross-entropy classifier has a zero gradient, so there would be nothing to attack.
MIN_CLASSES = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gradinv attack`` to the ``gradinv`` parser."""
    parser = subparsers.add_parser(
        "attack",
        help="train one simulated client on your images, invert its update, score the reconstructions",
        description=(
            "Simulate one FL client on the first N images of a folder (PNG/JPEG/BMP/TIFF/DICOM; flat or one "
            "subfolder per class), train it once from a freshly initialised model, reconstruct its images from "
            "the weight diff it would send (global state + diff + training recipe + N only), and write an "
            "originals-vs-reconstructions grid and a metrics JSON (mode 0600) to OUT."
        ),
        epilog=(
            "Top-level metrics are means over the client's images after one-to-one (Hungarian, max total SSIM) "
            "pairing; RDLV is relative to the prior. Flat folders have no labels: image i (sorted order) gets "
            "label (i + seed) % 2. Exit status 2 with a one-line message for bad input."
        ),
    )
    parser.add_argument("--images", required=True, type=path_argument, metavar="DIR",
                        help="folder of images (flat or class subfolders)")
    parser.add_argument("--num-images", type=int, default=1, metavar="N",
                        help="the client's images: the first N of DIR in sorted order (default 1)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B",
                        help="local batch size (default N: one full-batch step per epoch; capped at N)")
    parser.add_argument("--epochs", type=int, default=1, metavar="E", help="local epochs (default 1)")
    parser.add_argument("--lr", type=float, default=0.01, help="local SGD learning rate (default 0.01)")
    parser.add_argument("--model", default="bn_cnn", metavar="NAME", help="architecture (default bn_cnn)")
    parser.add_argument("--resolution", type=int, default=64, metavar="R",
                        help="images are centre-cropped and resized to R x R grayscale (default 64)")
    parser.add_argument("--preset", default="auto", metavar="NAME",
                        help="attack preset: auto (default: fast for a flatten head, gap for a global-average-pool "
                             "head such as MONAI's ResNets and DenseNets), fast, thorough, gap, gpu, paper")
    parser.add_argument("--iterations", type=int, default=None, metavar="K",
                        help="attack iterations per image, overriding the preset's (the fast preset runs "
                             "K x min(N, 2) iterations, 3 times from different starts when N >= 2, and keeps the "
                             "run with the lowest attack loss; default: the preset's, 1000 for fast)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="stop the attack after S seconds and score its best iterate; warns, after its first "
                             "iterations, when the whole attack would need more and says how much (default: none)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the model initialisation, the batch order, flat-folder labels and the attack")
    parser.add_argument("--prior", default=None, type=path_argument, metavar="PATH",
                        help="what the attack starts from and RDLV is relative to: an image, or a folder of public "
                             "images (one subfolder per class: each slot starts from the mean of its recovered "
                             "class; the class folders must match DIR's) (default: the bundled public sample "
                             "set's mean image)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, metavar="T",
                        help="CPU threads for PyTorch (default: PyTorch's own choice; 1 can be much faster on a "
                             "CPU shared with other busy processes)")
    parser.add_argument("--out", required=True, type=path_argument, metavar="OUTDIR",
                        help="folder for reconstruction.png and metrics.json (created 0700); not inside DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run_attack)  # argparse's own errors are one line too (gradinv.cli's parser class)


# --- validation -------------------------------------------------------------------------------------------
def _check_arguments(args: argparse.Namespace) -> None:
    """Checks that need no heavy import; each raises a one-line :class:`GradinvError`."""
    if args.num_images < 1:
        raise GradinvError(f"--num-images must be at least 1, got {args.num_images}")
    if args.batch_size is not None and args.batch_size < 1:
        raise GradinvError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.epochs < 1:
        raise GradinvError(f"--epochs must be at least 1, got {args.epochs}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise GradinvError(f"--lr must be a positive number, got {args.lr}")
    if args.iterations is not None and args.iterations < 1:
        raise GradinvError(f"--iterations must be at least 1, got {args.iterations}")
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise GradinvError(f"--time-budget must be a positive number of seconds, got {args.time_budget}")
    if args.threads is not None and args.threads < 1:
        raise GradinvError(f"--threads must be at least 1, got {args.threads}")
    if args.resolution < MIN_RESOLUTION:
        raise GradinvError(f"--resolution must be at least {MIN_RESOLUTION} px (SSIM's window), got {args.resolution}")
    if args.resolution > MAX_RESOLUTION:
        raise GradinvError(f"--resolution must be at most {MAX_RESOLUTION} px (the attack optimises every pixel; the "
                           f"paper's model uses 224), got {args.resolution}")
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise GradinvError(f"--seed must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got {args.seed}")

    from gradinv.attack.presets import PRESET_NAMES
    from gradinv.models import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        raise GradinvError(f"unknown model {args.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if args.preset not in PRESET_NAMES:
        raise GradinvError(f"unknown preset {args.preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise GradinvError(f"--out {out} exists and is not a folder")
    images = Path(args.images).expanduser().resolve()
    if images.is_dir() and (out.resolve() == images or images in out.resolve().parents):
        raise GradinvError(f"--out {out} is inside --images {args.images}: the next run would read its "
                           f"{RECONSTRUCTION_PNG} back as a patient image; choose an --out folder outside the images")


def _build_model(name: str, num_classes: int, resolution: int, batch_sizes: set[int]):
    """Build the model (seeded by the caller) and check it runs at this resolution with these batch sizes."""
    import copy

    import torch

    from gradinv.models import build_model

    try:
        model = build_model(name, num_classes=num_classes, resolution=resolution)
    except ValueError as exc:
        raise GradinvError(f"--resolution {resolution} is not valid for model {name!r}: {exc}") from exc
    probe = copy.deepcopy(model).train()
    for batch in sorted(batch_sizes):
        try:
            with torch.no_grad():
                logits = probe(torch.zeros(batch, *model.input_shape))
        except (RuntimeError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GradinvError(
                f"--resolution {resolution} is not valid for model {name!r} with local batches of {batch} image(s): "
                f"{first_line}"
            ) from exc
        if tuple(logits.shape) != (batch, num_classes):
            raise GradinvError(f"model {name!r} gives outputs of shape {tuple(logits.shape)} at {resolution} px; "
                               f"expected ({batch}, {num_classes})")
    return model


def _load_prior(path: Path | None, resolution: int):
    """``--prior`` (default: the bundled sample set's mean image) as a tensor, and a line describing it."""
    import torch

    from gradinv.data.sample import load_prior

    try:
        prior, description = load_prior("sample" if path is None else path, resolution)
    except GradinvError as exc:
        raise GradinvError(f"{exc}; pass --prior PATH" if path is None else f"--prior: {exc}") from exc
    return torch.from_numpy(prior), description


# --- the command ------------------------------------------------------------------------------------------
def run_attack(args: argparse.Namespace) -> int:
    started = time.monotonic()
    _check_arguments(args)

    import torch

    from gradinv.attack import attack_update, get_preset, resolve_preset
    from gradinv.attack.scoring import attack_converged
    from gradinv.data import list_images, load_images
    from gradinv.fl.artifacts import image_grid
    from gradinv.metrics import evaluate_reconstruction
    from gradinv.private_files import write_private_bytes
    from gradinv.recipe import TrainingRecipe
    from gradinv.simulation import simulate_client

    device = parse_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    listed = list_images(args.images, n=args.num_images, seed=args.seed, verify=True)
    out = _prepare_out(Path(args.out).expanduser())
    images, labels = load_images(listed.items, args.resolution)
    num_images = images.shape[0]
    num_classes = max(MIN_CLASSES, len(listed.class_names))
    recipe = TrainingRecipe(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size or num_images, seed=args.seed)
    batch_sizes = {len(batch) for batch in recipe.batches(num_images)}
    prior, prior_description = _load_prior(args.prior, args.resolution)

    # The client: a freshly initialised global model (seeded, without touching the caller's RNG), trained once.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = _build_model(args.model, num_classes, args.resolution, batch_sizes)
    preset = resolve_preset(args.preset, model)
    overrides = {"iterations": args.iterations, "time_budget_s": args.time_budget}
    config = get_preset(preset, {key: value for key, value in overrides.items() if value is not None})
    try:
        update = simulate_client(model, images, labels, recipe)
    except AttackInputError as exc:  # a diverged local training: nothing worth inverting
        raise GradinvError(f"the client's local training diverged (non-finite loss with --lr {args.lr:g}); "
                           "use a smaller --lr, e.g. 0.01") from exc

    # The attacker: global state, diff, recipe and N only.
    result = attack_update(
        model, update.global_state, update.diff, recipe, num_images, config, prior=prior, num_classes=num_classes,
        device=device, seed=args.seed, progress=not args.no_progress, description="gradinv attack",
    )
    scores = evaluate_reconstruction(
        images, result.images, prior=result.priors, true_labels=labels, recovered_labels=result.recovered_labels,
    )

    per_image = [_per_image(entry) for entry in scores["per_image"]]
    summary: dict[str, Any] = {key: _mean([entry[key] for entry in per_image]) for key in METRIC_KEYS}
    summary.update(
        seconds=result.seconds,
        iterations=result.iterations,
        num_images=num_images,
        ssim_max=scores["ssim_max"],
        rdlv_max=scores["rdlv_max"],
        ssim_minmax=scores["ssim_minmax"],
        prior_ssim=scores["prior_ssim"],
        visibly_leaked_fraction=scores["visibly_leaked_fraction"],
        label_accuracy_order_free=scores["label_accuracy"],
        lpips_status=scores["lpips_status"],
        update_distance=result.update_distance,
        converged=attack_converged(result.update_distance),
        bn_residual=result.bn_residual,
        stopped=result.stopped,
        labels=labels.tolist(),
        recovered_labels=result.recovered_labels,
        assignment=scores["assignment"],
        model=args.model,
        resolution=args.resolution,
        preset=preset,
        time_budget_s=args.time_budget,
        projected_seconds=result.projected_seconds,
        batch_size=recipe.effective_batch_size(num_images),
        epochs=args.epochs,
        lr=args.lr,
        local_steps=update.steps,
        seed=args.seed,
        device=str(device),
        per_image=per_image,
    )

    paired = [index if index is not None else 0 for index in scores["assignment"]]
    grid = image_grid([images[:, 0].numpy(), result.images[paired, 0].numpy()])
    grid_path, metrics_path = out / RECONSTRUCTION_PNG, out / METRICS_JSON
    summary.update(reconstruction_png=str(grid_path), metrics_json=str(metrics_path))
    details = {
        **summary,
        "images": [item["image"] for item in listed.items],
        "source": str(listed.source),
        "class_names": listed.class_names,
        "labels_known": listed.labels_known,
        "label_rule": None if listed.labels_known else f"flat folder: label = (sorted index + {args.seed}) % 2",
        "num_classes": num_classes,
        "prior": prior_description,
        "recipe": recipe.to_meta(),
        "client_training_loss": update.training_loss,
        "attack_config": config.to_dict(),
        "attack": result.diagnostics(),
        "label_probabilities": result.label_probabilities.tolist(),
        "evaluation": {key: value for key, value in scores.items() if key != "per_image"},
        "evaluation_per_image": scores["per_image"],
        "total_seconds": time.monotonic() - started,
    }
    try:
        write_private_bytes(grid_path, grid)
        write_private_bytes(metrics_path, (json.dumps(_finite(details), indent=2) + "\n").encode())
    except OSError as exc:
        raise GradinvError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc

    summary["total_seconds"] = details["total_seconds"]
    if result.stopped != "completed":
        print(f"gradinv attack: warning: the attack stopped early ({result.stopped}); scores are for the best "
              "iterate reached", file=sys.stderr)
    if args.json:
        print(json.dumps(_finite(summary), allow_nan=False))
    else:
        _print_summary(summary, listed.labels_known)
    return 0


def _prepare_out(out: Path) -> Path:
    """Create OUT before the attack runs, so that an unwritable place fails in seconds, not after the attack.
    A folder created here is private (0700); an existing one keeps its mode (the files are 0600 either way)."""
    try:
        if not out.exists():
            out.mkdir(parents=True, mode=0o700)
            out.chmod(0o700)
        elif not out.is_dir():
            raise GradinvError(f"--out {out} exists and is not a folder")
        probe = out / ".gradinv-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise GradinvError(f"cannot write to --out {out}: {exc.strerror or exc}") from exc
    return out


def _per_image(entry: dict[str, Any]) -> dict[str, Any]:
    label, recovered = entry["label"], entry["recovered_label"]
    return {
        "index": entry["index"],
        "reconstruction_index": entry["reconstruction_index"],
        "ssim": entry["ssim"],
        "psnr": entry["psnr"],
        "lpips": entry["lpips"],
        "rdlv": entry["rdlv"],
        "label_accuracy": None if label is None or recovered is None else float(label == recovered),
        "ssim_minmax": entry["ssim_minmax"],
        "prior_ssim": entry["prior_ssim"],
        "visibly_leaked": entry["visibly_leaked"],
        "label": label,
        "recovered_label": recovered,
    }


def _mean(values: list[Any]) -> float | None:
    known = [float(value) for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (json.dumps would write invalid JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _format(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_summary(summary: dict[str, Any], labels_known: bool) -> None:
    print(f"client: {summary['num_images']} image(s), {summary['model']} at {summary['resolution']} px, batch "
          f"{summary['batch_size']}, {summary['epochs']} epoch(s) = {summary['local_steps']} local step(s), "
          f"lr {summary['lr']:g}")
    print(f"attack: preset {summary['preset']}, {summary['iterations']} iterations in {summary['seconds']:.1f} s on "
          f"{summary['device']} ({summary['stopped']}); update cosine distance {summary['update_distance']:.3g}"
          + ("" if summary["converged"] else " (not converged: low scores are no evidence that nothing leaks)"))
    print(f"SSIM {_format(summary['ssim'])} (max {_format(summary['ssim_max'])}), "
          f"PSNR {_format(summary['psnr'], 1)} dB, "
          f"LPIPS {_format(summary['lpips'])}, RDLV {_format(summary['rdlv'])} (max {_format(summary['rdlv_max'])}), "
          f"label accuracy {_format(summary['label_accuracy'], 2)}"
          + ("" if labels_known else " (labels assigned: flat folder)"))
    for entry in summary["per_image"]:
        print(f"  image {entry['index']}: SSIM {_format(entry['ssim'])}, PSNR {_format(entry['psnr'], 1)}, "
              f"LPIPS {_format(entry['lpips'])}, RDLV {_format(entry['rdlv'])}, label {entry['label']} -> "
              f"{entry['recovered_label']}")
    print(f"wrote {summary['reconstruction_png']} and {summary['metrics_json']}")

