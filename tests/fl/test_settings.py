"""The filter's settings: declared once, validated at construction; the job's own model found at run time."""

import dataclasses
import inspect

import pytest
from torch import nn

from gradinv.errors import ConfigurationError, GradinvError
from gradinv.fl import GradInversionAggregatorFilter
from gradinv.fl.job_model import job_model
from gradinv.fl.settings import AuditSettings
from gradinv.models import build_model


def test_filter_arguments_are_exactly_the_settings_fields_with_the_same_defaults():
    parameters = inspect.signature(GradInversionAggregatorFilter.__init__).parameters
    arguments = {name: p.default for name, p in parameters.items() if name != "self"}
    fields = {f.name: f.default for f in dataclasses.fields(AuditSettings)}
    assert arguments == fields


def test_filter_keeps_its_arguments_under_their_own_names_for_the_job_export():
    flt = GradInversionAggregatorFilter(model="bn_cnn", input_shape=[1, 32, 32], block_threshold=0.5)
    assert flt.model == "bn_cnn" and flt.input_shape == [1, 32, 32] and flt.block_threshold == 0.5
    assert flt.settings.input_shape == (1, 32, 32)


@pytest.mark.parametrize("arguments, message", [
    ({"block_metric": "ssim_mean"}, "block_metric must be one of"),
    ({"model": "my_hospital.nets.NoSuchNet"}, "my_hospital.nets.NoSuchNet' cannot be imported"),
    ({"input_shape": (2, 64, 64)}, "input_shape must be"),
    ({"input_shape": (3, 64)}, "input_shape must be"),
    ({"normalize": ([0.5, 0.5], [0.2, 0.2]), "input_shape": (3, 64, 64)}, "3 channel"),
    ({"normalize": ([0.5], [0.0])}, "normalize"),
    ({"time_budget_s": 0}, "time_budget_s"),
    ({"device": "gpu"}, "device must be"),
    ({"frequency": 0}, "frequency"),
    ({"num_classes": 0}, "num_classes"),
    ({"attack_overrides": {"iterationz": 3}}, "unknown attack settings"),
    ({"save_images": "no"}, "save_images must be true or false"),
])
def test_configuration_mistakes_fail_at_construction(arguments, message):
    with pytest.raises(ConfigurationError, match=message):
        GradInversionAggregatorFilter(**arguments)


def test_every_problem_is_named_at_once():
    with pytest.raises(ValueError) as caught:
        GradInversionAggregatorFilter(mode="later", block_metric="x", frequency=0)
    assert all(part in str(caught.value) for part in ("mode", "block_metric", "frequency"))


class _Persistor:
    def __init__(self, model):
        self.model = model


class _Engine:
    def __init__(self, components):
        self.run_manager = type("RunManager", (), {"components": components})()

    def get_component(self, name):
        return self.run_manager.components.get(name)


def test_job_model_is_a_private_copy_of_the_persistors_module():
    model = build_model("bn_cnn", resolution=16)
    found = job_model(_Engine({"persistor": _Persistor(model)}))
    assert isinstance(found, nn.Module) and found is not model
    assert found.state_dict().keys() == model.state_dict().keys()


def test_job_model_follows_the_controllers_persistor_id_and_builds_an_exported_spec():
    controller = type("Controller", (), {"_persistor_id": "my_persistor"})()
    spec = {"path": "gradinv.models.bn_cnn.BNConvNet", "args": {"resolution": 16}}
    found = job_model(_Engine({"controller": controller, "my_persistor": _Persistor(spec)}))
    assert type(found).__name__ == "BNConvNet"


def test_a_job_without_a_model_says_what_to_configure():
    with pytest.raises(GradinvError, match="give the filter the architecture"):
        job_model(_Engine({}))


def test_the_default_preset_is_chosen_by_the_models_head_once_the_model_is_known(tmp_path):
    from gradinv.attack import PRESETS
    from gradinv.fl.auditor import LeakageAuditor

    settings = AuditSettings(prior="none", progress=False, attack_overrides={"iterations": 7})
    assert settings.preset == "auto"

    def job_model_not_built_yet():
        raise AssertionError("the job's model is only looked up when an update needs it")

    waiting = LeakageAuditor(tmp_path / "a", job_model_not_built_yet, settings)
    assert waiting.preset == "auto"  # nothing resolved at construction
    pooled = LeakageAuditor(tmp_path / "b", build_model("resnet18_monai", num_classes=2, resolution=32), settings)
    assert pooled.config == PRESETS["gap"].replace(iterations=7) and pooled.preset == "gap"
    flatten = LeakageAuditor(tmp_path / "c", build_model("bn_cnn", num_classes=2, resolution=32), settings)
    assert flatten.config == PRESETS["fast"].replace(iterations=7) and flatten.preset == "fast"
    chosen = LeakageAuditor(tmp_path / "d", job_model_not_built_yet, AuditSettings(prior="none", preset="thorough"))
    assert chosen.config == PRESETS["thorough"] and chosen.preset == "thorough"  # a named preset needs no model


def test_auto_preset_overrides_are_checked_at_construction():
    with pytest.raises(ConfigurationError, match="bn_scale"):
        AuditSettings(attack_overrides={"bn_scale": "scaled"})
