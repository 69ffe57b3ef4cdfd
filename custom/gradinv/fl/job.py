"""Builders of gradinv's NVFlare jobs, shared by ``jobs/*/job.py``, ``gradinv demo``, ``gradinv sweep`` and POC.

A job is FedAvg (NVFlare 2.9 ``FedAvgRecipe``) over hospitals running :mod:`gradinv.fl.client_train` with
``TransferType.DIFF``, with :class:`~gradinv.fl.filter.GradInversionAggregatorFilter` as the server's input
filter on the ``train`` task, and optionally a client-side privacy filter on the clients' results.

:class:`JobSettings` declares a job once: the job's own shape (sites, rounds, model) beside the server filter's
:class:`~gradinv.fl.settings.AuditSettings` and the clients' :class:`~gradinv.recipe.TrainingRecipe`, embedded
as they are, so that every setting of either is reachable from a job and validated where the job is declared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gradinv
from gradinv.data.sample import CLASS_NAMES as SAMPLE_CLASS_NAMES
from gradinv.data.sample import SAMPLE_CLASS_PRIORS
from gradinv.errors import ConfigurationError, DataError, GradinvError
from gradinv.fl.settings import MIN_IMAGE_SIDE, AuditSettings, _is_int
from gradinv.models.registry import MODEL_NAMES
from gradinv.recipe import TrainingRecipe

CLIENT_SCRIPT = Path(__file__).with_name("client_train.py")
PACKAGE_DIR = Path(gradinv.__file__).parent
CLIENT_SCRIPT_IN_JOB = "gradinv/fl/client_train.py"
SIMULATOR_JOB_DIR = Path("server") / "simulate_job"
DEMO_TRAINING = TrainingRecipe(lr=0.001)
"""The demo's clients: one epoch of plain SGD over the whole local set, seed 0. The flatten head of ``bn_cnn``
sees ~16k features at 64 px, so lr 0.01 drives it to near-certain predictions in one step; its later updates are
then ~0 (nothing to learn, nothing to leak)."""
DEMO_FILTER = AuditSettings(prior=SAMPLE_CLASS_PRIORS)
"""The demo's filter: each slot starts from the bundled public split's mean image of its recovered class, public
brain MR for the brain-MR class, so SSIM(prior, original) and RDLV sit on the paper's scale (see docs/rdlv-prior.md).
A mapping given for ``filter`` overrides these fields."""
_NESTED = {"filter": AuditSettings, "training": TrainingRecipe}


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """Everything that defines a gradinv job, validated at construction. Defaults are the CPU demo (3 hospitals
    with 1, 2 and 4 images, ``bn_cnn`` at 64 px, 2 rounds, the ``fast`` attack in ``gate`` mode).

    Args:
        name: the job's name (its folder in the workspace and in the exported job).
        datalists: folder of ``<site>.json`` datalists; None builds the demo datalists from the bundled sample set.
        images_per_site: images per demo site (used only when ``datalists`` is None).
        num_rounds: FedAvg rounds.
        model: registry name of the global model (:mod:`gradinv.models`), built at ``resolution`` px.
        resolution: image side the clients train at.
        num_classes: classifier outputs.
        seed: seeds the initial global model (where the architecture allows) and the privacy filter's noise in
            ``gradinv sweep``; the clients' batch order and the attack have their own (``training.seed``,
            ``filter.seed``).
        training: every client's local training; a mapping of :class:`~gradinv.recipe.TrainingRecipe` fields
            (e.g. ``{"lr": 0.01, "batch_size": 4}``) is accepted.
        filter: the server filter's settings; a mapping of :class:`~gradinv.fl.settings.AuditSettings` fields
            (e.g. ``{"mode": "audit", "audit_workers": 2}``) is accepted. Its ``audit_datalists`` is the job's
            ``datalists`` when ``audit`` is true, so it is not given here.
        audit: give the filter read access to the sites' datalists for ground-truth metrics (simulation / red
            team).
        privacy: client-side privacy filter: ``none``, ``gaussian``, ``percentile`` or ``svt``.
        privacy_args: its constructor arguments.
        attack: add the server filter. False gives the same FedAvg job without it (a baseline for comparisons).
    """

    name: str = "gradinv_demo"
    datalists: str | None = None
    images_per_site: Sequence[int] = (1, 2, 4)
    num_rounds: int = 2
    model: str = "bn_cnn"
    resolution: int = 64
    num_classes: int = 2
    seed: int = 0
    training: TrainingRecipe = DEMO_TRAINING
    filter: AuditSettings = DEMO_FILTER
    audit: bool = True
    privacy: str = "none"
    privacy_args: Mapping[str, Any] | None = None
    attack: bool = True

    def __post_init__(self) -> None:
        problems = self._nested_problems()
        if not (isinstance(self.name, str) and self.name.strip()):
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        if isinstance(self.datalists, os.PathLike):
            object.__setattr__(self, "datalists", os.fspath(self.datalists))
        if self.datalists is not None and not (isinstance(self.datalists, str) and self.datalists):
            problems.append(f"datalists must be a folder path or None, got {self.datalists!r}")
        sizes = self.images_per_site
        if (isinstance(sizes, Sequence) and not isinstance(sizes, str) and sizes
                and all(_is_int(n) and n >= 1 for n in sizes)):
            object.__setattr__(self, "images_per_site", tuple(sizes))
        else:
            problems.append(f"images_per_site must be a non-empty list of integers >= 1, got {sizes!r}")
        for field, minimum in (("num_rounds", 1), ("resolution", MIN_IMAGE_SIDE), ("num_classes", 1)):
            if not (_is_int(getattr(self, field)) and getattr(self, field) >= minimum):
                problems.append(f"{field} must be an integer >= {minimum}, got {getattr(self, field)!r}")
        if not _is_int(self.seed):
            problems.append(f"seed must be an integer, got {self.seed!r}")
        if self.model not in MODEL_NAMES:
            problems.append(f"model must be one of {MODEL_NAMES}, got {self.model!r}")
        for field in ("audit", "attack"):
            if not isinstance(getattr(self, field), bool):
                problems.append(f"{field} must be true or false, got {getattr(self, field)!r}")
        problems.extend(self._privacy_problems())
        if problems:
            raise ConfigurationError("invalid job settings: " + "; ".join(problems))

    def _nested_problems(self) -> list[str]:
        """Turn mappings given for ``filter`` / ``training`` into their settings objects; what is wrong with them."""
        problems = []
        for field, settings_class in _NESTED.items():
            value = getattr(self, field)
            if isinstance(value, settings_class):
                continue
            if not isinstance(value, Mapping):
                problems.append(f"{field} must be {settings_class.__name__} or a mapping of its fields, "
                                f"got {type(value).__name__}")
                continue
            unknown = _unknown_fields(settings_class, value)
            if unknown:
                problems.append(f"{field}: {unknown}")
                continue
            try:  # TrainingRecipe.from_meta also takes a JSON round trip's floats for integers
                settings = (TrainingRecipe.from_meta(value) if settings_class is TrainingRecipe
                            else dataclasses.replace(DEMO_FILTER, **value))
            except GradinvError as exc:
                problems.append(f"{field}: {exc}")
            else:
                object.__setattr__(self, field, settings)
        if isinstance(self.filter, AuditSettings):
            if self.filter.audit_datalists is not None:
                problems.append("filter.audit_datalists is set by the job (its datalists, when audit is true); "
                                "leave it out and use datalists / audit")
            # What the filter is told about the clients' images must be what the job's clients train on.
            shape = self.filter.input_shape
            if shape is not None and shape[1:] != (self.resolution, self.resolution):
                problems.append(f"filter.input_shape {shape} does not match the job's resolution {self.resolution}")
            if self.filter.prior == SAMPLE_CLASS_PRIORS and self.num_classes != len(SAMPLE_CLASS_NAMES):
                problems.append(f"filter.prior {SAMPLE_CLASS_PRIORS!r} has an image for each of the sample task's "
                                f"{len(SAMPLE_CLASS_NAMES)} classes but the job has num_classes {self.num_classes}; "
                                "give filter.prior a folder of public images with one subfolder per class")
            if self.filter.num_classes is not None and self.filter.num_classes != self.num_classes:
                problems.append(f"filter.num_classes {self.filter.num_classes} does not match the job's "
                                f"num_classes {self.num_classes}")
        return problems

    def _privacy_problems(self) -> list[str]:
        if self.privacy_args is not None and not isinstance(self.privacy_args, Mapping):
            return [f"privacy_args must be a mapping of the privacy filter's arguments or None, "
                    f"got {self.privacy_args!r}"]
        if not isinstance(self.privacy, str):
            return [f"privacy must be a privacy filter's name, got {self.privacy!r}"]
        from gradinv.privacy import make_privacy_filter

        try:  # builds it now (cheap), so that an unknown name or argument fails where the job is declared
            make_privacy_filter(self.privacy, **(self.privacy_args or {}))
        except (TypeError, ValueError) as exc:
            return [f"privacy: {exc}"]
        return []

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> JobSettings:
        """Settings from plain data (the JSON of :meth:`to_dict`, ``gradinv_job.json``), validated.

        Raises:
            ConfigurationError: an unknown field (naming where a filter or training setting belongs) or a bad value.
        """
        if not isinstance(values, Mapping):
            raise ConfigurationError(f"invalid job settings: expected a mapping of JobSettings fields, "
                                     f"got {type(values).__name__}")
        problem = _unknown_fields(cls, values)
        if problem:
            raise ConfigurationError(f"invalid job settings: {problem}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, ``filter`` and ``training`` as nested objects; :meth:`from_mapping` reads it back."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def sites(self) -> list[str]:
        return sorted(p.stem for p in Path(self.resolved_datalists()).glob("*.json"))

    def resolved_datalists(self) -> str:
        """The datalists folder: ``datalists``, or the demo's for ``images_per_site`` (written if missing)."""
        if self.datalists is not None:
            return self.datalists
        from gradinv.data import demo_datalists

        paths = demo_datalists(self.images_per_site)
        return str(next(iter(paths.values())).parent)

    def with_resolved_datalists(self) -> JobSettings:
        """These settings with the datalists folder fixed, so that every run of them uses the same one."""
        return dataclasses.replace(self, datalists=self.resolved_datalists())


def _unknown_fields(settings_class: type, values: Mapping[str, Any]) -> str | None:
    """What is wrong with the keys of ``values`` as ``settings_class`` fields (and where a key belongs), or None."""
    fields = {field.name for field in dataclasses.fields(settings_class)}
    unknown = sorted(set(values) - fields)
    if not unknown:
        return None
    hints = [f"{key!r} belongs under {nested!r}" for key in unknown for nested, nested_class in _NESTED.items()
             if settings_class is JobSettings and key in {field.name for field in dataclasses.fields(nested_class)}]
    return (f"unknown field(s) {', '.join(map(repr, unknown))}" + (f" ({'; '.join(hints)})" if hints else "")
            + f"; known: {', '.join(sorted(fields))}")


def build_recipe(settings: JobSettings):
    """The FedAvg recipe with gradinv's client script, server filter and optional client privacy filter."""
    from nvflare.app_opt.pt.recipes import FedAvgRecipe
    from nvflare.client.config import TransferType

    from gradinv.privacy import make_privacy_filter

    datalists = settings.resolved_datalists()
    sites = sorted(p.stem for p in Path(datalists).glob("*.json"))
    if not sites:
        raise DataError(f"no <site>.json datalists in {datalists}")
    recipe = FedAvgRecipe(
        name=settings.name,
        model=_initial_model(settings),
        min_clients=len(sites),
        num_rounds=settings.num_rounds,
        train_script=str(CLIENT_SCRIPT),
        train_args=client_arguments(settings, datalists),
        params_transfer_type=TransferType.DIFF,
        key_metric="accuracy",
    )
    if settings.attack:
        recipe.add_server_input_filter(_server_filter(settings, datalists), tasks=["train"])
    privacy_filter = make_privacy_filter(settings.privacy, **(settings.privacy_args or {}))
    if privacy_filter is not None:
        recipe.add_client_output_filter(privacy_filter, tasks=["train"])
    return recipe, sites


def client_arguments(settings: JobSettings, datalists: str) -> str:
    """The command line of :mod:`gradinv.fl.client_train` at every site."""
    # NVFlare splits the script's arguments at white space: the recipe travels as one compact JSON word.
    return (
        f"--datalists {datalists} --model {settings.model} --resolution {settings.resolution} "
        f"--num-classes {settings.num_classes} "
        f"--recipe {json.dumps(settings.training.to_meta(), separators=(',', ':'))}"
    )


def _initial_model(settings: JobSettings):
    from gradinv.models import build_model

    # Seeded where the architecture allows, so that repeated runs start from the same global model.
    seeded = {"init_seed": settings.seed} if settings.model == "bn_cnn" else {}
    return build_model(settings.model, num_classes=settings.num_classes, resolution=settings.resolution, **seeded)


def _server_filter(settings: JobSettings, datalists: str):
    from gradinv.fl.filter import GradInversionAggregatorFilter

    # The filter attacks the job's own model (the persistor's) with what each client's meta says, as in a user's job;
    # its arguments are exactly the settings' fields, under the same names.
    audited = dataclasses.replace(settings.filter, audit_datalists=datalists if settings.audit else None)
    return GradInversionAggregatorFilter(**{field.name: getattr(audited, field.name)
                                            for field in dataclasses.fields(audited)})


def export_job(settings: JobSettings, out_dir: str | Path) -> Path:
    """Write a job folder for POC / admin-console submission, shipping gradinv as BYOC custom code.

    The folder also holds ``gradinv_job.json`` (:meth:`JobSettings.to_dict`), which ``gradinv sweep --job`` reads.
    """
    recipe, _ = build_recipe(settings)
    out_dir = Path(out_dir)
    recipe.export(str(out_dir))
    job_dir = out_dir / settings.name
    for custom in job_dir.glob("app*/custom"):
        shutil.copytree(
            PACKAGE_DIR, custom / "gradinv", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for client_config in job_dir.glob("app*/config/config_fed_client.json"):
        # The exporter wrote this machine's absolute script path; the executor finds a relative one in custom/.
        config = json.loads(client_config.read_text())
        for executor in config.get("executors", []):
            arguments = executor.get("executor", {}).get("args", {})
            if arguments.get("task_script_path") == str(CLIENT_SCRIPT):
                arguments["task_script_path"] = CLIENT_SCRIPT_IN_JOB
        client_config.write_text(json.dumps(config, indent=4))
    (job_dir / "gradinv_job.json").write_text(json.dumps(settings.to_dict(), indent=2))
    return job_dir


def simulate(settings: JobSettings, workspace_root: str | Path) -> Path:
    """Run the job in the NVFlare simulator (one thread per site); returns the server's run dir."""
    from nvflare.recipe import SimEnv

    recipe, sites = build_recipe(settings)
    workspace_root = Path(workspace_root).resolve()
    recipe.execute(SimEnv(clients=sites, num_threads=len(sites), workspace_root=str(workspace_root)))
    return workspace_root / settings.name / SIMULATOR_JOB_DIR
