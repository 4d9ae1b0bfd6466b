"""Biomarkers: volumes, cross-sectional areas, sides and Dixon fat fraction with member intervals, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from MuscleSAMLib.biomarkers import fat_fraction_map, muscle_biomarkers


def _two_legs() -> np.ndarray:
    labels = np.zeros((2, 10, 20), np.uint8)
    labels[:, 2:6, 2:6] = 3     # patient right leg (low columns): 16 px per slice
    labels[0, 2:4, 14:18] = 3   # left leg: 8 px on slice 0 only
    return labels


def test_volume_and_area_per_side_with_anisotropic_spacing():
    spacing = (5.0, 2.0, 0.5)  # voxel = 5 mm3
    res = {(b.label, b.side): b for b in muscle_biomarkers(_two_legs(), spacing)}
    right, left, both = res[(3, "right")], res[(3, "left")], res[(3, "both")]
    assert right.volume_ml == pytest.approx(32 * 5.0 / 1000)
    assert left.volume_ml == pytest.approx(8 * 5.0 / 1000)
    assert both.volume_ml == pytest.approx(40 * 5.0 / 1000)
    assert right.mean_csa_mm2 == pytest.approx(16 * 1.0) and right.n_slices == 2
    assert left.mean_csa_mm2 == pytest.approx(8 * 1.0) and left.n_slices == 1
    assert right.volume_ml_interval is None  # no members given


def test_member_intervals_bracket_member_spread():
    labels = _two_legs()
    members = np.stack([labels == 3, labels == 3, labels == 3])
    members[1, :, 6, 2:6] = True  # member 1 is 4 px per slice larger on the right leg
    members[2, 1] = False         # member 2 misses slice 1
    res = {(b.label, b.side): b for b in muscle_biomarkers(labels, (1.0, 1.0, 1.0), member_masks={3: members})}
    lo, hi = res[(3, "right")].volume_ml_interval
    assert lo == pytest.approx(16 / 1000) and hi == pytest.approx(40 / 1000)


def test_fat_fraction_mean_median_and_interval():
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, :2, :2] = 1
    fat = np.zeros((1, 4, 4))
    water = np.ones((1, 4, 4))
    fat[0, :2, :2] = [[1, 1], [1, 3]]  # ff = 0.5, 0.5, 0.5, 0.75
    members = np.stack([labels == 1, np.zeros_like(labels, bool)])
    members[1, 0, 0, 0] = True  # member 1: only the first voxel (ff 0.5)
    (b,) = [x for x in muscle_biomarkers(labels, (1, 1, 1), member_masks={1: members}, fat=fat, water=water) if x.side == "both"]
    assert b.fat_fraction_mean == pytest.approx((0.5 * 3 + 0.75) / 4)
    assert b.fat_fraction_median == pytest.approx(0.5)
    assert b.fat_fraction_mean_interval == pytest.approx((0.5, (0.5 * 3 + 0.75) / 4))


def test_fat_fraction_map_handles_empty_signal():
    ff = fat_fraction_map(np.array([0.0, 1.0, 3.0]), np.array([0.0, 1.0, 1.0]))
    assert np.isnan(ff[0]) and ff[1] == 0.5 and ff[2] == 0.75


def test_one_segmented_leg_is_not_split_in_two():
    """The midline comes from the MRI (gap between the thighs), not from the segmented voxels."""
    from MuscleSAMLib.biomarkers import midline_column

    image = np.zeros((1, 10, 40))
    image[0, 2:8, 3:17] = 100.0   # right thigh
    image[0, 2:8, 23:37] = 100.0  # left thigh
    labels = np.zeros((1, 10, 40), np.uint8)
    labels[0, 3:7, 4:16] = 2      # only the right leg segmented
    assert 17 <= midline_column(labels, image) <= 22
    rows = {(b.label, b.side) for b in muscle_biomarkers(labels, (1.0, 1.0, 1.0), image=image)}
    assert (2, "right") in rows and (2, "left") not in rows
