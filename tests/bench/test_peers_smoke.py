"""Smoke tests of the peer attacks and bench/peers.py: a handful of iterations each, no quality or timing asserts.

breaching is an optional extra: its tests are skipped, with the reason, when it is not installed.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradinv.models import build_model
from gradinv.peers.paper_released import attack_released, one_step_bn_targets
from gradinv.recipe import TrainingRecipe
from gradinv.simulation import simulate_client

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "peers.py"
needs_breaching = pytest.mark.skipif(
    importlib.util.find_spec("breaching") is None,
    reason="breaching is not installed (optional peers extra: GRADINV_EXTRAS=peers bash scripts/bootstrap.sh)",
)


def _update(num_images: int, batch_size: int):
    torch.manual_seed(0)
    model = build_model("bn_cnn", num_classes=2, resolution=16)
    images = torch.rand(num_images, *model.input_shape)
    labels = torch.arange(num_images) % 2
    recipe = TrainingRecipe(lr=0.01, batch_size=batch_size, seed=0)
    return model, images, labels, recipe, simulate_client(model, images, labels, recipe)


def test_one_step_bn_targets_are_the_batch_statistics_of_a_single_step():
    model, images, _labels, _recipe, update = _update(2, 2)
    layer_name, layer = next((name, module) for name, module in model.named_modules()
                             if isinstance(module, torch.nn.modules.batchnorm._BatchNorm))
    seen = {}
    handle = layer.register_forward_hook(lambda _m, inputs, _o: seen.setdefault("x", inputs[0].detach()))
    model.train()(images)  # the global weights: the one step's forward pass
    handle.remove()
    mean, var = one_step_bn_targets(update.global_state, update.diff, {layer_name: layer})[layer_name]
    torch.testing.assert_close(mean, seen["x"].mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(var, seen["x"].var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)


def test_paper_released_returns_one_image_per_client_image_in_range():
    model, images, _labels, _recipe, update = _update(2, 2)
    prior = torch.full(images.shape[1:], 0.5)
    result = attack_released(model, update.global_state, update.diff, 2, prior, 2, iterations=3, seed=0)
    assert result.images.shape == images.shape and result.iterations == 3
    assert 0 <= float(result.images.min()) and float(result.images.max()) <= 1


@needs_breaching
def test_breaching_runs_on_a_two_step_local_update():
    from gradinv.peers.breaching_peer import attack_breaching

    model, images, labels, recipe, update = _update(4, 2)
    step_labels = [labels[batch] for batch in recipe.batches(4)]
    result = attack_breaching(model, update.global_state, update.diff, 4, step_labels, labels, recipe.lr, 3,
                              tuple(model.input_shape))
    assert result.images.shape == images.shape and result.iterations == 3
    assert torch.isfinite(result.images).all()


def test_bench_prints_a_table_and_the_json_line_last():
    completed = subprocess.run([sys.executable, str(SCRIPT), "--cases", "2img-b2", "--iterations", "3",
                                "--resolution", "16"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    methods = {row["method"] for row in summary["cases"]}
    expected = {"gradinv", "paper_released"} | ({"breaching"} if importlib.util.find_spec("breaching") else set())
    assert methods == expected
    for row in summary["cases"]:
        assert row["case"] == "2img-b2" and row["iterations"] >= 6  # 3 per image for gradinv, the same total
        assert -1 <= row["ssim"] <= 1 and row["seconds"] >= 0
        if row["method"] != "gradinv":
            assert "seconds_ratio_gradinv_over_peer" in row
