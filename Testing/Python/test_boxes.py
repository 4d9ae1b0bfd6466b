"""Box prompts: the JSON format in every coordinate system, per-box rejection reasons, label-derived boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musclesam_test_helpers import DIRECTIONS, make_image
from MuscleSAMLib.engine.boxes import (box_from_canonical_rect, boxes_from_labels, boxes_to_json, load_boxes_file,
                                       nearest_slice, parse_boxes, validate_box)
from MuscleSAMLib.errors import GeometryError, InputError
from MuscleSAMLib.volumes import Volume, lps_ras, volume_from_array


def _volume(direction_name: str) -> tuple[Volume, np.ndarray]:
    """A (k, j, i) = (5, 40, 60) volume with a bright block at k=2, j=10..19, i=30..44 (file indices)."""
    arr = np.ones((5, 40, 60), np.float32)
    arr[2, 10:20, 30:45] = 100.0
    img = make_image(arr, DIRECTIONS[direction_name])
    return volume_from_array(arr, img.GetSpacing(), img.GetOrigin(), img.GetDirection()), arr


@pytest.mark.parametrize("name", ["LPS", "RAS", "oblique"])
def test_ijk_box_lands_on_the_same_voxels_in_canonical_space(name):
    vol, _ = _volume(name)
    boxes, rejected = parse_boxes({"boxes": [{"label": 3, "slice": 2, "xyxy": [30, 10, 44, 19]}]}, vol)
    assert rejected == []
    (box,) = boxes
    c0, r0, c1, r1 = box.xyxy
    region = vol.canonical_array[box.slice, r0:r1, c0:c1]
    assert region.shape == (10, 15) or region.shape == (15, 10)
    assert (region == 100).all()  # exactly the block, nothing around it
    assert (vol.canonical_array[box.slice] == 100).sum() == region.size


def test_json_round_trip_in_file_indices():
    vol, _ = _volume("RAS")
    doc = {"coordinates": "ijk", "boxes": [{"label": 5, "slice": 2, "xyxy": [30, 10, 44, 19]}]}
    boxes, _ = parse_boxes(doc, vol)
    assert boxes_to_json(boxes, vol) == doc


def test_physical_corners_lps_and_ras_agree():
    vol, _ = _volume("LPS")
    img = vol.image
    p0 = img.TransformIndexToPhysicalPoint((30, 10, 2))
    p1 = img.TransformIndexToPhysicalPoint((45, 20, 2))
    lps, _ = parse_boxes({"coordinates": "lps", "boxes": [{"label": "VL", "corners": [p0, p1]}]}, vol)
    ras_pts = [[-p[0], -p[1], p[2]] for p in (p0, p1)]
    ras, _ = parse_boxes({"coordinates": "ras", "boxes": [{"label": "vastus lateralis", "corners": ras_pts}]}, vol)
    assert lps[0].xyxy == ras[0].xyxy and lps[0].slice == ras[0].slice == 2 and lps[0].label == 3


@pytest.mark.parametrize("raw, reason", [
    ({"label": 3, "slice": 9, "xyxy": [1, 1, 10, 10]}, "slice 9 does not exist"),
    ({"label": 3, "slice": 1, "xyxy": [10, 10, 5, 20]}, "negative size"),
    ({"label": 3, "slice": 1, "xyxy": [10, 10, 10, 10]}, "degenerate"),
    ({"label": 3, "slice": 1, "xyxy": [500, 500, 600, 600]}, "outside the image"),
    ({"label": 42, "slice": 1, "xyxy": [1, 1, 10, 10]}, "unknown muscle label 42"),
    ({"label": 3, "slice": 1, "xyxy": [1, 1, 10]}, "four numbers"),
    ({"label": 3, "slice": 1, "xyxy": [1, "a", 10, 10]}, "not a finite number"),
])
def test_bad_box_is_rejected_with_its_reason_and_good_ones_still_run(raw, reason):
    vol, _ = _volume("LPS")
    good = {"label": 1, "slice": 2, "xyxy": [30, 10, 44, 19]}
    boxes, rejected = parse_boxes({"boxes": [good, raw]}, vol, source="b.json")
    assert len(boxes) == 1
    assert rejected[0][0] == "b.json box #1" and reason in rejected[0][1]


def test_box_partly_outside_is_clipped():
    vol, _ = _volume("LPS")
    boxes, rejected = parse_boxes({"boxes": [{"label": 1, "slice": 2, "xyxy": [50, 30, 80, 70]}]}, vol)
    assert rejected == [] and boxes[0].xyxy == (50, 30, 60, 40)


def test_non_axial_physical_box_refused():
    vol, _ = _volume("LPS")
    img = vol.image
    p0, p1 = img.TransformIndexToPhysicalPoint((30, 10, 0)), img.TransformIndexToPhysicalPoint((45, 20, 4))
    _, rejected = parse_boxes({"coordinates": "lps", "boxes": [{"label": 1, "corners": [p0, p1]}]}, vol)
    assert "draw it on one axial slice" in rejected[0][1]


def test_boxes_file_errors_name_the_file(tmp_path):
    vol, _ = _volume("LPS")
    with pytest.raises(InputError, match="nope.json: boxes JSON file not found"):
        load_boxes_file(tmp_path / "nope.json", vol)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(InputError, match="empty.json: not a valid boxes JSON"):
        load_boxes_file(empty, vol)
    none = tmp_path / "none.json"
    none.write_text(json.dumps({"boxes": []}))
    with pytest.raises(InputError, match="none.json: no usable box"):
        load_boxes_file(none, vol)


def test_boxes_from_labels_one_per_leg_per_muscle():
    labels = np.zeros((2, 30, 60), np.uint8)
    labels[1, 5:15, 5:20] = 3  # left leg
    labels[1, 8:18, 40:55] = 3  # right leg
    labels[1, 20:25, 5:10] = 7
    labels[1, 0, 0] = 7  # a stray voxel gets no box
    boxes = boxes_from_labels(labels)
    assert [(b.label, b.slice, b.xyxy) for b in boxes] == [
        (3, 1, (5, 5, 20, 15)), (3, 1, (40, 8, 55, 18)), (7, 1, (5, 20, 10, 25))]


@pytest.mark.parametrize("name", ["LPS", "RAS", "oblique"])
@pytest.mark.parametrize("k", [1.5, 2.5, 2.2, 2.0])
def test_boxes_file_and_scene_bridge_give_the_same_box_for_the_same_corners(name, k):
    """One physical-corners -> box rule: a boxes JSON file (CLI) and the bridge's RAS box agree, half-voxel ties too."""
    from MuscleSAMLib.scene_bridge.prompts import box_from_ras  # needs no MRML: only the engine Volume

    vol, _ = _volume(name)
    corners = [lps_ras(vol.physical_of_canonical_index(c, r, k)) for c, r in ((10.5, 4.2), (20.0, 13.5))]
    doc = {"coordinates": "ras", "boxes": [{"label": "VL", "corners": [list(p) for p in corners]}]}
    (from_file,), rejected = parse_boxes(doc, vol)
    from_bridge = box_from_ras(vol, "VL", corners[0], corners[1])
    assert rejected == []
    assert (from_file.slice, from_file.xyxy) == (from_bridge.slice, from_bridge.xyxy)
    assert from_file.xyxy == (11, 5, 21, 14)  # voxel centres inside, edges inclusive
    if name != "oblique":  # axis-aligned: the tie is exact in floating point
        assert from_file.slice == int(np.floor(k + 0.5))  # a tie goes to the higher slice (2.5 -> 3, not round()'s 2)


def test_nearest_slice_sends_every_half_voxel_tie_the_same_way():
    assert [nearest_slice(k) for k in (0.5, 1.5, 2.5, 3.5, 2.49, -0.5)] == [1, 2, 3, 4, 2, 0]


def test_lps_ras_is_its_own_inverse():
    p = np.array([[1.0, -2.0, 3.0], [-4.5, 5.5, -6.0]])
    assert np.array_equal(lps_ras(p), [[-1.0, 2.0, 3.0], [4.5, -5.5, -6.0]])
    assert np.array_equal(lps_ras(lps_ras(p)), p)


@settings(max_examples=200, deadline=None)
@given(lo=st.tuples(st.floats(-20, 80), st.floats(-20, 60)), size=st.tuples(st.floats(0, 70), st.floats(0, 50)),
       k=st.integers(-2, 7))
def test_the_box_rule_refuses_or_returns_a_box_that_can_run(lo, size, k):
    """box_from_canonical_rect is the one check a drawn box needs: what it returns always passes validate_box."""
    vol, _ = _volume("oblique")
    lo_arr = np.array(lo)
    try:
        box = box_from_canonical_rect(vol, 3, lo_arr, lo_arr + np.array(size), k)
    except GeometryError:
        return
    assert validate_box(box, vol.canonical_array.shape) is None
