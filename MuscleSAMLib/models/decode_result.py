"""What a decode returns: member logits and probabilities for N boxes of one slice (one concern).

Probabilities on the slice grid are computed lazily: the whole slice (``probs``) or one box's window
(``probs_window``, two small matrix products, the same values) because the interactive engine needs
only the window around each box.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..slice_geometry import ResizePad, model_to_slice


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 matrix equal to 1-D ``F.interpolate(mode="bilinear", align_corners=False)``."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = src - i0
    a = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    a.index_put_((rows, i0), 1.0 - lam, accumulate=True)
    a.index_put_((rows, i1), lam, accumulate=True)
    return a


@functools.lru_cache(maxsize=64)
def slice_resize_matrices(geo: ResizePad, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ry (rows, grid), Rx (cols, grid)) float32 with ``Ry @ X @ Rx.T == model_to_slice(X, geo)``.

    :func:`model_to_slice` (upsample to the model size, crop the padding, resize to the slice) is
    separable and linear, so any window of its output is two small matrix products: this is how
    :meth:`DecodeResult.probs_window` computes one box's neighbourhood without the whole slice.
    """
    h, w = geo.resized_shape
    up = _bilinear_matrix(grid, geo.size)
    ry = _bilinear_matrix(h, geo.rows) @ up[:h]
    rx = _bilinear_matrix(w, geo.cols) @ up[:w]
    return ry.float(), rx.float()


class DecodeResult:
    """Member predictions for N boxes of one slice (numpy, float32).

    ``logits_lowres`` (M, N, L, L) is the decoder's grid over the padded model input, calibrated (the
    ensemble's logit offset added; see ``Ensemble.logit_offset``) (L = 256 for
    official SAM, 64 for the demo layouts; in box-crop geometry each box's grid covers its crop),
    ``iou_pred`` (M, N) SAM's predicted IoU. ``probs`` (M, N, rows, cols) are the member probabilities
    on the slice grid, computed on first access (sigmoid after :func:`model_to_slice`);
    :meth:`probs_window` gives one box's window without computing the whole slice (same values).
    ``windows`` (N, 4): in box-crop geometry each crop as (x0, y0, x1, y1) half-open slice pixels
    (probabilities outside it are 0); None for whole-slice geometry.
    """

    def __init__(self, logits_lowres: np.ndarray, iou_pred: np.ndarray, geo: ResizePad | None = None,
                 probs: np.ndarray | None = None, windows: np.ndarray | None = None) -> None:
        if probs is None and geo is None:
            raise ValueError("DecodeResult needs the geometry or the probabilities")
        self.logits_lowres = logits_lowres
        self.iou_pred = iou_pred
        self.geo = geo
        self.windows = windows
        self._probs = probs

    @property
    def members(self) -> int:
        """M."""
        return int(self.logits_lowres.shape[0])

    @property
    def boxes(self) -> int:
        """N."""
        return int(self.logits_lowres.shape[1])

    @property
    def probs(self) -> np.ndarray:
        """(M, N, rows, cols) float32 member probabilities on the slice grid (computed once)."""
        if self._probs is None:
            assert self.geo is not None
            geo, m, n = self.geo, self.members, self.boxes
            out = np.empty((m, n, geo.rows, geo.cols), dtype=np.float32)
            with torch.inference_mode():
                for i in range(m):  # one member at a time: bounded memory at the model-size upsampling
                    out[i] = torch.sigmoid(model_to_slice(torch.from_numpy(self.logits_lowres[i]), geo)).numpy()
            self._probs = out
        return self._probs

    def probs_window(self, n: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """(M, r1-r0, c1-c0) probabilities of box ``n`` inside rows r0:r1, cols c0:c1 of the slice."""
        if self._probs is not None or self.geo is None:
            return np.ascontiguousarray(self.probs[:, n, r0:r1, c0:c1])
        ry, rx = slice_resize_matrices(self.geo, int(self.logits_lowres.shape[-1]))
        with torch.inference_mode():
            x = torch.from_numpy(self.logits_lowres[:, n])
            return torch.sigmoid(ry[r0:r1] @ x @ rx[c0:c1].T).numpy()

    @property
    def mean(self) -> np.ndarray:
        """Ensemble-mean probability (N, rows, cols): probabilities averaged, never logits."""
        return self.probs.mean(axis=0)
