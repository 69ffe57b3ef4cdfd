"""The filter on models other than gradinv's own, fed by a plain PyTorch client that calls training_meta:
the job's own model from the persistor, MONAI networks, the paper's ResNet-18, RGB and normalised input."""

import copy
import csv

import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind
from nvflare.app_common.app_constant import AppConstants
from torch.utils.data import DataLoader, TensorDataset

from gradinv.fl import GradInversionAggregatorFilter, training_meta
from gradinv.models import build_model

from .fl_helpers import FakeServerEngine, result_context, send_round

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


class EngineWithPersistor(FakeServerEngine):
    """The server engine of a FedAvgRecipe job: its persistor holds the job's model."""

    def __init__(self, root, model):
        super().__init__(root)
        self.persistor = type("Persistor", (), {"model": model})()

    def get_component(self, name):
        return self.persistor if name == "persistor" else None


def user_update(model, images, labels, optimizer_name="sgd", normalize=None, batch_size=2, epochs=1, round_num=0):
    """A user's training script: DataLoader (shuffling), torch.optim, CE loss; the state dict and meta it sends."""
    client = copy.deepcopy(model).train()
    inputs = images if normalize is None else (images - torch.tensor(normalize[0]).view(1, -1, 1, 1)) / torch.tensor(
        normalize[1]).view(1, -1, 1, 1)
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(3))
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(client.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    else:
        optimizer = torch.optim.AdamW(client.parameters(), lr=1e-3, weight_decay=0.01)
    steps = 0
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(client(x), y).backward()
            optimizer.step()
            steps += 1
    meta = {"NUM_STEPS_CURRENT_ROUND": steps, **training_meta(optimizer, loader, epochs=epochs, normalize=normalize)}
    weights = {k: v.detach().numpy().copy() for k, v in client.state_dict().items()}
    result = DXO(DataKind.WEIGHTS, data=weights, meta=meta).to_shareable()
    result.add_cookie(AppConstants.CONTRIBUTION_ROUND, round_num)
    return result


def rows(out_dir):
    with open(out_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name, resolution", [("resnet18_monai", 32), ("densenet121", 64), ("resnet18", 64)])
def test_registry_networks_are_attacked_without_error(tmp_path, name, resolution):
    torch.manual_seed(0)
    model = build_model(name, resolution=resolution)
    engine = EngineWithPersistor(tmp_path, model)
    flt = GradInversionAggregatorFilter(attack_overrides={"iterations": 3}, prior="none", report=False,
                                        progress=False)
    send_round(engine, flt, model)
    images, labels = torch.rand(1, 1, resolution, resolution), torch.tensor([1])
    flt.process(user_update(model, images, labels, batch_size=1), result_context(engine))
    (row,) = rows(tmp_path / "job-1" / "gradinv")
    assert row["status"] == "ok", row
    assert row["replay"] == "exact"


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_a_users_rgb_model_with_normalised_input_is_attacked_in_pixel_space(tmp_path, optimizer_name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 12 * 10, 3))
    engine = EngineWithPersistor(tmp_path, model)
    flt = GradInversionAggregatorFilter(attack_overrides={"iterations": 5}, prior="none", report=False,
                                        progress=False)
    send_round(engine, flt, model)
    images, labels = torch.rand(4, 3, 12, 10), torch.tensor([0, 1, 2, 0])
    flt.process(user_update(model, images, labels, optimizer_name, normalize=(MEAN, STD)), result_context(engine))
    (row,) = rows(tmp_path / "job-1" / "gradinv")
    assert row["status"] == "ok", row
    assert row["num_images"] == "4" and row["num_steps"] == "2"


def test_an_update_from_a_script_without_gradinv_meta_says_what_to_add(tmp_path):
    model = build_model("bn_cnn", resolution=16)
    engine = EngineWithPersistor(tmp_path, model)
    flt = GradInversionAggregatorFilter(prior="none", report=False, progress=False)
    send_round(engine, flt, model)
    result = user_update(model, torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))
    from nvflare.apis.dxo import from_shareable

    dxo = from_shareable(result)
    dxo.meta = {"NUM_STEPS_CURRENT_ROUND": 1}
    flt.process(dxo.update_shareable(result), result_context(engine))
    (row,) = rows(tmp_path / "job-1" / "gradinv")
    assert row["status"] == "invalid" and "training_meta" in row["reason"]
