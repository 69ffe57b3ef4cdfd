"""The NVFlare Client API training script of a gradinv hospital (site).

Each round it receives the global model (weights and BatchNorm buffers), measures the global model's test
accuracy on the site's test split, trains with the job's :class:`~gradinv.recipe.TrainingRecipe` as any user's
script does (a shuffling ``DataLoader``, the recipe's ``torch.optim`` optimiser, BatchNorm in train mode, so the
running statistics change and travel in the update) and sends the whole state dict; the job's
``params_transfer_type=DIFF`` turns it into a ``WEIGHT_DIFF``. What the server learns of the training comes from
:func:`gradinv.fl.training_meta`, the same call a user's own script makes.

    python client_train.py --datalists DIR [--model bn_cnn --resolution 64 --num-classes 2 --recipe JSON]

``DIR/<site name>.json`` is the site's decathlon-style datalist (``training`` and optional ``test``); ``--recipe``
is :meth:`TrainingRecipe.to_meta` as one compact JSON word.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datalists", required=True, help="folder holding <site>.json datalists")
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--recipe", default="{}", help="the local training as JSON (TrainingRecipe fields)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import nvflare.client as flare
    from nvflare.apis.fl_constant import FLMetaKey
    from nvflare.app_common.abstract.fl_model import FLModel
    from torch.utils.data import DataLoader, TensorDataset

    from gradinv.data import load_datalist, load_images
    from gradinv.fl.evaluation import accuracy, load_state
    from gradinv.fl.meta import META_TEST_ACCURACY, training_meta
    from gradinv.models import build_model
    from gradinv.recipe import TrainingRecipe

    args = parse_args(argv)
    logger = logging.getLogger("gradinv.client")
    recipe = TrainingRecipe.from_meta(json.loads(args.recipe))
    flare.init()
    site = flare.get_site_name()
    datalist = Path(args.datalists) / f"{site}.json"
    images, labels = load_images(load_datalist(datalist, key="training"), args.resolution)
    try:
        test_images, test_labels = load_images(load_datalist(datalist, key="test"), args.resolution)
    except Exception as exc:  # noqa: BLE001 - no test split: accuracy is simply not reported
        logger.warning("%s: no usable test split in %s (%s); test accuracy not reported", site, datalist, exc)
        test_images = None
    model = build_model(args.model, num_classes=args.num_classes, resolution=args.resolution)
    recipe.configure_batchnorm(model)
    order = torch.Generator()
    loader = DataLoader(TensorDataset(images, labels), batch_size=recipe.effective_batch_size(len(images)),
                        shuffle=recipe.shuffle, drop_last=recipe.drop_last, generator=order)
    logger.info("%s: %d training images, %d local step(s) per round", site, len(images), recipe.num_steps(len(images)))

    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        load_state(model, received.params)
        round_num = int(received.current_round or 0)
        test_accuracy = None if test_images is None else accuracy(model, test_images, test_labels)
        order.manual_seed(recipe.seed * 1_000_003 + round_num)  # reproducible runs; the server is not told
        optimizer = recipe.make_optimizer(model)  # fresh each round, as the replay assumes
        model.train()
        losses = []
        for _ in range(recipe.epochs):
            for batch_images, batch_labels in loader:
                optimizer.zero_grad(set_to_none=True)
                loss = recipe.loss_value(model(batch_images), batch_labels)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        meta = {FLMetaKey.NUM_STEPS_CURRENT_ROUND: len(losses),
                **training_meta(optimizer, loader, epochs=recipe.epochs, loss=recipe.loss, model=model)}
        metrics = {"train_loss": sum(losses) / len(losses)}
        if test_accuracy is not None:
            meta[META_TEST_ACCURACY] = test_accuracy
            metrics["accuracy"] = test_accuracy
        logger.info("%s round %d: loss %.4f, global-model test accuracy %s", site, round_num, metrics["train_loss"],
                    test_accuracy)
        state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
        flare.send(FLModel(params=state, metrics=metrics, meta=meta))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
