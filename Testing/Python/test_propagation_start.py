"""Which boxes Propagate walks (scene_bridge.prompts.propagation_starts / last_run_boxes / walk_names, the rules
both front ends use): one box per leg on the newest box's slice, also right after a Segment used them."""

from __future__ import annotations

from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.scene_bridge.prompts import last_run_boxes, propagation_starts, walk_names


def _box(label: int, slice_: int, col: int = 10) -> BoxPrompt:
    return BoxPrompt(label, slice_, (col, 10, col + 30, 40))


def test_the_muscles_pending_boxes_on_its_newest_boxs_slice_walk():
    older, right, other, left = _box(3, 5), _box(3, 6, 10), _box(2, 6), _box(3, 6, 200)
    assert propagation_starts([older, right, other, left], {3: [_box(3, 1)]}, 3) == ([right, left], [right, left])
    assert propagation_starts([older, other], {}, "RF") == ([other], [other])  # abbreviations as everywhere
    assert propagation_starts([older, right], {}, "VL")[1] == [right]  # an older slice's box does not walk too


def test_pending_roi_items_become_boxes_through_the_callers_converter():
    class Roi:  # what a front end keeps pending: a node the bridge turns into a box
        def __init__(self, box):
            self.box = box

        def GetAttribute(self, name):  # noqa: N802 - MRML's spelling
            return str(self.box.label)

        def GetName(self):  # noqa: N802
            return "roi"

    a, b = Roi(_box(3, 4, 10)), Roi(_box(3, 4, 200))
    used, boxes = propagation_starts([a, b], {}, 3, lambda roi: roi.box)
    assert used == [a, b] and boxes == [a.box, b.box]


def test_after_a_run_consumed_the_boxes_its_boxes_of_that_muscle_walk():
    ran = [_box(3, 6, 10), _box(2, 6), _box(3, 7, 10), _box(3, 7, 200)]
    last = last_run_boxes(ran)
    assert last == {3: [ran[2], ran[3]], 2: [ran[1]]}  # both legs on the slice of the muscle's last box
    assert propagation_starts([], last, 3) == ([], [ran[2], ran[3]])
    assert propagation_starts([_box(2, 7)], last, "VL") == ([], [ran[2], ran[3]])
    assert propagation_starts([], last, 5) == ([], [])  # never another muscle's box


def test_without_pending_boxes_the_boxes_standing_now_walk():
    ran = [_box(3, 7, 200)]  # the last run boxed one leg; an earlier run boxed the other
    both = [_box(3, 7, 10), _box(3, 7, 200)]
    asked = []

    def standing(last):
        asked.append(last)
        return both

    assert propagation_starts([], last_run_boxes(ran), 3, standing=standing) == ([], both)
    assert asked == [ran]
    assert propagation_starts([], {}, 3, standing=standing) == ([], []) and len(asked) == 1  # nothing to ask about


def test_walks_are_named_by_the_side_of_the_midline_their_box_lies_on():
    assert walk_names([_box(3, 1, 10)], 128.0) == [""]
    assert walk_names([_box(3, 1, 10), _box(3, 1, 200)], 128.0) == ["right side: ", "left side: "]
    assert walk_names([_box(3, 1, 10), _box(3, 1, 50), _box(3, 1, 200)], 128.0) == [
        "right side box 1: ", "right side box 2: ", "left side: "]
    assert walk_names([_box(3, 1, 10), _box(3, 1, 200)], 5.0) == ["left side box 1: ", "left side box 2: "]
    assert walk_names([_box(3, 1, 10), _box(3, 1, 200)], None) == ["box 1: ", "box 2: "]  # legs not told apart
