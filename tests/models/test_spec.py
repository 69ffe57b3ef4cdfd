"""Model specs (registry name, class path, NVFlare class spec) and input normalisation."""

import pytest
import torch
from torch import nn

from gradinv.errors import AttackInputError, GradinvError
from gradinv.models import build_model
from gradinv.models.normalization import check_normalization, with_input_normalization
from gradinv.models.spec import batchnorm_layers, build_from_spec, describe_spec, output_size


def test_registry_models_record_their_input_shape():
    assert build_model("bn_cnn", resolution=32).input_shape == (1, 32, 32)
    assert build_model("resnet18_monai", resolution=48).input_shape == (1, 48, 48)


def test_class_spec_builds_a_monai_network_with_its_args():
    spec = {"path": "monai.networks.nets.DenseNet121", "args": {"spatial_dims": 2, "in_channels": 3, "out_channels": 4}}
    model = build_from_spec(spec)
    assert type(model).__name__ == "DenseNet121"
    assert output_size(model, (3, 32, 32)) == 4
    assert len(batchnorm_layers(model)) > 50
    assert describe_spec(spec).startswith("monai.networks.nets.DenseNet121(")


def test_nvflare_class_path_key_and_plain_dotted_path_are_accepted():
    assert isinstance(build_from_spec({"class_path": "gradinv.models.bn_cnn.BNConvNet", "args": {"resolution": 16}}),
                      nn.Module)
    assert isinstance(build_from_spec("gradinv.models.bn_cnn.BNConvNet"), nn.Module)


@pytest.mark.parametrize("spec, message", [
    ("no_such_package.Net", "cannot be imported"),
    ("gradinv.models.bn_cnn.NoSuchNet", "cannot be imported"),
    ({"path": "gradinv.models.bn_cnn.BNConvNet", "args": {"resolution": 15}}, "cannot be built"),
    ({"path": "collections.OrderedDict"}, "not a torch.nn.Module"),
    ({"args": {}}, "must be {'path'"),
    ("bn_cnnn", "neither a registry name"),
    (42, "must be a registry name"),
])
def test_a_spec_that_cannot_be_built_names_itself(spec, message):
    with pytest.raises(GradinvError, match=message):
        build_from_spec(spec)


def test_output_size_names_a_shape_the_model_refuses():
    with pytest.raises(GradinvError, match=r"does not accept images of shape \(3, 16, 16\)"):
        output_size(build_model("bn_cnn", resolution=16), (3, 16, 16))


def test_normalised_copy_feeds_the_model_what_the_client_fed_it_and_keeps_parameter_names():
    model = build_model("bn_cnn", resolution=16).eval()
    mean, std = (0.2,), (0.5,)
    normalized = with_input_normalization(model, check_normalization((mean, std), channels=1))
    images = torch.rand(2, 1, 16, 16)
    assert [n for n, _ in normalized.named_parameters()] == [n for n, _ in model.named_parameters()]
    params = dict(normalized.named_parameters())
    expected = model((images - 0.2) / 0.5)
    assert torch.allclose(torch.func.functional_call(normalized, params, (images,)), expected, atol=1e-6)
    assert with_input_normalization(model, None) is model


@pytest.mark.parametrize("value", [([0.5], [0.0]), ([0.5, 0.5], [0.2]), ("mean", "std"), ([float("nan")], [1.0]),
                                   ([0.5],)])
def test_bad_normalisation_is_one_clear_error(value):
    with pytest.raises(AttackInputError, match="normalize"):
        check_normalization(value)


def test_normalisation_must_fit_the_channels():
    with pytest.raises(AttackInputError, match="3 channel"):
        check_normalization(([0.5, 0.5], [0.2, 0.2]), channels=3)
    assert check_normalization(([0.5], [0.2]), channels=3) == ((0.5,), (0.2,))
