"""Tensors and array-likes as numpy arrays: one conversion for every layer (the filter's DXOs, privacy filters,
metrics)."""

from __future__ import annotations

import numpy as np
import torch


def to_numpy(value: object, *, copy: bool = False) -> np.ndarray:
    """``value`` (a tensor on any device, a numpy array, anything :func:`numpy.asarray` takes) as a CPU numpy array.

    A tensor keeps its dtype, except bfloat16, which numpy has no dtype for: it becomes float32, which holds every
    bfloat16 value exactly. ``copy=True`` returns memory of its own (never a view of a tensor or of the caller's
    array), for callers that keep the array while its source may change.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.float().numpy()  # a new array already
        array = tensor.numpy()
        return array.copy() if copy else array
    return np.array(value, copy=True) if copy else np.asarray(value)
