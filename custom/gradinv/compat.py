"""The one place that imports torchvision and lpips.

PyPI's torchvision 0.28.0 wheel is CUDA-built. Beside the CPU build of torch its C extension cannot load
(``libc10_cuda.so`` is missing), and ``import torchvision`` then fails in ``_meta_registrations.py``, which
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally. Defining exactly
those two schemas first makes the pure-Python parts (models, transforms) importable.

The stubs are defined only when the real extension fails to load. Probing ``torch.ops.torchvision.nms``
instead would always define them (the op never exists before the import), and where the real extension
*does* load (CUDA torch), its ``TORCH_LIBRARY(torchvision, ...)`` would collide with the stub namespace and
abort the process.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import warnings

import torch

_stub_library = None


def _install_torchvision_op_stubs() -> None:
    global _stub_library
    if _stub_library is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    try:
        for path in glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")):
            ctypes.CDLL(path)
    except OSError:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _stub_library = lib  # the definitions live as long as this reference


def import_torchvision():
    """Import and return :mod:`torchvision`, working around the CPU-torch / CUDA-torchvision mismatch."""
    _install_torchvision_op_stubs()
    import torchvision

    return torchvision


def import_lpips():
    """Import and return :mod:`lpips` (which imports torchvision at import time)."""
    import_torchvision()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import lpips

    return lpips
