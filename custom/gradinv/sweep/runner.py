"""The privacy-utility sweep's engine: one NVFlare simulation per privacy filter setting, then sweep.csv and
its report.

Each run simulates the job in its own workspace ``<out>/runs/<label>`` in a fresh interpreter
(:mod:`gradinv.sweep.worker`); :mod:`gradinv.sweep.analysis` turns the runs' ``metrics.csv`` rows into sweep rows,
calibrated noise and rank correlations, and :mod:`gradinv.sweep.report` draws them. ``gradinv sweep``
(:mod:`gradinv.cli.sweep`) is the command, and says what the outputs are.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gradinv.artifact_layout import GRADINV_SUBDIR, METRICS_CSV
from gradinv.errors import GradinvError

DEFAULT_OUT = Path("workspace") / "sweep"
DEFAULT_SIGMAS = "0,10,30"
DEFAULT_FILTERS = "gaussian"
DEFAULT_ITERATIONS = 300
DEFAULT_CALIBRATE_STEPS = 2
RUNS_SUBDIR = "runs"
RUN_MARKER = "sweep_run.json"  # in each run workspace: the settings it ran with and how it ended
RUN_SETTINGS = "job_settings.json"
RUN_LOG = "simulation.log"
SWEEP_CSV = "sweep.csv"
JOB_JSON = "gradinv_job.json"


# ---------------------------------------------------------------- settings


def load_job_settings(path: Path | None):
    """JobSettings from a JSON file / an exported job folder, or the demo defaults for None."""
    from gradinv.fl.job import JobSettings

    if path is None:
        return JobSettings()
    path = Path(path).expanduser()
    json_path = path / JOB_JSON if path.is_dir() else path
    if not json_path.is_file():
        raise GradinvError(f"--job: no {JOB_JSON} in {path}" if path.is_dir() else f"--job: {path} does not exist")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GradinvError(f"--job: cannot read {json_path}: {exc}") from exc
    try:
        return JobSettings.from_mapping(data)
    except GradinvError as exc:
        raise GradinvError(f"--job: {json_path}: {exc}") from exc


def sweep_base_settings(base, rounds: int | None, iterations: int | None):
    """The job every run shares: ``base`` with the sweep's rounds/iterations, ground truth on, datalists fixed."""
    if rounds is not None and rounds < 1:
        raise GradinvError("--rounds must be >= 1")
    if iterations is not None and iterations < 0:
        raise GradinvError("--iterations must be >= 0 (0 = the preset's)")
    overrides = dict(base.filter.attack_overrides or {})
    # Every run of a sweep attacks with the same budget; restarts would multiply the default grid's ~15 minutes.
    overrides.setdefault("restarts", 1)
    if iterations == 0:
        overrides.pop("iterations", None)
    elif iterations is not None:
        overrides["iterations"] = int(iterations)
    settings = dataclasses.replace(
        base, num_rounds=rounds if rounds is not None else base.num_rounds,
        filter=dataclasses.replace(base.filter, attack_overrides=overrides or None, report=True),
        audit=True,  # the sweep measures the true leakage: the filter needs the ground truth
        attack=True,
    )
    return settings.with_resolved_datalists()  # once, so every run trains and is scored on the same datalists


def run_settings(base, spec):
    """The JobSettings of one run: ``base`` with the run's privacy filter."""
    return dataclasses.replace(base, privacy=spec.filter, privacy_args=spec.privacy_args(base.seed) or None)


# ---------------------------------------------------------------- running


@dataclass
class RunOutcome:
    """How one run of the sweep went."""

    spec: object  # gradinv.sweep.analysis.RunSpec
    status: str  # ok | reused | failed
    seconds: float | None
    workspace: Path
    gradinv_dir: Path | None
    message: str = ""
    rows: list[dict[str, str]] = field(default_factory=list)
    repeats: int = 0  # (round, site) rows of metrics.csv beyond the first: re-sent updates attacked again

    @property
    def succeeded(self) -> bool:
        return self.status in ("ok", "reused")


def run_one(spec, settings, sweep_dir: Path, *, resume: bool = False, timeout: float | None = None,
            runner: Callable[[Path, Path, Path, float | None], int] | None = None) -> RunOutcome:
    """Simulate one run in its own workspace ``<sweep_dir>/runs/<label>`` and collect its sweep rows.

    ``runner(settings_json, workspace, log, timeout) -> exit code`` runs the simulation (default: a
    :mod:`gradinv.sweep.worker` subprocess); tests pass a fake one.
    """
    from gradinv.fl.job import SIMULATOR_JOB_DIR
    from gradinv.sweep.analysis import collect_run_rows

    workspace = sweep_dir / RUNS_SUBDIR / spec.label
    marker = workspace / RUN_MARKER
    wanted = settings.to_dict()
    gradinv_dir = workspace / settings.name / SIMULATOR_JOB_DIR / GRADINV_SUBDIR
    if resume and marker.is_file():
        previous = _read_json(marker)
        if (previous.get("status") == "ok" and previous.get("settings") == wanted
                and (gradinv_dir / METRICS_CSV).is_file()):
            rows, repeats = collect_run_rows(spec, gradinv_dir, sweep_dir)
            return RunOutcome(spec, "reused", previous.get("seconds"), workspace, gradinv_dir,
                              "finished earlier with the same settings" + _repeats_text(repeats), rows, repeats)
    if workspace.exists():
        if not marker.is_file():
            raise GradinvError(f"{workspace} exists but was not written by gradinv sweep; remove it or choose "
                               f"another --out")
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    settings_json = workspace / RUN_SETTINGS
    settings_json.write_text(json.dumps(wanted, indent=2), encoding="utf-8")
    _write_json(marker, {"settings": wanted, "status": "running", "filter": spec.filter, "sigma0": spec.sigma0})
    started = time.monotonic()
    try:
        exit_code = (runner or _subprocess_runner)(settings_json, workspace, workspace / RUN_LOG, timeout)
        message = "" if exit_code == 0 else f"simulation exited with code {exit_code}"
    except subprocess.TimeoutExpired:
        exit_code, message = -1, f"gave up after {timeout:g} s (--run-timeout)"
    seconds = time.monotonic() - started
    rows: list[dict[str, str]] = []
    repeats = 0
    if (gradinv_dir / METRICS_CSV).is_file():
        try:
            rows, repeats = collect_run_rows(spec, gradinv_dir, sweep_dir)
        except GradinvError as exc:
            message = message or str(exc)
    elif not message:
        message = "the run wrote no gradinv/metrics.csv"
    if exit_code == 0 and not rows and not message:
        message = "metrics.csv has no rows"
    status = "ok" if exit_code == 0 and rows else "failed"
    if status == "failed":
        message += f" (log: {workspace / RUN_LOG})"
    message = (message + _repeats_text(repeats)).lstrip("; ")
    _write_json(marker, {"settings": wanted, "status": status, "seconds": round(seconds, 1), "message": message,
                         "filter": spec.filter, "sigma0": spec.sigma0})
    return RunOutcome(spec, status, seconds, workspace, gradinv_dir if rows else None, message, rows, repeats)


def _repeats_text(repeats: int) -> str:
    if not repeats:
        return ""
    return (f"; {repeats} re-sent update(s) were attacked again (client result submission timed out while the "
            f"server filter was busy); the first measurement per round and site is kept")


def _subprocess_runner(settings_json: Path, workspace: Path, log_path: Path, timeout: float | None) -> int:
    command = [sys.executable, "-m", "gradinv.sweep.worker", str(settings_json), str(workspace.resolve())]
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return process.wait(timeout=timeout)
        except BaseException:  # timeout or Ctrl-C: do not leave a simulator behind
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


# ---------------------------------------------------------------- the sweep


@dataclass
class SweepMeta:
    """What the report says about how the sweep was run."""

    sigmas: list[float]
    filters: list[str]
    settings: dict
    command: str
    started_at: str
    wall_seconds: float = 0.0
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    cpu_count: int | None = None
    calibrate: bool = False
    calibrate_steps: int = 0
    bisection_runs: list[float] = field(default_factory=list)
    iterations_note: str = ""


def run_sweep(specs: Sequence, settings, out_dir: Path, *, resume: bool = False, timeout: float | None = None,
              first_index: int = 1, total: int | None = None, runner=None,
              echo: Callable[..., None] = print) -> list[RunOutcome]:
    """Run ``specs`` one after another, printing a progress line per run and rewriting sweep.csv after each."""
    outcomes: list[RunOutcome] = []
    total = total or len(specs)
    durations: list[float] = []
    for offset, spec in enumerate(specs):
        index = first_index + offset
        echo(f"run {index}/{total}: {spec.describe()} \u2026 ", end="", flush=True)
        outcome = run_one(spec, run_settings(settings, spec), out_dir, resume=resume, timeout=timeout, runner=runner)
        outcomes.append(outcome)
        if outcome.status == "ok" and outcome.seconds:
            durations.append(outcome.seconds)
        remaining = total - index
        eta = f"; ~{_duration(remaining * sum(durations) / len(durations))} left" if durations and remaining else ""
        echo(_outcome_text(outcome) + eta, flush=True)
        _write_csv(out_dir, outcomes)
    return outcomes


def calibrate_by_bisection(outcomes: list[RunOutcome], settings, out_dir: Path, steps: int, *,
                           resume: bool = False, timeout: float | None = None, runner=None,
                           meta: SweepMeta | None = None, echo: Callable[..., None] = print) -> list[RunOutcome]:
    """Bisection rounds between each site's last failing and first passing σ0 (both criteria); returns new runs."""
    from gradinv.sweep.analysis import CRITERIA, RunSpec, bisection_points

    extra: list[RunOutcome] = []
    done = {o.spec.sigma0 for o in outcomes if o.spec.filter == "gaussian"}
    for step in range(1, steps + 1):
        rows = [row for o in outcomes + extra for row in o.rows]
        points = [s for s in bisection_points(rows, list(CRITERIA)) if s not in done]
        if not points:
            echo(f"calibrate: step {step}/{steps}: no bracket left to refine")
            break
        echo(f"calibrate: step {step}/{steps}: {len(points)} extra run(s) at \u03c30 = "
             f"{', '.join(f'{p:g}' for p in points)}", flush=True)
        specs = [RunSpec("gaussian", p, origin="bisection") for p in points]
        extra += run_sweep(specs, settings, out_dir, resume=resume, timeout=timeout, runner=runner, echo=echo,
                           first_index=1, total=len(specs))
        done.update(points)
        if meta is not None:
            meta.bisection_runs.extend(points)
        _write_csv(out_dir, outcomes + extra)
    return extra


def write_outputs(out_dir: Path, outcomes: Sequence[RunOutcome], meta: SweepMeta) -> dict[str, Path]:
    """sweep.csv, the two plots and sweep_report.html."""
    from gradinv.sweep.report import write_sweep_report

    csv_path = _write_csv(out_dir, outcomes)
    paths = write_sweep_report(out_dir, outcomes, meta)
    return {"sweep.csv": csv_path, **paths}


def _write_csv(out_dir: Path, outcomes: Sequence[RunOutcome]) -> Path:
    from gradinv.private_files import write_private_text
    from gradinv.sweep.analysis import sweep_csv_text

    return write_private_text(out_dir / SWEEP_CSV, sweep_csv_text(row for o in outcomes for row in o.rows))


def _outcome_text(outcome: RunOutcome) -> str:
    from gradinv.sweep.analysis import run_site_points

    if not outcome.succeeded:
        return f"FAILED after {outcome.seconds or 0:.0f} s: {outcome.message}"
    verb = "done in" if outcome.status == "ok" else "reused (took"
    head = f"{verb} {outcome.seconds or 0:.0f} s" + ("" if outcome.status == "ok" else ")")
    parts = []
    for site, point in run_site_points(outcome.rows).items():
        parts.append(f"{site} ({point.num_images} img) RDLV {_num(point.mean_rdlv)} "
                     f"SSIM {_num(point.mean_ssim)} best {_num(point.worst_ssim_max)}")
    accuracy = next((r.get("test_accuracy") for r in outcome.rows if r.get("test_accuracy")), "")
    repeats = f" ({outcome.repeats} re-sent update(s) attacked again; first kept)" if outcome.repeats else ""
    return f"{head}; " + "; ".join(parts) + f"; test acc {accuracy or '-'}{repeats}"


def print_calibration(outcomes: Sequence[RunOutcome]) -> None:
    from gradinv.sweep.analysis import CRITERIA, calibrate, rank_correlation

    rows = [row for o in outcomes for row in o.rows]
    if any(o.spec.filter == "gaussian" for o in outcomes):
        for criterion, text in CRITERIA.items():
            print(f"\ncalibrated noise, {text}:")
            for result in calibrate(rows, criterion):
                cost = "" if result.accuracy_cost is None else (
                    f"; test accuracy {result.accuracy:.3f} vs {result.baseline_accuracy:.3f} at \u03c30=0")
                print(f"  {result.site}: {result.verdict()}{cost}")
    print()
    for x, y in (("leak_score", "rdlv"), ("leak_score", "ssim")):
        print("  " + rank_correlation(rows, x, y).text())


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def describe_load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{v:.2f}" for v in load) + " (1/5/15 min)"
