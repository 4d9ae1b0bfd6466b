"""Training data: (image, labels) volumes -> 2D box samples with jitter and augmentation.

One sample per muscle per connected component (leg) per axial slice (``boxes_from_labels``). The
target is that component only (the label inside its tight box). Splits are by patient, never by
slice (:func:`kfold`). Rendering follows :mod:`.model_io` exactly, plus training-only randomness:
outward box jitter, crop-margin scale, left-right flip (labels are per muscle, not per side, so a
flip swaps nothing), brightness/contrast/gamma.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.boxes import boxes_from_labels
from ..errors import InputError
from ..intensity import normalize_mri
from ..leg_layout import LegLayout, leg_layout
from ..slice_geometry import box_window, resize_pad
from ..volumes import check_same_grid, read_volume
from .augment import MILD, augment_slice
from .config import CaseSpec, TrainConfig
from .model_io import crop_for_box, normalise_input


@dataclass
class Case:
    """One patient, normalised: image 0..255 (slices, rows, cols) and uint8 labels on the same grid."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @functools.cached_property
    def legs(self) -> LegLayout | None:
        """Each leg's crop window (the "legs" prompt geometry), cut from this normalised image as the engine
        cuts it; None when the legs are not told apart."""
        return leg_layout(self.image)


@dataclass(frozen=True)
class Sample:
    """One box: case index, slice, label value, tight box (x0, y0, x1, y1) half-open."""

    case: int
    slice: int
    label: int
    box: tuple[int, int, int, int]


def load_case(spec: CaseSpec) -> Case:
    """Read and normalise one patient; a different grid or no muscle labels is an InputError."""
    img = read_volume(spec.image)
    lab = read_volume(spec.labels, allow_labels=True)
    check_same_grid(img, lab, "image", "label map")
    labels = np.rint(lab.canonical_array).astype(np.int16)
    if labels.min() < 0 or labels.max() > 255:
        raise InputError(f"label map {spec.labels} has values outside 0..255")
    if not (labels > 0).any():
        raise InputError(f"label map {spec.labels} has no muscle labels (all zero); nothing to train on")
    return Case(spec.name, normalize_mri(img.canonical_array), labels.astype(np.uint8), img.canonical_spacing)


def case_from_arrays(name: str, image: np.ndarray, labels: np.ndarray) -> Case:
    """A Case from in-memory arrays (phantoms, tests)."""
    if image.shape != labels.shape:
        raise InputError(f"{name}: image {image.shape} and labels {labels.shape} differ in shape")
    if not (labels > 0).any():
        raise InputError(f"{name}: label map has no muscle labels")
    return Case(name, normalize_mri(image), labels.astype(np.uint8))


def phantom_cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` synthetic bilateral thigh phantoms (grades cycling early/moderate/severe), water image as input."""
    from ..phantoms import make_thigh_phantom

    grades = ("early", "moderate", "severe")
    out = []
    for i in range(n):
        ph = make_thigh_phantom(seed=1000 + seed + i, shape=(4, 192, 288), spacing=(24.0, 1.0, 1.0),
                                grade=grades[i % 3])
        out.append(case_from_arrays(f"phantom_{i}", ph.water, ph.labels))
    return out


def make_samples(cases: Sequence[Case], values: Sequence[int] = ()) -> list[Sample]:
    """All tight-box samples of ``cases`` (only label ``values`` when given)."""
    out = []
    for ci, c in enumerate(cases):
        for b in boxes_from_labels(c.labels, values=values or None):
            out.append(Sample(ci, b.slice, b.label, tuple(int(v) for v in b.xyxy)))
    if not out:
        raise InputError("no boxes found in the training labels (check the 'labels' setting)")
    return out


def kfold(names: Sequence[str], k: int, fold: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Patient-level K-fold split: (train indices, val indices) of fold ``fold``."""
    idx = np.random.default_rng(seed).permutation(len(names))
    val = sorted(int(i) for i in idx[fold::k])
    return [i for i in range(len(names)) if i not in val], val


def jitter_box(box, shape: tuple[int, int], frac: float, min_px: int, rng: np.random.Generator | None):
    """Grow each side outward by U(0, max(frac x side, min_px)) pixels, clipped to the slice."""
    x0, y0, x1, y1 = box
    if rng is None or (frac <= 0 and min_px <= 0):
        return (x0, y0, x1, y1)
    jx, jy = max(frac * (x1 - x0), min_px), max(frac * (y1 - y0), min_px)
    d = rng.uniform(0, 1, 4) * np.array([jx, jy, jx, jy])
    d = np.rint(d).astype(int)
    rows, cols = shape
    return (max(x0 - d[0], 0), max(y0 - d[1], 0), min(x1 + d[2], cols), min(y1 + d[3], rows))


def render(case: Case, s: Sample, cfg: TrainConfig, img_size: int, grid: int, mean: torch.Tensor,
           std: torch.Tensor, rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sample -> (x (3, S, S) normalised, box in model pixels (4,), soft target (grid, grid)).

    ``rng=None`` renders exactly what inference sees for the tight box (validation).
    """
    sl = case.image[s.slice]
    x0, y0, x1, y1 = s.box
    target_full = np.zeros(sl.shape, np.float32)
    target_full[y0:y1, x0:x1] = case.labels[s.slice, y0:y1, x0:x1] == s.label
    box = jitter_box(s.box, sl.shape, cfg.jitter, cfg.jitter_px, rng)
    if cfg.prompt_geometry == "box_crop":
        margin = cfg.crop_margin
        if rng is not None and cfg.aug_scale:
            margin = max(margin * (1.0 + rng.uniform(-cfg.aug_scale, cfg.aug_scale)), 0.0)
        r0, r1, c0, c1 = box_window(box, sl.shape, margin=margin)
    else:  # the leg's crop (legs geometry) or the whole slice, as inference cuts it for the tight box
        _, (r0, r1, c0, c1) = crop_for_box(sl, s.box, 0.0, cfg.prompt_geometry, case.legs)
        box = (max(box[0], c0), max(box[1], r0), min(box[2], c1), min(box[3], r1))  # jitter stays in the crop
    pix = sl[r0:r1, c0:c1]
    tgt = target_full[r0:r1, c0:c1]
    lb = np.array([box[0] - c0, box[1] - r0, box[2] - c0, box[3] - r0], np.float64)
    if rng is not None:
        if cfg.aug_flip and rng.random() < 0.5:
            pix, tgt = pix[:, ::-1], tgt[:, ::-1]
            w = pix.shape[1]
            lb = np.array([w - lb[2], lb[1], w - lb[0], lb[3]])
        if cfg.aug_intensity:
            pix = augment_slice(pix, rng, MILD.scaled(cfg.aug_strength))
    t, geo = resize_pad(np.ascontiguousarray(pix), img_size)
    x = normalise_input(t, geo, mean, std)
    tt, _ = resize_pad(np.ascontiguousarray(tgt, dtype=np.float32), img_size)
    target = F.adaptive_avg_pool2d(tt[None], grid)[0, 0]
    return x, torch.as_tensor(geo.box_to_model(lb), dtype=torch.float32), target


def render_batch(cases, samples, idx, cfg, img_size, grid, mean, std, rng):
    """Stack :func:`render` over ``idx`` -> (x (B,3,S,S), boxes (B,4), targets (B,grid,grid))."""
    xs, bs, ts = zip(*(render(cases[samples[i].case], samples[i], cfg, img_size, grid, mean, std, rng) for i in idx))
    return torch.stack(xs), torch.stack(bs), torch.stack(ts)
