"""How well an attack recovered the training labels.

Two scores, because batch order is not identifiable from a weight update:

* :func:`label_accuracy` (reported as ``label_accuracy``): order-free agreement of the label multisets,
  ``1 - sum_c |count_true(c) - count_recovered(c)| / (N + M)``, which for N = M recovered labels is
  ``1 - sum |...| / (2N)``. It is 1 when the recovered batch has exactly the true label counts and 0 when the
  two share no label.
* :func:`matched_label_accuracy` (reported as ``label_accuracy_matched``): the fraction of originals whose
  Hungarian-paired reconstruction carries the original's label. It mixes label recovery with image matching.

Recovered labels may be integers or soft labels (K, C) (probabilities or logits), which are reduced to their
argmax class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def as_hard_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Integer class labels (K,) from integers (K,) or soft labels (K, C), numpy or torch."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu()
        labels = labels.double() if labels.is_floating_point() else labels  # bfloat16 has no numpy dtype
    array = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim == 2:
        if array.shape[1] == 0 or not np.isfinite(array).all():
            raise ValueError(f"{name}: soft labels (K, C) need C >= 1 finite scores per row; got {array.shape}")
        return np.argmax(array, axis=1).astype(np.int64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be integers (K,) or soft labels (K, C); got shape {array.shape}")
    if array.dtype.kind not in "iub":
        if array.dtype.kind != "f" or not np.all(np.isfinite(array) & (array == np.round(array))):
            raise ValueError(f"{name} must be integer class indices; got {array.dtype} values")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices; got {int(array.min())}")
    return array.astype(np.int64)


def label_accuracy(true_labels: Any, recovered_labels: Any) -> float:
    """Order-free agreement of the true and recovered label counts, in [0, 1] (see the module docstring)."""
    true = as_hard_labels(true_labels, "true_labels")
    recovered = as_hard_labels(recovered_labels, "recovered_labels")
    if true.size == 0 or recovered.size == 0:
        raise ValueError("label accuracy needs at least one true and one recovered label")
    num_classes = int(max(true.max(), recovered.max())) + 1
    count_difference = np.abs(np.bincount(true, minlength=num_classes) - np.bincount(recovered, minlength=num_classes))
    return float(1.0 - count_difference.sum() / (true.size + recovered.size))


def matched_label_accuracy(true_labels: Any, recovered_labels: Any, assignment: Sequence[int | None]) -> float:
    """Fraction of originals i whose paired reconstruction ``assignment[i]`` has label ``true_labels[i]``.

    Args:
        true_labels: one label per original.
        recovered_labels: one label per reconstruction (integers or soft labels).
        assignment: reconstruction index per original (Hungarian); None counts as not recovered.
    """
    true = as_hard_labels(true_labels, "true_labels")
    recovered = as_hard_labels(recovered_labels, "recovered_labels")
    if true.size == 0 or len(assignment) != true.size:
        raise ValueError(f"assignment has {len(assignment)} entries for {true.size} true labels (need >= 1)")
    hits = sum(
        reconstruction is not None and int(recovered[reconstruction]) == int(label)
        for label, reconstruction in zip(true, assignment)
    )
    return float(hits / true.size)
