"""Hand-computed checks of MuscleSAMLib.metrics (conventions: METHODS.md "Metrics")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MuscleSAMLib.metrics import (
    auroc,
    auroc_error,
    brier,
    dice,
    dice_per_label,
    ece,
    error_share_in_top,
    hd95,
    mean_dice,
    nll,
    nsd,
    reliability_curve,
    surface_distances,
    weighted_percentile,
)

# ----------------------------------------------------------------------------------------------
# Dice


def test_dice_empty_cases_and_known_overlap():
    empty = np.zeros((4, 4), bool)
    some = np.zeros((4, 4), bool)
    some[0, :2] = True
    assert math.isnan(dice(empty, empty))
    assert dice(some, empty) == 0.0
    assert dice(empty, some) == 0.0
    a = np.zeros((2, 3, 4), bool)
    b = np.zeros((2, 3, 4), bool)
    a[0, 0, :3] = True  # 3 voxels
    b[0, 0, 1:] = True  # 3 voxels, overlap 2
    assert dice(a, b) == pytest.approx(2 * 2 / 6)


def test_dice_rejects_shape_mismatch_and_label_maps():
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
        dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="mask"):
        dice(np.array([0, 2]), np.array([0, 1]))


def test_dice_per_label_and_mean_skip_background_and_absent_labels():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    truth = np.array([[0, 1, 0], [2, 2, 2]])
    per = dice_per_label(pred, truth, [0, 1, 2, 3])
    assert per[1] == pytest.approx(2 * 1 / 3)
    assert per[2] == pytest.approx(2 * 2 / 5)
    assert math.isnan(per[3])  # absent from both
    # background (key 0) and NaN never enter the mean
    assert mean_dice(per) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert math.isnan(mean_dice({1: math.nan, 2: math.nan}))
    assert math.isnan(mean_dice({}))
    # a label present in only one map counts as 0 in the mean
    assert mean_dice({1: 1.0, 2: 0.0}) == 0.5


# ----------------------------------------------------------------------------------------------
# Surface distances


def test_surface_weights_are_exposed_face_areas_including_array_border():
    # isolated voxel in 3D: weight = box surface area 2(3*4) + 2(2*4) + 2(2*3) = 52
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    sd = surface_distances(m, m, (2.0, 3.0, 4.0))
    np.testing.assert_allclose(sd.pred_weights, [52.0])
    np.testing.assert_allclose(sd.pred_to_truth, [0.0])
    # full 3x3 2D array: outside the array counts as background -> 8 border voxels are surface,
    # corners expose 2 edges, edge-middles 1; spacing (2.0, 0.5): axis-0 edges have length 0.5,
    # axis-1 edges length 2.0. Total = perimeter of the 6 mm x 1.5 mm field = 15.
    full = np.ones((3, 3), bool)
    sd = surface_distances(full, full, (2.0, 0.5))
    assert sd.pred_weights.size == 8
    assert sd.pred_weights.sum() == pytest.approx(2 * (6.0 + 1.5))


def test_nsd_and_hd95_empty_cases():
    empty = np.zeros((4, 4), bool)
    some = np.zeros((4, 4), bool)
    some[1, 1] = True
    assert math.isnan(nsd(empty, empty, (1.0, 1.0)))
    assert math.isnan(hd95(empty, empty, (1.0, 1.0)))
    assert nsd(some, empty, (1.0, 1.0)) == 0.0
    assert nsd(empty, some, (1.0, 1.0)) == 0.0
    assert hd95(some, empty, (1.0, 1.0)) == math.inf
    assert hd95(empty, some, (1.0, 1.0)) == math.inf


def test_surface_metrics_validate_shape_and_spacing():
    a = np.zeros((3, 3), bool)
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(3, 4\)"):
        nsd(a, np.zeros((3, 4), bool), (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 0.0))


def _bar_case():
    """truth = voxels (1,1),(1,2); pred = truth + (1,3), in a 3x5 grid."""
    truth = np.zeros((3, 5), bool)
    truth[1, 1:3] = True
    pred = truth.copy()
    pred[1, 3] = True
    return pred, truth


def test_nsd_hand_computed_anisotropic_differs_from_isotropic():
    pred, truth = _bar_case()
    # Only pred voxel (1,3) is off the truth surface; its distance is one step along axis 1.
    # spacing (2.0, 0.5): axis-0 faces area 0.5, axis-1 faces area 2.0.
    #   pred weights: (1,1) up+down+left = 0.5+0.5+2 = 3; (1,2) up+down = 1; (1,3) = 3 -> 7
    #   truth weights: (1,1) = 3, (1,2) = 3 -> 6; d(1,3) = 0.5 mm.
    aniso = (2.0, 0.5)
    assert nsd(pred, truth, aniso, tolerance_mm=0.25) == pytest.approx((7 - 3 + 6) / 13)
    assert nsd(pred, truth, aniso, tolerance_mm=0.5) == 1.0  # d <= tau is inclusive
    # isotropic 1 mm: weights pred 3 + 2 + 3 = 8, truth 3 + 3 = 6; d(1,3) = 1 mm > 0.5
    assert nsd(pred, truth, (1.0, 1.0), tolerance_mm=0.5) == pytest.approx((8 - 3 + 6) / 14)
    # swapped spacing: the step along axis 1 is now 2 mm; axis-1 faces area 0.5, axis-0 faces 2.0
    #   pred (1,1) = 2+2+0.5 = 4.5, (1,2) = 4, (1,3) = 4.5 -> 13; truth 4.5 + 4.5 = 9
    assert nsd(pred, truth, (0.5, 2.0), tolerance_mm=1.0) == pytest.approx((13 - 4.5 + 9) / 22)


def test_hd95_hand_computed_anisotropic_differs_from_isotropic():
    pred, truth = _bar_case()
    # pred->truth distances [0, 0, step] with the far voxel holding > 5% of the weight
    assert hd95(pred, truth, (2.0, 0.5)) == pytest.approx(0.5)
    assert hd95(pred, truth, (1.0, 1.0)) == pytest.approx(1.0)
    assert hd95(pred, truth, (0.5, 2.0)) == pytest.approx(2.0)
    # symmetric
    assert hd95(truth, pred, (2.0, 0.5)) == pytest.approx(0.5)


def test_hd95_weights_surface_voxels_by_exposed_area():
    # truth = 3x3 block with the top-middle voxel missing (a notch); pred = the full block.
    truth = np.zeros((5, 5), bool)
    truth[1:4, 1:4] = True
    truth[1, 2] = False
    pred = np.zeros((5, 5), bool)
    pred[1:4, 1:4] = True
    # Isotropic: the notch voxel (1,2) of pred is 1 mm from truth's surface and exposes 1 of pred's
    # 12 unit edges (8.3% > 5%) -> hd95 = 1.
    assert hd95(pred, truth, (1.0, 1.0)) == pytest.approx(1.0)
    # spacing (100, 1): the notch voxel exposes only its top face (area 1 mm) out of 606 mm of pred
    # surface, and truth's centre voxel (1 mm from pred's surface) exposes 1 of 806 mm: both under
    # 5% of their surface, so hd95 = 0 although the largest distance is 1 mm (1 of 8 voxels).
    assert hd95(pred, truth, (100.0, 1.0)) == 0.0
    sd = surface_distances(pred, truth, (100.0, 1.0))
    assert sd.pred_to_truth.max() == pytest.approx(1.0)
    assert sd.pred_weights.sum() == pytest.approx(606.0)
    assert sd.truth_weights.sum() == pytest.approx(806.0)


def test_weighted_percentile_is_smallest_value_reaching_the_fraction():
    values = np.arange(20.0)
    # equal weights: value 18 brings the cumulative fraction to exactly 19/20 = 0.95
    assert weighted_percentile(values, np.ones(20), 0.95) == 18.0
    # values in any order; a heavy last value pulls the percentile up to it
    w = np.ones(20)
    w[19] = 2.0  # cumulative fraction at 18 is 19/21 < 0.95
    assert weighted_percentile(values[::-1], w[::-1], 0.95) == 19.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.8), (3.0, 0.7)])
def test_hd95_of_shifted_square_equals_shift_in_mm(spacing):
    truth = np.zeros((30, 30), bool)
    truth[10:20, 5:15] = True
    pred = np.roll(truth, 3, axis=1)
    shift_mm = 3 * spacing[1]
    assert hd95(pred, truth, spacing) == pytest.approx(shift_mm)
    assert nsd(pred, truth, spacing, tolerance_mm=shift_mm) == pytest.approx(1.0)
    assert nsd(pred, truth, spacing, tolerance_mm=shift_mm * 0.99) < 1.0


def test_hd95_of_shifted_cube_3d_uses_spacing_of_shift_axis():
    truth = np.zeros((12, 10, 10), bool)
    truth[2:7, 2:7, 2:7] = True
    pred = np.roll(truth, 2, axis=0)
    assert hd95(pred, truth, (2.5, 1.0, 1.0)) == pytest.approx(5.0)
    assert hd95(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(2.0)
    assert nsd(pred, pred, (2.5, 1.0, 1.0)) == 1.0
    assert hd95(pred, pred, (2.5, 1.0, 1.0)) == 0.0


# ----------------------------------------------------------------------------------------------
# Calibration

# conf = max(p, 1-p): 0.92, 0.85, 0.72, 0.62, 0.97, 0.55 (none on a 1/10 or 1/15 bin edge)
# correct = 1[(p >= .5) == y]: 1, 0, 1, 1, 0, 0
_P = np.array([[0.92, 0.85, 0.28], [0.62, 0.03, 0.45]])
_Y = np.array([[1, 0, 0], [1, 1, 1]], bool)


def test_ece_15_bins_by_hand():
    # 15 bins: every voxel in its own bin -> mean |correct - conf|
    expected = (0.08 + 0.85 + 0.28 + 0.38 + 0.97 + 0.55) / 6
    assert ece(_P, _Y, n_bins=15) == pytest.approx(expected)
    assert ece(_P, _Y) == pytest.approx(expected)  # 15 is the default


def test_ece_10_bins_by_hand():
    # 10 bins: 0.92 (right) and 0.97 (wrong) share bin [0.9, 1]: acc 0.5, conf 0.945
    expected = (2 * abs(0.5 - 0.945) + 0.85 + 0.28 + 0.38 + 0.55) / 6
    assert ece(_P, _Y, n_bins=10) == pytest.approx(expected)


def test_ece_region_counts_only_selected_voxels():
    region = np.array([[1, 1, 1], [0, 0, 0]], bool)
    assert ece(_P, _Y, n_bins=15, region=region) == pytest.approx((0.08 + 0.85 + 0.28) / 3)
    assert math.isnan(ece(_P, _Y, region=np.zeros_like(region)))
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
        ece(_P, _Y, region=np.ones((2, 2), bool))


def test_reliability_curve_bins_and_conventions():
    curve = reliability_curve(_P, _Y, n_bins=10)
    np.testing.assert_allclose(curve.edges, np.linspace(0, 1, 11))
    np.testing.assert_array_equal(curve.counts, [0, 0, 0, 0, 0, 1, 1, 1, 1, 2])
    assert np.all(np.isnan(curve.accuracy[:5])) and np.all(np.isnan(curve.confidence[:5]))
    np.testing.assert_allclose(curve.accuracy[5:], [0, 1, 1, 0, 0.5])
    np.testing.assert_allclose(curve.confidence[5:], [0.55, 0.62, 0.72, 0.85, 0.945])
    # p = 1.0 falls in the last bin; p = 0.5 predicts foreground (correct when y = 1)
    c = reliability_curve(np.array([1.0, 0.0, 0.5]), np.array([1, 0, 1]), n_bins=15)
    assert c.counts[-1] == 2 and c.accuracy[-1] == 1.0
    assert c.counts[7] == 1 and c.accuracy[7] == 1.0  # c = 0.5 -> bin [7/15, 8/15)
    c0 = reliability_curve(np.array([0.5]), np.array([0]), n_bins=15)
    assert c0.accuracy[7] == 0.0
    # a confidence on a bin edge goes to the upper bin: 0.7 (from p = 0.7 or p = 0.3) -> [0.7, 0.8)
    ce = reliability_curve(np.array([0.7, 0.3]), np.array([1, 0]), n_bins=10)
    assert ce.counts[7] == 2


def test_nll_and_brier_by_hand():
    p = np.array([0.8, 0.3, 0.6])
    y = np.array([1, 0, 0])
    assert nll(p, y) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.4)) / 3)
    assert brier(p, y) == pytest.approx((0.04 + 0.09 + 0.36) / 3)
    region = np.array([True, True, False])
    assert nll(p, y, region=region) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert brier(p, y, region=region) == pytest.approx((0.04 + 0.09) / 2)
    # clipping: a confident wrong voxel costs -log(1e-7), not inf
    assert nll(np.array([0.0, 1.0]), np.array([1, 0])) == pytest.approx(-math.log(1e-7))
    assert math.isnan(brier(p, y, region=np.zeros(3, bool)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nll(np.array([1.2]), np.array([1]))


# ----------------------------------------------------------------------------------------------
# Uncertainty quality


def test_auroc_perfect_inverted_ties_and_partial():
    pos = np.array([0, 0, 1, 1], bool)
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), pos) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), pos) == 0.0
    assert auroc(np.full(4, 0.3), pos) == 0.5
    # pairs (pos, neg): (2,1) win, (2,3) loss, (4,1) win, (4,3) win -> 3/4
    assert auroc(np.array([1.0, 2, 3, 4]), np.array([0, 1, 0, 1], bool)) == pytest.approx(0.75)
    # (2,1) win, (2,2) tie = 1/2, (3,1) win, (3,2) win -> 3.5/4
    assert auroc(np.array([1.0, 2, 2, 3]), np.array([0, 1, 0, 1], bool)) == pytest.approx(0.875)
    assert math.isnan(auroc(np.arange(4.0), np.zeros(4, bool)))
    assert math.isnan(auroc(np.arange(4.0), np.ones(4, bool)))


def test_auroc_error_uses_wrong_voxels_and_region():
    unc = np.array([[0.9, 0.1], [0.2, 0.8]])
    pred = np.array([[1, 1], [0, 0]])
    truth = np.array([[0, 1], [0, 1]])  # wrong at (0,0) and (1,1): the most uncertain
    assert auroc_error(unc, pred, truth) == 1.0
    # region without (1,1): wrong 0.9 vs right 0.1, 0.2 -> 1.0 still; a region holding only
    # right voxels -> NaN
    assert auroc_error(unc, pred, truth, region=np.array([[1, 1], [1, 0]], bool)) == 1.0
    assert math.isnan(auroc_error(unc, pred, truth, region=np.array([[0, 1], [1, 0]], bool)))
    # swapping which voxels are wrong inverts it
    assert auroc_error(unc, pred, 1 - truth) == 0.0
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(4,\)"):
        auroc_error(unc, pred, np.zeros(4))


def test_error_share_in_top_by_hand():
    unc = np.arange(20, dtype=float)  # voxel i has uncertainty i
    errors = np.zeros(20, bool)
    errors[[19, 18, 5, 0]] = True
    # 10% of 20 = top 2 = voxels 19, 18: both errors, out of 4 errors
    assert error_share_in_top(unc, errors, fraction=0.10) == 0.5
    # 5% of 20 = top 1 = voxel 19
    assert error_share_in_top(unc, errors, fraction=0.05) == 0.25
    # ceil: 12% of 20 = 2.4 -> top 3 = 19, 18, 17
    assert error_share_in_top(unc, errors, fraction=0.12) == 0.5
    # 0.07 * 100 is 7.000000000000001 in floating point but means the top 7 (voxels 99..93)
    unc100 = np.arange(100, dtype=float)
    err100 = np.zeros(100, bool)
    err100[[99, 92]] = True
    assert error_share_in_top(unc100, err100, fraction=0.07) == 0.5
    assert math.isnan(error_share_in_top(unc, np.zeros(20, bool)))


def test_error_share_in_top_ties_break_by_stable_order_and_region():
    unc = np.array([0.9, 0.1, 0.9, 0.5, 0.9])
    # fraction 0.4 of 5 = top 2; three voxels tie at 0.9 -> the first two in order (0 and 2)
    assert error_share_in_top(unc, np.array([0, 0, 1, 0, 0], bool), fraction=0.4) == 1.0
    assert error_share_in_top(unc, np.array([0, 0, 0, 0, 1], bool), fraction=0.4) == 0.0
    # region drops voxel 0: top 2 of {1, 2, 3, 4} are 2 and 4
    region = np.array([0, 1, 1, 1, 1], bool)
    errors = np.array([1, 0, 0, 0, 1], bool)
    assert error_share_in_top(unc, errors, fraction=0.5, region=region) == 1.0
    with pytest.raises(ValueError, match="fraction"):
        error_share_in_top(unc, errors, fraction=0.0)
