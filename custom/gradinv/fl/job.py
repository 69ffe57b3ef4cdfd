"""Builders of gradinv's NVFlare jobs, shared by ``jobs/*/job.py``, ``gradinv demo`` and ``gradinv sweep``.

A job is FedAvg (NVFlare 2.9 ``FedAvgRecipe``) over hospitals running :mod:`gradinv.fl.client_train` with
``TransferType.DIFF``, with :class:`~gradinv.fl.filter.GradInversionAggregatorFilter` as the server's input
filter on the ``train`` task, and optionally a client-side privacy filter on the clients' results.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import gradinv

CLIENT_SCRIPT = Path(__file__).with_name("client_train.py")
PACKAGE_DIR = Path(gradinv.__file__).parent
CLIENT_SCRIPT_IN_JOB = "gradinv/fl/client_train.py"
SIMULATOR_JOB_DIR = Path("server") / "simulate_job"


@dataclasses.dataclass
class JobSettings:
    """Everything that defines a gradinv job. Defaults are the CPU demo (3 hospitals with 1, 2 and 4 images)."""

    name: str = "gradinv_demo"
    datalists: str | None = None
    """Folder of ``<site>.json`` datalists; None builds the demo datalists from the bundled sample set."""
    images_per_site: Sequence[int] = (1, 2, 4)
    num_rounds: int = 2
    model: str = "bn_cnn"
    resolution: int = 64
    num_classes: int = 2
    lr: float = 0.001
    """Client SGD learning rate. The flatten head of ``bn_cnn`` sees ~16k features at 64 px, so lr 0.01 drives it
    to near-certain predictions in one step; its later updates are then ~0 (nothing to learn, nothing to leak)."""
    epochs: int = 1
    batch_size: int = 0
    seed: int = 0
    preset: str = "fast"
    attack_overrides: dict | None = None
    mode: str = "gate"
    block_threshold: float | None = None
    block_metric: str = "auto"
    time_budget_s: float = 300.0
    audit: bool = True
    """Give the filter read access to the sites' datalists for ground-truth metrics (simulation / red team)."""
    save_images: bool = True
    privacy: str = "none"
    """Client-side privacy filter: ``none``, ``gaussian``, ``percentile`` or ``svt``."""
    privacy_args: dict | None = None
    device: str = "auto"
    report: bool = True
    attack: bool = True
    """Add the server filter. False gives the same FedAvg job without it (a baseline for comparisons)."""

    def sites(self) -> list[str]:
        return sorted(p.stem for p in Path(self.resolved_datalists()).glob("*.json"))

    def resolved_datalists(self) -> str:
        if self.datalists is None:
            from gradinv.data import demo_datalists

            paths = demo_datalists(tuple(self.images_per_site))
            self.datalists = str(next(iter(paths.values())).parent)
        return self.datalists


def build_recipe(settings: JobSettings):
    """The FedAvg recipe with gradinv's client script, server filter and optional client privacy filter."""
    from nvflare.app_opt.pt.recipes import FedAvgRecipe
    from nvflare.client.config import TransferType

    datalists = settings.resolved_datalists()
    sites = settings.sites()
    if not sites:
        raise gradinv.errors.DataError(f"no <site>.json datalists in {datalists}")
    # NVFlare splits the script's arguments at white space: the recipe travels as one compact JSON word.
    train_args = (
        f"--datalists {datalists} --model {settings.model} --resolution {settings.resolution} "
        f"--num-classes {settings.num_classes} "
        f"--recipe {json.dumps(client_recipe(settings).to_meta(), separators=(',', ':'))}"
    )
    recipe = FedAvgRecipe(
        name=settings.name,
        model=_initial_model(settings),
        min_clients=len(sites),
        num_rounds=settings.num_rounds,
        train_script=str(CLIENT_SCRIPT),
        train_args=train_args,
        params_transfer_type=TransferType.DIFF,
        key_metric="accuracy",
    )
    if settings.attack:
        recipe.add_server_input_filter(_server_filter(settings, datalists), tasks=["train"])
    if settings.privacy != "none":
        from gradinv.privacy import make_privacy_filter

        recipe.add_client_output_filter(
            make_privacy_filter(settings.privacy, **(settings.privacy_args or {})), tasks=["train"]
        )
    return recipe, sites


def client_recipe(settings: JobSettings):
    """The local training every site of the job runs."""
    from gradinv.recipe import TrainingRecipe

    return TrainingRecipe(
        lr=settings.lr, epochs=settings.epochs, batch_size=settings.batch_size or None, seed=settings.seed
    )


def _initial_model(settings: JobSettings):
    from gradinv.models import build_model

    # Seeded where the architecture allows, so that repeated runs start from the same global model.
    seeded = {"init_seed": settings.seed} if settings.model == "bn_cnn" else {}
    return build_model(settings.model, num_classes=settings.num_classes, resolution=settings.resolution, **seeded)


def _server_filter(settings: JobSettings, datalists: str):
    from gradinv.fl.filter import GradInversionAggregatorFilter

    # The filter attacks the job's own model (the persistor's) with what each client's meta says, as in a user's job.
    return GradInversionAggregatorFilter(
        preset=settings.preset,
        attack_overrides=settings.attack_overrides,
        mode=settings.mode,
        block_threshold=settings.block_threshold,
        block_metric=settings.block_metric,
        time_budget_s=settings.time_budget_s,
        audit_datalists=datalists if settings.audit else None,
        save_images=settings.save_images,
        device=settings.device,
        seed=settings.seed,
        report=settings.report,
    )


def export_job(settings: JobSettings, out_dir: str | Path) -> Path:
    """Write a job folder for POC / admin-console submission, shipping gradinv as BYOC custom code."""
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
    (job_dir / "gradinv_job.json").write_text(json.dumps(dataclasses.asdict(settings), indent=2, default=list))
    return job_dir


def simulate(settings: JobSettings, workspace_root: str | Path) -> Path:
    """Run the job in the NVFlare simulator (one thread per site); returns the server's run dir."""
    from nvflare.recipe import SimEnv

    recipe, sites = build_recipe(settings)
    workspace_root = Path(workspace_root).resolve()
    recipe.execute(SimEnv(clients=sites, num_threads=len(sites), workspace_root=str(workspace_root)))
    return workspace_root / settings.name / SIMULATOR_JOB_DIR
