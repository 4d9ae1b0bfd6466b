"""Input checks shared by the metrics modules (private).

Every metric validates its inputs the same way: arrays that must share a shape raise ``ValueError``
naming both shapes; a "mask" is a boolean array or a numeric array holding only 0 and 1 (a label map
passed where a mask is expected is an error, never silently binarised).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def check_same_shape(a: NDArray, b: NDArray, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` naming both shapes if ``a`` and ``b`` differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"shape mismatch: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}"
        )


def as_mask(x: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Return ``x`` as a boolean array; numeric input must hold only 0 and 1."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"{name} must be a boolean or 0/1 numeric array, got dtype {arr.dtype}")
    is_zero = arr == 0
    if not np.all(is_zero | (arr == 1)):
        raise ValueError(
            f"{name} must be a mask (boolean or only 0/1 values); found other values "
            "(pass label == k for a label map)"
        )
    return ~is_zero


def as_probability(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``x`` as float64, checking every value is finite and within [0, 1]."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1]; found range [{arr.min():.6g}, {arr.max():.6g}]"
        )
    return arr


def as_scores(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``x`` as float64, checking every value is finite."""
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def select_region(
    region: ArrayLike | None, shape: tuple[int, ...], *arrays: NDArray
) -> tuple[NDArray, ...]:
    """Flatten ``arrays`` to the voxels selected by ``region`` (all voxels if ``region`` is None).

    ``region`` must be a mask of shape ``shape``; the voxels keep C (row-major) order.
    """
    if region is None:
        return tuple(a.ravel() for a in arrays)
    reg = as_mask(region, "region")
    if reg.shape != tuple(shape):
        raise ValueError(
            f"shape mismatch: region has shape {reg.shape} but the data have shape {tuple(shape)}"
        )
    return tuple(a[reg] for a in arrays)
