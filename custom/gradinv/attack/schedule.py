"""The step-size schedule shared by the inversion runs and the polish after them."""

from __future__ import annotations

import math


def learning_rate(iteration: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` iterations, then cosine decay to 0."""
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (iteration - warmup) / max(total - warmup, 1))) * peak
