"""The functional replay reproduces real torch.optim SGD (momentum, Nesterov, dampening, weight decay), Adam and
AdamW training, a user's shuffling DataLoader (up to a permutation of slots) and drop_last; recipes validate."""

import copy
import dataclasses
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gradinv.attack import get_preset
from gradinv.attack.compiled import CHECK_RTOL, AttackStep, step_difference
from gradinv.attack.inputs import validate_attack_inputs
from gradinv.attack.labels import estimate_label_counts
from gradinv.attack.objective import InversionObjective, label_targets
from gradinv.attack.replay import FunctionalReplay, replay_running_stats
from gradinv.errors import AttackInputError
from gradinv.models import build_model
from gradinv.recipe import TrainingRecipe

RESOLUTION = 16
LABELS = torch.tensor([0, 1, 1, 0, 1])


@pytest.fixture
def images():
    """Five seeded (1, 16, 16) images in [0, 1]."""
    return torch.rand(5, 1, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def global_model():
    return build_model("bn_cnn", resolution=RESOLUTION, init_seed=0)


def _torch_optimizer(recipe: TrainingRecipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimiser a user writes by hand (not through the recipe), so that the test checks torch itself."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            dampening=recipe.dampening,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[recipe.optimizer]
    return optimizer_class(
        model.parameters(), lr=recipe.lr, betas=recipe.betas, eps=recipe.eps, weight_decay=recipe.weight_decay
    )


def _train_with_loader(model: torch.nn.Module, recipe: TrainingRecipe, loader: DataLoader) -> tuple[dict, list]:
    """A user's Client API training loop; returns the client's state dict and the image indices in step order."""
    client = copy.deepcopy(model).train()
    optimizer = _torch_optimizer(recipe, client)
    seen = []
    for _ in range(recipe.epochs):
        for batch_images, batch_labels, indices in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(client(batch_images), batch_labels).backward()
            optimizer.step()
            seen.append(indices)
    return client.state_dict(), seen


def _train_in_recipe_order(
    model: torch.nn.Module, recipe: TrainingRecipe, images: torch.Tensor, labels: torch.Tensor
) -> dict:
    client = copy.deepcopy(model).train()
    optimizer = _torch_optimizer(recipe, client)
    for batch in recipe.batches(len(images), round_num=2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(client(images[batch]), labels[batch]).backward()
        optimizer.step()
    return client.state_dict()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def _assert_replay_matches(model, recipe, client_state, images, labels, round_num=0, tolerance=1e-5):
    """Replay at the true images: parameters and BN running statistics equal the client's (relative)."""
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    replay = FunctionalReplay(model, recipe, num_images=len(images), round_num=round_num)
    result = replay.run(global_state, images, labels, create_graph=False)
    for name in replay.param_names:
        assert _relative(result.params[name], client_state[name]) < tolerance, name
    moved = torch.cat([(result.params[n] - global_state[n]).flatten() for n in replay.param_names])
    observed = torch.cat([(client_state[n] - global_state[n]).flatten() for n in replay.param_names])
    assert _relative(moved, observed) < tolerance
    for layer in replay.bn_layer_names:
        mean, var = replay_running_stats(
            global_state[f"{layer}.running_mean"],
            global_state[f"{layer}.running_var"],
            result.batch_stats[layer],
            recipe.bn_momentum,
        )
        assert _relative(mean, client_state[f"{layer}.running_mean"]) < tolerance, layer
        assert _relative(var, client_state[f"{layer}.running_var"]) < tolerance, layer
        steps = client_state[f"{layer}.num_batches_tracked"] - global_state[f"{layer}.num_batches_tracked"]
        assert int(steps) == len(result.batch_stats[layer]) == recipe.num_steps(len(images))
    return replay


OPTIMIZER_RECIPES = {
    "sgd-nesterov-wd": TrainingRecipe(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-dampening": TrainingRecipe(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3),
    "adam-wd": TrainingRecipe(optimizer="adam", lr=1e-3, betas=(0.8, 0.99), weight_decay=1e-2),
    "adamw-wd": TrainingRecipe(optimizer="adamw", lr=1e-3, weight_decay=0.05),
}


@pytest.mark.parametrize("recipe", OPTIMIZER_RECIPES.values(), ids=OPTIMIZER_RECIPES.keys())
def test_replay_reproduces_torch_optimizers(global_model, images, recipe):
    recipe = dataclasses.replace(recipe, batch_size=2, epochs=2, seed=3)
    images, labels = images[:4], LABELS[:4]
    client_state = _train_in_recipe_order(global_model, recipe, images, labels)
    _assert_replay_matches(global_model, recipe, client_state, images, labels, round_num=2)
    assert recipe.replay_fidelity(4) == "exact"


@pytest.mark.parametrize("recipe", OPTIMIZER_RECIPES.values(), ids=OPTIMIZER_RECIPES.keys())
def test_replay_gradient_wrt_images_is_finite(global_model, images, recipe):
    recipe = dataclasses.replace(recipe, batch_size=2, epochs=2)
    replay = FunctionalReplay(global_model, recipe, num_images=4)
    params = {k: v.detach() for k, v in global_model.named_parameters()}
    surrogate = images[:4].clone().requires_grad_(True)
    result = replay.run(params, surrogate, LABELS[:4])
    if recipe.optimizer != "sgd":  # Adam's second moment is exactly 0 somewhere: sqrt's slope there must not leak
        _, grads = _first_step_gradients(replay, params, surrogate, LABELS[:4])
        assert any(bool((g == 0).any()) for g in grads)
    probe = {
        k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=v.dtype) for k, v in params.items()
    }
    update = sum(((result.params[k] - params[k]) * probe[k]).sum() for k in params)
    (gradient,) = torch.autograd.grad(update, surrogate)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def _first_step_gradients(replay, params, images, labels):
    batch = replay.batches[0]
    current = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    loss = replay.recipe.loss_value(replay.forward_with_stats(current, images[batch])[0], labels[batch])
    return current, torch.autograd.grad(loss, list(current.values()))


def test_adam_sqrt_has_zero_slope_at_zero():
    recipe = TrainingRecipe(optimizer="adam", lr=0.1)
    gradient = torch.tensor([0.0, 2.0], requires_grad=True)
    params, _ = recipe.optimizer_step({"w": torch.zeros(2, dtype=torch.float32)}, [gradient * gradient], None)
    (slope,) = torch.autograd.grad(params["w"].sum(), gradient)
    assert torch.isfinite(slope).all()
    assert params["w"].tolist() == pytest.approx([0.0, -0.1], rel=1e-6)  # Adam's first step: lr * sign(g)


def test_functional_adam_step_is_torch_adam_bit_for_bit():
    torch.manual_seed(0)
    for optimizer in ("adam", "adamw"):
        recipe = TrainingRecipe(optimizer=optimizer, lr=0.01, betas=(0.85, 0.995), eps=1e-6, weight_decay=0.1)
        layer = torch.nn.Linear(3, 2)
        params = {k: v.detach().clone() for k, v in layer.named_parameters()}
        torch_optimizer, state = recipe.make_optimizer(layer), None
        for step in range(3):
            grads = [torch.randn_like(p) * (step != 1) for p in params.values()]  # a zero gradient in between
            for p, g in zip(layer.parameters(), grads):
                p.grad = g.clone()
            torch_optimizer.step()
            params, state = recipe.optimizer_step(params, grads, state)
        assert all(torch.equal(params[k], v.detach()) for k, v in layer.named_parameters())


def test_undisclosed_order_one_epoch_is_exact_up_to_a_permutation(global_model, images):
    recipe = TrainingRecipe(optimizer="adam", lr=1e-3, batch_size=2, seed=None, shuffle=True)
    dataset = TensorDataset(images[:4], LABELS[:4], torch.arange(4))
    loader = DataLoader(dataset, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(5))
    client_state, seen = _train_with_loader(global_model, recipe, loader)
    order = torch.cat(seen)
    assert order.tolist() != [0, 1, 2, 3]  # the loader really shuffled: replaying in index order would be wrong
    assert recipe.replay_fidelity(4) == "exact"
    # The replay's slot i is the loader's i-th image: the same update, the slots permuted.
    _assert_replay_matches(global_model, recipe, client_state, images[order], LABELS[order])
    assert [b.tolist() for b in recipe.batches(4)] == [[0, 1], [2, 3]]


def test_undisclosed_order_over_several_epochs_is_an_approximation():
    recipe = TrainingRecipe(batch_size=2, epochs=2, seed=None)
    assert recipe.replay_fidelity(4) == "approximate"
    assert "same order every epoch" in recipe.replay_approximations(4)[0]
    assert [b.tolist() for b in recipe.batches(4)] == [[0, 1], [2, 3], [0, 1], [2, 3]]
    assert TrainingRecipe(batch_size=None, epochs=3, seed=None).replay_fidelity(4) == "exact"  # one full batch
    assert TrainingRecipe(batch_size=2, epochs=2, seed=None, shuffle=False).replay_fidelity(4) == "exact"


def test_client_training_with_an_undisclosed_order_draws_a_private_permutation(global_model, images):
    recipe = TrainingRecipe(batch_size=1, seed=None)
    draws = [recipe.batches(5, generator=torch.Generator().manual_seed(seed)) for seed in range(3)]
    assert {tuple(torch.cat(d).tolist()) for d in draws} != {(0, 1, 2, 3, 4)}
    assert all(sorted(torch.cat(d).tolist()) == [0, 1, 2, 3, 4] for d in draws)


def test_drop_last_steps_and_exact_replay(global_model, images):
    recipe = TrainingRecipe(lr=0.05, momentum=0.9, batch_size=2, epochs=2, drop_last=True, shuffle=False)
    loader = DataLoader(TensorDataset(images, LABELS, torch.arange(5)), batch_size=2, drop_last=True)
    assert recipe.steps_per_epoch(5) == len(loader) == 2 and recipe.num_steps(5) == 4
    assert recipe.images_per_epoch(5) == 4 and recipe.num_steps(4) == 4
    client_state, seen = _train_with_loader(global_model, recipe, loader)
    assert 4 not in torch.cat(seen).tolist()
    _assert_replay_matches(global_model, recipe, client_state, images, LABELS)
    assert TrainingRecipe(batch_size=2, drop_last=True, seed=None).replay_fidelity(5) == "exact"
    assert TrainingRecipe(batch_size=2, epochs=2, drop_last=True, seed=None).replay_fidelity(5) == "approximate"
    with pytest.raises(AttackInputError, match="drop_last with batch_size=8 > 5 image"):
        TrainingRecipe(batch_size=8, drop_last=True).batches(5)


def test_optimizer_state_carried_over_rounds():
    assert TrainingRecipe(momentum=0.9, fresh_optimizer=False).replay_fidelity(4) == "approximate"
    assert TrainingRecipe(optimizer="adam", fresh_optimizer=False).replay_fidelity(1) == "approximate"
    assert TrainingRecipe(fresh_optimizer=False).replay_fidelity(4) == "exact"  # plain SGD keeps no state
    model = build_model("bn_cnn", resolution=RESOLUTION, init_seed=0)
    images, labels = torch.rand(2, 1, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0)), LABELS[:2]
    carried = TrainingRecipe(optimizer="adam", fresh_optimizer=False)
    optimizer = carried.make_optimizer(model)
    carried.train(model, images, labels, optimizer=optimizer)
    carried.train(model, images, labels, round_num=1, optimizer=optimizer)
    assert max(float(s["step"]) for s in optimizer.state.values()) == 2
    with pytest.raises(AttackInputError, match="fresh_optimizer=True"):
        TrainingRecipe(optimizer="adam").train(model, images, labels, optimizer=optimizer)


def test_make_optimizer_matches_the_recipe():
    model = torch.nn.Linear(2, 2)
    for recipe, torch_class in [
        (OPTIMIZER_RECIPES["sgd-nesterov-wd"], torch.optim.SGD),
        (OPTIMIZER_RECIPES["adam-wd"], torch.optim.Adam),
        (OPTIMIZER_RECIPES["adamw-wd"], torch.optim.AdamW),
    ]:
        optimizer = recipe.make_optimizer(model)
        group = optimizer.param_groups[0]
        assert type(optimizer) is torch_class
        assert (group["lr"], group["weight_decay"]) == (recipe.lr, recipe.weight_decay)
        if recipe.optimizer == "sgd":
            assert (group["momentum"], group["nesterov"], group["dampening"]) == (0.9, True, 0.0)
        else:
            assert (tuple(group["betas"]), group["eps"]) == (recipe.betas, recipe.eps)


def test_meta_round_trip_through_json():
    for recipe in [*OPTIMIZER_RECIPES.values(), TrainingRecipe(seed=None, drop_last=True, fresh_optimizer=False)]:
        meta = json.loads(json.dumps(recipe.to_meta()))
        assert TrainingRecipe.from_meta(meta) == recipe
    old_client = {
        "lr": 0.01,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "epochs": 1,
        "batch_size": None,
        "shuffle": True,
        "seed": 0,
        "loss": "cross_entropy",
        "bn_momentum": 0.1,
    }
    assert TrainingRecipe.from_meta(old_client) == TrainingRecipe()
    assert TrainingRecipe.from_meta({"optimizer": "adam", "amsgrad": False}) == TrainingRecipe(optimizer="adam")
    with pytest.raises(AttackInputError, match="amsgrad=True is not supported"):
        TrainingRecipe.from_meta({"optimizer": "adam", "amsgrad": True})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"nesterov": True}, "nesterov needs momentum > 0"),
        ({"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "nesterov needs momentum > 0 and dampening 0"),
        ({"dampening": 1.5}, "dampening must be in"),
        ({"optimizer": "adam", "betas": (0.9, 1.0)}, "betas must be two numbers"),
        ({"optimizer": "adam", "betas": [0.9]}, "betas must be two numbers"),
        ({"optimizer": "adam", "eps": 0.0}, "eps must be a positive number"),
        ({"optimizer": "adamw", "eps": float("nan")}, "eps must be a positive number"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum=0.9 applies to optimizer 'sgd' only"),
        ({"betas": (0.5, 0.5)}, "betas/eps apply to Adam/AdamW only"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"lr": float("inf")}, "lr must be"),
        ({"lr": "0.1"}, "lr must be"),
        ({"seed": 1.5}, "seed must be an integer or None"),
        ({"drop_last": "yes"}, "drop_last must be true or false"),
        ({"fresh_optimizer": None}, "fresh_optimizer must be true or false"),
    ],
)
def test_validation_names_the_bad_field(kwargs, field):
    with pytest.raises(AttackInputError, match=field) as error:
        TrainingRecipe(**kwargs)
    assert "\n" not in str(error.value)


def test_label_counts_only_where_the_formula_holds(global_model):
    model = global_model
    mean_probabilities = torch.full((2,), 0.5)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    diff = {k: torch.zeros_like(v) for k, v in global_state.items()}
    for recipe, identifiable in [
        (TrainingRecipe(), True),
        (TrainingRecipe(momentum=0.9, nesterov=True), True),
        (TrainingRecipe(momentum=0.9, batch_size=2), False),
        (TrainingRecipe(optimizer="adam"), False),
        (TrainingRecipe(optimizer="adamw"), False),
        (TrainingRecipe(batch_size=3, drop_last=True), False),
        (TrainingRecipe(batch_size=2, seed=None), True),
    ]:
        for name in diff:
            if name.endswith("num_batches_tracked"):
                diff[name] = torch.tensor(recipe.num_steps(4))
        inputs = validate_attack_inputs(model, global_state, diff, recipe, 4)
        counts = estimate_label_counts(model, inputs, 2, mean_probabilities)
        assert (counts is not None) == identifiable, recipe


def test_nesterov_single_step_label_counts_are_recovered(images):
    model = build_model("bn_cnn", resolution=RESOLUTION, init_seed=0)
    images, labels = images[:4], torch.tensor([0, 1, 1, 1])
    recipe = TrainingRecipe(lr=1e-3, momentum=0.9, nesterov=True)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    client = copy.deepcopy(model)
    recipe.train(client, images, labels)
    diff = {k: client.state_dict()[k] - global_state[k] for k in global_state}
    inputs = validate_attack_inputs(model, global_state, diff, recipe, 4)
    with torch.no_grad():
        mean_probabilities = torch.softmax(copy.deepcopy(model).train()(images), dim=1).mean(0)
    assert estimate_label_counts(model, inputs, 2, mean_probabilities) == [1, 3]


def _attack_step(global_model, recipe, images, compile):
    labels = LABELS[:4]
    global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
    client_state = _train_in_recipe_order(global_model, recipe, images[:4], labels)
    diff = {k: client_state[k] - global_state[k] for k in global_state}
    inputs = validate_attack_inputs(global_model, global_state, diff, recipe, 4, round_num=2)
    objective = InversionObjective(global_model, inputs, get_preset("fast", {"update_l2": 1e-3}), torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    start = (images[:4] + 0.2 * torch.randn(images[:4].shape, generator=generator)).clamp(0, 1).requires_grad_(True)
    label_logits = torch.rand(4, 2, generator=generator).requires_grad_(True)
    step = AttackStep(
        objective, lambda logits: label_targets(logits, recipe), differentiate_labels=True, compile=compile
    )
    return step, start, label_logits


@pytest.mark.parametrize("name", ["adam-wd", "adamw-wd"])
def test_functional_replay_gradient_equals_autograd_replay_for_adam(global_model, images, name):
    recipe = dataclasses.replace(OPTIMIZER_RECIPES[name], batch_size=2, epochs=2, seed=3)
    step, start, label_logits = _attack_step(global_model, recipe, images, compile=False)
    eager = step.eager(start, label_logits)
    gradients, (loss, terms) = torch.func.grad_and_value(step._objective_with_terms, argnums=(0, 1), has_aux=True)(
        start.detach(), label_logits.detach()
    )
    assert all(torch.isfinite(g).all() for g in (*gradients, *eager[2]))
    assert step_difference((loss, terms, gradients), eager) < 1e-5


@pytest.mark.slow
def test_compiled_step_equals_eager_for_adamw(global_model, images):
    recipe = dataclasses.replace(OPTIMIZER_RECIPES["adamw-wd"], batch_size=2, epochs=2, seed=3)
    step, start, label_logits = _attack_step(global_model, recipe, images, compile=True)
    compiled = step(start, label_logits)
    assert step.mode == "compiled", step.fallback_reason
    assert step_difference(compiled, step.eager(start, label_logits)) < CHECK_RTOL
