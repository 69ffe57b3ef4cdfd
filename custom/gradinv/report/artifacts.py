"""Reading the artifacts the server filter writes under ``<run_dir>/gradinv/``.

The contract (written by :mod:`gradinv.fl`): ``metrics.csv`` (one row per round × client),
``settings.json``, optional ``global_metrics.csv`` (``round, test_accuracy``) and per update
``round_NNN/<site>/{metrics.json, reconstruction.png, reconstruction.npz}`` (the PNG greyscale or RGB as the
images are; the arrays float32 in [0, 1], channels first: ``reconstructions``/``originals`` (N, C, H, W), ``prior``
(C, H, W)). Everything here is read-only and tolerant: a missing or unreadable optional file becomes ``None``
plus a note that the report shows, because a half-finished or crashed run is exactly when someone wants to look.
Only a missing ``metrics.csv`` is an error.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gradinv.artifact_layout import (  # noqa: F401 - the run folder's names, re-exported for the readers
    GLOBAL_METRICS_CSV,
    GRADINV_SUBDIR,
    METRICS_COLUMNS,
    METRICS_CSV,
    RECONSTRUCTION_NPZ,
    RECONSTRUCTION_PNG,
    SETTINGS_JSON,
    SITE_ROUND_METRICS_JSON,
    TENSORBOARD_SUBDIR,
)
from gradinv.errors import GradinvError

# A POC download is <dir>/<job_id>/workspace/gradinv and a simulator workspace <ws>/server/simulate_job/gradinv;
# four levels cover both without walking a whole disk when someone passes their home folder.
MAX_SEARCH_DEPTH = 4

_ROUND_DIR = re.compile(r"^round_(\d+)$")


def to_float(value: object) -> float | None:
    """The number in a CSV/JSON cell, or ``None`` for an empty, non-numeric or non-finite cell."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_int(value: object) -> int | None:
    """The integer in a cell (``"3"`` or ``"3.0"``), or ``None``."""
    number = to_float(value)
    return int(number) if number is not None and number.is_integer() else None


def to_bool(value: object) -> bool | None:
    """The flag in a cell (``true``/``false`` in any case, as in metrics.csv's ``converged``), or ``None`` for an
    empty or unrecognised cell."""
    if isinstance(value, bool):
        return value
    text = str(value or "").strip().lower()
    return True if text == "true" else False if text == "false" else None


def natural_key(text: str) -> tuple:
    """Sort key that puts ``site-2`` before ``site-10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV file; cells are text, missing cells are ``""``."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [{key: (value or "") for key, value in row.items() if key is not None} for row in reader]
        return list(reader.fieldnames or []), rows


@dataclass
class SiteRoundArtifacts:
    """What the filter wrote for one update: ``round_NNN/<site>/``."""

    folder: Path
    details: dict | None = None  # metrics.json
    details_problem: str | None = None
    grid_png: bytes | None = None
    grid_problem: str | None = None


@dataclass
class RunArtifacts:
    """Everything the report reads from one ``gradinv/`` folder."""

    gradinv_dir: Path
    columns: list[str]
    rows: list[dict[str, str]]
    settings: dict | None = None
    settings_problem: str | None = None
    global_metrics: list[dict[str, str]] = field(default_factory=list)
    site_rounds: dict[tuple[int, str], SiteRoundArtifacts] = field(default_factory=dict)

    def for_row(self, row: Mapping[str, str]) -> SiteRoundArtifacts | None:
        """The per-update folder of a metrics.csv row, if the filter wrote one."""
        round_number = to_int(row.get("round"))
        if round_number is None:
            return None
        return self.site_rounds.get((round_number, row.get("site", "")))


def find_gradinv_dir(path: str | Path) -> Path:
    """The ``gradinv`` folder for ``path``: the folder itself, or the one shallow folder below it holding metrics.csv.

    Accepts the gradinv folder, a run dir (simulator or POC server), a simulator workspace, or the folder a POC
    ``nvflare job download`` wrote (``<dir>/<job_id>/workspace/gradinv``).
    """
    start = Path(path).expanduser()
    if not start.is_dir():
        raise GradinvError(
            f"{start} is not a folder. Pass the job's run dir (simulator: <workspace>/server/simulate_job; "
            f"POC: the folder `nvflare job download` wrote) or its gradinv/ folder."
        )
    if (start / METRICS_CSV).is_file():
        return start
    found = sorted(_gradinv_dirs_below(start), key=lambda p: natural_key(str(p)))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        listing = "\n  ".join(str(p) for p in found)
        raise GradinvError(f"{start} holds several gradinv runs; pass one of them:\n  {listing}")
    raise GradinvError(
        f"no {GRADINV_SUBDIR}/{METRICS_CSV} in {start} or up to {MAX_SEARCH_DEPTH} folder levels below it. "
        f"Pass the job's run dir (simulator: <workspace>/server/simulate_job; POC: download the job with "
        f"`nvflare job download` and pass that folder) or its gradinv/ folder. The server filter writes "
        f"metrics.csv after it has inverted the first client update; if the run is still in its first round, "
        f"try again later, otherwise check the server log.txt for GradInversionAggregatorFilter lines."
    )


def _gradinv_dirs_below(start: Path) -> Iterable[Path]:
    """``gradinv/`` folders holding metrics.csv, breadth first, at most MAX_SEARCH_DEPTH levels below ``start``."""
    level = [start]
    for _ in range(MAX_SEARCH_DEPTH):
        next_level = []
        for folder in level:
            try:
                children = [c for c in folder.iterdir() if c.is_dir() and not c.is_symlink()]
            except OSError:  # unreadable folders (permissions) are simply not searched
                continue
            for child in children:
                if child.name == GRADINV_SUBDIR and (child / METRICS_CSV).is_file():
                    yield child
                else:
                    next_level.append(child)
        level = next_level


def load_run_artifacts(gradinv_dir: Path) -> RunArtifacts:
    """Read metrics.csv, settings.json, global_metrics.csv and the per-update folders of a gradinv dir."""
    try:
        columns, rows = read_csv_rows(gradinv_dir / METRICS_CSV)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GradinvError(f"cannot read {gradinv_dir / METRICS_CSV}: {exc}") from exc
    run = RunArtifacts(gradinv_dir=gradinv_dir, columns=columns, rows=rows)
    run.settings, run.settings_problem = _read_settings(gradinv_dir / SETTINGS_JSON)
    global_csv = gradinv_dir / GLOBAL_METRICS_CSV
    if global_csv.is_file():
        try:
            run.global_metrics = read_csv_rows(global_csv)[1]
        except (OSError, UnicodeDecodeError, csv.Error):
            run.global_metrics = []  # test accuracy is optional context; the report simply omits it
    run.site_rounds = _index_site_round_folders(gradinv_dir)
    return run


def _read_settings(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, f"{SETTINGS_JSON} not found in {path.parent}"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{SETTINGS_JSON} is unreadable: {exc}"
    if not isinstance(settings, dict):
        return None, f"{SETTINGS_JSON} does not hold a JSON object"
    return settings, None


def _index_site_round_folders(gradinv_dir: Path) -> dict[tuple[int, str], SiteRoundArtifacts]:
    """Per-update folders keyed by (round, site).

    The filter sanitises client names before they become folder names, so a folder is keyed both by the
    ``site`` recorded inside its metrics.json (the name metrics.csv uses) and by the folder name.
    """
    index: dict[tuple[int, str], SiteRoundArtifacts] = {}
    for round_dir in gradinv_dir.iterdir():
        match = _ROUND_DIR.match(round_dir.name)
        if not match or not round_dir.is_dir():
            continue
        round_number = int(match.group(1))
        for site_dir in round_dir.iterdir():
            if not site_dir.is_dir():
                continue
            artifacts = _read_site_round_folder(site_dir)
            index[(round_number, site_dir.name)] = artifacts
            recorded_site = (artifacts.details or {}).get("site")
            if isinstance(recorded_site, str):
                index[(round_number, recorded_site)] = artifacts
    return index


def _read_site_round_folder(folder: Path) -> SiteRoundArtifacts:
    artifacts = SiteRoundArtifacts(folder=folder)
    details_path = folder / SITE_ROUND_METRICS_JSON
    if details_path.is_file():
        try:
            details = json.loads(details_path.read_text(encoding="utf-8"))
            if isinstance(details, dict):
                artifacts.details = details
            else:
                artifacts.details_problem = f"{SITE_ROUND_METRICS_JSON} does not hold a JSON object"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            artifacts.details_problem = f"{SITE_ROUND_METRICS_JSON} is unreadable: {exc}"
    png_path = folder / RECONSTRUCTION_PNG
    if png_path.is_file():
        try:
            artifacts.grid_png = png_path.read_bytes()
        except OSError as exc:  # e.g. a 0600 file owned by another user
            artifacts.grid_problem = f"{RECONSTRUCTION_PNG} is unreadable: {exc}"
    return artifacts
