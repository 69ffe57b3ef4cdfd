"""``gradinv data build`` and ``gradinv data datalists``.

This module stays light (argparse only): the dispatcher imports it to build the parser, and each
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse

from gradinv.cli.common import path_argument
from gradinv.errors import DataError


def _images_per_site(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2,4, got {text!r}")
    return counts


def _class_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _build(args: argparse.Namespace) -> int:
    from gradinv.data.sample import CLASS_NAMES, PRIOR_PNG, SPLITS, build_sample, read_provenance

    folder = build_sample(args.out, force=args.force)
    provenance = read_provenance(folder)
    print(f"sample set: {folder} (builder version {provenance['builder_version']}, "
          f"{provenance['resolution']}x{provenance['resolution']} grayscale PNG)")
    for split in SPLITS:
        counts = provenance["counts"][split]
        per_class = ", ".join(f"{name} {counts[name]}" for name in CLASS_NAMES)
        print(f"  {split:<6} {sum(counts.values()):>3} images ({per_class})")
    print(f"  prior: {folder / PRIOR_PNG} (mean of the public split)")
    print(f"  provenance: {folder / 'PROVENANCE.md'}")
    return 0


def _datalists(args: argparse.Namespace) -> int:
    if args.source is None and (args.test_source or args.test_images is not None or args.classes):
        raise DataError("--test-source, --test-images and --classes need --source (the sample set has its own splits).")
    if args.test_source is not None and args.test_images is not None:
        raise DataError("give either --test-source or --test-images, not both.")
    if args.source is None:
        from gradinv.data.datalists import make_site_datalists
        from gradinv.data.sample import sample_split

        training, test = sample_split("train"), sample_split("test")
        paths = make_site_datalists(training.items, args.images_per_site, args.out, seed=args.seed,
                                    test_items=test.items, class_names=training.class_names)
        test_count = len(test.items)
    else:
        from gradinv.data.sources import site_datalists_from_source

        paths, training, test_count = site_datalists_from_source(
            args.source, args.images_per_site, args.out, seed=args.seed, test_source=args.test_source,
            test_images=args.test_images, classes=args.classes, cache_dir=args.cache)
    print(f"source: {training.source} ({len(training)} images; classes: "
          + ", ".join(f"{label}={name}" for label, name in enumerate(training.class_names)) + ")")
    if not training.labels_known:
        print("  note: a flat folder has no labels; they were assigned in sorted file order as "
              "(index + seed) % number of classes")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    print(f"  each datalist's validation/test list: {test_count} held-out images")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data build`` and ``data datalists`` to the ``gradinv`` parser."""
    data = subparsers.add_parser("data", help="build the offline sample set; write per-site datalists",
                                 description="Sample data and per-site datalists.")
    commands = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: data.print_help() or 2)

    build = commands.add_parser(
        "build", help="build the offline sample set of real medical images (seconds, no download)",
        description="Assemble the two-class sample set (mri vs xray_ct) from installed packages and print "
                    "where it is and what it holds. Does nothing if a complete set is already there.")
    build.add_argument("--out", type=path_argument, default=None,
                       help="folder for the set (default: <GRADINV_HOME or the environment>/share/gradinv/data/sample)")
    build.add_argument("--force", action="store_true", help="rebuild even if a complete set exists")
    build.set_defaults(func=_build)

    datalists = commands.add_parser(
        "datalists", help="write one decathlon-style datalist per site from an image source",
        description="Give each site its own class-balanced, disjoint images from SOURCE and write "
                    "<OUT>/site-1.json, site-2.json, ... Without --source, the sample set's train split is used.")
    datalists.add_argument("--source", default=None, type=path_argument,
                           help="folder (class subfolders, COVID-19 Radiography Database layout, or flat), "
                                "MedMNIST .npz, CSV (path,label) or JSON datalist")
    datalists.add_argument("--images-per-site", type=_images_per_site, required=True, metavar="N1,N2,...",
                           help="training images per site, e.g. 1,2,4 (sites are named site-1, site-2, ...)")
    datalists.add_argument("--out", type=path_argument, required=True, help="folder to write the datalists to")
    datalists.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    datalists.add_argument("--test-source", default=None, type=path_argument,
                           help="separate source of held-out test images (default: the source's own test split, "
                                "else images held out from the source)")
    datalists.add_argument("--test-images", type=int, default=None,
                           help="hold out this many images of the source for testing (default: the source's own "
                                "test split if it has one, else up to 40 of the images the sites do not use)")
    datalists.add_argument("--classes", type=_class_list, default=None, metavar="A,B",
                           help="class folders to use, in label order (e.g. Normal,COVID)")
    datalists.add_argument("--cache", type=path_argument, default=None,
                           help="where a MedMNIST .npz is extracted to PNG (default under GRADINV_HOME)")
    datalists.set_defaults(func=_datalists)
