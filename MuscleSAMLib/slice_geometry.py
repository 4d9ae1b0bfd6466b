"""Slice <-> model-input geometry: resize the longest side to the model size, pad bottom/right.

This is SamPredictor's convention (METHODS.md step 3). It keeps the aspect ratio of two-leg fields
of view. The same functions are used in training and inference so the two never drift apart.
Array convention: 2D slices are (rows, cols) = (y, x); boxes are (x0, y0, x1, y1) in pixel
coordinates where a box covering pixels x0..x1 inclusive has x1 = last column + 1 (half-open,
like slices). Model-space boxes use the same convention scaled by ``scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ResizePad:
    """How a (rows, cols) slice maps into a square model input of side ``size``."""

    rows: int
    cols: int
    size: int

    @property
    def scale(self) -> float:
        """Factor from slice pixels to model pixels."""
        return self.size / max(self.rows, self.cols)

    @property
    def resized_shape(self) -> tuple[int, int]:
        """Shape of the resized (un-padded) slice inside the model input."""
        return (int(round(self.rows * self.scale)), int(round(self.cols * self.scale)))

    def box_to_model(self, box_xyxy: np.ndarray) -> np.ndarray:
        """Boxes (..., 4) in slice pixels (half-open) -> model-input pixel coordinates."""
        return np.asarray(box_xyxy, dtype=np.float64) * self.scale

    def point_to_model(self, xy: np.ndarray) -> np.ndarray:
        """Points (..., 2) as slice pixel indices (x = column, y = row) -> model-input pixel indices.

        SAM's prompt encoder adds 0.5 to a point (a pixel index means that pixel's centre), so the
        centre (i + 0.5) of slice pixel i maps to model index (i + 0.5) x scale - 0.5.
        """
        return (np.asarray(xy, dtype=np.float64) + 0.5) * self.scale - 0.5


def resize_pad(slice2d: np.ndarray | torch.Tensor, size: int) -> tuple[torch.Tensor, ResizePad]:
    """Resize a (rows, cols) or (C, rows, cols) slice so its longest side is ``size``, zero-pad to square.

    Bilinear, no antialias (SamPredictor uses PIL bilinear; differences are sub-grey-level).
    Returns a float32 tensor (C, size, size) (C=1 added when the input is 2D) and the geometry.
    """
    t = torch.as_tensor(np.asarray(slice2d), dtype=torch.float32) if not isinstance(slice2d, torch.Tensor) else slice2d.float()
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected a 2D slice or (C, rows, cols), got shape {tuple(t.shape)}")
    geo = ResizePad(int(t.shape[-2]), int(t.shape[-1]), int(size))
    h, w = geo.resized_shape
    resized = F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    out = torch.zeros((t.shape[0], size, size), dtype=torch.float32)
    out[:, :h, :w] = resized
    return out, geo


def model_to_slice(logits: torch.Tensor, geo: ResizePad) -> torch.Tensor:
    """Inverse of :func:`resize_pad` for mask logits: (..., h, w) at any square grid -> (..., rows, cols).

    Upsamples to the model size, crops away the padding, resizes to the slice (bilinear on logits,
    as SAM's ``postprocess_masks``). Works for SAM's 256x256 low-resolution logits directly.
    """
    lead = logits.shape[:-2]
    x = logits.reshape(-1, 1, *logits.shape[-2:]).float()
    x = F.interpolate(x, size=(geo.size, geo.size), mode="bilinear", align_corners=False)
    h, w = geo.resized_shape
    x = x[..., :h, :w]
    x = F.interpolate(x, size=(geo.rows, geo.cols), mode="bilinear", align_corners=False)
    return x.reshape(*lead, geo.rows, geo.cols)


def box_window(box_xyxy: tuple[int, int, int, int], shape: tuple[int, int], margin: float = 0.25,
               min_margin_px: int = 8) -> tuple[int, int, int, int]:
    """The region kept around a box: the box grown by ``margin`` x its side (at least ``min_margin_px``)
    on every side, clipped to the slice. Returns (r0, r1, c0, c1), half-open.

    Used for the box-crop prompt geometry (the crop resized to the model input, in training and in
    inference alike) and for storing a box's probabilities compactly (outside it they are ~0).
    """
    c0, r0, c1, r1 = box_xyxy
    rows, cols = shape
    mr = max(int(round((r1 - r0) * margin)), min_margin_px)
    mc = max(int(round((c1 - c0) * margin)), min_margin_px)
    return (max(r0 - mr, 0), min(r1 + mr, rows), max(c0 - mc, 0), min(c1 + mc, cols))
