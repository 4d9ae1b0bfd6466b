"""Slicer's GrowCut ("Grow from seeds") baseline with seeds derived from box prompts.

Setting (METHODS.md "Measured on this project's thigh data"): for every box, the centre 20% of the
box is a seed of the box's muscle and a 2-pixel frame just outside the box is a background seed; the
seeds grow with Slicer's own ``vtkImageGrowCutSegment`` (slicer-core, the filter behind the Segment
Editor's "Grow from seeds" effect, distance penalty 0 = its default "seed locality") on the water image.

Exact conventions (canonical grid (slices, rows, cols), boxes ``xyxy = (col0, row0, col1, row1)``
half-open):

* **Centre seed**: ``cw = max(1, floor(0.2 * width + 0.5))`` columns starting at
  ``col0 + (width - cw) // 2``; rows likewise with the height.
* **Background frame**: the pixels with ``col0 - 2 <= col < col1 + 2`` and ``row0 - 2 <= row < row1 + 2``
  that are outside the box, clipped to the slice.
* **2D per axial slice**: each slice runs on its own (no growth between slices). The filter needs 3
  voxels along every axis and never grows *from* a border voxel, so the slice is padded by one voxel
  in-plane (intensity repeated, no seeds) and stacked three times along z with seeds only on the
  middle copy; the middle copy is the answer. A fresh filter runs every time (the filter otherwise
  reuses its previous result as a warm start).
* ``mode="per_box"`` (default; the setting that reproduces METHODS' 0.650 / 0.611): each box runs
  alone, a two-label problem (its muscle vs background) on the box plus its frame; inside the box a
  voxel is the muscle where the muscle seed reached it first. Voxels that several boxes claim go to
  the smaller box, exactly as in :mod:`.boxfill` (:func:`~.boxfill.paint_order`).
* ``mode="joint"``: all boxes of a slice run together in one multi-label run (one segment per muscle
  plus one background segment), so muscles compete. Where seeds collide, muscle centres overwrite
  background frames, and among centres the smaller box wins. A muscle cannot leave its box: its
  frame and any other seed in it are barriers. Much worse on thigh MRI (about 0.44 mean DSC against
  0.65 for ``per_box``): neighbouring boxes overlap, so each box's background frame runs through
  the middle of the adjacent muscles and claims them.

The result is a uint8 label map: the muscle labels, background 0 (background seeds and voxels the
background grew into are 0, as is everything outside all boxes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..engine.types import BoxPrompt
from ..errors import InputError
from .boxfill import check_boxes, paint_order

__all__ = ["FRAME_WIDTH", "MODES", "SEED_FRACTION", "centre_seed", "growcut_2d", "growcut_labels",
           "seed_map", "slicer_growcut_available"]

SEED_FRACTION = 0.2  # side of the centre seed region as a fraction of the box side
FRAME_WIDTH = 2  # background frame thickness in pixels, just outside the box
MODES = ("per_box", "joint")
_BACKGROUND_SEED = 256  # seed value of the background (labels are 1..255; seeds are uint16)


def slicer_growcut_available() -> bool:
    """True when slicer-core's ``vtkImageGrowCutSegment`` can be imported."""
    try:
        _growcut_class()
    except InputError:
        return False
    return True


def _growcut_class() -> Any:
    try:
        from slicer import vtkImageGrowCutSegment  # slicer-core (pip), Segmentations module logic
    except ImportError as exc:
        raise InputError(
            "the GrowCut baseline needs Slicer's vtkImageGrowCutSegment from the slicer-core package, "
            f"which is not importable ({exc}); install the web/test extra: pip install -e '.[web,test]'"
        ) from None
    return vtkImageGrowCutSegment


def centre_seed(box: BoxPrompt) -> tuple[slice, slice]:
    """(rows, cols) slices of the centre seed region of ``box`` (see the module docstring)."""
    c0, r0, c1, r1 = box.xyxy

    def span(lo: int, hi: int) -> slice:
        n = hi - lo
        k = max(1, int(np.floor(SEED_FRACTION * n + 0.5)))
        start = lo + (n - k) // 2
        return slice(start, start + k)

    return span(r0, r1), span(c0, c1)


def _frame_window(box: BoxPrompt, rows: int, cols: int) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of the box grown by the frame width, clipped to the slice."""
    c0, r0, c1, r1 = box.xyxy
    return (max(r0 - FRAME_WIDTH, 0), min(r1 + FRAME_WIDTH, rows),
            max(c0 - FRAME_WIDTH, 0), min(c1 + FRAME_WIDTH, cols))


def seed_map(boxes: Sequence[BoxPrompt], rows: int, cols: int) -> np.ndarray:
    """uint16 (rows, cols) seed image of one slice's boxes for a joint run.

    0 = no seed, 1..255 = muscle label, 256 = background. Frames are painted first, then centres in
    :func:`paint_order` (muscle seeds overwrite background seeds; the smaller box's centre wins).
    """
    seeds = np.zeros((rows, cols), np.uint16)
    for b in boxes:
        fr0, fr1, fc0, fc1 = _frame_window(b, rows, cols)
        c0, r0, c1, r1 = b.xyxy
        ring = seeds[fr0:fr1, fc0:fc1]
        inside = np.zeros(ring.shape, bool)
        inside[r0 - fr0:r1 - fr0, c0 - fc0:c1 - fc0] = True
        ring[~inside] = _BACKGROUND_SEED
    for b in paint_order(boxes):
        seeds[centre_seed(b)] = b.label
    return seeds


def growcut_2d(intensity: np.ndarray, seeds: np.ndarray, distance_penalty: float = 0.0) -> np.ndarray:
    """Run Slicer's ``vtkImageGrowCutSegment`` on one 2D image; returns the grown seed labels.

    ``intensity`` (rows, cols) is any real array (cast to float32); ``seeds`` (rows, cols) holds
    non-negative integer seed labels, 0 = unseeded. The output has the seeds' dtype; a pixel no
    seed reaches stays 0. Padding/stacking as in the module docstring.
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    if intensity.shape != seeds.shape or intensity.ndim != 2:
        raise ValueError(f"intensity {intensity.shape} and seeds {seeds.shape} must be equal 2D shapes")
    seeds = np.asarray(seeds)
    img = np.pad(np.asarray(intensity, np.float32), 1, mode="edge")
    sd = np.pad(seeds, 1)
    img3 = np.ascontiguousarray(np.stack([img, img, img]))
    sd3 = np.zeros((3, *sd.shape), sd.dtype)
    sd3[1] = sd

    def to_vtk(arr: np.ndarray) -> vtkImageData:
        data = vtkImageData()
        data.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])  # x = cols fastest
        data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(arr.ravel(), deep=True))
        return data

    growcut = _growcut_class()()
    growcut.SetIntensityVolume(to_vtk(img3))
    growcut.SetSeedLabelVolume(to_vtk(sd3))
    growcut.SetDistancePenalty(float(distance_penalty))
    growcut.Update()
    scalars = growcut.GetOutput().GetPointData().GetScalars()
    if scalars is None:
        raise RuntimeError("vtkImageGrowCutSegment produced no output")
    out = numpy_support.vtk_to_numpy(scalars).reshape(sd3.shape)
    return out[1, 1:-1, 1:-1].astype(seeds.dtype, copy=True)


def growcut_labels(image: np.ndarray, boxes: Sequence[BoxPrompt], shape: tuple[int, int, int] | None = None,
                   mode: str = "per_box", distance_penalty: float = 0.0) -> np.ndarray:
    """uint8 label map (slices, rows, cols) from GrowCut with box-derived seeds, slice by slice.

    ``image`` is the canonical (slices, rows, cols) MRI (the water image for thigh Dixon);
    ``shape`` must equal ``image.shape`` (default: taken from it). ``mode`` is ``"per_box"``
    (default, METHODS' setting) or ``"joint"`` (module docstring). ``distance_penalty`` is the
    filter's seed-locality term (0 = Slicer's default). Raises :class:`InputError` for a bad box, a non-finite or
    mis-shaped image, an unknown mode, or when slicer-core is not installed.
    """
    image = np.asarray(image)
    shape = tuple(int(s) for s in (image.shape if shape is None else shape))
    if image.ndim != 3 or image.shape != shape:
        raise InputError(f"image shape {image.shape} does not match the label shape {shape}")
    if not np.all(np.isfinite(image)):
        raise InputError("image holds NaN or infinite values")
    if mode not in MODES:
        raise InputError(f"unknown GrowCut mode {mode!r}; use one of {MODES}")
    boxes = list(boxes)
    check_boxes(boxes, shape)
    _growcut_class()  # fail early with the install hint
    out = np.zeros(shape, np.uint8)
    _, rows, cols = shape
    by_slice: dict[int, list[BoxPrompt]] = {}
    for b in boxes:
        by_slice.setdefault(int(b.slice), []).append(b)
    for k in sorted(by_slice):
        slice_boxes = by_slice[k]
        if mode == "joint":
            out[k] = _joint_slice(image[k], slice_boxes, distance_penalty)
        else:
            out[k] = _per_box_slice(image[k], slice_boxes, distance_penalty)
    return out


def _joint_slice(intensity: np.ndarray, boxes: list[BoxPrompt], distance_penalty: float) -> np.ndarray:
    rows, cols = intensity.shape
    seeds = seed_map(boxes, rows, cols)
    # Crop to the frames' union: every box is enclosed by its frame, so nothing outside can matter.
    wins = np.array([_frame_window(b, rows, cols) for b in boxes])
    r0, r1, c0, c1 = wins[:, 0].min(), wins[:, 1].max(), wins[:, 2].min(), wins[:, 3].max()
    grown = growcut_2d(intensity[r0:r1, c0:c1], seeds[r0:r1, c0:c1], distance_penalty)
    out = np.zeros((rows, cols), np.uint8)
    muscle = (grown > 0) & (grown != _BACKGROUND_SEED)
    out[r0:r1, c0:c1][muscle] = grown[muscle].astype(np.uint8)
    return out


def _per_box_slice(intensity: np.ndarray, boxes: list[BoxPrompt], distance_penalty: float) -> np.ndarray:
    rows, cols = intensity.shape
    out = np.zeros((rows, cols), np.uint8)
    for b in paint_order(boxes):  # larger boxes first: the smaller box's muscle wins overlaps
        fr0, fr1, fc0, fc1 = _frame_window(b, rows, cols)
        seeds = seed_map([b], rows, cols)[fr0:fr1, fc0:fc1]
        grown = growcut_2d(intensity[fr0:fr1, fc0:fc1], seeds, distance_penalty)
        c0, r0, c1, r1 = b.xyxy
        muscle = grown[r0 - fr0:r1 - fr0, c0 - fc0:c1 - fc0] == b.label
        out[r0:r1, c0:c1][muscle] = b.label
    return out
