"""Propagate right after Segment (scene_bridge.prompts.propagation_start, the rule both front ends use)."""

from __future__ import annotations

from MuscleSAMLib.engine.types import BoxPrompt
from MuscleSAMLib.scene_bridge.prompts import propagation_start


def _box(label: int, slice_: int) -> BoxPrompt:
    return BoxPrompt(label, slice_, (10, 10, 40, 40))


def test_the_newest_pending_box_of_the_muscle_wins():
    older, newer, other = _box(3, 5), _box(3, 6), _box(2, 6)
    assert propagation_start([older, other, newer], {3: _box(3, 1)}, 3) is newer
    assert propagation_start([older, other, newer], {}, "RF") is other  # abbreviations as everywhere


def test_after_a_run_consumed_the_boxes_the_last_used_box_of_that_muscle_is_used():
    used = _box(3, 7)
    assert propagation_start([], {3: used}, 3) is used
    assert propagation_start([_box(2, 7)], {3: used}, "VL") is used
    assert propagation_start([], {3: used}, 5) is None  # never another muscle's box
