"""The "legs" prompt geometry: one crop per thigh, cut by one rule in training and in the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MuscleSAMLib.engine.boxes import boxes_from_labels
from MuscleSAMLib.engine.segmenter import Segmenter, mirror_box
from MuscleSAMLib.engine.types import BoxPrompt, Window
from MuscleSAMLib.errors import InputError
from MuscleSAMLib.intensity import normalize_mri
from MuscleSAMLib.leg_layout import LegLayout, leg_layout
from MuscleSAMLib.models.ensemble import Ensemble
from MuscleSAMLib.phantoms import make_thigh_phantom
from MuscleSAMLib.training.embedding_store import DixonCase


@pytest.fixture(scope="module")
def phantom():
    return make_thigh_phantom(seed=1, shape=(4, 96, 144), spacing=(6.0, 2.0, 2.0))


@pytest.fixture(scope="module")
def legs_ensemble():
    return Ensemble.random("demo_xs", "decoder", members=2, seed=5, prompt_geometry="legs")


def _side(layout, cols: int, leg: int) -> np.ndarray:
    c = np.arange(cols)
    return c < layout.midline if leg == 0 else c > layout.midline


def test_each_leg_window_holds_all_of_its_legs_muscles_at_one_shared_scale(phantom):
    layout = leg_layout(normalize_mri(phantom.water))
    assert layout is not None
    (r0, r1, c0, c1), (s0, s1, d0, d1) = layout.windows
    assert (r1 - r0, c1 - c0) == (s1 - s0, d1 - d0)  # one scale for both legs
    assert c0 < layout.midline < d1 and c1 <= phantom.water.shape[2] and d0 >= 0
    cols = phantom.water.shape[2]
    for leg, (a, b, c, d) in enumerate(layout.windows):
        muscle = (phantom.labels > 0) & _side(layout, cols, leg)[None, None]
        inside = np.zeros_like(muscle)
        inside[:, a:b, c:d] = True
        assert muscle.sum() > 0 and (muscle & ~inside).sum() == 0
    for box in boxes_from_labels(phantom.labels):
        x0, y0, x1, y1 = box.xyxy
        r0, r1, c0, c1 = layout.window_of(box.xyxy)
        assert c0 <= x0 and x1 <= c1 and r0 <= y0 and y1 <= r1  # every tight box lies inside its leg's crop


def test_no_gap_between_the_legs_means_no_layout():
    one_blob = np.zeros((3, 64, 64), np.float32)
    one_blob[:, 10:54, 8:56] = 200.0  # one body across the middle: the legs cannot be told apart
    assert leg_layout(one_blob) is None
    with pytest.raises(ValueError, match="expected a canonical"):
        leg_layout(one_blob[0])


def test_mirrored_layout_is_the_window_for_window_mirror(phantom):
    layout = leg_layout(normalize_mri(phantom.water))
    cols = phantom.water.shape[2]
    m = layout.mirrored(cols)
    assert m.windows[0] == (layout.windows[1][0], layout.windows[1][1], cols - layout.windows[1][3], cols - layout.windows[1][2])
    assert m.mirrored(cols) == layout
    box = BoxPrompt(1, 0, (10, 20, 30, 40))
    assert m.side_of(mirror_box(box, cols).xyxy) == 1 - layout.side_of(box.xyxy)


def test_training_crops_are_what_the_engine_encodes(phantom):
    """DixonCase.legs(): each leg's crop of the whole volume's normalised contrasts, the labels of its own side
    only; the engine crops the same pixels from the same normalisation."""
    case = DixonCase("ph", phantom.water, phantom.fat, phantom.labels.astype(np.uint8))
    legs = case.legs()
    layout = leg_layout(case.contrast("water"))
    n, cols = phantom.water.shape[0], phantom.water.shape[2]
    seg = Segmenter(Ensemble.random("demo_xs", "decoder", members=1, prompt_geometry="legs"), phantom.water)
    assert seg.layout == layout
    for leg, (r0, r1, c0, c1) in enumerate(layout.windows):
        part = slice(leg * n, (leg + 1) * n)
        np.testing.assert_array_equal(legs.contrast("water")[part], seg.image[:, r0:r1, c0:c1])
        np.testing.assert_array_equal(legs.contrast("fat")[part], case.contrast("fat")[:, r0:r1, c0:c1])
        own = _side(layout, cols, leg)[c0:c1]
        np.testing.assert_array_equal(legs.labels[part][:, :, own], case.labels[:, r0:r1, c0:c1][:, :, own])
        assert not legs.labels[part][:, :, ~own].any()  # the other leg's muscles are not this crop's targets
    assert (legs.labels > 0).sum() == (case.labels > 0).sum()  # every labelled voxel in exactly one crop


def test_legs_engine_answers_a_box_as_a_whole_slice_engine_answers_it_on_the_crop(phantom, legs_ensemble):
    seg = Segmenter(legs_ensemble, phantom.water)
    layout = seg.layout
    boxes = boxes_from_labels(phantom.labels, slices=[1])
    leg0 = [b for b in boxes if layout.side_of(b.xyxy) == 0][:2]
    leg1 = [b for b in boxes if layout.side_of(b.xyxy) == 1][:1]
    got = seg.predict_slice(1, [leg0[0], leg1[0], leg0[1]]).boxes
    assert [p.box for p in got] == [leg0[0], leg1[0], leg0[1]]  # the caller's order
    assert seg.stats.encoder_calls == 2  # one pass per leg, shared by that leg's boxes
    plain = Ensemble.random("demo_xs", "decoder", members=2, seed=5)  # the same weights, whole-slice geometry
    for p in got:
        r0, r1, c0, c1 = layout.window_of(p.box.xyxy)
        crop = Segmenter(plain, phantom.water[:, r0:r1, c0:c1], window=seg.window)
        x0, y0, x1, y1 = p.box.xyxy
        local = crop.predict_slice(1, [BoxPrompt(p.box.label, 1, (x0 - c0, y0 - r0, x1 - c0, y1 - r0))]).boxes[0]
        w = p.window
        assert (w.r0, w.c0) == (local.window.r0 + r0, local.window.c0 + c0) and w.shape == local.window.shape
        np.testing.assert_allclose(p.member_probs, local.member_probs, atol=1e-5)
    seg.predict_slice(1, leg1)
    assert seg.stats.encoder_calls == 2


def test_legs_precompute_encodes_both_legs_and_clicks_stay_on_the_boxs_leg(phantom, legs_ensemble):
    seg = Segmenter(legs_ensemble, phantom.water)
    fut, _ = seg.precompute(center=2, radius=0)
    assert fut.result(timeout=60) == [2] and seg.stats.encoder_calls == 2
    box = next(b for b in boxes_from_labels(phantom.labels, slices=[2]) if seg.layout.side_of(b.xyxy) == 0)
    far = int(seg.layout.windows[0][3]) + 2  # a column past the box's leg crop
    clicked = BoxPrompt(box.label, 2, box.xyxy, "box #3", ((far, box.xyxy[1], 1),))
    res = seg.predict_slice(2, [box, clicked])
    assert len(res.boxes) == 1 and seg.stats.encoder_calls == 2  # precomputed
    assert "outside the box's leg" in res.rejected[0][1] and "box #3" in res.rejected[0][1]
    inside = BoxPrompt(box.label, 2, box.xyxy, "box #4", ((box.xyxy[0] + 1, box.xyxy[1] + 1, 0),))
    assert len(seg.predict_slice(2, [inside]).boxes) == 1


def test_legs_ensemble_without_a_gap_uses_whole_slices_and_says_so(legs_ensemble):
    img = np.zeros((2, 64, 64), np.float32)
    img[:, 10:54, 8:56] = 200.0
    seg = Segmenter(legs_ensemble, img)
    assert seg.layout is None and "no gap between the thighs" in seg.stats.extra["geometry"]
    res = seg.predict_slice(0, [BoxPrompt(1, 0, (20, 20, 40, 40))])
    assert len(res.boxes) == 1 and seg.stats.encoder_calls == 1


def test_one_slice_prediction_refuses_the_legs_geometry(legs_ensemble):
    with pytest.raises(InputError, match="legs"):
        legs_ensemble.predict(np.zeros((64, 64), np.float32), np.array([[10.0, 10.0, 20.0, 20.0]]))


def test_store_window_never_leaves_the_crop():
    assert Window(0, 10, 5, 20).intersect(Window(3, 30, 0, 12)) == Window(3, 10, 5, 12)


def test_the_small_trainer_renders_a_box_in_its_legs_crop_as_validation_prepares_it(phantom):
    """Learning from corrections of a legs ensemble trains on the crops inference uses (one crop rule)."""
    import dataclasses

    from MuscleSAMLib.training.config import TrainConfig
    from MuscleSAMLib.training.data import Sample, case_from_arrays, render
    from MuscleSAMLib.training.model_io import prepare_box

    case = case_from_arrays("ph", phantom.water, phantom.labels)
    box = next(b for b in boxes_from_labels(phantom.labels, slices=[1]) if case.legs.side_of(b.xyxy) == 1)
    cfg = dataclasses.replace(TrainConfig(train=[]), prompt_geometry="legs", box_mask_prompt=False)
    mean, std = torch.zeros(3), torch.ones(3)
    x, bm, _ = render(case, Sample(0, 1, box.label, box.xyxy), cfg, 64, 16, mean, std, None)
    x2, bm2, geo, win = prepare_box(case.image[1], box.xyxy, 64, 0.0, "legs", mean, std, case.legs)
    assert win == case.legs.windows[1] and (geo.rows, geo.cols) == (win[1] - win[0], win[3] - win[2])
    assert torch.equal(x, x2) and torch.allclose(bm, bm2)


def test_a_box_centred_on_the_midline_is_answered_in_mirrored_crops_by_both_views(phantom, legs_ensemble):
    seg = Segmenter(legs_ensemble, phantom.water, mirror=True)
    mid = seg.layout.midline
    x0 = int(mid) - 5
    box = BoxPrompt(1, 1, (x0, 40, int(2 * mid + 1) - x0, 60), "centred")  # centre exactly mid + 0.5
    assert (box.xyxy[0] + box.xyxy[2]) / 2 == mid + 0.5
    cols = phantom.water.shape[2]
    m = seg.layout.mirrored(cols)
    assert m.window_of(mirror_box(box, cols).xyxy) == m.windows[1 - seg.layout.side_of(box.xyxy)]
    got = seg.predict_slice(1, [box]).boxes[0]  # no "mirrored window does not mirror" error
    assert got.member_probs.shape[0] == 4


def test_a_box_reaching_past_its_legs_crop_is_clipped_to_it_as_in_training(phantom, legs_ensemble):
    seg = Segmenter(legs_ensemble, phantom.water)
    r0, r1, c0, c1 = seg.layout.windows[0]
    inside = BoxPrompt(1, 1, (c0 + 5, r0 + 5, c0 + 30, r0 + 30))
    past = BoxPrompt(1, 1, (c0 + 5, max(r0 - 6, 0), c0 + 30, r0 + 30)) if r0 > 0 else \
        BoxPrompt(1, 1, (c0 + 5, r0 + 5, c0 + 30, min(r1 + 6, phantom.water.shape[1])))
    a, b = seg.predict_slice(1, [inside, past]).boxes
    assert a.window.r0 >= r0 and b.window.r0 >= r0 and b.window.r1 <= r1  # kept inside the crop
    assert np.isfinite(b.member_probs).all() and b.member_probs.shape[1:] == b.window.shape


def test_boxes_voxels_and_walk_names_take_the_midline_column_to_the_same_side():
    """One side rule (biomarkers.side_of_column) for a box's leg crop, its propagation walk's name and the
    per-side biomarker voxels, the midline column itself included; the mirrored layout flips the tie."""
    from MuscleSAMLib.biomarkers import SIDES, side_mask
    from MuscleSAMLib.scene_bridge.prompts import walk_names

    layout = LegLayout(50.0, ((0, 40, 0, 50), (0, 40, 51, 100)))
    for x0, x1 in ((40, 61), (49, 52), (45, 55), (50, 51), (30, 40), (70, 81)):  # centres 50, 50, 49.5, 50, 34.5, 75
        leg = layout.side_of((x0, 0, x1, 10))
        name = walk_names([BoxPrompt(1, 0, (x0, 0, x1, 10)), BoxPrompt(2, 0, (0, 0, 5, 5))], layout.midline)[0]
        assert name.startswith(SIDES[leg])
        column = (x0 + x1 - 1) // 2 if (x0 + x1) % 2 else None  # a box one pixel wide at most tells a voxel
        if column is not None:
            assert side_mask((1, 1, 100), SIDES[leg], layout.midline)[0, 0, column]
            assert layout.columns_of(leg, 100)[column]
    assert layout.side_of((50, 0, 51, 1)) == 0 and layout.mirrored(101).side_of((50, 0, 51, 1)) == 1
    assert side_mask((1, 1, 100), "right", 50.0)[0, 0, 50] and not side_mask((1, 1, 100), "left", 50.0)[0, 0, 50]
