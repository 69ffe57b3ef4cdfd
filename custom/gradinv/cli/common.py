"""What every ``gradinv`` subcommand shares: the one-line error parser and argument types.

Light on purpose (argparse and re only): the dispatcher imports every subcommand module to build its parser, and
``torch`` loads only inside :func:`parse_device`, when a command runs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from gradinv.errors import GradinvError

#: ``--device`` values: CUDA when available, the CPU, or one CUDA device.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def one_line(text: object) -> str:
    """``text`` with every run of white space (newlines and tabs from embedded exceptions, a file name
    with a newline) folded into one space, so that an error message stays one line."""
    return " ".join(str(text).split())


def path_argument(text: str) -> Path:
    """argparse ``type`` of a path option: refuses an empty path, which ``Path`` would read as the current
    folder (so that ``--images "$UNSET"`` cannot silently attack, or write into, whatever the shell is in)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path is not allowed (it would mean the current folder); give a path")
    return Path(text).expanduser()


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``<prog>: error: <message> (see <prog> --help)``, exit 2.

    Subparsers made with ``add_subparsers`` are of the parent's class, so every ``gradinv`` subcommand
    (``gradinv data datalists`` too) reports its argument errors this way.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parse_device(name: str):
    """A ``--device`` value as a torch device, or a one-line :class:`GradinvError`."""
    import torch

    from gradinv.attack import resolve_device

    if not DEVICE_PATTERN.fullmatch(name):
        raise GradinvError(f"--device {name!r} is not a device gradinv runs on; use auto, cpu, cuda or cuda:N")
    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError) as exc:  # e.g. an index beyond what torch can hold
        raise GradinvError(f"--device {name!r} is not a device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradinvError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count:
        raise GradinvError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                           "use one of them, cuda or auto")
    return device
