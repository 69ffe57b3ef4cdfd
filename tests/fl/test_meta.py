"""The client/server meta protocol: training_meta from a real optimiser and DataLoader, read_client_meta,
the server-side client_training declaration, and their errors."""

import copy
import json

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, WeightedRandomSampler

from gradinv.attack.replay import FunctionalReplay
from gradinv.errors import AttackInputError
from gradinv.fl.meta import (
    META_INPUT_SHAPE,
    META_NORMALIZE,
    META_NUM_IMAGES,
    META_NUM_STEPS,
    META_RECIPE,
    ClientKnowledge,
    knowledge_from_declaration,
    read_client_meta,
    resolve_client_knowledge,
    training_meta,
)
from gradinv.models import build_model
from gradinv.recipe import TrainingRecipe

NORMALIZE = ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])


@pytest.fixture
def rgb_loader():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    return DataLoader(
        TensorDataset(images, labels), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
    )


def _model():
    return build_model("bn_cnn", resolution=16, in_channels=3, init_seed=0)


# --- training_meta ---------------------------------------------------------------------------------------------
def test_sgd_client_meta_is_plain_json_and_reads_back(rgb_loader):
    optimizer = torch.optim.SGD(_model().parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    meta = training_meta(optimizer, rgb_loader, epochs=2, normalize=NORMALIZE)
    assert json.loads(json.dumps(meta)) == meta  # plain data only: NVFlare's meta carries it unchanged
    assert not any(isinstance(v, torch.Tensor) for v in meta[META_RECIPE].values())
    knowledge = read_client_meta(meta)
    recipe = knowledge.recipe
    assert (recipe.optimizer, recipe.lr, recipe.momentum, recipe.nesterov, recipe.weight_decay) == (
        "sgd",
        0.01,
        0.9,
        True,
        1e-4,
    )
    assert (recipe.batch_size, recipe.epochs, recipe.shuffle, recipe.seed, recipe.drop_last) == (
        4,
        2,
        True,
        None,
        False,
    )
    assert (knowledge.num_images, knowledge.input_shape, knowledge.source) == (6, (3, 16, 16), "meta")
    assert knowledge.normalize == (tuple(NORMALIZE[0]), tuple(NORMALIZE[1]))
    assert knowledge.replay == "approximate"  # shuffled, undisclosed order, two epochs of two batches
    assert read_client_meta(training_meta(optimizer, rgb_loader)).replay == "exact"


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01), "adam"),
        (lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.05), "adamw"),
        (lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=0.05, decoupled_weight_decay=True), "adamw"),
        (lambda p: torch.optim.Adam(p, lr=torch.tensor(1e-3)), "adam"),
    ],
    ids=["adam", "adamw", "adam-decoupled", "tensor-lr"],
)
def test_adam_family_is_read_from_the_optimizer(rgb_loader, make, kind):
    optimizer = make(_model().parameters())
    recipe = read_client_meta(training_meta(optimizer, rgb_loader)).recipe
    group = optimizer.param_groups[0]
    assert recipe.optimizer == kind
    assert (recipe.lr, *recipe.betas, recipe.eps, recipe.weight_decay) == (
        float(group["lr"]),
        *group["betas"],
        group["eps"],
        group["weight_decay"],
    )


def test_loader_order_and_drop_last(rgb_loader):
    optimizer = torch.optim.SGD(_model().parameters(), lr=0.1)
    ordered = DataLoader(rgb_loader.dataset, batch_size=4, drop_last=True)
    recipe = read_client_meta(training_meta(optimizer, ordered)).recipe
    assert (recipe.shuffle, recipe.drop_last, recipe.num_steps(6)) == (False, True, len(ordered))
    full_batch = DataLoader(rgb_loader.dataset, batch_size=64)
    assert read_client_meta(training_meta(optimizer, full_batch)).recipe.num_steps(6) == 1


def test_user_training_replays_from_its_meta(rgb_loader):
    """A user's loop (shuffling DataLoader, Adam) replayed from nothing but its meta, up to a slot permutation."""
    model = _model()
    client = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(client.parameters(), lr=1e-3, weight_decay=1e-3)
    indexed = DataLoader(
        TensorDataset(*rgb_loader.dataset.tensors, torch.arange(6)),
        batch_size=4,
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
    )
    order = []
    for images, labels, indices in indexed:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(client(images), labels).backward()
        optimizer.step()
        order.append(indices)
    knowledge = read_client_meta({**training_meta(optimizer, indexed), META_NUM_STEPS: len(indexed)})
    assert knowledge.recipe.fresh_optimizer and knowledge.replay == "exact"
    images, labels, _ = indexed.dataset.tensors
    order = torch.cat(order)
    replay = FunctionalReplay(model, knowledge.recipe, knowledge.num_images)
    result = replay.run(dict(model.named_parameters()), images[order], labels[order], create_graph=False)
    for name in replay.param_names:
        assert torch.allclose(result.params[name], client.state_dict()[name], rtol=1e-5, atol=1e-7), name


def test_fresh_optimizer_is_inferred(rgb_loader):
    model = _model()
    persistent = torch.optim.Adam(model.parameters(), lr=1e-3)
    for round_num in range(2):
        for images, labels in rgb_loader:
            persistent.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            persistent.step()
        fresh = read_client_meta(training_meta(persistent, rgb_loader)).recipe.fresh_optimizer
        assert fresh == (round_num == 0)  # round 2 starts from round 1's moments
    unseen = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert read_client_meta(training_meta(unseen, rgb_loader)).recipe.fresh_optimizer
    assert not read_client_meta(training_meta(unseen, rgb_loader, fresh_optimizer=False)).recipe.fresh_optimizer


class _DictDataset(Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 3

    def __getitem__(self, index):
        return self.item


def test_dict_items_and_bn_momentum():
    optimizer = torch.optim.SGD(_model().parameters(), lr=0.1)
    loader = DataLoader(_DictDataset({"label": 1, "image": torch.zeros(1, 32, 24)}), batch_size=1)
    model = _model()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.3
    knowledge = read_client_meta(training_meta(optimizer, loader, model=model))
    assert knowledge.input_shape == (1, 32, 24) and knowledge.recipe.bn_momentum == 0.3


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("rmsprop", "RMSprop is not supported"),
        ("amsgrad", "amsgrad=True is not supported"),
        ("maximize", "maximize=True is not supported"),
        ("param_groups", "param groups differ in \\['weight_decay'\\]"),
        ("weighted_sampler", "WeightedRandomSampler"),
        ("batch_sampler", "custom batch_sampler"),
        ("not_a_loader", "needs the torch DataLoader"),
        ("no_image_key", "none of .* holds the image"),
        ("pil_like", "not a tensor or array"),
        ("two_channels", "C must be one of \\(1, 3\\)"),
        ("tiny", "H, W >= 8"),
        ("flat", "must be \\[C, H, W\\]"),
        ("std_zero", "std must be > 0"),
        ("normalize_channels", "has 1 channel\\(s\\) but the images have 3"),
        ("normalize_nan", "finite numbers"),
        ("epochs", "epochs must be an integer >= 1"),
        ("loss", "loss must be one of"),
    ],
)
def test_training_meta_refuses_what_cannot_be_replayed(rgb_loader, case, message):
    parameters = list(_model().parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    loader, kwargs = rgb_loader, {}
    dataset = rgb_loader.dataset
    if case == "rmsprop":
        optimizer = torch.optim.RMSprop(parameters)
    elif case == "amsgrad":
        optimizer = torch.optim.Adam(parameters, amsgrad=True)
    elif case == "maximize":
        optimizer = torch.optim.SGD(parameters, lr=0.1, maximize=True)
    elif case == "param_groups":
        optimizer = torch.optim.SGD(
            [{"params": parameters[:2], "weight_decay": 0.0}, {"params": parameters[2:]}], lr=0.1, weight_decay=1e-4
        )
    elif case == "weighted_sampler":
        loader = DataLoader(dataset, batch_size=2, sampler=WeightedRandomSampler([1.0] * 6, 6))
    elif case == "batch_sampler":
        loader = DataLoader(dataset, batch_sampler=[[0, 1], [2, 3, 4, 5]])
    elif case == "not_a_loader":
        loader = list(rgb_loader)
    elif case == "no_image_key":
        loader = DataLoader(_DictDataset({"pixels": torch.zeros(3, 16, 16)}), batch_size=1)
    elif case == "pil_like":
        loader = DataLoader(_DictDataset(("not an image", 0)), batch_size=1)
    elif case in ("two_channels", "tiny", "flat"):
        image = {"two_channels": torch.zeros(2, 16, 16), "tiny": torch.zeros(3, 4, 16), "flat": torch.zeros(16, 16)}
        loader = DataLoader(_DictDataset((image[case], 0)), batch_size=1)
    elif case == "std_zero":
        kwargs = {"normalize": ([0.5] * 3, [0.2, 0.0, 0.2])}
    elif case == "normalize_channels":
        kwargs = {"normalize": ([0.5], [0.2])}
    elif case == "normalize_nan":
        kwargs = {"normalize": ([0.5, float("nan"), 0.5], [0.2] * 3)}
    elif case == "epochs":
        kwargs = {"epochs": 0}
    elif case == "loss":
        kwargs = {"loss": "mse"}
    with pytest.raises(AttackInputError, match=message) as error:
        training_meta(optimizer, loader, **kwargs)
    assert "\n" not in str(error.value)


# --- read_client_meta ------------------------------------------------------------------------------------------
def test_gradinv_client_meta_is_still_accepted():
    recipe = TrainingRecipe(lr=0.001, batch_size=2, epochs=2, seed=4)
    for sent in (recipe.to_meta(), json.dumps(recipe.to_meta())):
        meta = {META_RECIPE: sent, META_NUM_IMAGES: 4, META_NUM_STEPS: 4, "gradinv_model": {"name": "bn_cnn"}}
        knowledge = read_client_meta(meta)
        assert knowledge == ClientKnowledge(recipe, 4, None, None, {"name": "bn_cnn"}, "meta")
        assert knowledge.replay == "exact"  # gradinv's client discloses its seed
    assert read_client_meta({META_RECIPE: recipe.to_meta(), META_NUM_IMAGES: 4.0}).num_images == 4


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({}, "lacks \\['gradinv_recipe', 'gradinv_num_images'\\].*training_meta.*client_training"),
        ({META_RECIPE: "{not json", META_NUM_IMAGES: 4}, "'gradinv_recipe' is not valid JSON"),
        ({META_RECIPE: "[1, 2]", META_NUM_IMAGES: 4}, "must be a mapping"),
        ({META_RECIPE: {"optimizer": "lbfgs"}, META_NUM_IMAGES: 4}, "optimizer must be one of"),
        ({META_RECIPE: '{"lr": NaN}', META_NUM_IMAGES: 4}, "lr must be a positive number"),
        ({META_RECIPE: {"weight_decay": -0.1}, META_NUM_IMAGES: 4}, "weight_decay must be >= 0"),
        ({META_RECIPE: {"optimizer": "adam", "eps": float("inf")}, META_NUM_IMAGES: 4}, "eps must be"),
        ({META_RECIPE: {}, META_NUM_IMAGES: 0}, "'gradinv_num_images' must be a positive integer"),
        ({META_RECIPE: {}, META_NUM_IMAGES: 4, META_INPUT_SHAPE: [4, 16, 16]}, "C must be one of"),
        ({META_RECIPE: {}, META_NUM_IMAGES: 4, META_INPUT_SHAPE: "[3, 16]"}, "must be \\[C, H, W\\]"),
        ({META_RECIPE: {}, META_NUM_IMAGES: 4, META_NORMALIZE: [[0.5], [-1.0]]}, "std must be > 0"),
        ({META_RECIPE: {}, META_NUM_IMAGES: 4, META_NORMALIZE: [0.5, 0.2]}, "must be \\(mean, std\\)"),
        (
            {META_RECIPE: {"batch_size": 2}, META_NUM_IMAGES: 4, META_NUM_STEPS: 3},
            "NUM_STEPS_CURRENT_ROUND=3 .* 2 step",
        ),
    ],
)
def test_malformed_meta(meta, message):
    with pytest.raises(AttackInputError, match=message) as error:
        read_client_meta(meta)
    assert "\n" not in str(error.value)


# --- the server-side declaration -------------------------------------------------------------------------------
DECLARED = {
    "optimizer": "SGD",
    "lr": 0.01,
    "momentum": 0.9,
    "batch_size": 8,
    "epochs": 1,
    "num_images": {"site-1": 4, "site-2": 16},
    "input_shape": [3, 64, 64],
    "normalize": list(NORMALIZE),
}


def test_declaration_resolves_per_site():
    declared = knowledge_from_declaration(DECLARED)
    site1, site2 = declared.resolve("site-1", {META_NUM_STEPS: 1}), declared.resolve("site-2", {})
    assert (site1.num_images, site2.num_images) == (4, 16)
    assert site1.recipe == TrainingRecipe(lr=0.01, momentum=0.9, batch_size=8, seed=None, shuffle=True)
    assert (site1.input_shape, site1.source, site1.replay) == ((3, 64, 64), "declaration", "exact")
    with pytest.raises(AttackInputError, match="no num_images for 'site-3'.*add 'site-3' to num_images"):
        declared.resolve("site-3", {META_NUM_STEPS: 2})
    with pytest.raises(AttackInputError, match="site-2's update reports NUM_STEPS_CURRENT_ROUND=3"):
        declared.resolve("site-2", {META_NUM_STEPS: 3})
    assert knowledge_from_declaration({**DECLARED, "num_images": 5}).resolve("any", {}).num_images == 5


def test_declared_number_of_images_from_steps_only_when_unambiguous():
    one_per_batch = knowledge_from_declaration({"optimizer": "adam", "lr": 1e-3, "batch_size": 1, "epochs": 2})
    assert one_per_batch.resolve("site-1", {META_NUM_STEPS: 6}).num_images == 3
    with pytest.raises(AttackInputError, match="reports no NUM_STEPS_CURRENT_ROUND"):
        one_per_batch.resolve("site-1", {})
    with pytest.raises(AttackInputError, match="does not determine it"):
        one_per_batch.resolve("site-1", {META_NUM_STEPS: 5})
    with pytest.raises(AttackInputError, match="needs num_images.*batch_size=8 the number of images cannot be derived"):
        knowledge_from_declaration({"optimizer": "sgd", "lr": 0.1, "batch_size": 8, "epochs": 1})
    with pytest.raises(AttackInputError, match="batch_size=None the number of images cannot be derived"):
        knowledge_from_declaration({"optimizer": "sgd", "lr": 0.1, "batch_size": None, "epochs": 1})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 3}, "'seed' is gradinv's own client's batch order"),
        ({"learning_rate": 0.1}, "unknown keys \\['learning_rate'\\]"),
        ({"lr": None}, "lr must be a positive number"),
        ({"optimizer": "rmsprop"}, "client_training: invalid training recipe: optimizer must be one of"),
        ({"amsgrad": True}, "amsgrad=True is not supported"),
        ({"nesterov": True, "dampening": 0.5}, "nesterov needs momentum > 0 and dampening 0"),
        ({"num_images": {"site-1": 0}}, "num_images\\['site-1'\\] must be a positive integer"),
        ({"num_images": {}}, "empty mapping"),
        ({"input_shape": [3, 64]}, "input_shape must be \\[C, H, W\\]"),
        ({"normalize": [[0.5, 0.5, 0.5], [0.2, 0.2]]}, "finite numbers each"),
        ({"normalize": [[0.5], [0.2]]}, "has 1 channel\\(s\\) but the images have 3"),
    ],
)
def test_bad_declarations_fail_at_construction(change, message):
    with pytest.raises(AttackInputError, match=message) as error:
        knowledge_from_declaration({**DECLARED, **change})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("required", ["optimizer", "lr", "batch_size", "epochs"])
def test_declarations_state_the_training(required):
    with pytest.raises(AttackInputError, match=f"lacks \\['{required}'\\]"):
        knowledge_from_declaration({k: v for k, v in DECLARED.items() if k != required})


def test_resolve_prefers_the_client_meta():
    declared = knowledge_from_declaration(DECLARED)
    sent = {META_RECIPE: TrainingRecipe(batch_size=2).to_meta(), META_NUM_IMAGES: 2}
    assert resolve_client_knowledge("site-1", sent, declared).source == "meta"
    assert resolve_client_knowledge("site-1", {}, declared).source == "declaration"
    with pytest.raises(AttackInputError, match="training_meta"):
        resolve_client_knowledge("site-1", {})
