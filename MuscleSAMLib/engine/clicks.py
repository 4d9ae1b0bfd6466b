"""Point prompts ("clicks") for one object: where the next corrective click goes, where the tool suggests
one, and checking clicks a user or a file gives (one place for all three rules).

Conventions (as :mod:`.types`): a click is ``(x, y, positive)`` with ``x`` the column and ``y`` the
row of a pixel of the object's axial slice (integer pixel indices, the pixel's centre is meant),
``positive`` 1 = "this pixel belongs to the muscle", 0 = "it does not". Masks are (rows, cols) bool.

- :func:`corrective_click` is the field's standard simulated user (RITM / SAM / the interactive
  segmentation benchmarks): take the largest connected error region of the current prediction
  (false negatives and false positives separately, 4-connected), click the pixel farthest from its
  border (Euclidean distance transform; the array border counts as border; among equally deep pixels
  the one nearest their middle), positive for a missed
  region and negative for a leak. With ``rng`` the click is drawn uniformly among the region's pixels
  at least half that distance inside (training's randomised variant).
- :func:`suggest_click` is what the tool shows without knowing the truth: the pixel farthest inside
  the connected region of high uncertainty (>= ``fraction`` x the maximum, 4-connected) with the
  largest summed uncertainty.
- :func:`merge_click_answer` keeps a click's effect local (after FocalClick's "progressive merge",
  Chen et al., CVPR 2022): the re-decode replaces the previous answer only in the connected region,
  holding the click, of pixels it moved to the clicked side. So a click never moves a border far
  from where the user clicked, a "muscle" click never removes muscle (nor a "not muscle" click adds
  any), and a click the model did not follow changes nothing.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError

#: At most this many clicks per object (SAM's prompt encoder takes any number; the decoder's cost
#: grows with every token, and 32 corrections on one muscle slice means painting is the better tool).
MAX_CLICKS = 32

Click = tuple[int, int, int]


def _interior_point(region: np.ndarray, rng: np.random.Generator | None) -> tuple[int, int, float]:
    """(row, col, distance) of the pixel farthest inside ``region`` (or a random deep one with ``rng``)."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    top = float(dist.max())
    if rng is None:  # ties (a ridge of equally deep pixels) go to the one nearest their middle
        rr, cc = np.nonzero(dist == top)
        i = int(np.argmin((rr - rr.mean()) ** 2 + (cc - cc.mean()) ** 2))
        return int(rr[i]), int(cc[i]), top
    rr, cc = np.nonzero(dist >= max(top / 2.0, min(top, 1.0)))
    i = int(rng.integers(rr.size))
    return int(rr[i]), int(cc[i]), float(dist[rr[i], cc[i]])


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest 4-connected component of ``mask`` and its size (empty, 0 when none)."""
    lab, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask, bool), 0
    sizes = np.bincount(lab.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    return lab == best, int(sizes[best - 1])


def corrective_click(pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator | None = None) -> Click | None:
    """The next simulated corrective click for ``pred`` against ``truth`` (see module docstring), or None
    when the prediction has no error. Ties between a missed and a leaked region go to the missed one."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"pred and truth must be 2D masks of one shape, got {pred.shape} and {truth.shape}")
    fn, n_fn = _largest_component(truth & ~pred)
    fp, n_fp = _largest_component(pred & ~truth)
    if n_fn == 0 and n_fp == 0:
        return None
    region, positive = (fn, 1) if n_fn >= n_fp else (fp, 0)
    r, c, _ = _interior_point(region, rng)
    return (c, r, positive)


def suggest_click(uncertainty: np.ndarray, fraction: float = 0.5, floor: float = 1e-3) -> tuple[int, int] | None:
    """(x, y) at the centre of the most uncertain region of ``uncertainty`` (rows, cols), or None when the
    map is flat below ``floor`` (nothing worth a click). Region: pixels >= fraction x max, 4-connected;
    the one with the largest summed uncertainty wins; its centre is the pixel farthest from its border."""
    u = np.nan_to_num(np.asarray(uncertainty, np.float64), nan=0.0)
    top = float(u.max()) if u.size else 0.0
    if top < floor:
        return None
    lab, n = ndimage.label(u >= fraction * top)
    sums = ndimage.sum_labels(u, lab, index=np.arange(1, n + 1))
    region = lab == int(np.argmax(sums)) + 1
    r, c, _ = _interior_point(region, None)
    return (c, r)


def check_clicks(points: Iterable[Sequence[float]], shape: tuple[int, int], source: str = "click") -> tuple[Click, ...]:
    """Validated clicks as ``((x, y, 0|1), ...)`` or :class:`InputError` naming the bad point.

    Each point is ``[x, y, 1 | 0]`` in the object's slice pixels (x = column, y = row), finite,
    inside the ``shape`` = (rows, cols) slice; coordinates are rounded to the nearest pixel; at most
    :data:`MAX_CLICKS` per object.
    """
    rows, cols = shape
    out = []
    pts = list(points)
    if len(pts) > MAX_CLICKS:
        raise InputError(f"{source}: {len(pts)} points; at most {MAX_CLICKS} per object (paint larger fixes)")
    for i, p in enumerate(pts):
        name = f"{source} point #{i + 1}"
        try:
            vals = [float(v) for v in p]
        except (TypeError, ValueError):
            raise InputError(f"{name} {p!r} must be [x, y, 1 | 0] numbers") from None
        if len(vals) != 3:
            raise InputError(f"{name} {p!r} must be [x, y, 1 | 0]")
        x, y, sign = vals
        if not all(math.isfinite(v) for v in vals):
            raise InputError(f"{name} {p!r} has a NaN or infinite value")
        if sign not in (0.0, 1.0):
            raise InputError(f"{name} {p!r}: the third value must be 1 (muscle) or 0 (not muscle)")
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < cols and 0 <= yi < rows):
            raise InputError(f"{name} ({x:g}, {y:g}) lies outside the {rows}x{cols} slice")
        out.append((xi, yi, int(sign)))
    return tuple(out)


def merge_click_answer(previous: np.ndarray, new: np.ndarray, click_rc: tuple[int, int], positive: int
                       ) -> tuple[np.ndarray, bool]:
    """A click's re-decode merged into the previous answer (see module docstring).

    ``previous`` and ``new``: member logits (M, 1, L, L) of one object on the low-resolution grid;
    ``click_rc``: the clicked (row, col) on that grid; ``positive``: 1 "muscle", 0 "not muscle". The
    mask of an answer is its member-mean probability >= 0.5. Region = the 4-connected component,
    containing the click, of the pixels the re-decode moved to the clicked side (a positive click
    only adds muscle, a negative one only removes it). Returns (logits: ``new`` inside the region,
    ``previous`` outside; True when the re-decode has the clicked pixel on the clicked side).
    """
    prev, cur = np.asarray(previous), np.asarray(new)
    if prev.shape != cur.shape or prev.ndim != 4 or prev.shape[1] != 1:
        raise ValueError(f"expected two (M, 1, L, L) answers of one object, got {prev.shape} and {cur.shape}")
    r, c = int(click_rc[0]), int(click_rc[1])
    if not (0 <= r < prev.shape[2] and 0 <= c < prev.shape[3]):
        raise ValueError(f"click ({r}, {c}) is outside the {prev.shape[2]} x {prev.shape[3]} logit grid")
    mean = lambda z: (1.0 / (1.0 + np.exp(-z[:, 0].astype(np.float64)))).mean(0) >= 0.5  # noqa: E731
    old_mask, new_mask = mean(prev), mean(cur)
    followed = bool(new_mask[r, c]) == bool(positive)
    toward = (new_mask & ~old_mask) if positive else (old_mask & ~new_mask)
    if not toward[r, c]:
        return prev.copy(), followed
    lab, _ = ndimage.label(toward)
    return np.where(lab == lab[r, c], cur, prev).astype(cur.dtype, copy=False), True
