"""Which network the attacker rebuilds: a registry name, a class spec, or the job's own ``nn.Module``.

A class spec is NVFlare's component form, ``{"path": "pkg.module.Class", "args": {...}}`` (``class_path`` is
accepted for ``path``), which is also how NVFlare exports a job's model; a plain dotted class path string is the
same with no arguments. Building a spec imports the user's class, so a typo fails where the spec is given, with the
class path named.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gradinv.errors import GradinvError
from gradinv.models.registry import MODEL_NAMES, build_model

ModelSpec = str | Mapping[str, Any]


def build_from_spec(spec: ModelSpec, *, num_classes: int | None = None,
                    input_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The ``nn.Module`` a spec describes (fresh weights; the attack uses the round's global weights).

    Registry names are built for ``input_shape`` (default 1 x 64 x 64) and ``num_classes`` (default 2); a class
    spec is built from its own arguments.

    Raises:
        GradinvError: naming the spec, when it cannot be imported or built or is not an ``nn.Module``.
    """
    if isinstance(spec, str) and spec in MODEL_NAMES:
        resolution = input_shape[-1] if input_shape else 64
        try:
            return build_model(spec, num_classes=num_classes or 2, resolution=resolution)
        except ValueError as exc:
            raise GradinvError(f"model {spec!r} cannot be built at {resolution} px: {exc}") from exc
    path, arguments = _path_and_arguments(spec)
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise GradinvError(f"model {path!r} is neither a registry name ({', '.join(MODEL_NAMES)}) nor a dotted "
                           "class path such as 'my_package.models.MyNet'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise GradinvError(f"model class {path!r} cannot be imported: {exc}; is its module on the server's "
                           "PYTHONPATH (e.g. in the job's custom/ folder)?") from exc
    try:
        model = cls(**arguments)
    except Exception as exc:  # noqa: BLE001 - a user's constructor can raise anything; name it and the class
        raise GradinvError(f"model class {path!r} cannot be built with args {dict(arguments)}: "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise GradinvError(f"model class {path!r} builds a {type(model).__name__}, not a torch.nn.Module")
    return model


def describe_spec(spec: ModelSpec | nn.Module | None) -> str:
    """A short, JSON-friendly name of a model spec, for settings files and logs."""
    if spec is None:
        return "the job's own model"
    if isinstance(spec, nn.Module):
        return f"{type(spec).__module__}.{type(spec).__qualname__}"
    if isinstance(spec, str):
        return spec
    path, arguments = _path_and_arguments(spec)
    return f"{path}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"


def batchnorm_layers(model: nn.Module) -> list[str]:
    """Names of the model's BatchNorm layers (whose running statistics the attack matches)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]


def output_size(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Number of outputs (classes) of ``model`` for images of ``input_shape``, from one train-mode forward of two
    zero images on a copy (two, so that BatchNorm has a batch to normalise).

    Raises:
        GradinvError: when the model does not accept such images or does not give (batch, classes) logits.
    """
    probe = copy.deepcopy(model).cpu().train()
    try:
        with torch.no_grad():
            logits = probe(torch.zeros(2, *input_shape))
    except Exception as exc:  # noqa: BLE001 - any failure means the shape does not fit the model
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GradinvError(f"{type(model).__name__} does not accept images of shape {tuple(input_shape)} "
                           f"(C, H, W): {first_line}") from exc
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise GradinvError(f"{type(model).__name__} gives outputs {shape} for a batch of 2 images; gradinv attacks "
                           "classifiers that return (batch, classes) logits")
    return int(logits.shape[1])


def _path_and_arguments(spec: ModelSpec) -> tuple[str, Mapping[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping):
        raise GradinvError(f"model must be a registry name, a class path or {{'path': ..., 'args': {{...}}}}, "
                           f"got {type(spec).__name__}")
    path = spec.get("path", spec.get("class_path"))
    arguments = spec.get("args", {}) or {}
    unknown = sorted(set(spec) - {"path", "class_path", "args"})
    if not isinstance(path, str) or not path or unknown or not isinstance(arguments, Mapping):
        raise GradinvError(f"model spec {dict(spec)!r} must be {{'path': 'pkg.module.Class', 'args': {{...}}}}")
    return path, arguments
