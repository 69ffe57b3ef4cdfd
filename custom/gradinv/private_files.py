"""Writing files that may hold patient data (reconstructions, reports): owner-only (0600) and atomic."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def write_private(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Create ``path`` with mode 0600, atomically (a reader never sees half a file), its content written by
    ``write`` into an open binary file, so large content can be streamed rather than gathered in memory.

    The temporary file is created 0600 by :func:`tempfile.mkstemp`, so the content is never readable
    by others, not even for a moment; its name starts with a dot; new parent folders are 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, PRIVATE_FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_private_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`write_private` for bytes already in memory."""
    return write_private(path, lambda handle: handle.write(data))


def write_private_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_private_bytes` for UTF-8 text."""
    return write_private_bytes(path, text.encode("utf-8"))
