#!/usr/bin/env python
"""How much does ``gradinv attack`` recover, and how fast, with its defaults, on images the tests never use?

Every case runs the real command, ``gradinv attack --images DIR --num-images N --batch-size N --json`` with the
default model (``bn_cnn``), 64 px and the ``fast`` preset, in a subprocess, on held-out images: the bundled sample
set's ``test`` split (real MR and X-ray/CT images; the attack's prior is the ``public`` split's mean, and the unit
tests never attack the ``test`` split). Three kinds of client:

* ``single``      N = 1 image;
* ``pair-mixed``  N = 2 (batch 2) from a flat folder: the documented flat-folder rule gives them labels 0 and 1;
* ``pair-same``   N = 2 (batch 2) in one class folder: both images have the same label.

``--images-from other`` runs the same kinds on real images from installed packages that the sample set does not
use at all (scikit-image's fundus photographs, immunohistochemistry and cell images, nibabel's test MR volume,
pydicom-data's ultrasound and nuclear-medicine files): ten single images, five mixed-label pairs (flat folders) and
three same-label pairs (two fundus crops, two pathology crops, two MR slices, in class folders).

Multi-image kinds (``--kinds multi``; opt-in, minutes each), in class folders so every image's label is known:
``four-b4`` (4 images, batch 4, 1 step), ``eight-b4`` (8 images, batch 4, 2 steps: the paper's "safe" site),
``eight-b8`` (8 images, batch 8), each with ``-2cls`` (the task's two classes) and ``-4cls`` (four classes: on the
sample split brain MR, chest radiograph, head CT, abdomen CT; on ``other`` fundus, microscopy, MR, US/NM). Images
are taken from each class in turn, so labels are as mixed as the classes allow. With C classes the last layer's
update separates at most C - 1 directions, so the 2-class kinds are the hard case.

RGB, normalised clients (``--kinds rgb``; in process, as the FL filter attacks a user's own job): one image per
client, ``HospitalNet`` of ``jobs/own_job_example/model.py`` (64 px RGB) fed ``(x - mean) / std`` with ImageNet's
statistics, SGD (lr 0.01, momentum 0.9, weight decay 1e-4), the filter's default prior (the bundled sample set's
mean), the ``fast`` preset with ``--override KEY=VALUE`` applied (JSON values, as ``attack_overrides``). On
``sample`` the example job's four training crops (two fundus photographs, two immunohistochemistry slides, made as
its ``prepare_data.py`` makes them); on ``other`` crops of scikit-image's astronaut, coffee and chelsea photographs.

Images are picked deterministically (evenly spaced through each class's sorted list, ``--cases`` per kind) and
each case runs for every ``--seeds`` value (the seed drives the model initialisation and the attack).

Targets (issue 4, PASS/FAIL per kind; the exit status is 0 whatever the figures unless ``--check``):

* ``single``     mean SSIM >= 0.95 and attack seconds <= 15 (``seconds`` from the command's JSON: the attack alone,
  excluding Python start-up and data loading);
* ``pair-mixed`` mean SSIM >= 0.9;
* ``four-b4-2cls`` mean SSIM >= 0.6 within 180 attack seconds; ``eight-b4-2cls`` mean SSIM >= 0.5 within 600 s
  (issue 27); the other multi-image kinds are measured without a target;
* ``rgb``        mean SSIM >= 0.9 (issue 24: the example job's 1-image RGB site);
* ``single`` on another ``--model`` (``resnet18_monai``, ``densenet121``, the paper's ``resnet18``): mean SSIM >=
  0.6 within the model's time budget (issue 25: the paper's level for its ResNet-18, within 10 minutes of attack
  per client on a CPU); the pair kinds are measured without a target there;
* ``pair-same``  mean SSIM >= 0.9. Two same-label images in one batch are the hard case of update inversion: with a
  cross-entropy loss every image's back-propagated signal has the same direction, so the update carries little
  more than the *sum* of the two images' features and the optimiser can settle on blends of the two images.

Any registry model (``--model NAME``, ``--resolution R``) runs the single, pair and multi-image kinds with the
command's default preset for it (``auto``: ``fast`` for a flatten head, ``gap`` for a global-average-pool head) and
a per-model time budget per client (``--time-budget``; by default none for ``bn_cnn``, whose targets are about
its defaults, and ``OTHER_MODEL_TIME_BUDGET_S`` = 600 s for the others). An attack stopped by its budget is scored
on its best iterate; the table gives its update distance (``converged`` is ``update_distance <= 0.015``) and the
time the whole preset would have needed (``projected``).

The table reports per kind the mean and the worst case; the last stdout line is one JSON object with, per kind,
``ssim_mean``, ``ssim_min``, ``seconds_mean``, ``seconds_max``, ``pass`` (None without a target), and every run
in ``runs_detail``.

Usage::

    python bench/attack_quality.py                      # 3 cases per kind, seeds 0,1
                                                        # (hours: a same-label pair takes 20-37 min on 1 thread)
    python bench/attack_quality.py --cases 1 --seeds 0  # quick look
    python bench/attack_quality.py --threads 1          # steadier on a CPU shared with other busy processes
    python bench/attack_quality.py --images-from other --cases 10 --seeds 0   # images the sample set never uses
    python bench/attack_quality.py --kinds multi --cases 1 --seeds 0 --threads 1   # 4- and 8-image clients
    python bench/attack_quality.py --kinds rgb --cases 4 --seeds 0 --threads 1      # RGB, normalised clients
    python bench/attack_quality.py --model resnet18_monai --kinds single --cases 3 --seeds 0 --threads 1
    python bench/attack_quality.py --model resnet18 --resolution 224 --kinds single --cases 1 --seeds 0 \
        --threads 1 --time-budget 300                   # the paper's ResNet-18 at 224 px, bounded
    python bench/attack_quality.py --kinds rgb --cases 6 --seeds 0 --threads 1 --images-from other \
        --override chroma_detail=1                                                  # an attack setting changed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PAIR_KINDS = ("single", "pair-mixed", "pair-same")


@dataclass(frozen=True)
class MultiKind:
    """A client of several images: ``images`` in batches of ``batch`` (one epoch), labels from ``classes`` classes."""

    images: int
    batch: int
    classes: int  # 2: the task's two class folders; 4: finer class folders (see ``fine_class``)


MULTI_KINDS = {f"{name}-{classes}cls": MultiKind(images, batch, classes)
               for name, images, batch in (("four-b4", 4, 4), ("eight-b4", 8, 4), ("eight-b8", 8, 8))
               for classes in (2, 4)}
KINDS = PAIR_KINDS + tuple(MULTI_KINDS) + ("rgb",)
SSIM_TARGET = {"single": 0.95, "pair-mixed": 0.9, "pair-same": 0.9, "four-b4-2cls": 0.6, "eight-b4-2cls": 0.5,
               "rgb": 0.9}
SECONDS_TARGET = {"single": 15.0, "four-b4-2cls": 180.0, "eight-b4-2cls": 600.0}
DEFAULT_MODEL = "bn_cnn"
#: Attack seconds per client on every registry model but bn_cnn (issue 25: 10 minutes of attack per client on a CPU).
OTHER_MODEL_TIME_BUDGET_S = 600.0
#: The single-image target on the other models: the paper's level for its ResNet-18, within the time budget.
OTHER_MODEL_SINGLE_SSIM_TARGET = 0.6
EXAMPLE_JOB = Path(__file__).resolve().parents[1] / "jobs" / "own_job_example"
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return values


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _spread(items: list[Path], count: int, offset: int = 0) -> list[Path]:
    """``count`` items evenly spaced through ``items`` (deterministic), shifted by ``offset``."""
    step = max(len(items) // max(count, 1), 1)
    return [items[(offset + index * step) % len(items)] for index in range(count)]


Case = tuple[str, str, Path, int, int]  # kind, name, folder, images, batch size


def build_cases(test_split: Path, cases: int, workdir: Path) -> list[Case]:
    """(kind, name, folder, N) per case, folders laid out as a user would hand them to ``gradinv attack``."""
    classes = sorted(path for path in test_split.iterdir() if path.is_dir())
    if len(classes) < 2:
        raise SystemExit(f"attack_quality: error: {test_split} needs two class folders; run `gradinv assets` first")
    pools = [sorted(folder.glob("*.png")) for folder in classes]
    built = []

    def place(kind: str, index: int, sources: list[Path], class_names: list[str | None]) -> None:
        folder = workdir / f"{kind}-{index}"
        for position, (source, class_name) in enumerate(zip(sources, class_names)):
            target_dir = folder / class_name if class_name else folder
            target_dir.mkdir(parents=True, exist_ok=True)
            # The position prefix fixes the sorted order, so the flat folder's labels are 0 then 1.
            shutil.copyfile(source, target_dir / f"{position}-{source.name}")
        built.append((kind, f"{kind}-{index}: " + " + ".join(f"{s.parent.name}/{s.name}" for s in sources), folder,
                      len(sources), len(sources)))

    for index in range(cases):
        pool = pools[index % len(pools)]
        place("single", index, _spread(pool, cases, offset=1)[index:index + 1], [None])
        first, second = _spread(pools[0], cases, offset=2)[index], _spread(pools[1], cases, offset=3)[index]
        place("pair-mixed", index, [first, second] if index % 2 == 0 else [second, first], [None, None])
        same = _spread(pool, 2 * cases, offset=5)
        place("pair-same", index, [same[2 * index], same[2 * index + 1]], [classes[index % len(pools)].name] * 2)
    return built


def other_source_images() -> dict[str, np.ndarray]:
    """Real grayscale images in [0, 1] from installed packages that the bundled sample set does not use."""
    import nibabel
    from pydicom.data import get_testdata_file
    from skimage import color, data

    from gradinv.data.images import read_dicom_unit

    retina = data.retina()[..., 1]
    pathology = color.rgb2gray(data.immunohistochemistry())
    volume = np.asarray(nibabel.load(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii").dataobj)
    return {
        "fundus-retina": retina[150:1260, 150:1260],
        "fundus-disc": retina[400:800, 800:1200],
        "fundus-microaneurysms": data.microaneurysms(),
        "ihc-top-left": pathology[:256, :256],
        "ihc-bottom-right": pathology[256:, 256:],
        "cell-phase": data.cell()[50:550, 50:550],
        "mr-axial": np.rot90(volume[:, :, volume.shape[2] // 2]),
        "mr-sagittal": np.rot90(volume[volume.shape[0] // 2]),
        "us-lymph-node": read_dicom_unit(Path(get_testdata_file("US1_UNCR.dcm"))),
        "nm-bone-scan": read_dicom_unit(Path(get_testdata_file("JPEG2000_UNC.dcm"))),
    }


OTHER_MIXED_PAIRS = (("fundus-retina", "mr-axial"), ("ihc-top-left", "us-lymph-node"), ("cell-phase", "nm-bone-scan"),
                     ("fundus-disc", "mr-sagittal"), ("fundus-microaneurysms", "ihc-bottom-right"))
OTHER_SAME_PAIRS = (("fundus", ("fundus-retina", "fundus-disc")), ("pathology", ("ihc-top-left", "ihc-bottom-right")),
                    ("mri", ("mr-axial", "mr-sagittal")))


def write_other_images(source_dir: Path) -> dict[str, Path]:
    """:func:`other_source_images` written as 256 px PNGs, as a user would hand them over; ``{name: path}``."""
    from gradinv.data.images import centre_square, resize_square, window_unit

    source_dir.mkdir(parents=True)
    paths = {}
    for name, image in other_source_images().items():
        unit = resize_square(centre_square(window_unit(image)), 256)
        paths[name] = source_dir / f"{name}.png"
        Image.fromarray(np.round(unit * 255).astype(np.uint8)).save(paths[name])
    return paths


def build_other_cases(cases: int, workdir: Path, paths: dict[str, Path]) -> list[Case]:
    """Like :func:`build_cases`, on :func:`write_other_images`'s images (up to ``cases`` per kind)."""
    built = []

    def place(kind: str, index: int, names: list[str], class_name: str | None) -> None:
        folder = workdir / f"{kind}-{index}"
        target_dir = folder / class_name if class_name else folder
        target_dir.mkdir(parents=True)
        for position, name in enumerate(names):
            shutil.copyfile(paths[name], target_dir / f"{position}-{name}.png")
        built.append((kind, f"{kind}-{index}: " + " + ".join(names), folder, len(names), len(names)))

    for index, name in enumerate(sorted(paths)[:cases]):
        place("single", index, [name], None)
    for index, pair in enumerate(OTHER_MIXED_PAIRS[:cases]):
        place("pair-mixed", index, list(pair), None)
    for index, (class_name, pair) in enumerate(OTHER_SAME_PAIRS[:cases]):
        place("pair-same", index, list(pair), class_name)
    return built


def sample_classes(test_split: Path, classes: int) -> dict[str, list[Path]]:
    """The test split as class folders: its two (MR, X-ray/CT), or four posed by anatomy and source (brain MR slices,
    chest radiograph crops, head CT, abdomen CT). Labels only steer the client's loss; the images are the same."""
    if classes == 2:
        return {folder.name: sorted(folder.glob("*.png")) for folder in sorted(test_split.iterdir())
                if folder.is_dir()}
    groups = {"brain-mr": "icbm152-", "chest-radiograph": "cr-chest-", "ct-head": "ct-head-",
              "ct-abdomen": "ct-abdomen-"}
    images = sorted(test_split.glob("*/*.png"), key=lambda path: path.name)
    return {group: [path for path in images if path.name.startswith(prefix)] for group, prefix in groups.items()}


#: :func:`other_source_images` by class: two classes (photographs, scanner images) or four.
OTHER_CLASSES = {
    2: {"photograph": ("fundus-disc", "fundus-microaneurysms", "fundus-retina", "cell-phase", "ihc-bottom-right",
                       "ihc-top-left"),
        "scanner": ("mr-axial", "mr-sagittal", "nm-bone-scan", "us-lymph-node")},
    4: {"fundus": ("fundus-disc", "fundus-microaneurysms", "fundus-retina"),
        "microscopy": ("cell-phase", "ihc-bottom-right", "ihc-top-left"),
        "mr": ("mr-axial", "mr-sagittal"),
        "us-nm": ("nm-bone-scan", "us-lymph-node")},
}


def build_multi_cases(kinds: list[str], cases: int, workdir: Path, pools: dict[int, dict[str, list[Path]]]
                      ) -> list[Case]:
    """Clients of several images in class folders: images taken in turn from each class (so labels are as mixed as
    the classes allow), each class's images spread through its list and shifted per case."""
    built = []
    for kind in kinds:
        spec = MULTI_KINDS[kind]
        pool = pools[spec.classes]
        for index in range(cases):
            taken = {name: 0 for name in pool}
            chosen: list[tuple[str, Path]] = []
            names = sorted(pool)
            turn = index  # the first class rotates with the case
            while len(chosen) < spec.images:
                name = names[turn % len(names)]
                turn += 1
                images = pool[name]
                if taken[name] >= len(images):
                    if all(taken[other] >= len(pool[other]) for other in names):
                        raise SystemExit(f"attack_quality: error: {kind} needs {spec.images} images; the classes hold "
                                         f"{sum(len(images) for images in pool.values())}")
                    continue
                step = max(len(images) // -(-spec.images // len(names)), 1)  # spread over the whole class
                chosen.append((name, images[(index + taken[name] * step) % len(images)]))
                taken[name] += 1
            folder = workdir / f"{kind}-{index}"
            for position, (name, source) in enumerate(chosen):
                (folder / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, folder / name / f"{position}-{source.name}")
            label = " + ".join(f"{name}/{source.stem}" for name, source in chosen)
            built.append((kind, f"{kind}-{index}: {label}", folder, spec.images, spec.batch))
    return built


def _example_module(name: str):
    """A module of ``jobs/own_job_example`` (the model class, the data preparation), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"own_job_example_{name}", EXAMPLE_JOB / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rgb_images(images_from: str, size: int = 64) -> list[tuple[str, np.ndarray, int]]:
    """(name, (3, size, size) float32 RGB image in [0, 1], label) per single-image RGB client.

    ``sample``: the example job's training crops, made as its ``prepare_data.py`` makes them (box-resized PNG
    pixels); ``other``: two crops each of scikit-image's astronaut, coffee and chelsea photographs."""
    from skimage import data

    def unit(picture: np.ndarray) -> np.ndarray:
        resized = Image.fromarray(np.ascontiguousarray(picture[..., :3])).resize((size, size), Image.BOX)
        return (np.asarray(resized, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()

    if images_from == "sample":
        crops = _example_module("prepare_data").crops
        fundus, histology = crops(data.retina(), 2, seed=0), crops(data.immunohistochemistry(), 2, seed=1)
        return [(f"fundus_{i}", unit(picture), 0) for i, picture in enumerate(fundus)] + [
            (f"histology_{i}", unit(picture), 1) for i, picture in enumerate(histology)]
    astronaut, coffee, chelsea = data.astronaut(), data.coffee(), data.chelsea()
    return [("astronaut-face", unit(astronaut[20:220, 140:340]), 0),
            ("astronaut-flag", unit(astronaut[0:200, 0:200]), 0),
            ("coffee-cup", unit(coffee[50:350, 150:450]), 1), ("coffee-beans", unit(coffee[0:200, 400:600]), 1),
            ("chelsea-face", unit(chelsea[30:280, 100:350]), 0), ("chelsea-wall", unit(chelsea[0:150, 300:450]), 1)]


def run_rgb(images_from: str, seeds: list[int], overrides: dict, threads: int | None, cases: int) -> list[dict]:
    """Attack every :func:`rgb_images` client (up to ``cases``) for every seed, in process; one run dict each."""
    import time

    import torch

    from gradinv.attack import attack_update, get_preset
    from gradinv.attack.scoring import attack_converged
    from gradinv.data import load_image, prior_path
    from gradinv.metrics import evaluate_reconstruction
    from gradinv.models.normalization import with_input_normalization
    from gradinv.recipe import TrainingRecipe
    from gradinv.simulation import simulate_client

    if threads is not None:
        torch.set_num_threads(threads)
    hospital_net = _example_module("model").HospitalNet
    config = get_preset("fast", overrides)
    recipe = TrainingRecipe(lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=4, seed=None)
    prior = torch.from_numpy(load_image(prior_path(), (64, 64), channels=3))
    runs = []
    clients = rgb_images(images_from)[:cases]
    for name, image, label in clients:
        for seed in seeds:
            print(f"[{len(runs) + 1}/{len(clients) * len(seeds)}] rgb {name} seed {seed} ...", file=sys.stderr,
                  flush=True)
            torch.manual_seed(seed)
            model = with_input_normalization(hospital_net(), IMAGENET_NORMALIZATION)
            pixels, labels = torch.from_numpy(image)[None], torch.tensor([label])
            update = simulate_client(model, pixels, labels, recipe)
            started = time.monotonic()
            result = attack_update(model, update.global_state, update.diff, recipe, 1, config, prior=prior,
                                   num_classes=2, device="cpu", seed=seed, progress=False,
                                   input_shape=tuple(image.shape))
            seconds = time.monotonic() - started
            scores = evaluate_reconstruction(pixels.numpy(), result.images.numpy(), prior=prior.numpy(),
                                             true_labels=[label], recovered_labels=result.recovered_labels)
            runs.append({"kind": "rgb", "case": f"rgb: {name}", "seed": seed, "ssim": scores["ssim"],
                         "psnr": scores["psnr"], "lpips": scores["lpips"], "seconds": seconds,
                         "iterations": result.iterations, "per_image_ssim": [scores["ssim"]], "labels": [label],
                         "label_accuracy": scores["label_accuracy_matched"],
                         "update_distance": result.update_distance,
                         "converged": attack_converged(result.update_distance),
                         "bn_residual": result.bn_residual, "stopped": result.stopped,
                         "projected_seconds": result.projected_seconds, "preset": "fast"})
    return runs


@dataclass(frozen=True)
class CommandOptions:
    """What every ``gradinv attack`` run of the benchmark is given besides its case."""

    threads: int | None
    iterations: int | None
    model: str
    resolution: int
    time_budget_s: float | None


def run_one(folder: Path, num_images: int, batch_size: int, seed: int, options: CommandOptions, out: Path) -> dict:
    command = [sys.executable, "-m", "gradinv.cli", "attack", "--images", str(folder), "--num-images", str(num_images),
               "--batch-size", str(batch_size), "--seed", str(seed), "--out", str(out), "--json", "--no-progress",
               "--model", options.model, "--resolution", str(options.resolution)]
    for flag, value in (("--threads", options.threads), ("--iterations", options.iterations),
                        ("--time-budget", options.time_budget_s)):
        if value is not None:
            command += [flag, str(value)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"attack_quality: `{' '.join(command)}` failed:\n{completed.stderr.strip()}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def targets(model: str) -> tuple[dict[str, float], dict[str, float]]:
    """(SSIM targets, attack-seconds targets) per kind for ``model``. On the other models the time budget bounds
    the seconds (the attack stops there and is scored on its best iterate)."""
    if model == DEFAULT_MODEL:
        return SSIM_TARGET, SECONDS_TARGET
    return {"single": OTHER_MODEL_SINGLE_SSIM_TARGET}, {}


def _mean_of(values) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def summarise(runs: list[dict], model: str = DEFAULT_MODEL) -> dict:
    ssim_target, seconds_target = targets(model)
    summary = {}
    for kind in KINDS:
        chosen = [run for run in runs if run["kind"] == kind]
        if not chosen:
            continue
        ssims = [run["ssim"] for run in chosen]
        seconds = [run["seconds"] for run in chosen]
        entry = {"ssim_mean": statistics.fmean(ssims), "ssim_min": min(ssims),
                 "seconds_mean": statistics.fmean(seconds), "seconds_max": max(seconds), "runs": len(chosen),
                 "ssim_target": ssim_target.get(kind), "seconds_target": seconds_target.get(kind),
                 "update_distance_mean": _mean_of(run.get("update_distance") for run in chosen),
                 "converged": sum(bool(run.get("converged")) for run in chosen)}
        entry["pass"] = None if kind not in ssim_target else entry["ssim_mean"] >= ssim_target[kind]
        if entry["pass"] is not None and kind in seconds_target:
            entry["pass"] = entry["pass"] and entry["seconds_max"] <= seconds_target[kind]
        summary[kind] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--cases", type=int, default=3, help="cases per kind (default 3)")
    parser.add_argument("--seeds", type=_counts, default=[0, 1], metavar="S1,S2,...",
                        help="seeds per case (default 0,1)")
    parser.add_argument("--kinds", default=",".join(PAIR_KINDS),
                        help=f"comma-separated subset of {','.join(KINDS)}, or 'multi' (the {len(MULTI_KINDS)} "
                             f"multi-image kinds) or 'all' (default: {','.join(PAIR_KINDS)})")
    parser.add_argument("--threads", type=int, default=None, help="passed to gradinv attack --threads")
    parser.add_argument("--iterations", type=int, default=None,
                        help="passed to gradinv attack --iterations, for a quick look (the targets are about the "
                             "defaults)")
    parser.add_argument("--images-from", choices=("sample", "other"), default="sample",
                        help="sample: the bundled test split (default); other: images from installed packages the "
                             "sample set does not use")
    parser.add_argument("--override", action="append", default=[], type=_override, metavar="KEY=VALUE",
                        help="attack setting for the rgb kind (JSON value), e.g. tv_l2=1e-3; repeatable")
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"registry model of the folder kinds (default {DEFAULT_MODEL}), e.g. resnet18_monai, "
                             "densenet121, resnet18")
    parser.add_argument("--resolution", type=int, default=64, metavar="R",
                        help="passed to gradinv attack --resolution (default 64; the paper's resnet18 uses 224)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="attack seconds per client, passed to gradinv attack --time-budget (default: the "
                             "model's: none for bn_cnn, OTHER_MODEL_TIME_BUDGET_S = 600 for the others)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a kind misses its target")
    args = parser.parse_args(argv)
    aliases = {"all": list(KINDS), "multi": list(MULTI_KINDS)}
    kinds = [kind for part in args.kinds.split(",") if part for kind in aliases.get(part, [part])]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or args.cases < 1:
        parser.error(f"unknown kind(s) {unknown}" if unknown else "--cases must be at least 1")

    from gradinv.models import MODEL_NAMES

    if args.model not in MODEL_NAMES:
        parser.error(f"unknown --model {args.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if args.model != DEFAULT_MODEL and "rgb" in kinds:
        parser.error("the rgb kind attacks the example job's own model (HospitalNet); run it without --model")
    if args.time_budget is not None and not args.time_budget > 0:
        parser.error(f"--time-budget must be a positive number of seconds, got {args.time_budget}")
    model_budget = None if args.model == DEFAULT_MODEL else OTHER_MODEL_TIME_BUDGET_S
    options = CommandOptions(threads=args.threads, iterations=args.iterations, model=args.model,
                             resolution=args.resolution,
                             time_budget_s=model_budget if args.time_budget is None else args.time_budget)

    from gradinv.paths import sample_data_dir

    test_split = sample_data_dir() / "test"
    if args.images_from == "sample" and not test_split.is_dir():
        print(f"attack_quality: error: no bundled sample at {test_split}; run `gradinv assets` first", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory(prefix="gradinv-quality-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o700)
        if args.images_from == "sample":
            built = build_cases(test_split, args.cases, workdir / "cases")
            pools = {classes: sample_classes(test_split, classes) for classes in (2, 4)}
        else:
            paths = write_other_images(workdir / "images")
            built = build_other_cases(args.cases, workdir / "cases", paths)
            pools = {classes: {name: [paths[image] for image in images] for name, images in by_class.items()}
                     for classes, by_class in OTHER_CLASSES.items()}
        multi = [kind for kind in kinds if kind in MULTI_KINDS]
        built += build_multi_cases(multi, args.cases, workdir / "cases", pools)
        cases = [case for case in built if case[0] in kinds]
        if "rgb" in kinds:
            iterations = {} if args.iterations is None else {"iterations": args.iterations}
            runs += run_rgb(args.images_from, args.seeds, {**iterations, **dict(args.override)}, args.threads,
                            args.cases)
        total = len(cases) * len(args.seeds)
        for kind, name, folder, num_images, batch_size in cases:
            for seed in args.seeds:
                print(f"[{len(runs) + 1}/{total}] {name} seed {seed} ...", file=sys.stderr, flush=True)
                out = workdir / "out" / f"{folder.name}-{seed}"
                result = run_one(folder, num_images, batch_size, seed, options, out)
                runs.append({"kind": kind, "case": name, "seed": seed, "ssim": result["ssim"], "psnr": result["psnr"],
                             "lpips": result["lpips"], "seconds": result["seconds"], "iterations": result["iterations"],
                             "per_image_ssim": [entry["ssim"] for entry in result["per_image"]],
                             "labels": sorted(entry["label"] for entry in result["per_image"]),
                             "label_accuracy": result["label_accuracy"], "prior_ssim": result.get("prior_ssim"),
                             "update_distance": result.get("update_distance"), "converged": result.get("converged"),
                             "bn_residual": result.get("bn_residual"), "stopped": result.get("stopped"),
                             "projected_seconds": result.get("projected_seconds"), "preset": result.get("preset")})

    header = (f"{'run':<62} {'seed':>4} {'SSIM':>6} {'per image':>14} {'PSNR':>6} {'seconds':>8} {'distance':>8} "
              f"{'projected':>9}")
    print(header + "\n" + "-" * len(header))
    for run in runs:
        per_image = " ".join(f"{value:.2f}" for value in run["per_image_ssim"])
        distance, projected = run.get("update_distance"), run.get("projected_seconds")
        print(f"{run['case'][:62]:<62} {run['seed']:>4} {run['ssim']:>6.3f} {per_image:>14} {run['psnr']:>6.1f} "
              f"{run['seconds']:>8.1f} {'-' if distance is None else f'{distance:.4f}':>8} "
              f"{'-' if projected is None else f'{projected:.0f}':>9}")
    summary = summarise(runs, args.model)
    print()
    for kind, entry in summary.items():
        target = "no target" if entry["ssim_target"] is None else f"target >= {entry['ssim_target']}"
        seconds = (f", attack seconds max {entry['seconds_max']:.1f} (target <= {entry['seconds_target']:g})"
                   if entry.get("seconds_target") is not None else f", attack seconds max {entry['seconds_max']:.1f}")
        verdict = "" if entry["pass"] is None else f": {'PASS' if entry['pass'] else 'FAIL'}"
        distance = entry["update_distance_mean"]
        converged = "" if distance is None else (f", update distance mean {distance:.4f}, converged "
                                                 f"{entry['converged']}/{entry['runs']}")
        print(f"{kind:<13} SSIM mean {entry['ssim_mean']:.3f} (min {entry['ssim_min']:.3f}, {target})"
              f"{seconds}{converged}{verdict}")
    print(json.dumps({**summary, "runs_detail": runs, "model": args.model, "resolution": args.resolution,
                      "time_budget_s": options.time_budget_s, "threads": args.threads, "iterations": args.iterations,
                      "images_from": args.images_from, "overrides": dict(args.override),
                      "load_average_1min": os.getloadavg()[0]}))
    return 1 if args.check and any(entry["pass"] is False for entry in summary.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
