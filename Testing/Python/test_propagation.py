"""Slice propagation (MuscleSAMLib.engine.propagation) against a fake ensemble on a synthetic volume.

The fake ``predict`` segments exactly the synthetic structure inside the prompt box (window = box):
members say 0.95 inside the structure and ``bg[s]`` outside on slice ``s`` (so background
uncertainty is set per slice), member 0 optionally disagrees on slices in ``disagree``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from MuscleSAMLib.engine.propagation import propagate
from MuscleSAMLib.engine.types import BoxPrediction, BoxPrompt, Window

N, ROWS, COLS = 24, 64, 80


def H(p):
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def disc_volume(centres, radii) -> np.ndarray:
    rr, cc = np.mgrid[:ROWS, :COLS]
    vol = np.zeros((N, ROWS, COLS), bool)
    for s in range(N):
        if radii[s] > 0:
            r, c = centres[s]
            vol[s] = (rr - r) ** 2 + (cc - c) ** 2 <= radii[s] ** 2
    return vol


class FakeEnsemble:
    def __init__(self, truth, bg=None, disagree=(), fail_on=None, extra=None):
        self.truth = truth
        self.bg = np.zeros(len(truth)) if bg is None else np.asarray(bg, float)
        self.disagree = set(disagree)
        self.fail_on = fail_on
        self.extra = extra  # optional (N, ROWS, COLS) bool: stray fragments the model also "sees"
        self.calls: list[BoxPrompt] = []

    def __call__(self, box: BoxPrompt) -> BoxPrediction:
        self.calls.append(box)
        if box.slice == self.fail_on:
            raise RuntimeError("decoder crashed")
        c0, r0, c1, r1 = box.xyxy
        win = Window(r0, r1, c0, c1)
        obj = self.truth[box.slice][win.slices]
        if self.extra is not None:
            obj = obj | self.extra[box.slice][win.slices]
        p = np.where(obj, 0.95, self.bg[box.slice]).astype(np.float32)
        members = np.stack([p, p, p])
        if box.slice in self.disagree:
            members[0][~obj] = 0.9  # member 0 alone calls the background muscle: mean (0.9 + 2 bg) / 3
        return BoxPrediction(box, win, members, np.ones(3, np.float32))


def bbox_plus(mask2d, margin):
    rows = np.flatnonzero(mask2d.any(1))
    cols = np.flatnonzero(mask2d.any(0))
    return (
        max(cols[0] - margin, 0),
        max(rows[0] - margin, 0),
        min(cols[-1] + 1 + margin, COLS),
        min(rows[-1] + 1 + margin, ROWS),
    )


def start_box(truth, s, margin=5):
    return BoxPrompt(label=4, slice=s, xyxy=bbox_plus(truth[s], margin), source="test")


def test_box_follows_a_moving_shrinking_structure_until_it_vanishes():
    # centre drifts 2 px/slice to the right, radius shrinks 1 px/slice going up from slice 8
    centres = [(32, 20 + 2 * s) for s in range(N)]
    radii = [max(14 - max(s - 8, 0), 0) for s in range(N)]
    truth = disc_volume(centres, radii)
    fake = FakeEnsemble(truth)
    res = propagate(fake, start_box(truth, 8), N, direction=1, min_area_px=20, slice_shape=(ROWS, COLS))
    areas = truth.sum(axis=(1, 2))
    expected_stop = next(s for s in range(9, N) if areas[s] < 20)
    assert 9 < expected_stop < N - 1
    assert res.stop_reasons == {1: "mask vanished"}
    assert res.stopped_at == {1: expected_stop}
    assert res.stops[1].last_accepted == expected_stop - 1
    assert res.stops[1].prediction is not None and res.stops[1].prediction.box.slice == expected_stop
    assert res.slices == list(range(8, expected_stop))
    for p in res.predictions[1:]:
        s = p.box.slice
        # the box is the previous slice's mask box + 5 px, and the whole structure is inside it
        assert p.box.xyxy == bbox_plus(truth[s - 1], 5)
        c0, r0, c1, r1 = p.box.xyxy
        assert truth[s][r0:r1, c0:c1].sum() == truth[s].sum()
        assert p.box.label == 4


def test_uncertainty_jump_stops_at_the_exact_slice():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    fake = FakeEnsemble(truth, disagree={15})
    res = propagate(fake, start_box(truth, 10), N, direction=1, max_uncertainty_jump=0.1,
                    max_mean_uncertainty=10.0, slice_shape=(ROWS, COLS))
    assert res.stop_reasons == {1: "uncertainty jump"}
    assert res.stopped_at == {1: 15}
    assert res.slices == [10, 11, 12, 13, 14]
    jump = res.stats[15].mean_uncertainty - res.stats[14].mean_uncertainty
    assert jump > 0.1
    # independent check: member 0 at 0.9 vs two at 0 outside the disc -> H(0.3) there
    box = res.stats[15].box.xyxy
    c0, r0, c1, r1 = box
    inside = truth[15][r0:r1, c0:c1]
    expect = (H(0.3) * (~inside).sum() + H(0.95) * inside.sum()) / inside.size
    assert res.stats[15].mean_uncertainty == pytest.approx(expect, rel=1e-3)


def test_absolute_uncertainty_limit_with_gradual_rise():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    bg = [0.0] * N
    for s in range(10, N):
        bg[s] = 0.02 * (s - 10)  # background creeps up slowly: no single jump is large
    fake = FakeEnsemble(truth, bg=bg)
    limit = 0.3
    res = propagate(fake, start_box(truth, 10), N, direction=1, max_uncertainty_jump=0.2,
                    max_mean_uncertainty=limit, slice_shape=(ROWS, COLS))
    c0, r0, c1, r1 = bbox_plus(truth[10], 5)
    inside = truth[10][r0:r1, c0:c1]
    mean_unc = [(H(bg[s]) * (~inside).sum() + H(0.95) * inside.sum()) / inside.size for s in range(N)]
    expected = next(s for s in range(11, N) if mean_unc[s] > limit)
    assert 11 < expected < N - 1
    assert max(np.diff(mean_unc[10:expected + 1])) < 0.2  # the jump rule alone would not stop it
    assert res.stop_reasons == {1: "uncertainty jump"}
    assert res.stopped_at == {1: expected}
    assert res.slices == list(range(10, expected))


def test_volume_edge_both_directions_and_start_predicted_once():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    fake = FakeEnsemble(truth)
    res = propagate(fake, start_box(truth, 5), N, direction=0, slice_shape=(ROWS, COLS))
    assert res.stop_reasons == {1: "volume edge", -1: "volume edge"}
    assert res.stopped_at == {1: N - 1, -1: 0}
    assert res.slices == list(range(N))  # ordered by slice
    assert [b.slice for b in fake.calls].count(5) == 1
    assert len(fake.calls) == N


def test_max_steps_per_direction():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    fake = FakeEnsemble(truth)
    res = propagate(fake, start_box(truth, 12), N, direction=0, max_steps=3, slice_shape=(ROWS, COLS))
    assert res.stop_reasons == {1: "max steps", -1: "max steps"}
    assert res.stopped_at == {1: 15, -1: 9}
    assert res.slices == list(range(9, 16))
    assert len(fake.calls) == 7
    only = propagate(FakeEnsemble(truth), start_box(truth, 12), N, direction=-1, max_steps=0)
    assert only.slices == [12] and only.stopped_at == {-1: 12}


def test_cancel_stops_without_further_predictions():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    cancel = threading.Event()
    inner = FakeEnsemble(truth)

    def predict(box):
        out = inner(box)
        if len(inner.calls) == 4:
            cancel.set()  # the user presses Cancel while slice start+3 is being predicted
        return out

    res = propagate(predict, start_box(truth, 6), N, direction=0, cancel=cancel)
    assert res.stop_reasons == {1: "cancelled", -1: "cancelled"}
    assert res.stopped_at == {1: 9, -1: 6}
    assert res.slices == [6, 7, 8, 9]
    assert len(inner.calls) == 4

    cancel2 = threading.Event()
    cancel2.set()
    fake = FakeEnsemble(truth)
    res2 = propagate(fake, start_box(truth, 6), N, direction=1, cancel=cancel2)
    assert fake.calls == [] and res2.predictions == [] and res2.stop_reasons == {1: "cancelled"}


def test_stray_fragment_does_not_widen_the_next_box():
    truth = disc_volume([(32, 40)] * N, [8] * N)
    extra = np.zeros_like(truth)
    extra[10, 22:26, 50:53] = True  # a 12-px blob inside slice 10's box, not touching the disc
    fake = FakeEnsemble(truth, extra=extra)
    res = propagate(fake, start_box(truth, 10, margin=8), N, direction=1, max_steps=1, slice_shape=(ROWS, COLS))
    assert res.slices == [10, 11]
    assert res.predictions[1].box.xyxy == bbox_plus(truth[10], 5)
    assert res.stats[10].area_px == truth[10].sum()


def test_predict_error_keeps_accepted_slices():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    res = propagate(FakeEnsemble(truth, fail_on=8), start_box(truth, 5), N, direction=1)
    assert res.stop_reasons == {1: "error"}
    assert res.stopped_at == {1: 8} and res.stops[1].last_accepted == 7
    assert "decoder crashed" in res.stops[1].detail
    assert res.slices == [5, 6, 7]


def test_start_that_vanishes_and_bad_arguments():
    truth = disc_volume([(32, 40)] * N, [10] * N)
    empty_box = BoxPrompt(4, 3, (0, 0, 6, 6))
    res = propagate(FakeEnsemble(truth), empty_box, N, direction=0)
    assert res.stop_reasons == {1: "mask vanished", -1: "mask vanished"}
    assert res.stopped_at == {1: 3, -1: 3} and res.predictions == []
    with pytest.raises(ValueError):
        propagate(FakeEnsemble(truth), start_box(truth, 3), N, direction=2)
    with pytest.raises(ValueError):
        propagate(FakeEnsemble(truth), start_box(truth, 3), 3)


class SoftBeyond(FakeEnsemble):
    """Crisp where the muscle exists; beyond its last slice the model outlines "something" softly (p = 0.55)."""

    def __init__(self, truth, last):
        super().__init__(truth)
        self.last = last

    def __call__(self, box):
        pred = super().__call__(box)
        if box.slice > self.last:
            c0, r0, c1, r1 = box.xyxy
            soft = np.zeros((r1 - r0, c1 - c0), np.float32)
            soft[2:-2, 2:-2] = 0.55  # expected DSC 2 * 0.55 / 1.55 = 0.71
            return BoxPrediction(box, pred.window, np.stack([soft, soft, soft]), np.ones(3, np.float32))
        return pred


def test_stops_where_the_model_outlines_something_soft_beyond_the_muscle():
    """Members agree (no uncertainty jump large enough), but the calibrated mask is poor: stop and flag it."""
    truth = disc_volume([(32, 40)] * N, [10] * N)
    fake = SoftBeyond(truth, last=14)
    res = propagate(fake, BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1, max_uncertainty_jump=10.0,
                    max_mean_uncertainty=10.0, slice_shape=(ROWS, COLS), min_expected_dsc=0.75)
    stop = res.stops[1]
    assert stop.reason == "low expected quality" and stop.stopped_at == 15 and res.slices == [12, 13, 14]
    assert "expected DSC" in stop.detail


def test_stops_on_a_jump_in_mask_area():
    radii = [10] * N
    radii[16] = 27  # the mask balloons onto a neighbour
    truth = disc_volume([(32, 40)] * N, radii)
    res = propagate(FakeEnsemble(truth), BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1, margin_px=20,
                    slice_shape=(ROWS, COLS))
    assert res.stops[1].reason == "low expected quality" and res.stops[1].stopped_at == 16
    assert "area changed" in res.stops[1].detail


class DriftsOntoANeighbour(FakeEnsemble):
    """The model outlines the structure crisply on every slice (no uncertainty, full expected DSC), as it
    would a neighbour it drifted onto; only its own quality score (SAM's IoU head) changes: the members'
    scores average ``iou[slice]``."""

    def __init__(self, truth, iou):
        super().__init__(truth)
        self.iou = iou

    def __call__(self, box):
        pred = super().__call__(box)
        scale = self.iou[box.slice] / 0.75
        return BoxPrediction(box, pred.window, pred.member_probs, np.array([0.9, 0.7, 0.65], np.float32) * scale)


def test_stops_where_the_models_predicted_iou_falls_below_the_limit_but_never_on_the_users_box():
    truth = disc_volume([(32, 40)] * N, [10] * N)  # crisp and stable: every other check passes
    iou = [0.9] * N
    iou[12] = 0.5  # the user's own box: low score, still accepted (it is shown and scored)
    iou[15] = 0.74
    fake = DriftsOntoANeighbour(truth, iou)
    res = propagate(fake, BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1, slice_shape=(ROWS, COLS))
    stop = res.stops[1]
    assert stop.reason == "low expected quality" and stop.stopped_at == 15 and res.slices == [12, 13, 14]
    assert "predicted IoU 0.740 < 0.750" in stop.detail
    assert res.stats[14].iou_pred == pytest.approx(0.9, rel=1e-5)  # the mean of the members' scores
    # the limit is a parameter: off, the walk runs to the volume edge
    res = propagate(DriftsOntoANeighbour(truth, iou), BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1,
                    slice_shape=(ROWS, COLS), min_iou_pred=0.0)
    assert res.stops[1].reason == "volume edge" and res.slices[-1] == N - 1


def test_an_iou_head_that_gives_no_quality_score_is_not_used_to_stop():
    """Random or untrained IoU heads answer below 0 (measured: -0.12..-0.03 on the test ensemble): the walk must
    not stop on them. A trained head's score a little over 1 on the user's box is still a score."""
    truth = disc_volume([(32, 40)] * N, [10] * N)
    res = propagate(DriftsOntoANeighbour(truth, [-0.1] * N), BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1,
                    slice_shape=(ROWS, COLS))
    assert res.stops[1].reason == "volume edge" and res.slices == list(range(12, N))
    iou = [-0.1] * N
    iou[12] = 0.9  # a real score on the user's slice: the check applies, and -0.1 beyond it stops the walk
    res = propagate(DriftsOntoANeighbour(truth, iou), BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1,
                    slice_shape=(ROWS, COLS))
    assert res.stops[1].reason == "low expected quality" and res.stops[1].stopped_at == 13
    iou[12] = 1.05  # unbounded above: still a trained score
    res = propagate(DriftsOntoANeighbour(truth, iou), BoxPrompt(1, 12, (28, 20, 53, 45)), N, direction=1,
                    slice_shape=(ROWS, COLS))
    assert res.stops[1].reason == "low expected quality" and res.stops[1].stopped_at == 13
