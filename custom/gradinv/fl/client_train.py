"""The NVFlare Client API training script of a gradinv hospital (site).

Each round it receives the global model (weights and BatchNorm buffers), measures the global model's test
accuracy on the site's test split, trains with the shared :class:`~gradinv.recipe.TrainingRecipe` (BatchNorm
in train mode, so the running statistics change and travel in the update) and sends the whole state dict;
the job's ``params_transfer_type=DIFF`` turns it into a ``WEIGHT_DIFF``. The meta tells the server what the
paper assumes it knows: the recipe actually used and the number of local images and steps.

    python client_train.py --datalists DIR [--model bn_cnn --resolution 64 --lr 0.001 --epochs 1 --batch-size N]

``DIR/<site name>.json`` is the site's decathlon-style datalist (``training`` and optional ``test``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalists", required=True, help="folder holding <site>.json datalists")
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=0, help="0 = all local images in one batch")
    parser.add_argument("--loss", default="cross_entropy", choices=("cross_entropy", "bce"))
    parser.add_argument("--seed", type=int, default=0, help="seeds the per-round batch order")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import nvflare.client as flare
    from nvflare.app_common.abstract.fl_model import FLModel
    from nvflare.apis.fl_constant import FLMetaKey

    from gradinv.data import load_datalist, load_images
    from gradinv.fl.auditor import META_MODEL, META_NUM_IMAGES, META_RECIPE, META_TEST_ACCURACY
    from gradinv.fl.evaluation import accuracy, load_state
    from gradinv.models import build_model
    from gradinv.recipe import TrainingRecipe

    args = parse_args(argv)
    logger = logging.getLogger("gradinv.client")
    flare.init()
    site = flare.get_site_name()
    datalist = Path(args.datalists) / f"{site}.json"
    images, labels = load_images(load_datalist(datalist, key="training"), args.resolution)
    try:
        test_images, test_labels = load_images(load_datalist(datalist, key="test"), args.resolution)
    except Exception as exc:  # noqa: BLE001 - no test split: accuracy is simply not reported
        logger.warning("%s: no usable test split in %s (%s); test accuracy not reported", site, datalist, exc)
        test_images = None
    recipe = TrainingRecipe(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, epochs=args.epochs,
                            batch_size=args.batch_size or None, loss=args.loss, seed=args.seed)
    model = build_model(args.model, num_classes=args.num_classes, resolution=args.resolution)
    logger.info("%s: %d training images, %d local step(s) per round", site, len(images), recipe.num_steps(len(images)))

    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        load_state(model, received.params)
        round_num = int(received.current_round or 0)
        test_accuracy = None if test_images is None else accuracy(model, test_images, test_labels)
        stats = recipe.train(model, images, labels, round_num=round_num)
        meta = {
            FLMetaKey.NUM_STEPS_CURRENT_ROUND: stats["steps"],
            META_RECIPE: recipe.to_meta(),
            META_NUM_IMAGES: len(images),
            META_MODEL: {"name": args.model, "resolution": args.resolution, "num_classes": args.num_classes},
        }
        metrics = {"train_loss": stats["loss"]}
        if test_accuracy is not None:
            meta[META_TEST_ACCURACY] = test_accuracy
            metrics["accuracy"] = test_accuracy
        logger.info("%s round %d: loss %.4f, global-model test accuracy %s", site, round_num, stats["loss"], test_accuracy)
        state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
        flare.send(FLModel(params=state, metrics=metrics, meta=meta))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
