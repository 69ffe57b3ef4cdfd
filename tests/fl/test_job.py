"""JobSettings: the job's own fields beside the filter's AuditSettings and the clients' TrainingRecipe, validated at
construction, reaching the filter and the clients unchanged, and read back from ``gradinv_job.json``."""

import dataclasses
import json

import pytest

from gradinv.errors import ConfigurationError
from gradinv.fl.job import JobSettings, _server_filter, client_arguments, export_job
from gradinv.fl.settings import AuditSettings
from gradinv.recipe import TrainingRecipe

# What the default job gave the client script before the settings were nested (main d720425), with "{datalists}".
DEMO_CLIENT_ARGUMENTS = (
    '--datalists {datalists} --model bn_cnn --resolution 64 --num-classes 2 --recipe {{"lr":0.001,"momentum":0.0,'
    '"weight_decay":0.0,"epochs":1,"batch_size":null,"shuffle":true,"seed":0,"loss":"cross_entropy",'
    '"bn_momentum":0.1,"optimizer":"sgd","dampening":0.0,"nesterov":false,"betas":[0.9,0.999],"eps":1e-08,'
    '"drop_last":false,"fresh_optimizer":true}}'
)


def _filter_arguments(flt) -> dict:
    return {field.name: getattr(flt, field.name) for field in dataclasses.fields(AuditSettings)}


def test_the_default_job_gives_the_filter_and_the_clients_what_it_gave_before(datalists):
    settings = JobSettings(datalists=datalists)
    # The filter call of the flat JobSettings on main, field by field with its defaults ("auto" is "fast" for the
    # demo's bn_cnn, as before).
    before = AuditSettings(preset="auto", attack_overrides=None, mode="gate", block_threshold=None, block_metric="auto",
                           time_budget_s=300.0, audit_datalists=datalists, save_images=True, device="auto", seed=0,
                           report=True, prior="sample-classes")
    assert _server_filter(settings, datalists).settings == before
    assert client_arguments(settings, datalists) == DEMO_CLIENT_ARGUMENTS.format(datalists=datalists)
    assert settings.training == TrainingRecipe(lr=0.001, epochs=1, batch_size=None, seed=0)
    assert (settings.model, settings.resolution, settings.num_classes, settings.num_rounds, settings.seed) == (
        "bn_cnn", 64, 2, 2, 0)


def test_the_exported_default_job_has_the_same_configs_and_a_readable_settings_file(datalists, tmp_path):
    job_dir = export_job(JobSettings(datalists=datalists), tmp_path / "jobs")
    server = json.loads((job_dir / "app" / "config" / "config_fed_server.json").read_text())
    filters = [component for entry in server["task_result_filters"] for component in entry["filters"]]
    assert filters == [{"path": "gradinv.fl.filter.GradInversionAggregatorFilter",
                        "args": {"audit_datalists": datalists, "prior": "sample-classes"}}]  # others: defaults
    client = json.loads((job_dir / "app" / "config" / "config_fed_client.json").read_text())
    assert [e["executor"]["args"]["task_script_args"] for e in client["executors"]] == [
        DEMO_CLIENT_ARGUMENTS.format(datalists=datalists)]
    written = json.loads((job_dir / "gradinv_job.json").read_text())
    assert written["num_rounds"] == 2 and written["training"]["lr"] == 0.001 and written["filter"]["mode"] == "gate"
    assert JobSettings.from_mapping(written) == JobSettings(datalists=datalists)


def test_every_filter_and_training_setting_reaches_the_filter_and_the_clients(datalists):
    audit = {"mode": "audit", "fail_closed": True, "prior": "none", "start_round": 1, "frequency": 2,
             "audit_max_pending": 3, "audit_policy": "latest_per_site", "drain_timeout_s": 5.0, "keep_updates": True,
             "audit_workers": 0, "progress": False, "input_shape": [1, 64, 64], "normalize": [[0.5], [0.25]]}
    training = {"lr": 0.05, "momentum": 0.9, "loss": "bce", "epochs": 2, "batch_size": 2, "drop_last": True}
    settings = JobSettings(datalists=datalists, filter=audit, training=training)
    flt = _server_filter(settings, datalists)
    assert flt.settings == AuditSettings(**audit, audit_datalists=datalists)
    assert _filter_arguments(flt) == {**dataclasses.asdict(settings.filter), "audit_datalists": datalists}
    recipe_json = client_arguments(settings, datalists).split("--recipe ")[1]
    assert TrainingRecipe.from_meta(json.loads(recipe_json)) == TrainingRecipe(**training) == settings.training


def test_the_demo_prior_is_per_class_and_kept_under_a_filter_mapping(datalists):
    assert JobSettings(datalists=datalists, filter={"mode": "audit"}).filter.prior == "sample-classes"
    assert JobSettings(datalists=datalists, filter={"prior": "sample"}).filter.prior == "sample"
    with pytest.raises(ConfigurationError, match="sample task's 2 classes but the job has num_classes 3"):
        JobSettings(datalists=datalists, num_classes=3)
    assert JobSettings(datalists=datalists, num_classes=3, filter={"prior": "none"}).num_classes == 3


def test_without_audit_the_filter_gets_no_datalists(datalists):
    assert _server_filter(JobSettings(datalists=datalists, audit=False), datalists).settings.audit_datalists is None


def test_settings_round_trip_through_json_and_accept_objects_or_mappings(datalists):
    settings = JobSettings(name="mine", datalists=datalists, images_per_site=[2, 3], num_rounds=3, seed=4,
                           training=TrainingRecipe(lr=0.01, optimizer="adamw", betas=(0.8, 0.99)),
                           filter={"input_shape": (1, 64, 64), "attack_overrides": {"iterations": 5}},
                           privacy="gaussian", privacy_args={"sigma0": 2.0, "seed": 4})
    assert settings.images_per_site == (2, 3) and isinstance(settings.filter, AuditSettings)
    restored = JobSettings.from_mapping(json.loads(json.dumps(settings.to_dict())))
    assert restored == settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.num_rounds = 5  # changes go through dataclasses.replace, which validates again


@pytest.mark.parametrize("values, message", [
    ({"resolutoin": 32}, r"unknown field\(s\) 'resolutoin'; known: attack, "),
    ({"lr": 0.01, "preset": "gpu"}, "'lr' belongs under 'training'; 'preset' belongs under 'filter'"),
    ({"filter": {"mode": "gat"}}, r"filter: invalid gradinv filter settings: mode must be one of \('gate', 'audit'\)"),
    ({"filter": {"audit_worker": 2}}, r"filter: unknown field\(s\) 'audit_worker'; known: attack_overrides"),
    ({"filter": {"audit_workers": "2"}}, "filter: .*audit_workers must be an integer >= 0 or None, got '2'"),
    ({"filter": {"attack_overrides": {"iterationz": 3}}}, "filter: .*unknown attack settings"),
    ({"filter": "audit"}, "filter must be AuditSettings or a mapping of its fields, got str"),
    ({"filter": {"audit_datalists": "/data"}}, "filter.audit_datalists is set by the job"),
    ({"filter": {"input_shape": [1, 32, 32]}}, r"filter.input_shape \(1, 32, 32\) does not match the job's resolution"),
    ({"filter": {"num_classes": 3}}, "filter.num_classes 3 does not match the job's num_classes 2"),
    ({"training": {"lr": 0}}, "training: invalid training recipe: lr must be a positive number"),
    ({"training": {"momentum": 0.9, "optimizer": "adam"}}, "training: .*momentum=0.9 applies to optimizer 'sgd'"),
    ({"training": {"lr": 0.1, "learning_rate": 0.1}}, r"training: unknown field\(s\) 'learning_rate'"),
    ({"num_rounds": "2"}, "num_rounds must be an integer >= 1, got '2'"),
    ({"images_per_site": [1, 0]}, "images_per_site must be a non-empty list of integers >= 1"),
    ({"model": "resnet"}, "model must be one of"),
    ({"audit": "yes"}, "audit must be true or false"),
    ({"privacy": "laplace"}, "privacy: unknown privacy filter 'laplace'"),
    ({"privacy": "gaussian", "privacy_args": {"sigma": 1.0}}, "privacy: .*takes no argument sigma"),
])
def test_a_bad_field_is_one_configuration_error_line_naming_it(values, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        JobSettings.from_mapping(values)
    assert str(caught.value).startswith("invalid job settings: ") and "\n" not in str(caught.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(ConfigurationError) as caught:
        JobSettings(num_rounds=0, filter={"mode": "later"}, training={"epochs": 0})
    assert all(part in str(caught.value) for part in ("num_rounds", "mode must be", "epochs must be"))


def test_from_mapping_wants_a_mapping():
    with pytest.raises(ConfigurationError, match="expected a mapping of JobSettings fields, got list"):
        JobSettings.from_mapping([1, 2])
