"""Box baselines: fill-the-box (smaller box wins an overlap) and Slicer's GrowCut seeded from boxes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from musclesam_test_helpers import installed
from MuscleSAMLib.baselines import (
    boxfill_labels,
    centre_seed,
    growcut_2d,
    growcut_labels,
    paint_order,
    seed_map,
    slicer_growcut_available,
)
from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.errors import InputError
from MuscleSAMLib.metrics import dice_per_label, mean_dice
from MuscleSAMLib.phantoms import make_thigh_phantom

# skipped only when slicer-core is not installed; installed but broken, these tests fail (growcut says why)
needs_slicer = pytest.mark.skipif(not installed("slicer-core"), reason="slicer-core is not installed")
MUSCLES = range(1, 12)


# ------------------------------------------------------------------------------------------ boxfill
def test_boxfill_smaller_box_wins_overlap_whatever_the_order():
    big = BoxPrompt(label=3, slice=1, xyxy=(2, 1, 10, 7))    # cols 2..9, rows 1..6: 8 x 6 = 48
    small = BoxPrompt(label=5, slice=1, xyxy=(7, 4, 12, 8))  # cols 7..11, rows 4..7: 5 x 4 = 20
    other = BoxPrompt(label=9, slice=0, xyxy=(0, 0, 2, 2))
    expected = np.zeros((2, 10, 14), np.uint8)
    expected[1, 1:7, 2:10] = 3
    expected[1, 4:8, 7:12] = 5  # the overlap rows 4..6, cols 7..9 goes to the smaller box
    expected[0, 0:2, 0:2] = 9
    for boxes in ([big, small, other], [small, other, big]):
        out = boxfill_labels(boxes, (2, 10, 14))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)


def test_boxfill_equal_areas_are_order_independent_and_half_open():
    a = BoxPrompt(label=2, slice=0, xyxy=(0, 0, 4, 4))
    b = BoxPrompt(label=7, slice=0, xyxy=(2, 2, 6, 6))
    one = boxfill_labels([a, b], (1, 8, 8))
    np.testing.assert_array_equal(one, boxfill_labels([b, a], (1, 8, 8)))
    assert one[0, 3, 3] == 7  # tie: the later box in (label, xyxy) order wins
    assert one[0, 0, 4] == 0 and one[0, 4, 0] == 0  # col1 / row1 are exclusive
    assert [x.label for x in paint_order([b, a])] == [2, 7]


def test_boxfill_reproduces_the_labels_of_disjoint_rectangles():
    labels = np.zeros((1, 20, 30), np.uint8)
    labels[0, 2:8, 3:12] = 4
    labels[0, 10:18, 15:28] = 6
    np.testing.assert_array_equal(boxfill_labels(boxes_from_labels(labels), labels.shape), labels)


@pytest.mark.parametrize("box", [BoxPrompt(1, 3, (0, 0, 4, 4)), BoxPrompt(1, 0, (0, 0, 0, 4)),
                                 BoxPrompt(1, 0, (5, 0, 11, 4)), BoxPrompt(0, 0, (0, 0, 4, 4)),
                                 BoxPrompt(1, 0, (-1, 0, 4, 4))])
def test_boxfill_rejects_boxes_that_do_not_fit(box):
    with pytest.raises(InputError):
        boxfill_labels([box], (2, 10, 10))


# ------------------------------------------------------------------------------------ seed geometry
def test_centre_seed_is_the_centred_20_percent():
    rows, cols = centre_seed(BoxPrompt(1, 0, (10, 20, 20, 45)))  # 10 wide, 25 high
    assert (cols.start, cols.stop) == (14, 16)  # 2 columns, centred
    assert (rows.start, rows.stop) == (30, 35)  # 5 rows, centred
    rows, cols = centre_seed(BoxPrompt(1, 0, (0, 0, 2, 3)))  # tiny box: at least one pixel
    assert cols.stop - cols.start == 1 and rows.stop - rows.start == 1


def test_seed_map_frame_is_two_pixels_outside_and_clipped():
    box = BoxPrompt(label=4, slice=0, xyxy=(1, 3, 6, 8))
    seeds = seed_map([box], 12, 10)
    frame = np.zeros((12, 10), bool)
    frame[1:10, 0:8] = True  # box grown by 2, clipped at col 0
    frame[3:8, 1:6] = False
    assert (seeds[frame] == 256).all()
    assert (seeds[~frame & (seeds == 256)]).size == 0
    r, c = centre_seed(box)
    assert (seeds[r, c] == 4).all()
    assert np.count_nonzero(seeds == 4) == (r.stop - r.start) * (c.stop - c.start)


# ------------------------------------------------------------------------------------------ growcut
@needs_slicer
def test_growcut_2d_separates_two_flat_regions():
    img = np.zeros((20, 30), np.float32)
    img[:, 15:] = 100.0
    seeds = np.zeros((20, 30), np.uint16)
    seeds[10, 3] = 1
    seeds[10, 27] = 2
    out = growcut_2d(img, seeds)
    assert out.dtype == np.uint16
    assert (out[:, :15] == 1).all() and (out[:, 15:] == 2).all()  # border pixels included


@pytest.fixture(scope="module")
def phantom():
    ph = make_thigh_phantom(seed=0, shape=(2, 128, 192))
    return ph, boxes_from_labels(ph.labels)


@needs_slicer
def test_growcut_on_phantom_beats_boxfill_and_respects_the_seeds(phantom):
    ph, boxes = phantom
    out = growcut_labels(ph.water, boxes, ph.shape)  # default mode: per_box (METHODS' setting)
    assert out.dtype == np.uint8 and out.shape == ph.shape
    per = dice_per_label(out, ph.labels, MUSCLES)
    fill = mean_dice(dice_per_label(boxfill_labels(boxes, ph.shape), ph.labels, MUSCLES))
    # Measured: mean 0.897 (boxfill 0.772); every muscle >= 0.90 except the C-shaped vastus
    # intermedius (label 4, 0.43: its box is mostly femur and neighbours of the same intensity).
    assert mean_dice(per) > 0.85 and mean_dice(per) > fill + 0.08
    assert sum(v >= 0.85 for v in per.values()) >= 10
    assert min(per.values()) > 0.3
    _assert_respects_boxes(out, boxes)
    # The centre seed is always the muscle unless a smaller box painted over it.
    order = paint_order(boxes)
    for n, b in enumerate(order):
        r, c = centre_seed(b)
        later = np.zeros(ph.shape[1:], bool)
        for x in order[n + 1:]:
            if x.slice == b.slice:
                later[x.xyxy[1]:x.xyxy[3], x.xyxy[0]:x.xyxy[2]] = True
        seed_px = np.zeros(ph.shape[1:], bool)
        seed_px[r, c] = True
        assert (out[b.slice][seed_px & ~later] == b.label).all()


@needs_slicer
def test_growcut_joint_mode_keeps_seeds_and_stays_in_boxes(phantom):
    ph, boxes = phantom
    out = growcut_labels(ph.water, boxes, ph.shape, mode="joint")
    _assert_respects_boxes(out, boxes)
    for k in {b.slice for b in boxes}:
        seeds = seed_map([b for b in boxes if b.slice == k], *ph.shape[1:])
        muscle = (seeds > 0) & (seeds < 256)
        np.testing.assert_array_equal(out[k][muscle], seeds[muscle])
        assert (out[k][seeds == 256] == 0).all()
    # Muscles compete with background frames that cross their neighbours: measured mean 0.36.
    assert mean_dice(dice_per_label(out, ph.labels, MUSCLES)) > 0.2


def _assert_respects_boxes(out: np.ndarray, boxes: list[BoxPrompt]) -> None:
    """Every labelled voxel lies inside a box of its own label."""
    allowed = np.zeros(out.shape, bool)
    for b in boxes:
        c0, r0, c1, r1 = b.xyxy
        allowed[b.slice, r0:r1, c0:c1] |= out[b.slice, r0:r1, c0:c1] == b.label
    assert not (out.astype(bool) & ~allowed).any()


@needs_slicer
def test_growcut_rejects_bad_inputs():
    img = np.zeros((1, 10, 10), np.float32)
    box = BoxPrompt(1, 0, (2, 2, 6, 6))
    with pytest.raises(InputError, match="shape"):
        growcut_labels(img, [box], (1, 10, 11))
    with pytest.raises(InputError, match="mode"):
        growcut_labels(img, [box], mode="nope")
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        growcut_labels(bad, [box])
    assert growcut_labels(img, [], (1, 10, 10)).sum() == 0


def test_growcut_without_slicer_core_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "slicer", None)  # makes "from slicer import ..." fail
    assert not slicer_growcut_available()
    with pytest.raises(InputError, match="web"):
        growcut_labels(np.zeros((1, 8, 8), np.float32), [BoxPrompt(1, 0, (1, 1, 5, 5))])
