"""Multi-muscle assembly of one slice (MuscleSAMLib.engine.assembly; METHODS/DESIGN "Multi-muscle")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MuscleSAMLib.engine.assembly import assemble_slice, combine_label_predictions, replaced_parts, run_reach
from MuscleSAMLib.engine.types import BoxPrediction, BoxPrompt, Window

SHAPE = (40, 60)


def H(p: float) -> float:
    """Binary entropy in nats (0 log 0 = 0)."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def pred(label: int, xyxy: tuple[int, int, int, int], members, slice_: int = 7) -> BoxPrediction:
    """A prediction whose window is the box; ``members`` = list of per-member constants or arrays."""
    c0, r0, c1, r1 = xyxy
    win = Window(r0, r1, c0, c1)
    mp = np.stack([np.broadcast_to(np.asarray(m, np.float32), win.shape) for m in members]).astype(np.float32)
    return BoxPrediction(BoxPrompt(label, slice_, xyxy), win, mp, np.ones(len(members), np.float32))


def assert_same(a, b):
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.top_label, b.top_label)
    np.testing.assert_array_equal(a.probability, b.probability)
    for name in ("mean", "total", "aleatoric", "epistemic", "variance"):
        np.testing.assert_array_equal(getattr(a.uncertainty, name), getattr(b.uncertainty, name))


@pytest.mark.parametrize("p1,p2,winner", [(0.7, 0.9, 2), (0.95, 0.6, 1)])
def test_overlap_goes_to_the_more_probable_label_whatever_the_box_order(p1, p2, winner):
    a = pred(1, (0, 0, 30, 20), [p1] * 3)
    b = pred(2, (20, 10, 50, 30), [p2] * 3)
    fwd = assemble_slice([a, b], SHAPE)
    rev = assemble_slice([b, a], SHAPE)
    assert_same(fwd, rev)
    overlap = (slice(10, 20), slice(20, 30))
    assert np.all(fwd.labels[overlap] == winner)
    assert np.allclose(fwd.probability[overlap], max(p1, p2))
    # outside the overlap each box keeps its own label
    assert np.all(fwd.labels[0:10, 0:30] == 1)
    assert np.all(fwd.labels[20:30, 30:50] == 2)
    assert np.all(fwd.labels[30:, :] == 0)
    # uncertainty reported is that of the winning label's members (all at max(p1, p2))
    assert np.allclose(fwd.uncertainty.total[overlap], H(max(p1, p2)), atol=1e-5)


def test_exact_tie_between_labels_is_order_independent():
    a = pred(4, (0, 0, 20, 20), [0.8] * 2)
    b = pred(3, (10, 10, 30, 30), [0.8] * 2)
    fwd = assemble_slice([a, b], SHAPE)
    assert_same(fwd, assemble_slice([b, a], SHAPE))
    assert np.all(fwd.labels[10:20, 10:20] == 3)  # documented: exact ties go to the lower label id


def test_threshold_and_background_probability():
    probs = np.zeros((10, 10), np.float32)
    probs[:, :5] = 0.49
    probs[:, 5:] = 0.5
    out = assemble_slice([pred(5, (0, 0, 10, 10), [probs, probs])], SHAPE)
    assert np.all(out.labels[:10, :5] == 0) and np.all(out.labels[:10, 5:10] == 5)
    # background voxels still report the most probable label's probability and its uncertainty
    assert np.all(out.top_label[:10, :10] == 5)
    assert np.allclose(out.probability[:10, :5], 0.49)
    assert np.allclose(out.uncertainty.total[:10, :5], H(0.49), atol=1e-5)
    # no box -> label 0, probability 0, no uncertainty
    assert np.all(out.top_label[20:, :] == 0) and np.all(out.probability[20:, :] == 0)
    assert np.all(out.uncertainty.total[20:, :] < 1e-4)
    strict = assemble_slice([pred(5, (0, 0, 10, 10), [probs, probs])], SHAPE, threshold=0.6)
    assert not strict.labels.any()


def test_both_legs_of_one_label_and_member_maps_of_the_more_probable_box():
    right = pred(3, (0, 0, 20, 20), [0.6, 0.6, 0.6])  # mean 0.6, members agree (aleatoric)
    left = pred(3, (15, 5, 45, 25), [1.0, 0.0, 1.0])  # mean 2/3, members disagree (epistemic)
    fwd = assemble_slice([right, left], SHAPE)
    assert_same(fwd, assemble_slice([left, right], SHAPE))
    assert np.all(fwd.labels[0:20, 0:20] == 3) and np.all(fwd.labels[5:25, 15:45] == 3)
    assert set(np.unique(fwd.labels)) == {0, 3}
    ov = (slice(5, 20), slice(15, 20))
    assert np.allclose(fwd.per_label_mean[3][ov], 2 / 3)
    # members at the overlap come from the left box as a whole (mean 2/3, no aleatoric part);
    # an element-wise max of members would give [1, 0.6, 1] (mean 0.87), inconsistent with the mean
    assert np.allclose(fwd.uncertainty.mean[ov], 2 / 3, atol=1e-6)
    assert np.allclose(fwd.uncertainty.aleatoric[ov], 0.0, atol=1e-4)
    assert np.allclose(fwd.uncertainty.epistemic[ov], H(2 / 3), atol=1e-4)
    assert np.allclose(fwd.uncertainty.aleatoric[0:5, 0:15], H(0.6), atol=1e-4)
    lp = combine_label_predictions([right, left])[3]
    assert lp.window == Window(0, 25, 0, 45)


def test_locked_label_survives_and_is_never_repredicted():
    current = np.zeros(SHAPE, np.uint8)
    current[5:15, 5:15] = 1  # finished by the user
    locked_box = pred(1, (0, 0, 30, 30), [0.99] * 3)  # would grow label 1 if it were used
    rival = pred(2, (0, 0, 30, 30), [0.97] * 3)  # more probable than anything else at the locked voxels
    out = assemble_slice([rival, locked_box], SHAPE, current=current, locked=frozenset({1}))
    assert np.array_equal(out.labels == 1, current == 1)  # kept exactly, not grown, not taken
    expect2 = np.zeros(SHAPE, bool)
    expect2[0:30, 0:30] = True
    expect2 &= current != 1
    assert np.array_equal(out.labels == 2, expect2)
    assert out.ignored_locked == [locked_box.box]
    assert 1 not in out.per_label_mean
    assert np.all(out.probability[current == 1] == 1.0)
    assert np.all(out.uncertainty.total[current == 1] == 0.0)
    assert 1 in out.kept_from_current
    # without the lock the same call gives the locked region to the more probable label 1 box
    unlocked = assemble_slice([rival, locked_box], SHAPE, current=current)
    assert np.all(unlocked.labels[0:30, 0:30] == 1)


def test_locked_label_box_ignored_even_without_current():
    out = assemble_slice([pred(1, (0, 0, 10, 10), [0.9])], SHAPE, locked=frozenset({1}))
    assert not out.labels.any()
    assert len(out.ignored_locked) == 1


def test_current_labels_replaced_where_the_new_box_reaches_and_kept_otherwise():
    current = np.zeros(SHAPE, np.uint8)
    current[5:25, 5:12] = 2  # old label-2 part that the new box's window reaches, leaking below it
    current[30:35, 20:25] = 2  # label 2 on the other leg: no new box reaches it
    current[0:10, 40:60] = 6  # painted by hand, no box in this call
    new2 = pred(2, (0, 0, 10, 10), [0.9] * 2)
    over6 = pred(4, (50, 0, 60, 10), [0.8] * 2)  # a predicted label takes part of label 6
    out = assemble_slice([new2, over6], SHAPE, current=current)
    assert np.all(out.labels[10:25, 5:12] == 0)  # the reached part is replaced whole, its leak outside the box too
    assert np.all(out.labels[0:10, 0:10] == 2)
    assert np.all(out.labels[30:35, 20:25] == 2)  # the other leg keeps its label 2
    assert np.all(out.model_labels[30:35, 20:25] == 0)  # ... as the user's segmentation, not as this run's prediction
    assert np.all(out.labels[0:10, 40:50] == 6)  # kept (unpredicted)
    assert np.all(out.labels[0:10, 50:60] == 4)  # a prediction may take an unlocked label's voxels
    assert out.kept_from_current == frozenset({2, 6})
    dropped = assemble_slice([new2, over6], SHAPE, current=current, keep_unpredicted=False)
    assert not np.any(dropped.labels == 6) and not np.any(dropped.labels[30:35, 20:25])


def test_a_tighter_box_leaves_nothing_of_the_earlier_answer_of_that_leg():
    current = np.zeros(SHAPE, np.uint8)
    current[2:8, 2:8] = 2  # the earlier answer of this leg (box 0..20 x 0..20) ...
    current[15:19, 15:19] = 2  # ... with an island outside the new, tighter box's window
    current[30:35, 40:45] = 2  # the other leg
    tight = pred(2, (0, 0, 10, 10), [0.9] * 2)
    earlier = {2: [Window(0, 20, 0, 20), Window(28, 38, 38, 48)]}
    out = assemble_slice([tight], SHAPE, current=current, earlier=earlier)
    assert not out.labels[15:19, 15:19].any()  # the earlier box it replaces reached the island
    assert np.all(out.labels[30:35, 40:45] == 2)  # the other leg's earlier box overlaps no new window
    kept = assemble_slice([tight], SHAPE, current=current)  # without the earlier windows the island stays
    assert np.all(kept.labels[15:19, 15:19] == 2)
    assert run_reach([Window(0, 10, 0, 10)], earlier[2]) == [Window(0, 10, 0, 10), Window(0, 20, 0, 20)]
    # an earlier box overlapping only a replaced earlier box goes too (the reach grows until nothing joins)
    chain = [Window(25, 38, 25, 48), Window(15, 30, 15, 30), Window(0, 20, 0, 20), Window(30, 40, 50, 60)]
    assert run_reach([Window(0, 10, 0, 10)], chain) == [Window(0, 10, 0, 10), Window(0, 20, 0, 20),
                                                          Window(15, 30, 15, 30), Window(25, 38, 25, 48)]


def test_replaced_parts_are_the_eight_connected_parts_a_window_reaches():
    lab = np.zeros((12, 12), np.uint8)
    lab[1:4, 1:4] = 3
    lab[4, 4] = 3  # joins the first part through a corner (8-connected)
    lab[5:7, 5:9] = 3
    lab[9:11, 0:3] = 3  # another part
    lab[9:11, 6:9] = 5  # another label
    got = replaced_parts(lab, 3, [Window(0, 2, 0, 2)])
    assert np.array_equal(got, (lab == 3) & (np.arange(12)[:, None] < 8))
    assert not replaced_parts(lab, 3, []).any() and not replaced_parts(lab, 4, [Window(0, 12, 0, 12)]).any()
    assert np.array_equal(replaced_parts(lab, 3, [Window(0, 2, 0, 2), Window(10, 11, 2, 3)]), lab == 3)
    assert not replaced_parts(lab, 3, [Window(8, 12, 4, 12)]).any()  # reaches only label 5 and background


def test_label_dtype_and_input_errors():
    out = assemble_slice([pred(300, (0, 0, 5, 5), [0.9])], SHAPE)
    assert out.labels.dtype == np.uint16 and out.labels[0, 0] == 300
    assert assemble_slice([pred(3, (0, 0, 5, 5), [0.9])], SHAPE).labels.dtype == np.uint8
    with pytest.raises(ValueError, match="member counts"):
        assemble_slice([pred(1, (0, 0, 5, 5), [0.9]), pred(2, (0, 0, 5, 5), [0.9, 0.9])], SHAPE)
    with pytest.raises(ValueError, match="outside slice"):
        assemble_slice([pred(1, (50, 30, 70, 45), [0.9])], SHAPE)
    with pytest.raises(ValueError, match="several slices"):
        assemble_slice([pred(1, (0, 0, 5, 5), [0.9], 1), pred(2, (0, 0, 5, 5), [0.9], 2)], SHAPE)
    with pytest.raises(ValueError, match="shape"):
        assemble_slice([], SHAPE, current=np.zeros((3, 3), np.uint8))
    empty = assemble_slice([], SHAPE)
    assert empty.labels.shape == SHAPE and not empty.labels.any()
