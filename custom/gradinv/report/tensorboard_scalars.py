"""TensorBoard scalars for the leakage metrics, one tag per site and metric, step = round.

The filter calls :func:`write_tensorboard_scalars` once per inverted update. One writer per log folder is
kept for the life of the process (one event file per run, not one per update) and flushed after every
call, so ``tensorboard --logdir <run_dir>/gradinv/tensorboard`` shows each update as soon as it is
written, and nothing is lost if the job is killed. :func:`close_tensorboard_writers` releases the files
at the end of the run.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

_writers: dict[Path, SummaryWriter] = {}
_writers_lock = threading.Lock()  # the filter may write from its background worker and its event thread


def write_tensorboard_scalars(log_dir: str | Path, round: int, site: str, metrics: Mapping[str, object]) -> int:
    """Add ``metrics`` as scalars ``gradinv/<site>/<name>`` at step ``round``; returns how many were written.

    Values that are ``None``, not finite, or not real numbers (status strings, lists) are skipped, so the
    filter can pass its metrics row as it is; a metric that could not be computed never appears as a value.
    """
    scalars = {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    }
    if not scalars:
        return 0
    with _writers_lock:
        writer = _writer_for(Path(log_dir))
        for name, value in scalars.items():
            writer.add_scalar(f"gradinv/{site}/{name}", value, global_step=int(round))
        writer.flush()
    return len(scalars)


def close_tensorboard_writers() -> None:
    """Flush and close every writer this process opened (call at the end of the run)."""
    with _writers_lock:
        for writer in _writers.values():
            writer.close()
        _writers.clear()


def _writer_for(log_dir: Path) -> SummaryWriter:
    key = log_dir.resolve()
    if key not in _writers:
        key.mkdir(parents=True, exist_ok=True)
        _writers[key] = SummaryWriter(log_dir=str(key))
    return _writers[key]
