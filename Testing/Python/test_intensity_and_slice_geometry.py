"""Model-input preparation: percentile normalisation and the resize-pad geometry with its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MuscleSAMLib.intensity import intensity_window, normalize_mri
from MuscleSAMLib.slice_geometry import ResizePad, model_to_slice, resize_pad


def test_normalisation_clips_percentiles_of_nonzero_and_keeps_zero_background():
    rng = np.random.default_rng(0)
    vol = np.zeros((4, 50, 50), np.float32)
    vol[:, 10:40, 10:40] = rng.uniform(100, 200, (4, 30, 30))
    vol[0, 20, 20] = 1e6  # a single hot voxel must not squash the range
    w = intensity_window(vol)
    nz = vol[vol != 0]
    assert w.low == pytest.approx(np.percentile(nz, 0.5))
    assert w.high == pytest.approx(np.percentile(nz, 99.5))
    out = normalize_mri(vol)
    assert out.dtype == np.float32
    assert out.min() == 0 and out.max() == pytest.approx(255)
    assert (out[vol == 0] == 0).all()
    assert np.median(out[vol != 0]) == pytest.approx(127.5, abs=10)  # the hot voxel did not compress the range


def test_normalisation_ignores_display_scaling():
    """Same anatomy scaled by a factor (another scanner gain) gives the same model input."""
    vol = np.random.default_rng(1).uniform(0, 1000, (3, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(normalize_mri(vol), normalize_mri(vol * 7.0), atol=1e-3)


def test_constant_and_empty_volumes_do_not_divide_by_zero():
    assert np.isfinite(normalize_mri(np.zeros((2, 3, 3)))).all()
    assert np.isfinite(normalize_mri(np.full((2, 3, 3), 5.0))).all()


def test_resize_pad_keeps_aspect_and_pads_bottom_right():
    img = np.ones((100, 200), np.float32)
    t, geo = resize_pad(img, 256)
    assert t.shape == (1, 256, 256)
    assert geo == ResizePad(100, 200, 256) and geo.resized_shape == (128, 256)
    assert t[0, :128].min() == 1 and t[0, 128:].max() == 0  # padding at the bottom only
    np.testing.assert_allclose(geo.box_to_model([10, 20, 50, 60]), [12.8, 25.6, 64.0, 76.8])


@pytest.mark.parametrize("shape", [(512, 512), (300, 512), (512, 333), (97, 61)])
def test_model_to_slice_inverts_resize_pad(shape):
    """A mask pushed to model space and back returns on the same pixels (up to edge interpolation)."""
    rows, cols = shape
    mask = np.zeros(shape, np.float32)
    mask[rows // 4: rows // 2, cols // 3: (2 * cols) // 3] = 1
    t, geo = resize_pad(mask * 20 - 10, 256)  # logits: +10 inside, -10 outside
    low = torch.nn.functional.interpolate(t[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    back = model_to_slice(low, geo)[0].numpy() > 0
    assert back.shape == shape
    dice = 2 * (back & (mask > 0)).sum() / (back.sum() + mask.sum())
    assert dice > 0.93
