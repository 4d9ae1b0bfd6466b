"""Tests of the synthetic bilateral thigh Dixon phantom (MuscleSAMLib.phantoms)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from MuscleSAMLib.phantoms import (GRADES, MUSCLE_NAMES, ThighPhantom, make_thigh_phantom)

MUSCLE, SUBCUT_FAT = 3, 2


@pytest.fixture(scope="module")
def phantoms() -> dict[str, ThighPhantom]:
    """One phantom per grade, same seed (same anatomy), default shape."""
    return {g: make_thigh_phantom(seed=3, grade=g) for g in GRADES}


def test_shapes_dtypes_spacing(phantoms: dict[str, ThighPhantom]) -> None:
    ph = phantoms["early"]
    assert ph.shape == (8, 128, 192)
    for arr, dt in ((ph.water, np.float32), (ph.fat, np.float32), (ph.labels, np.uint8),
                    (ph.tissue, np.uint8), (ph.fat_fraction, np.float32)):
        assert arr.shape == (8, 128, 192)
        assert arr.dtype == dt
    assert ph.spacing == (6.0, 1.5, 1.5)
    assert ph.grade == "early" and ph.seed == 3
    assert ph.muscle_names == MUSCLE_NAMES
    assert set(np.unique(ph.labels)) == set(range(12))
    assert set(np.unique(ph.tissue)) == set(range(7))
    assert ph.water.min() >= 0 and ph.fat.min() >= 0
    assert 600 < ph.water.max() < 1400 and 600 < ph.fat.max() < 1400
    assert np.all((ph.fat_fraction >= 0) & (ph.fat_fraction <= 1))

    other = make_thigh_phantom(shape=(3, 96, 160), spacing=(5.0, 2.0, 1.8))
    assert other.shape == (3, 96, 160) and other.spacing == (5.0, 2.0, 1.8)


def test_deterministic_by_seed() -> None:
    a = make_thigh_phantom(seed=11, shape=(3, 128, 192))
    b = make_thigh_phantom(seed=11, shape=(3, 128, 192))
    c = make_thigh_phantom(seed=12, shape=(3, 128, 192))
    for name in ("water", "fat", "labels", "tissue", "fat_fraction"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.labels, c.labels)
    assert not np.array_equal(a.water, c.water)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_muscle_on_every_slice_in_both_legs(seed: int) -> None:
    ph = make_thigh_phantom(seed=seed, noise=0.0)
    nx = ph.shape[2]
    for z in range(ph.shape[0]):
        for k in MUSCLE_NAMES:
            mask = ph.labels[z] == k
            comp, n = ndi.label(mask)
            assert n == 2, f"seed {seed} slice {z} label {k}: {n} components"
            left, right = mask[:, : nx // 2].sum(), mask[:, nx // 2:].sum()
            assert min(left, right) >= 40, f"seed {seed} slice {z} label {k}: {left}, {right}"


def test_labels_only_on_muscle_tissue(phantoms: dict[str, ThighPhantom]) -> None:
    ph = phantoms["moderate"]
    assert np.all(ph.tissue[ph.labels > 0] == MUSCLE)
    # Muscle tissue without a label exists (unlabelled adductor longus) but is a minority.
    unlabelled = (ph.tissue == MUSCLE) & (ph.labels == 0)
    assert 0 < unlabelled.sum() < 0.25 * (ph.tissue == MUSCLE).sum()


def test_muscle_subset_labels_only_those_and_same_image() -> None:
    full = make_thigh_phantom(seed=5, shape=(2, 128, 192))
    sub = make_thigh_phantom(seed=5, shape=(2, 128, 192), muscles=[3, 6, 6])
    assert set(np.unique(sub.labels)) == {0, 3, 6}
    assert sub.muscle_names == {3: MUSCLE_NAMES[3], 6: MUSCLE_NAMES[6]}
    np.testing.assert_array_equal(sub.water, full.water)
    np.testing.assert_array_equal(sub.labels[np.isin(full.labels, [3, 6])],
                                  full.labels[np.isin(full.labels, [3, 6])])


def test_fat_fraction_increases_with_grade(phantoms: dict[str, ThighPhantom]) -> None:
    medians = []
    for g in ("early", "moderate", "severe"):
        ph = phantoms[g]
        m = ph.labels > 0
        measured = ph.fat[m] / (ph.fat[m] + ph.water[m] + 1e-6)
        medians.append(float(np.median(measured)))
        assert abs(medians[-1] - GRADES[g]) < 0.1, (g, medians[-1])
    assert medians[0] < medians[1] < medians[2]


def test_dixon_contrast(phantoms: dict[str, ThighPhantom]) -> None:
    for g in ("early", "severe"):
        ph = phantoms[g]
        muscle, fat = ph.labels > 0, ph.tissue == SUBCUT_FAT
        assert np.median(ph.water[muscle]) > 1.5 * np.median(ph.water[fat]), g
        assert np.median(ph.fat[fat]) > 1.5 * np.median(ph.fat[muscle]), g
    ph = phantoms["early"]
    # Marrow is fat-bright, cortical bone dark in both images.
    assert np.median(ph.fat[ph.tissue == 6]) > 3 * np.median(ph.fat[ph.tissue == 5])
    assert np.median(ph.water[ph.tissue == 5]) < 0.2 * np.median(ph.water[ph.labels > 0])


def test_noise_free_images_match_truth_fat_fraction() -> None:
    ph = make_thigh_phantom(seed=2, shape=(2, 128, 192), noise=0.0, grade="moderate")
    body = ph.tissue > 0
    total = ph.fat[body] + ph.water[body]
    ok = total > 50  # cortical bone has almost no signal
    np.testing.assert_allclose((ph.fat[body] / total)[ok], ph.fat_fraction[body][ok], atol=1e-4)


def test_layout_is_mirrored_anatomically(phantoms: dict[str, ThighPhantom]) -> None:
    """Vastus lateralis lies lateral and gracilis medial in both legs; quadriceps anterior."""
    lab = phantoms["early"].labels[4]
    nx = lab.shape[1]

    def cx(k: int, half: slice) -> float:
        return float(np.nonzero(lab[:, half] == k)[1].mean()) + (half.start or 0)

    def cy(k: int) -> float:
        return float(np.nonzero(lab == k)[0].mean())

    left, right = slice(0, nx // 2), slice(nx // 2, nx)
    assert cx(3, left) < cx(7, left) and cx(3, right) > cx(7, right)
    assert cy(2) < cy(6) < cy(9)  # rectus femoris anterior, adductor magnus, semitendinosus


@pytest.mark.parametrize("kwargs, match", [
    (dict(grade="mild"), "unknown grade"),
    (dict(shape=(4, 40, 60)), "too small"),
    (dict(shape=(0, 128, 192)), "no slices"),
    (dict(shape=(4, 128)), "three integers"),
    (dict(spacing=(1.0, 0.0, 1.0)), "spacing"),
    (dict(muscles=[1, 12]), "bad muscle label 12"),
    (dict(muscles=[0]), "bad muscle label 0"),
    (dict(noise=-0.1), "noise"),
    (dict(seed=-1), "seed"),
])
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_thigh_phantom(**kwargs)
