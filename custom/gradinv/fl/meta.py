"""The meta protocol between an FL client and gradinv's server filter: what the server must know to replay.

To replay a client's local training the server needs the optimiser and its hyper-parameters, the number of
local images, the batch size and order, and (to build surrogate images) their shape and normalisation; never
the images or labels. Two routes give it:

* the client's update meta: gradinv's own client script sends it, and a user's own NVFlare Client API script
  adds one call, ``meta.update(training_meta(optimizer, loader, epochs=...))``, read by :func:`read_client_meta`;
* a server-side declaration, for clients that cannot change: the filter's ``client_training`` argument,
  validated when the filter is built by :func:`knowledge_from_declaration` and resolved per update.

:func:`resolve_client_knowledge` picks the route for one update. Every value is plain JSON-able data
(dict, list, str, int, float, bool, None), which NVFlare's meta carries as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, SequentialSampler

from gradinv.errors import AttackInputError
from gradinv.recipe import UNSUPPORTED_OPTIONS, TrainingRecipe

META_RECIPE = "gradinv_recipe"
META_NUM_IMAGES = "gradinv_num_images"
META_MODEL = "gradinv_model"
META_TEST_ACCURACY = "gradinv_global_test_accuracy"
META_INPUT_SHAPE = "gradinv_input_shape"
META_NORMALIZE = "gradinv_normalize"
#: NVFlare's ``FLMetaKey.NUM_STEPS_CURRENT_ROUND`` (its value, so that a client script needs no NVFlare import
#: here): the local steps many Client API scripts report; checked against the recipe when present.
META_NUM_STEPS = "NUM_STEPS_CURRENT_ROUND"

INPUT_CHANNELS = (1, 3)
MIN_INPUT_SIDE = 8
#: Keys tried, in order, for the image of a dataset item that is a dict (MONAI / Hugging Face style).
IMAGE_KEYS = ("image", "img", "images", "input", "inputs", "pixel_values", "x", "data")

_HOW_TO_SEND = ("call gradinv.fl.meta.training_meta(optimizer, loader, ...) in the client script and merge its result "
                "into FLModel.meta, or declare client_training on the filter")

# Optimisers training_meta has described before: a second description with state means the state carried over.
_described_optimizers: weakref.WeakSet = weakref.WeakSet()


@dataclasses.dataclass(frozen=True)
class ClientKnowledge:
    """What the server knows about one client update's local training.

    Attributes:
        recipe: the local training to replay.
        num_images: the client's number of local images.
        input_shape: (C, H, W) of one image, or None when not stated (the filter's model decides).
        normalize: per-channel (mean, std) the client's images were normalised with, or None.
        model: gradinv's own client's model description (``{"name", "resolution", "num_classes"}``), or None.
        source: ``"meta"`` (sent by the client) or ``"declaration"`` (the filter's ``client_training``).
    """

    recipe: TrainingRecipe
    num_images: int
    input_shape: tuple[int, int, int] | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    model: Mapping[str, Any] | None = None
    source: str = "meta"

    @property
    def replay(self) -> str:
        """``"exact"`` or ``"approximate"``: the ``replay`` column of the metrics."""
        return self.recipe.replay_fidelity(self.num_images)


# --- the client's side -----------------------------------------------------------------------------------------
def training_meta(
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    epochs: int = 1,
    loss: str = "cross_entropy",
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    model: nn.Module | None = None,
    fresh_optimizer: bool | None = None,
) -> dict[str, Any]:
    """The meta a user's Client API script adds to ``FLModel.meta`` so that gradinv's filter can replay it.

    Reads the optimiser type and hyper-parameters (``torch.optim.SGD`` / ``Adam`` / ``AdamW``, one set for all
    parameter groups), the number of images, batch size, ``drop_last`` and shuffling from the ``DataLoader``
    (a shuffling loader's order is not disclosed: the server never assumes a seed), and the input shape from
    the first dataset item. Call it every round with the round's optimiser, before or after training; the
    learning rate is read when called (a scheduler that changes it within a round cannot be replayed).
    Random augmentation and extra loss terms (label smoothing, class weights) make the replay approximate.

    Args:
        optimizer: the optimiser the round trains with.
        loader: the round's training ``DataLoader`` (``shuffle=True/False``; no custom samplers).
        epochs: local epochs per round.
        loss: ``"cross_entropy"`` or ``"bce"`` (BCE-with-logits on one-hot labels).
        normalize: per-channel ``(mean, std)`` applied to the images, recorded for the server.
        model: the trained model, to record its BatchNorm momentum (else torch's default 0.1 is assumed).
        fresh_optimizer: whether the optimiser starts the round without state; ``None`` infers it (an
            optimiser described in an earlier round that holds state carried it over).

    Returns:
        Plain JSON-able data; never images or labels.
    """
    if not isinstance(loader, DataLoader):
        raise AttackInputError(f"training_meta needs the torch DataLoader the client trains with, got "
                               f"{type(loader).__name__}")
    num_images, batch_size, shuffle = _describe_loader(loader)
    values = {**_optimizer_hyperparameters(optimizer), "epochs": epochs, "loss": loss, "batch_size": batch_size,
              "shuffle": shuffle, "seed": None, "drop_last": bool(loader.drop_last)}
    if model is not None:
        values["bn_momentum"] = batchnorm_momentum(model)
    recipe = _recipe(values, "training_meta")
    if fresh_optimizer is None:
        fresh_optimizer = _optimizer_is_fresh(optimizer, recipe, num_images)
    _described_optimizers.add(optimizer)
    recipe = dataclasses.replace(recipe, fresh_optimizer=bool(fresh_optimizer))
    meta: dict[str, Any] = {
        META_RECIPE: recipe.to_meta(),
        META_NUM_IMAGES: num_images,
        META_INPUT_SHAPE: list(_first_image_shape(loader.dataset)),
    }
    if normalize is not None:
        meta[META_NORMALIZE] = [list(part) for part in _normalize_pair(normalize, "normalize")]
    read_client_meta(meta)  # the client sees the server's objections at once
    return meta


def batchnorm_momentum(model: nn.Module) -> float | None:
    """The one momentum of ``model``'s BatchNorm layers (None without any); several, or cumulative, are refused."""
    momenta = {module.momentum for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)}
    if not momenta:
        return None
    if None in momenta or len(momenta) > 1:
        raise AttackInputError(f"BatchNorm momenta {sorted(momenta, key=str)}: gradinv replays one momentum shared "
                               "by every BatchNorm layer (not None, the cumulative average)")
    return float(momenta.pop())


def _describe_loader(loader: DataLoader) -> tuple[int, int, bool]:
    if isinstance(loader.dataset, IterableDataset):
        raise AttackInputError("training_meta needs a map-style dataset (len and indexing); an IterableDataset's "
                               "size and order cannot be described")
    if loader.batch_size is None:
        raise AttackInputError("the DataLoader has a custom batch_sampler or batch_size=None; gradinv replays "
                               "DataLoader(batch_size=B, shuffle=..., drop_last=...) only")
    num_images = len(loader.dataset)
    sampler = loader.sampler
    if type(sampler) is SequentialSampler:
        return num_images, int(loader.batch_size), False
    if type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == num_images:
        return num_images, int(loader.batch_size), True
    raise AttackInputError(f"the DataLoader samples with {type(sampler).__name__}"
                           f"{' with replacement' if getattr(sampler, 'replacement', False) else ''}; gradinv "
                           "replays shuffle=True (each image once per epoch) or shuffle=False only")


def _optimizer_hyperparameters(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    kind = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw"}.get(type(optimizer))
    if kind is None:
        raise AttackInputError(f"optimizer {type(optimizer).__name__} is not supported: gradinv replays "
                               "torch.optim.SGD, Adam and AdamW")
    if kind == "adam" and optimizer.param_groups[0].get("decoupled_weight_decay"):
        kind = "adamw"  # Adam(decoupled_weight_decay=True) is AdamW
    if kind == "sgd":
        names = ("lr", "momentum", "dampening", "nesterov", "weight_decay", *UNSUPPORTED_OPTIONS)
    else:
        names = ("lr", "betas", "eps", "weight_decay", *UNSUPPORTED_OPTIONS)
    groups = [{name: _plain(group[name]) for name in names if name in group}
              for group in optimizer.param_groups]
    for other in groups[1:]:
        differing = sorted(name for name in groups[0] if groups[0][name] != other.get(name))
        if differing:
            raise AttackInputError(f"the optimizer's {len(groups)} param groups differ in {differing} "
                                   f"({groups[0][differing[0]]!r} vs {other.get(differing[0])!r}); gradinv replays one "
                                   "set of hyper-parameters for all parameters")
    values = {"optimizer": kind, **groups[0]}
    for option in UNSUPPORTED_OPTIONS:
        if values.pop(option, False):
            raise AttackInputError(f"optimizer option {option}=True is not supported (gradinv cannot replay it)")
    return values


def _optimizer_is_fresh(optimizer: torch.optim.Optimizer, recipe: TrainingRecipe, num_images: int) -> bool:
    state = [s for s in optimizer.state.values() if s]
    if not state or not recipe.has_optimizer_state:
        return True  # nothing carried: before the round's first step, or a stateless SGD
    if optimizer in _described_optimizers:
        return False  # described in an earlier round and still holding state: it carried over
    steps_taken = max((float(_plain(s["step"])) for s in state if "step" in s), default=0.0)
    return steps_taken <= recipe.num_steps(num_images)  # Adam counts steps: more than a round's = carried over


def _first_image_shape(dataset: Any) -> tuple[int, ...]:
    try:
        item = dataset[0]
    except Exception as exc:  # noqa: BLE001 - any dataset error: say which call failed
        raise AttackInputError(f"cannot read the dataset's first item for the input shape: "
                               f"{type(exc).__name__}: {exc}") from exc
    image = item
    if isinstance(item, (tuple, list)) and item:
        image = item[0]
    elif isinstance(item, Mapping):
        key = next((key for key in IMAGE_KEYS if key in item), None)
        if key is None:
            raise AttackInputError(f"the dataset's items are dicts with keys {sorted(map(str, item))}; none of "
                                   f"{list(IMAGE_KEYS)} holds the image")
        image = item[key]
    shape = getattr(image, "shape", None)
    if not isinstance(shape, tuple):
        raise AttackInputError(f"the dataset's first image is a {type(image).__name__}, not a tensor or array "
                               "(apply a ToTensor-like transform)")
    return tuple(int(side) for side in shape)


# --- the server's side: the client's meta ----------------------------------------------------------------------
def read_client_meta(meta: Mapping[str, Any]) -> ClientKnowledge:
    """The knowledge an update's meta carries (gradinv's client, or :func:`training_meta`); clear errors otherwise."""
    if not isinstance(meta, Mapping):
        raise AttackInputError(f"the update's meta must be a mapping, got {type(meta).__name__}")
    missing = [key for key in (META_RECIPE, META_NUM_IMAGES) if key not in meta]
    if missing:
        raise AttackInputError(f"the update's meta lacks {missing}, so the server cannot replay the client's "
                               f"training: {_HOW_TO_SEND}")
    recipe_meta = _decoded(meta, META_RECIPE)
    if not isinstance(recipe_meta, Mapping):
        raise AttackInputError(f"meta {META_RECIPE!r} must be a mapping, got {type(recipe_meta).__name__}")
    recipe = TrainingRecipe.from_meta(recipe_meta)
    num_images = _positive_int(meta[META_NUM_IMAGES], f"meta {META_NUM_IMAGES!r}")
    input_shape = None if meta.get(META_INPUT_SHAPE) is None else _input_shape(_decoded(meta, META_INPUT_SHAPE),
                                                                               f"meta {META_INPUT_SHAPE!r}")
    normalize = None if meta.get(META_NORMALIZE) is None else _normalize_pair(_decoded(meta, META_NORMALIZE),
                                                                              f"meta {META_NORMALIZE!r}", input_shape)
    model = meta.get(META_MODEL)
    knowledge = ClientKnowledge(recipe, num_images, input_shape, normalize,
                                dict(model) if isinstance(model, Mapping) else None, "meta")
    _check_reported_steps(knowledge, meta, "the update")
    return knowledge


# --- the server's side: a declaration ----------------------------------------------------------------------------
#: Keys a ``client_training`` declaration may hold: the recipe's fields (but the seed: a declared client's
#: order is never known) and the client's data description.
DECLARATION_KEYS = tuple(sorted({f.name for f in dataclasses.fields(TrainingRecipe)} - {"seed"}
                                | {"num_images", "input_shape", "normalize"}))
DECLARATION_REQUIRED = ("optimizer", "lr", "batch_size", "epochs")


@dataclasses.dataclass(frozen=True)
class DeclaredTraining:
    """A validated ``client_training`` declaration; :meth:`resolve` gives one update's :class:`ClientKnowledge`."""

    recipe: TrainingRecipe
    num_images: int | Mapping[str, int] | None
    input_shape: tuple[int, int, int] | None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None

    def resolve(self, site: str, meta: Mapping[str, Any] | None = None) -> ClientKnowledge:
        """The knowledge for ``site``'s update: the declared number of images, or the one its meta implies."""
        meta = meta or {}
        num_images = self.num_images.get(site) if isinstance(self.num_images, Mapping) else self.num_images
        if num_images is None and meta.get(META_NUM_IMAGES) is not None:
            num_images = _positive_int(meta[META_NUM_IMAGES], f"meta {META_NUM_IMAGES!r}")
        if num_images is None:
            num_images = self._num_images_from_steps(site, meta)
        knowledge = ClientKnowledge(self.recipe, num_images, self.input_shape, self.normalize, None, "declaration")
        _check_reported_steps(knowledge, meta, f"{site}'s update")
        return knowledge

    def _num_images_from_steps(self, site: str, meta: Mapping[str, Any]) -> int:
        where = f"client_training declares no num_images for {site!r}"
        steps = meta.get(META_NUM_STEPS)
        if steps is None:
            raise AttackInputError(f"{where} and its update reports no {META_NUM_STEPS}: add {site!r} to num_images "
                                   "({site: N}) or make num_images an int")
        steps = _positive_int(steps, f"{site}'s {META_NUM_STEPS}")
        if self.recipe.batch_size != 1 or steps % self.recipe.epochs:
            raise AttackInputError(f"{where}, and {META_NUM_STEPS}={steps} does not determine it with "
                                   f"batch_size={self.recipe.batch_size} and epochs={self.recipe.epochs} (only one "
                                   f"image per batch does): add {site!r} to num_images")
        return steps // self.recipe.epochs


def knowledge_from_declaration(client_training: Mapping[str, Any]) -> DeclaredTraining:
    """Validate the filter's ``client_training`` declaration (at the filter's construction) and keep it.

    ``client_training`` holds the fields :func:`training_meta` would send, flat: ``optimizer``, ``lr``,
    ``batch_size`` (None = the whole local set), ``epochs`` (required), the other recipe fields (``momentum``,
    ``nesterov``, ``weight_decay``, ``betas``, ``eps``, ``drop_last``, ``shuffle`` (default true: order not
    known), ``loss``, ``bn_momentum``, ``fresh_optimizer``, ...), ``num_images`` (an int, or ``{site: int}``;
    left out it is derived from the update's ``NUM_STEPS_CURRENT_ROUND`` where that is unambiguous: batch_size
    1), ``input_shape`` ``[C, H, W]`` and ``normalize`` ``[[means], [stds]]``.
    """
    if not isinstance(client_training, Mapping):
        raise AttackInputError(f"client_training must be a mapping, got {type(client_training).__name__}")
    if "seed" in client_training:
        raise AttackInputError("client_training: 'seed' is gradinv's own client's batch order; a declared client's "
                               "order is not known to the server, leave it out (shuffle says whether it shuffles)")
    unknown = sorted(set(client_training) - set(DECLARATION_KEYS) - set(UNSUPPORTED_OPTIONS), key=str)
    if unknown:
        raise AttackInputError(f"client_training has unknown keys {unknown}; known keys: {list(DECLARATION_KEYS)}")
    missing = [key for key in DECLARATION_REQUIRED if key not in client_training]
    if missing:
        raise AttackInputError(f"client_training lacks {missing} (required: {list(DECLARATION_REQUIRED)})")
    values = {key: value for key, value in client_training.items()
              if key not in ("num_images", "input_shape", "normalize")}
    if isinstance(values["optimizer"], str):
        values["optimizer"] = values["optimizer"].lower()
    values.setdefault("shuffle", True)
    recipe = _recipe({**values, "seed": None}, "client_training")
    num_images = _declared_num_images(client_training.get("num_images"))
    if num_images is None and recipe.batch_size != 1:
        raise AttackInputError(f"client_training needs num_images (an int, or {{site: int}}): with batch_size="
                               f"{recipe.batch_size} the number of images cannot be derived from {META_NUM_STEPS}")
    input_shape = None
    if client_training.get("input_shape") is not None:
        input_shape = _input_shape(client_training["input_shape"], "client_training input_shape")
    normalize = None
    if client_training.get("normalize") is not None:
        normalize = _normalize_pair(client_training["normalize"], "client_training normalize", input_shape)
    return DeclaredTraining(recipe, num_images, input_shape, normalize)


def resolve_client_knowledge(site: str, meta: Mapping[str, Any],
                             declared: DeclaredTraining | None = None) -> ClientKnowledge:
    """One update's knowledge: the client's meta when it sends gradinv's keys, else the declaration."""
    if META_RECIPE in meta or declared is None:
        return read_client_meta(meta)
    return declared.resolve(site, meta)


# --- validation helpers ------------------------------------------------------------------------------------------
def _recipe(values: Mapping[str, Any], where: str) -> TrainingRecipe:
    try:
        return TrainingRecipe.from_meta(values)
    except AttackInputError as exc:
        raise AttackInputError(f"{where}: {exc}") from exc


def _check_reported_steps(knowledge: ClientKnowledge, meta: Mapping[str, Any], whose: str) -> None:
    reported = meta.get(META_NUM_STEPS)
    if isinstance(reported, float) and reported.is_integer():
        reported = int(reported)
    if not isinstance(reported, int) or isinstance(reported, bool):
        return  # NVFlare's key, filled (or not) by the user's script: only a count can be checked
    expected = knowledge.recipe.num_steps(knowledge.num_images)
    if reported != expected:
        raise AttackInputError(
            f"{whose} reports {META_NUM_STEPS}={reported} but {knowledge.num_images} image(s) with batch_size="
            f"{knowledge.recipe.batch_size}, drop_last={knowledge.recipe.drop_last} and {knowledge.recipe.epochs} "
            f"epoch(s) make {expected} step(s); the {knowledge.source}'s training description is wrong")


def _decoded(meta: Mapping[str, Any], key: str) -> Any:
    value = meta[key]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise AttackInputError(f"meta {key!r} is not valid JSON: {exc}") from exc
    return value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AttackInputError(f"{what} must be a positive integer, got {value!r}")
    return value


def _declared_num_images(value: Any) -> int | dict[str, int] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not value:
            raise AttackInputError("client_training num_images is an empty mapping; give {site: N} or an int")
        return {str(site): _positive_int(count, f"client_training num_images[{site!r}]")
                for site, count in value.items()}
    return _positive_int(value, "client_training num_images")


def _input_shape(value: Any, what: str) -> tuple[int, int, int]:
    shape = tuple(value) if isinstance(value, (list, tuple)) else None
    if shape is None or len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise AttackInputError(f"{what} must be [C, H, W] (three integers), got {value!r}")
    channels, height, width = shape
    if channels not in INPUT_CHANNELS or height < MIN_INPUT_SIDE or width < MIN_INPUT_SIDE:
        raise AttackInputError(f"{what} {list(shape)} is not an image gradinv can invert: C must be one of "
                               f"{INPUT_CHANNELS} and H, W >= {MIN_INPUT_SIDE}")
    return shape


def _normalize_pair(value: Any, what: str,
                    input_shape: tuple[int, int, int] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    value = _plain(value)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(part, list) for part in value)):
        raise AttackInputError(f"{what} must be (mean, std), two sequences of per-channel numbers, got {value!r}")
    mean, std = (tuple(part) for part in value)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in mean + std)
    if not numbers or len(mean) != len(std) or len(mean) not in INPUT_CHANNELS:
        raise AttackInputError(f"{what} must be (mean, std) of {INPUT_CHANNELS} finite numbers each, got {value!r}")
    if min(std) <= 0:
        raise AttackInputError(f"{what} std must be > 0 per channel, got {list(std)}")
    if input_shape is not None and len(mean) != input_shape[0]:
        raise AttackInputError(f"{what} has {len(mean)} channel(s) but the images have {input_shape[0]}")
    return tuple(map(float, mean)), tuple(map(float, std))


def _plain(value: Any) -> Any:
    """Python scalars and lists from tensors, arrays and tuples (torch allows tensor learning rates and betas)."""
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value
