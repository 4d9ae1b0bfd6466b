"""Per-voxel ensemble uncertainty (METHODS.md "Uncertainty").

For M member probabilities p_m of the foreground (binary, per voxel):

- mean       p = (1/M) sum_m p_m                        (probabilities are averaged, never logits)
- total      H(p) = -p log p - (1-p) log(1-p)           (entropy of the mean)
- aleatoric  (1/M) sum_m H(p_m)                         (expected member entropy)
- epistemic  total - aleatoric                          (mutual information; clipped at 0 against rounding)
- variance   Var_m(p_m)                                 (population variance, ddof=0)

Entropies are in nats; ``normalised=True`` divides them by log 2 so they lie in [0, 1].
Probabilities are clipped to [1e-7, 1 - 1e-7] inside the logarithms only (the mean is not clipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-7
KINDS = ("total", "epistemic", "aleatoric")  # the uncertainty maps a user can show (heatmap, web page)
LOG2 = math.log(2.0)


@dataclass(frozen=True)
class UncertaintyMaps:
    """Uncertainty maps on the grid of the member probabilities (member axis removed)."""

    mean: np.ndarray
    total: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    variance: np.ndarray
    normalised: bool = False

    @property
    def unit(self) -> str:
        """'nats', or 'bits' when normalised (entropy / log 2, in [0, 1])."""
        return "bits" if self.normalised else "nats"


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) in nats of a Bernoulli probability array (clipped inside the logs)."""
    q = np.clip(p, EPS, 1.0 - EPS)
    return -(q * np.log(q) + (1.0 - q) * np.log1p(-q))


def uncertainty_maps(member_probs: np.ndarray, normalised: bool = False) -> UncertaintyMaps:
    """Mean probability and total/aleatoric/epistemic entropy and variance over axis 0 (members).

    ``member_probs`` has shape (M, ...) with values in [0, 1]; computation is in float32 for float32
    input (float64 for float64 input), and every output has shape ``member_probs.shape[1:]``.
    """
    p = np.asarray(member_probs)
    if p.ndim < 1 or p.shape[0] < 1:
        raise ValueError("member_probs needs a leading member axis with at least one member")
    dtype = np.result_type(p.dtype, np.float32)
    p = p.astype(dtype, copy=False)
    mean = p.mean(axis=0, dtype=dtype)
    total = binary_entropy(mean)
    aleatoric = binary_entropy(p).mean(axis=0, dtype=dtype)
    epistemic = np.maximum(total - aleatoric, 0.0)
    variance = p.var(axis=0, dtype=dtype)
    if normalised:
        total, aleatoric, epistemic = total / LOG2, aleatoric / LOG2, epistemic / LOG2
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731 - keep scalar inputs as 0-d arrays
    return UncertaintyMaps(cast(mean), cast(total), cast(aleatoric), cast(epistemic), cast(variance), normalised)
