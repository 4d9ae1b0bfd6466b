"""Learning-rate schedule: linear warm-up then cosine decay to ``min_ratio`` x the base rate."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.05) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer, base_lr: float, factor: float) -> None:
    """Set every param group's lr to ``base_lr * factor`` (groups may carry their own ``base_lr``)."""
    for g in optimizer.param_groups:
        g["lr"] = g.get("base_lr", base_lr) * factor
