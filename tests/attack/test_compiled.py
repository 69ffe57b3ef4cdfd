"""The compiled attack step computes the eager objective and gradient; ``compile`` is validated; failures fall back."""

import logging

import pytest
import torch

from gradinv.attack import get_preset, invert
from gradinv.attack.compiled import (
    AUTO_MIN_ITERATIONS,
    CHECK_RTOL,
    AttackStep,
    make_attack_step,
    should_compile,
    step_difference,
)
from gradinv.attack.inputs import validate_attack_inputs
from gradinv.attack.objective import InversionObjective, label_targets
from gradinv.attack.presets import AttackConfig
from gradinv.errors import AttackInputError
from gradinv.models import BNConvNet
from gradinv.recipe import TrainingRecipe
from gradinv.simulation import simulate_client


def _objective(natural_images, client_update, num_images, resolution, recipe, config):
    torch.manual_seed(0)
    images = natural_images(num_images, resolution)
    labels = torch.arange(num_images) % 2
    model, global_state, diff = client_update("bn_cnn", images, labels, recipe)
    inputs = validate_attack_inputs(model, global_state, diff, recipe, num_images)
    objective = InversionObjective(model, inputs, config, torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    start = (images + 0.2 * torch.randn(images.shape, generator=generator)).clamp(0, 1).requires_grad_(True)
    label_logits = torch.rand(num_images, 2, generator=generator).requires_grad_(True)
    return model, inputs, objective, start, label_logits


def _step(objective, recipe, compile):
    return AttackStep(
        objective, lambda logits: label_targets(logits, recipe), differentiate_labels=True, compile=compile
    )


def _relative(a, b):
    return float((a - b).norm() / b.norm())


# --- configuration --------------------------------------------------------------------------------------
def test_compile_setting_is_validated():
    assert AttackConfig().compile == "auto"
    for mode in ("on", "off", "auto"):
        assert get_preset("fast", {"compile": mode}).compile == mode
    with pytest.raises(AttackInputError, match="compile must be one of"):
        AttackConfig(compile="yes")
    with pytest.raises(AttackInputError, match="compile"):
        get_preset("gpu", {"compile": True})


def test_auto_compiles_long_attacks_only():
    fast, paper, gpu = (get_preset(name) for name in ("fast", "paper", "gpu"))
    assert not should_compile(fast, fast.total_iterations(1) * fast.runs(1))  # 1000 iterations: compiling costs more
    assert should_compile(fast, fast.total_iterations(2) * fast.runs(2))  # 3 runs x 2000 share one compile
    assert should_compile(paper, paper.total_iterations(1)) and should_compile(gpu, gpu.total_iterations(8))
    assert not should_compile(gpu.replace(time_budget_s=60), AUTO_MIN_ITERATIONS)  # the budget counts the compile
    assert should_compile(fast.replace(compile="on"), 1)
    assert not should_compile(gpu.replace(compile="off"), 10**6)


# --- the functional replay is the same math (no compiler involved) ----------------------------------------
def test_functional_replay_gradient_equals_autograd_replay(natural_images, client_update):
    recipe = TrainingRecipe(lr=0.05, batch_size=2, epochs=2, momentum=0.9, weight_decay=1e-3, seed=4)
    config = get_preset("fast", {"update_l2": 1e-3})
    _, _, objective, images, label_logits = _objective(natural_images, client_update, 4, 16, recipe, config)
    step = _step(objective, recipe, compile=False)
    eager = step.eager(images, label_logits)
    gradients, (loss, terms) = torch.func.grad_and_value(step._objective_with_terms, argnums=(0, 1), has_aux=True)(
        images.detach(), label_logits.detach()
    )
    assert set(terms) == {"update_cosine", "update_l2", "bn"}
    assert step_difference((loss, terms, gradients), eager) < 1e-5
    assert _relative(gradients[1], eager[2][1]) < 1e-4  # labels matter with several steps


# --- fallback -----------------------------------------------------------------------------------------------
def _raise(*args, **kwargs):
    raise RuntimeError("no C++ compiler here")


@pytest.mark.parametrize("failure", ["compile_error", "wrong_result"])
def test_compiled_step_falls_back_to_eager_with_a_warning(natural_images, client_update, caplog, failure):
    recipe = TrainingRecipe(batch_size=1)
    _, _, objective, images, label_logits = _objective(natural_images, client_update, 1, 16, recipe, AttackConfig())
    step = _step(objective, recipe, compile=True)
    eager = step.eager(images, label_logits)
    if failure == "compile_error":
        step._compiled = _raise
    else:
        step._compiled = lambda x, y, bn_weight: (tuple(2 * g for g in eager[2]), (eager[0], eager[1]))
    with caplog.at_level(logging.WARNING, logger="gradinv.attack.compiled"):
        loss, _, gradients = step(images, label_logits)
    assert step.mode == "eager" and step.fallback_reason
    assert "continuing eagerly" in caplog.text
    assert torch.equal(loss, eager[0]) and all(torch.equal(a, b) for a, b in zip(gradients, eager[2]))
    step(images, label_logits)  # later calls stay eager, without another warning
    assert caplog.text.count("continuing eagerly") == 1


def test_attack_with_a_failing_compiler_still_runs(natural_images, client_update, monkeypatch, caplog):
    recipe = TrainingRecipe(batch_size=1)
    model, inputs, _, _, _ = _objective(natural_images, client_update, 1, 16, recipe, AttackConfig())
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: _raise)
    config = get_preset("fast", {"iterations": 5, "warmup": 2})
    with caplog.at_level(logging.WARNING, logger="gradinv.attack.compiled"):
        fallen_back = invert(model, inputs, config.replace(compile="on"), device="cpu", progress=False)
    eager = invert(model, inputs, config.replace(compile="off"), device="cpu", progress=False)
    assert "continuing eagerly" in caplog.text and fallen_back.iterations == 5
    assert torch.equal(fallen_back.images, eager.images)


def test_make_attack_step_follows_the_config(natural_images, client_update):
    recipe = TrainingRecipe(batch_size=1)
    _, _, objective, _, _ = _objective(natural_images, client_update, 1, 16, recipe, AttackConfig())
    targets = lambda logits: label_targets(logits, recipe)  # noqa: E731
    assert make_attack_step(objective, get_preset("fast"), 1000, targets, True).mode == "eager"
    assert make_attack_step(objective, get_preset("fast", {"compile": "on"}), 1000, targets, True).mode == "compiled"


# --- with the real compiler -------------------------------------------------------------------------------
def _compiled_equals_eager(objective, recipe, images, label_logits, tolerance):
    step = _step(objective, recipe, compile=True)
    compiled = step(images, label_logits)
    assert step.mode == "compiled", step.fallback_reason
    assert step.compile_seconds > 0
    eager = step.eager(images, label_logits)
    again = step(images, label_logits)  # the steady-state call, not the checked first one
    for result in (compiled, again):
        assert set(result[1]) == set(eager[1])
        assert _relative(result[0], eager[0]) < 1e-5
        assert step_difference(result, eager) < tolerance
        assert _relative(result[2][0], eager[2][0]) < tolerance
    return step


def test_compiled_step_equals_eager_n1(natural_images, client_update):
    recipe = TrainingRecipe(batch_size=1)
    config = get_preset("fast", {"update_l2": 1e-3})
    _, _, objective, images, label_logits = _objective(natural_images, client_update, 1, 32, recipe, config)
    _compiled_equals_eager(objective, recipe, images, label_logits, tolerance=1e-4)


def test_compiled_step_takes_the_bn_weight_as_an_input(natural_images, client_update):
    recipe = TrainingRecipe(batch_size=1)
    _, _, objective, images, label_logits = _objective(natural_images, client_update, 1, 16, recipe, get_preset("fast"))
    step = _step(objective, recipe, compile=True)
    step(images, label_logits, 0.1)
    assert step.mode == "compiled", step.fallback_reason
    torch._dynamo.utils.counters.clear()
    for weight in (0.2, 0.7):
        compiled, eager = step(images, label_logits, weight), step.eager(images, label_logits, weight)
        assert step_difference(compiled, eager) < 1e-4
        assert _relative(compiled[0], eager[0]) < 1e-5
    # A new weight is a new input value, not a new graph: nothing was traced again.
    assert sum(torch._dynamo.utils.counters["frames"].values()) == 0
    low, high = (step.eager(images, label_logits, weight) for weight in (0.0, 1.0))
    assert float(high[0] - low[0]) == pytest.approx(float(high[1]["bn"]), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "bn_mode"),
    [
        (TrainingRecipe(lr=0.05, batch_size=2, epochs=2, momentum=0.9, weight_decay=1e-3, seed=4), "exact"),
        (TrainingRecipe(lr=0.05, batch_size=2, epochs=2, loss="bce", bn_momentum=0.3), "single_step"),
    ],
    ids=["multistep-momentum-ce", "multistep-bce-single-step-bn"],
)
def test_compiled_step_equals_eager_multistep(natural_images, client_update, recipe, bn_mode):
    config = get_preset("fast", {"bn_mode": bn_mode, "update_l2": 1e-3})
    _, _, objective, images, label_logits = _objective(natural_images, client_update, 4, 32, recipe, config)
    # float32: inductor's fused reductions accumulate less carefully than ATen (see compiled.CHECK_RTOL)
    _compiled_equals_eager(objective, recipe, images, label_logits, tolerance=CHECK_RTOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_step_equals_eager_on_cuda(natural_images, client_update):
    recipe = TrainingRecipe(batch_size=2)
    model, inputs, _, images, label_logits = _objective(natural_images, client_update, 2, 32, recipe, AttackConfig())
    device = torch.device("cuda")
    objective = InversionObjective(model.to(device), inputs, AttackConfig(), device)
    images = images.detach().to(device).requires_grad_(True)
    label_logits = label_logits.detach().to(device).requires_grad_(True)
    _compiled_equals_eager(objective, recipe, images, label_logits, tolerance=CHECK_RTOL)


def test_unsupported_models_run_eagerly_without_compiling(natural_images, monkeypatch, caplog):
    class DenseNet(BNConvNet):  # matched by class name, like MONAI's DenseNet121 (whose compile is wrong)
        pass

    recipe = TrainingRecipe(batch_size=2)
    images, labels = natural_images(2, 16), torch.tensor([0, 1])
    torch.manual_seed(0)
    model = DenseNet(resolution=16)
    update = simulate_client(model, images, labels, recipe)
    inputs = validate_attack_inputs(model, update.global_state, update.diff, recipe, 2)
    objective = InversionObjective(model, inputs, AttackConfig(), torch.device("cpu"))
    monkeypatch.setattr(torch, "compile", _raise)  # must not even be asked
    with caplog.at_level(logging.WARNING, logger="gradinv.attack.compiled"):
        step = _step(objective, recipe, compile=True)
    assert step.mode == "eager" and "DenseNet" in step.fallback_reason and "running eagerly" in caplog.text
